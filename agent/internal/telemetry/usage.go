package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Usage families: the kubelet's resource metrics (and metrics-server's)
// names.
var (
	famNodeCPU = family{"node_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the node in core-seconds."}
	famNodeMem = family{"node_memory_working_set_bytes", "gauge", "Current working set of the node in bytes."}
	famCtrCPU  = family{"container_cpu_usage_seconds_total", "counter", "Cumulative cpu time consumed by the container in core-seconds."}
	famCtrMem  = family{"container_memory_working_set_bytes", "gauge", "Current working set of the container in bytes."}
)

// ResourceMetricsPathAnnotation on a node names the path of its resource
// metrics under the node proxy instead of /metrics/resource (kwok's
// simulated nodes serve them at /metrics/nodes/NAME/metrics/resource).
const ResourceMetricsPathAnnotation = "metrics.k8s.io/resource-metrics-path"

// metricsReprobe is how often a cluster that did not serve metrics.k8s.io
// is asked again.
const metricsReprobe = 10 * time.Minute

// textFormat is the Prometheus text exposition format, which kubelets
// (and kwok) serve.
const textFormat = "text/plain;version=0.0.4;q=1,*/*;q=0.1"

// maxResourceMetricsBytes bounds one kubelet's resource metrics response.
const maxResourceMetricsBytes = 16 << 20

// usage adds CPU and memory usage from metrics.k8s.io if it is served,
// else from every node's kubelet resource metrics through the API
// server's node proxy. It returns the source used.
func (col *Collector) usage(ctx context.Context, c *collection) (string, error) {
	now := col.cfg.Now()
	col.mu.Lock()
	served := col.metricsAPI
	// A cluster without metrics.k8s.io is asked again now and then (a
	// metrics-server may be installed, or back from a restart).
	probe := served == nil || *served || now.Sub(col.metricsProbed) >= metricsReprobe
	col.mu.Unlock()
	if probe {
		err := col.metricsAPIUsage(ctx, c)
		ok := !errors.Is(err, errNotServed)
		col.mu.Lock()
		col.metricsAPI, col.metricsProbed = &ok, now
		col.mu.Unlock()
		if ok {
			return "metrics.k8s.io", err
		}
	}
	return "kubelet", col.kubeletUsage(ctx, c)
}

type usageList struct {
	Timestamp time.Time                    `json:"timestamp"`
	Usage     map[string]resource.Quantity `json:"usage"`
}

type nodeMetrics struct {
	Metadata objectMeta `json:"metadata"`
	usageList
}

type podMetrics struct {
	Metadata   objectMeta `json:"metadata"`
	Timestamp  time.Time  `json:"timestamp"`
	Containers []struct {
		Name  string                       `json:"name"`
		Usage map[string]resource.Quantity `json:"usage"`
	} `json:"containers"`
}

// metricsAPIUsage reads NodeMetrics and PodMetrics. They hold CPU as a
// rate (cores over a window), so the collector integrates it into the
// core-seconds counters the kubelet exports (starting at 0 when the
// agent starts: rate() sees a counter reset, as after a kubelet restart).
func (col *Collector) metricsAPIUsage(ctx context.Context, c *collection) error {
	seen := map[string]bool{}
	err := listPaged(ctx, col, "/apis/metrics.k8s.io/v1beta1/nodes", func(m *nodeMetrics) {
		name := m.Metadata.Name
		if q, ok := m.Usage["cpu"]; ok {
			c.add(famNodeCPU, col.integrate(seen, "n/"+name, q, m.Timestamp), "node", name)
		}
		if q, ok := m.Usage["memory"]; ok {
			c.add(famNodeMem, float64(q.Value()), "node", name)
		}
	})
	if err != nil {
		return err
	}
	err = listPaged(ctx, col, "/apis/metrics.k8s.io/v1beta1/pods", func(m *podMetrics) {
		ns, pod := m.Metadata.Namespace, m.Metadata.Name
		for _, ctr := range m.Containers {
			if q, ok := ctr.Usage["cpu"]; ok {
				c.add(famCtrCPU, col.integrate(seen, "c/"+ns+"/"+pod+"/"+ctr.Name, q, m.Timestamp), "namespace", ns, "pod", pod, "container", ctr.Name)
			}
			if q, ok := ctr.Usage["memory"]; ok {
				c.add(famCtrMem, float64(q.Value()), "namespace", ns, "pod", pod, "container", ctr.Name)
			}
		}
	})
	if err != nil {
		return err
	}
	col.mu.Lock()
	for k := range col.cpu {
		if !seen[k] {
			delete(col.cpu, k)
		}
	}
	col.mu.Unlock()
	return nil
}

// cpuCounter is an integrated CPU counter of one node or container.
type cpuCounter struct {
	seconds float64
	at      time.Time
}

func (col *Collector) integrate(seen map[string]bool, key string, cores resource.Quantity, at time.Time) float64 {
	seen[key] = true
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.cpu == nil {
		col.cpu = map[string]cpuCounter{}
	}
	cur, ok := col.cpu[key]
	if ok && at.After(cur.at) {
		cur.seconds += float64(cores.MilliValue()) / 1000 * at.Sub(cur.at).Seconds()
	}
	if !ok || at.After(cur.at) {
		cur.at = at
	}
	col.cpu[key] = cur
	return cur.seconds
}

// kubeletUsage reads each node's resource metrics through the node proxy
// (nodes listed a page at a time; one node's failure is logged and does
// not stop the others).
func (col *Collector) kubeletUsage(ctx context.Context, c *collection) error {
	type target struct{ name, path string }
	var nodes []target
	err := listPaged(ctx, col, "/api/v1/nodes", func(n *node) {
		p := n.Metadata.Annotations[ResourceMetricsPathAnnotation]
		if p == "" || !strings.HasPrefix(p, "/") || strings.Contains(p, "..") {
			p = "/metrics/resource"
		}
		nodes = append(nodes, target{n.Metadata.Name, p})
	})
	if err != nil {
		return err
	}
	var failed []string
	var firstErr error
	for _, n := range nodes {
		path := "/api/v1/nodes/" + url.PathEscape(n.name) + "/proxy" + n.path
		err := col.getAs(ctx, path, textFormat, func(r io.Reader) error {
			return addResourceMetrics(c, n.name, io.LimitReader(r, maxResourceMetricsBytes))
		})
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			failed = append(failed, n.name)
			if firstErr == nil {
				firstErr = err
			}
			col.log.Debug("kubelet resource metrics", "node", n.name, "err", err)
		}
	}
	c.partial = c.partial || len(failed) > 0
	if len(failed) > 0 && len(failed) == len(nodes) {
		return fmt.Errorf("resource metrics of all %d nodes failed (first: %s: %w)", len(nodes), failed[0], firstErr)
	}
	return nil
}

// addResourceMetrics parses a kubelet's /metrics/resource (Prometheus
// text format) and adds the node and container CPU and memory series,
// with node="NAME".
func addResourceMetrics(c *collection, nodeName string, r io.Reader) error {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return fmt.Errorf("parse resource metrics: %w", err)
	}
	for _, f := range []family{famNodeCPU, famNodeMem, famCtrCPU, famCtrMem} {
		mf := fams[f.name]
		if mf == nil {
			continue
		}
		for _, m := range mf.GetMetric() {
			v, ok := value(m)
			if !ok {
				continue
			}
			pairs := []string{"node", nodeName}
			for _, lp := range m.GetLabel() {
				switch lp.GetName() {
				case "namespace", "pod", "container":
					pairs = append(pairs, lp.GetName(), boundValue(lp.GetValue(), MaxObjectLabelBytes))
				}
			}
			c.add(f, v, pairs...)
		}
	}
	return nil
}

func value(m *dto.Metric) (float64, bool) {
	switch {
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue(), true
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue(), true
	case m.GetUntyped() != nil:
		return m.GetUntyped().GetValue(), true
	}
	return 0, false
}
