package telemetry_test

import (
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// serveMetricsAPI makes a bare cluster serve metrics.k8s.io/v1beta1
// nodes and pods as CRDs (what metrics-server serves as an aggregated
// API, same paths and shapes), so the collector's metrics.k8s.io path
// runs against a real kube-apiserver.
func serveMetricsAPI(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	open := true
	for _, k := range []struct {
		kind, plural string
		scope        apiextensionsv1.ResourceScope
	}{{"NodeMetrics", "nodes", apiextensionsv1.ClusterScoped}, {"PodMetrics", "pods", apiextensionsv1.NamespaceScoped}} {
		crd := &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: k.plural + ".metrics.k8s.io", Annotations: map[string]string{
				"api-approved.kubernetes.io": "unapproved, test stand-in for metrics-server",
			}},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: "metrics.k8s.io", Scope: k.scope,
				Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: k.kind, ListKind: k.kind + "List", Plural: k.plural},
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1beta1", Served: true, Storage: true,
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: &open}}}},
			},
		}
		if err := c.Client.Create(t.Context(), crd); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		l := &unstructured.UnstructuredList{}
		l.SetGroupVersionKind(schema.GroupVersionKind{Group: "metrics.k8s.io", Version: "v1beta1", Kind: "PodMetricsList"})
		if c.Client.List(t.Context(), l) == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("metrics.k8s.io CRDs not served after 30s")
		}
		<-tick.C
	}
}

// putUsage writes (creates or replaces) a NodeMetrics and a PodMetrics
// with the usage at ts.
func putUsage(t *testing.T, c *cluster.Cluster, ts time.Time, nodeCPU, podCPU, podMem string) {
	t.Helper()
	stamp := ts.UTC().Format(time.RFC3339)
	for _, obj := range []map[string]any{
		{"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics", "metadata": map[string]any{"name": "n1"},
			"timestamp": stamp, "window": "10s", "usage": map[string]any{"cpu": nodeCPU, "memory": "2Gi"}},
		{"apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics", "metadata": map[string]any{"name": "web-1", "namespace": "default"},
			"timestamp": stamp, "window": "10s", "containers": []any{map[string]any{"name": "app", "usage": map[string]any{"cpu": podCPU, "memory": podMem}}}},
	} {
		u := &unstructured.Unstructured{Object: obj}
		cur := u.DeepCopy()
		if err := c.Client.Get(t.Context(), client.ObjectKeyFromObject(u), cur); err == nil {
			u.SetResourceVersion(cur.GetResourceVersion())
			if err := c.Client.Update(t.Context(), u); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := c.Client.Create(t.Context(), u); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUsageFromMetricsAPI: where metrics.k8s.io is served the collector
// takes usage from it: memory as given, CPU rates integrated into the
// kubelet's core-seconds counters over the API's timestamps.
func TestUsageFromMetricsAPI(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Name: "metricsapi"})
	serveMetricsAPI(t, c)
	ob := openCache(t, 0)
	col := newCollector(t, c, newShipper(t, ob, 0), nil)
	t0 := time.Now().Truncate(time.Second)
	putUsage(t, c, t0, "1", "500m", "64Mi")
	if err := col.Collect(t.Context()); err != nil {
		t.Fatal(err)
	}
	putUsage(t, c, t0.Add(10*time.Second), "1", "500m", "80Mi")
	if err := col.Collect(t.Context()); err != nil {
		t.Fatal(err)
	}
	if src := col.Stats().UsageSource; src != "metrics.k8s.io" {
		t.Fatalf("usage source %q; want metrics.k8s.io", src)
	}
	all := samples(drainMetrics(t, ob))
	ctr := map[string]string{"namespace": "default", "pod": "web-1", "container": "app"}
	cpus := find(all, "container_cpu_usage_seconds_total", ctr)
	mems := find(all, "container_memory_working_set_bytes", ctr)
	nodes := find(all, "node_cpu_usage_seconds_total", map[string]string{"node": "n1"})
	if len(cpus) != 2 || len(mems) != 2 || len(nodes) != 2 {
		t.Fatalf("got %d cpu, %d memory, %d node cpu samples; want 2 each", len(cpus), len(mems), len(nodes))
	}
	if cpus[0].value != 0 || cpus[1].value != 5 {
		t.Errorf("container cpu counter %v then %v; want 0 then 5 (0.5 cores for 10 s)", cpus[0].value, cpus[1].value)
	}
	if nodes[1].value != 10 {
		t.Errorf("node cpu counter %v; want 10 (1 core for 10 s)", nodes[1].value)
	}
	if mems[1].value != 80<<20 {
		t.Errorf("container memory %v; want 80Mi", mems[1].value)
	}
	if m := find(all, "node_memory_working_set_bytes", map[string]string{"node": "n1", "cluster": clusterName}); len(m) != 2 || m[1].value != 2<<30 {
		t.Errorf("node memory samples %v; want two of 2Gi", m)
	}
}
