package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// TestResourceMetricsThroughNodeProxy: with Options.ResourceMetrics a
// node's simulated kubelet serves resource metrics through the API
// server's node proxy, with a pod's usage from its annotations.
func TestResourceMetricsThroughNodeProxy(t *testing.T) {
	c := cluster.Start(t, cluster.Options{NodeCount: 1, ResourceMetrics: true})
	ctx := t.Context()
	node := c.Nodes[0]
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "busy", Namespace: "default", Annotations: map[string]string{
			cluster.AnnotationUsageCPU: "250m", cluster.AnnotationUsageMemory: "64Mi",
		}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
	}
	if _, err := c.Clientset.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	path := "/api/v1/nodes/" + node + "/proxy/metrics/nodes/" + node + "/metrics/resource"
	want := `container_memory_working_set_bytes{container="app",namespace="default",pod="busy"} 6.7108864e+07`
	eventually(t, "the pod's simulated usage through the node proxy", time.Minute, func(ctx context.Context) (bool, string) {
		body, err := c.Clientset.CoreV1().RESTClient().Get().AbsPath(path).DoRaw(ctx)
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(string(body), want) && strings.Contains(string(body), "node_cpu_usage_seconds_total"), string(body)
	})
}
