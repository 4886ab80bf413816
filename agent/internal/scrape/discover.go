package scrape

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

var (
	podsGVR           = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	servicesGVR       = schema.GroupVersionResource{Version: "v1", Resource: "services"}
	endpointSlicesGVR = schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}
)

// Labels Prometheus uses between discovery and scrape.
const (
	addressLabel     = "__address__"
	schemeLabel      = "__scheme__"
	metricsPathLabel = "__metrics_path__"
	jobLabel         = "job"
	instanceLabel    = "instance"
	metaPrefix       = "__meta_kubernetes_"
)

// target is one endpoint to scrape.
type target struct {
	job    *job
	url    string
	labels labels.Labels // final: no "__" labels, cluster set
}

func (t *target) key() string { return t.job.name + "\x00" + t.url + "\x00" + t.labels.String() }

// discoverer lists a job's targets.
type discoverer struct {
	client    dynamic.Interface
	cluster   string
	maxPerJob int
	pageSize  int64
}

// discover returns the job's targets (at most maxPerJob, sorted by URL),
// and whether more were found.
func (d *discoverer) discover(ctx context.Context, j *job) ([]*target, bool, error) {
	seen := map[string]bool{}
	var out []*target
	truncated := false
	add := func(lset map[string]string) {
		t := finishTarget(j, lset, d.cluster)
		if t == nil || seen[t.key()] {
			return
		}
		if len(out) >= d.maxPerJob {
			truncated = true
			return
		}
		seen[t.key()] = true
		out = append(out, t)
	}
	for _, s := range j.targets {
		namespaces := s.namespaces
		if len(namespaces) == 0 {
			namespaces = []string{metav1.NamespaceAll}
		}
		for _, ns := range namespaces {
			var err error
			switch s.kind {
			case "Pod":
				err = d.pods(ctx, j, &s, ns, add)
			case "Service":
				err = d.services(ctx, j, &s, ns, add)
			}
			if err != nil {
				return nil, false, err
			}
			if truncated {
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b *target) int { return strings.Compare(a.key(), b.key()) })
	return out, truncated, nil
}

// list pages through a resource.
func (d *discoverer) list(ctx context.Context, gvr schema.GroupVersionResource, ns, selector string, each func(*unstructured.Unstructured) error) error {
	opts := metav1.ListOptions{LabelSelector: selector, Limit: d.pageSize}
	for {
		l, err := d.client.Resource(gvr).Namespace(ns).List(ctx, opts)
		if err != nil {
			where := ns
			if where == "" {
				where = "every namespace"
			}
			return fmt.Errorf("list %s in %s (selector %q): %w", gvr.Resource, where, selector, err)
		}
		for i := range l.Items {
			if err := each(&l.Items[i]); err != nil {
				return err
			}
		}
		if opts.Continue = l.GetContinue(); opts.Continue == "" {
			return nil
		}
	}
}

func (d *discoverer) pods(ctx context.Context, j *job, s *selector, ns string, add func(map[string]string)) error {
	return d.list(ctx, podsGVR, ns, s.labels.String(), func(u *unstructured.Unstructured) error {
		var pod corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pod); err != nil {
			return fmt.Errorf("pod %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		if pod.Status.PodIP == "" || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed || pod.DeletionTimestamp != nil {
			return nil
		}
		base := map[string]string{
			"namespace": pod.Namespace, "pod": pod.Name,
			metaPrefix + "namespace":     pod.Namespace,
			metaPrefix + "pod_name":      pod.Name,
			metaPrefix + "pod_ip":        pod.Status.PodIP,
			metaPrefix + "pod_node_name": pod.Spec.NodeName,
			metaPrefix + "pod_host_ip":   pod.Status.HostIP,
			metaPrefix + "pod_uid":       string(pod.UID),
			metaPrefix + "pod_phase":     string(pod.Status.Phase),
		}
		metaLabels(base, "pod", pod.Labels)
		found := false
		for _, c := range pod.Spec.Containers {
			for _, p := range c.Ports {
				if (s.portNumber != 0 && int(p.ContainerPort) != s.portNumber) || (s.portNumber == 0 && p.Name != s.port) {
					continue
				}
				found = true
				l := clone(base)
				l["container"] = c.Name
				l[metaPrefix+"pod_container_name"] = c.Name
				l[metaPrefix+"pod_container_port_name"] = p.Name
				l[metaPrefix+"pod_container_port_number"] = strconv.Itoa(int(p.ContainerPort))
				l[addressLabel] = net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(p.ContainerPort)))
				add(withJob(j, l))
			}
		}
		if !found && s.portNumber != 0 {
			// A number no container declares: still the pod's port.
			l := clone(base)
			l[addressLabel] = net.JoinHostPort(pod.Status.PodIP, s.port)
			add(withJob(j, l))
		}
		return nil
	})
}

func (d *discoverer) services(ctx context.Context, j *job, s *selector, ns string, add func(map[string]string)) error {
	return d.list(ctx, servicesGVR, ns, s.labels.String(), func(u *unstructured.Unstructured) error {
		var svc corev1.Service
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &svc); err != nil {
			return fmt.Errorf("service %s/%s: %w", u.GetNamespace(), u.GetName(), err)
		}
		var port *corev1.ServicePort
		for i, p := range svc.Spec.Ports {
			if (s.portNumber != 0 && int(p.Port) == s.portNumber) || (s.portNumber == 0 && p.Name == s.port) {
				port = &svc.Spec.Ports[i]
				break
			}
		}
		if port == nil {
			return nil
		}
		base := map[string]string{
			"namespace": svc.Namespace, "service": svc.Name,
			metaPrefix + "namespace":           svc.Namespace,
			metaPrefix + "service_name":        svc.Name,
			metaPrefix + "service_port_name":   port.Name,
			metaPrefix + "service_port_number": strconv.Itoa(int(port.Port)),
		}
		metaLabels(base, "service", svc.Labels)
		sel := discoveryv1.LabelServiceName + "=" + svc.Name
		return d.list(ctx, endpointSlicesGVR, svc.Namespace, sel, func(u *unstructured.Unstructured) error {
			var es discoveryv1.EndpointSlice
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &es); err != nil {
				return fmt.Errorf("endpointslice %s/%s: %w", u.GetNamespace(), u.GetName(), err)
			}
			if es.AddressType != discoveryv1.AddressTypeIPv4 && es.AddressType != discoveryv1.AddressTypeIPv6 {
				return nil
			}
			var slicePort *discoveryv1.EndpointPort
			for i, p := range es.Ports {
				if p.Port != nil && (p.Name == nil && port.Name == "" || p.Name != nil && *p.Name == port.Name) {
					slicePort = &es.Ports[i]
					break
				}
			}
			if slicePort == nil {
				return nil
			}
			for _, ep := range es.Endpoints {
				if ep.Conditions.Ready != nil && !*ep.Conditions.Ready {
					continue
				}
				for _, addr := range ep.Addresses {
					l := clone(base)
					l[metaPrefix+"endpointslice_name"] = es.Name
					if ep.TargetRef != nil {
						l[metaPrefix+"endpointslice_address_target_kind"] = ep.TargetRef.Kind
						l[metaPrefix+"endpointslice_address_target_name"] = ep.TargetRef.Name
						if ep.TargetRef.Kind == "Pod" {
							l["pod"] = ep.TargetRef.Name
						}
					}
					if ep.NodeName != nil {
						l[metaPrefix+"endpointslice_endpoint_node_name"] = *ep.NodeName
					}
					l[metaPrefix+"endpointslice_port"] = strconv.Itoa(int(*slicePort.Port))
					l[addressLabel] = net.JoinHostPort(addr, strconv.Itoa(int(*slicePort.Port)))
					add(withJob(j, l))
				}
			}
			return nil
		})
	})
}

// metaLabels adds Prometheus' __meta_kubernetes_<role>_label_<name> and
// _labelpresent_<name> for each object label.
func metaLabels(m map[string]string, role string, ls map[string]string) {
	for k, v := range ls {
		n := sanitizeLabelName(k)
		m[metaPrefix+role+"_label_"+n] = v
		m[metaPrefix+role+"_labelpresent_"+n] = "true"
	}
}

// sanitizeLabelName replaces what a Prometheus label name may not hold
// with '_', as Prometheus' strutil.SanitizeLabelName.
func sanitizeLabelName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m)+8)
	for k, v := range m {
		out[k] = v
	}
	return out
}

func withJob(j *job, l map[string]string) map[string]string {
	l[jobLabel] = j.name
	l[schemeLabel] = j.scheme
	l[metricsPathLabel] = j.path
	return l
}

// finishTarget runs the job's relabel_configs over discovered labels and
// returns the target, or nil when they drop it or leave no address.
func finishTarget(j *job, discovered map[string]string, cluster string) *target {
	lb := labels.NewBuilder(labels.FromMap(discovered))
	if !relabel.ProcessBuilder(lb, j.relabel...) {
		return nil
	}
	addr := lb.Get(addressLabel)
	if addr == "" {
		return nil
	}
	if lb.Get(instanceLabel) == "" {
		lb.Set(instanceLabel, addr)
	}
	u := &url.URL{Scheme: lb.Get(schemeLabel), Host: addr, Path: lb.Get(metricsPathLabel)}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil
	}
	var drop []string
	lb.Range(func(l labels.Label) {
		if strings.HasPrefix(l.Name, "__") || !telemetryv1.ValidLabelName(l.Name) {
			drop = append(drop, l.Name)
		}
	})
	lb.Del(drop...)
	lb.Set(telemetryv1.ClusterLabel, cluster)
	return &target{job: j, url: u.String(), labels: lb.Labels()}
}
