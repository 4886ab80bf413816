package telemetry

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

const kubeletSample = `# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="inv",pod="web-1"} 12.5 1733100000000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="inv",pod="web-1"} 6.7108864e+07 1733100000000
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 100.25 1733100000000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.2e+09 1733100000000
# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
`

// TestAddResourceMetrics: the kubelet's four usage families are kept
// with node, namespace, pod and container labels; others are not.
func TestAddResourceMetrics(t *testing.T) {
	var got []*telemetryv1.MetricBatch
	c := newCollection(1, 100, func(b *telemetryv1.MetricBatch) error { got = append(got, b); return nil })
	if err := addResourceMetrics(c, "n1", strings.NewReader(kubeletSample)); err != nil {
		t.Fatal(err)
	}
	c.flush()
	if len(got) != 1 || len(got[0].Series) != 4 {
		t.Fatalf("batches %v; want one with 4 series", got)
	}
	for _, s := range got[0].Series {
		ls := map[string]string{}
		for _, l := range s.Labels {
			ls[l.Name] = l.Value
		}
		if ls["node"] != "n1" {
			t.Errorf("series %v lacks node=n1", ls)
		}
		if strings.HasPrefix(ls["__name__"], "container_") && (ls["pod"] != "web-1" || ls["namespace"] != "inv" || ls["container"] != "app") {
			t.Errorf("container series %v lacks its pod labels", ls)
		}
	}
}

// FuzzResourceMetrics: whatever a kubelet (or something posing as one
// behind the node proxy) answers, parsing never panics and what it adds
// is a batch the hub accepts (a batch it refused would lose the whole
// collection).
func FuzzResourceMetrics(f *testing.F) {
	f.Add(kubeletSample)
	f.Add("container_memory_working_set_bytes{pod=\"\xff\xfe\",namespace=\"a\",container=\"" + strings.Repeat("x", 5000) + "\"} 1\n")
	f.Add("node_cpu_usage_seconds_total NaN\nnode_memory_working_set_bytes +Inf\n")
	f.Add("# TYPE node_cpu_usage_seconds_total histogram\nnode_cpu_usage_seconds_total_bucket{le=\"1\"} 1\n")
	f.Fuzz(func(t *testing.T, text string) {
		var got []*telemetryv1.MetricBatch
		c := newCollection(1, 1000, func(b *telemetryv1.MetricBatch) error { got = append(got, b); return nil })
		_ = addResourceMetrics(c, "node-1", strings.NewReader(text))
		c.flush()
		for _, b := range got {
			for _, s := range b.Series {
				labelCluster(s, "edge-1")
			}
			if err := telemetryv1.Validate(b); err != nil {
				t.Fatalf("parsed resource metrics make an invalid batch: %v", err)
			}
		}
	})
}

// TestCapacityType: the providers' capacity labels normalise to spot,
// on-demand or reserved; anything else is left out.
func TestCapacityType(t *testing.T) {
	for _, tc := range []struct {
		labels map[string]string
		want   string
	}{
		{map[string]string{"karpenter.sh/capacity-type": "spot"}, "spot"},
		{map[string]string{"karpenter.sh/capacity-type": "on-demand"}, "on-demand"},
		{map[string]string{"eks.amazonaws.com/capacityType": "ON_DEMAND"}, "on-demand"},
		{map[string]string{"eks.amazonaws.com/capacityType": "SPOT"}, "spot"},
		{map[string]string{"cloud.google.com/gke-spot": "true"}, "spot"},
		{map[string]string{"cloud.google.com/gke-preemptible": "true"}, "spot"},
		{map[string]string{"kubernetes.azure.com/scalesetpriority": "spot"}, "spot"},
		{map[string]string{"karpenter.sh/capacity-type": "${jndi:evil}"}, ""},
		{nil, ""},
	} {
		if got := capacityType(tc.labels); got != tc.want {
			t.Errorf("capacityType(%v) = %q; want %q", tc.labels, got, tc.want)
		}
	}
}

// TestBoundValue: tenant-written values are cut at a rune boundary and
// made valid UTF-8.
func TestBoundValue(t *testing.T) {
	if got := boundValue(strings.Repeat("é", 200), 255); len(got) != 254 {
		t.Errorf("cut to %d bytes; want 254 (the last whole rune)", len(got))
	}
	if got := boundValue("a\xffb", 10); got != "a\uFFFDb" {
		t.Errorf("invalid UTF-8 became %q", got)
	}
}

// TestIntegrateCPU: metrics.k8s.io's CPU rates become a counter of
// core-seconds: 0 when first seen, then rate × elapsed; an older or
// repeated timestamp adds nothing.
func TestIntegrateCPU(t *testing.T) {
	col := &Collector{}
	t0 := time.Unix(1000, 0)
	seen := map[string]bool{}
	steps := []struct {
		cores string
		at    time.Time
		want  float64
	}{
		{"500m", t0, 0},
		{"500m", t0.Add(10 * time.Second), 5},
		{"2", t0.Add(10 * time.Second), 5},
		{"2", t0.Add(5 * time.Second), 5},
		{"2", t0.Add(20 * time.Second), 25},
	}
	for i, s := range steps {
		if got := col.integrate(seen, "n/a", resource.MustParse(s.cores), s.at); got != s.want {
			t.Fatalf("step %d: counter = %v; want %v", i, got, s.want)
		}
	}
}
