package telemetry_test

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tetherfleet/tether/agent/internal/telemetry"
	"github.com/tetherfleet/tether/e2e/cluster"
)

// setupInventory creates, in namespace ns, a Deployment of replicas pods
// (one container "app": requests 250m/128Mi (50m CPU past 10 pods), limit 256Mi, simulated usage
// 300m/64Mi, owned by Helm release "web-release") and a 5Gi PVC, and
// waits until the pods run.
func setupInventory(t *testing.T, c *cluster.Cluster, ns string, replicas int32) {
	t.Helper()
	setupInventoryTB(t, c, ns, replicas)
}

func setupInventoryTB(t testing.TB, c *cluster.Cluster, ns string, replicas int32) {
	t.Helper()
	ctx := t.Context()
	cs := c.Clientset
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "web", "app.kubernetes.io/instance": "web-release"}
	cpu := "250m"
	if replicas > 10 {
		cpu = "50m" // many fit the one node
	}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					cluster.AnnotationUsageCPU: "300m", cluster.AnnotationUsageMemory: "64Mi",
				}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "app", Image: "example/web:1",
					Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("128Mi")},
						Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
					},
				}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To("standard"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("5Gi")}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running == int(replicas) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d pods of %s/web running after a minute", running, replicas, ns)
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func newCollector(t testing.TB, c *cluster.Cluster, e telemetry.Emitter, tweak func(*telemetry.Config)) *telemetry.Collector {
	t.Helper()
	cfg := telemetry.DefaultConfig()
	cfg.RESTConfig, cfg.Emitter = c.RESTConfig, e
	if tweak != nil {
		tweak(&cfg)
	}
	col, err := telemetry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return col
}

// TestInventoryAndUsage: one collection of a harness cluster with a kwok
// node, a Deployment's pods and a PVC ships series under
// kube-state-metrics' names and labels with the objects' values, and the
// pods' simulated usage from the kubelet resource metrics; every series
// is labelled with the cluster, and every outbox entry decodes. Pages of
// one object make every list take several requests.
func TestInventoryAndUsage(t *testing.T) {
	c := shared.Get(t)
	setupInventory(t, c, "inv", 2)
	ob := openCache(t, 0)
	col := newCollector(t, c, newShipper(t, ob, 0), func(cfg *telemetry.Config) { cfg.PageSize = 1 })
	var all []sample
	// kwok's usage appears once it has seen the pods run; collect until
	// it does (the inventory is asserted on the last collection).
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(500 * time.Millisecond) // the next collection, as Run's ticker would
	defer tick.Stop()
	for {
		if err := col.Collect(t.Context()); err != nil {
			t.Fatalf("collect: %v", err)
		}
		all = samples(drainMetrics(t, ob))
		if len(find(all, "container_memory_working_set_bytes", map[string]string{"namespace": "inv"})) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usage of the inv pods after a minute; usage source %q, last error %q", col.Stats().UsageSource, col.Stats().LastError)
		}
		<-tick.C
	}
	for _, s := range all {
		if s.labels["cluster"] != clusterName {
			t.Fatalf("series %s lacks cluster=%q", s, clusterName)
		}
	}
	node := map[string]string{"node": "edge-spot"}
	if v := one(t, all, "kube_node_info", map[string]string{"node": "edge-spot", "kubelet_version": cluster.KubernetesVersion}); v != 1 {
		t.Errorf("kube_node_info = %v", v)
	}
	one(t, all, "kube_node_labels", map[string]string{"node": "edge-spot",
		"label_node_kubernetes_io_instance_type": "m5.2xlarge", "label_topology_kubernetes_io_region": "eu-west-1",
		"label_topology_kubernetes_io_zone": "eu-west-1b", "label_karpenter_sh_capacity_type": "spot", "capacity_type": "spot"})
	for _, tc := range []struct {
		metric, res, unit string
		want              float64
	}{
		{"kube_node_status_capacity", "cpu", "core", 8},
		{"kube_node_status_capacity", "memory", "byte", 32 << 30},
		{"kube_node_status_allocatable", "pods", "integer", 110},
	} {
		if v := one(t, all, tc.metric, map[string]string{"node": "edge-spot", "resource": tc.res, "unit": tc.unit}); v != tc.want {
			t.Errorf("%s{resource=%s} = %v; want %v", tc.metric, tc.res, v, tc.want)
		}
	}
	infos := find(all, "kube_pod_info", map[string]string{"namespace": "inv", "node": "edge-spot", "created_by_kind": "ReplicaSet", "helm_release": "web-release", "host_network": "false"})
	if len(infos) != 2 {
		t.Fatalf("kube_pod_info of inv pods: %v; want 2 with node, owner and helm_release", infos)
	}
	for _, info := range infos {
		pod := map[string]string{"namespace": "inv", "pod": info.labels["pod"], "uid": info.labels["uid"]}
		if !strings.HasPrefix(info.labels["created_by_name"], "web-") {
			t.Errorf("kube_pod_info created_by_name = %q; want the ReplicaSet web-...", info.labels["created_by_name"])
		}
		one(t, all, "kube_pod_owner", merge(pod, map[string]string{"owner_kind": "ReplicaSet", "owner_is_controller": "true"}))
		if v := one(t, all, "kube_pod_status_phase", merge(pod, map[string]string{"phase": "Running"})); v != 1 {
			t.Errorf("kube_pod_status_phase{phase=Running} = %v", v)
		}
		if v := one(t, all, "kube_pod_status_phase", merge(pod, map[string]string{"phase": "Pending"})); v != 0 {
			t.Errorf("kube_pod_status_phase{phase=Pending} = %v", v)
		}
		if v := one(t, all, "kube_pod_start_time", pod); v < float64(time.Now().Add(-time.Hour).Unix()) {
			t.Errorf("kube_pod_start_time = %v", v)
		}
		ctr := merge(pod, map[string]string{"container": "app"})
		for _, tc := range []struct {
			metric string
			labels map[string]string
			want   float64
		}{
			{"kube_pod_container_resource_requests", map[string]string{"resource": "cpu", "unit": "core", "node": "edge-spot"}, 0.25},
			{"kube_pod_container_resource_requests", map[string]string{"resource": "memory", "unit": "byte"}, 128 << 20},
			{"kube_pod_container_resource_limits", map[string]string{"resource": "memory", "unit": "byte"}, 256 << 20},
			{"kube_pod_container_status_running", nil, 1},
			{"kube_pod_container_status_waiting", nil, 0},
			{"kube_pod_container_status_terminated", nil, 0},
			{"kube_pod_container_status_restarts_total", nil, 0},
			{"container_memory_working_set_bytes", map[string]string{"node": "edge-spot"}, 64 << 20},
		} {
			lbl := merge(ctr, tc.labels)
			if tc.metric == "container_memory_working_set_bytes" {
				delete(lbl, "uid") // the kubelet's labels: namespace, pod, container
			}
			if v := one(t, all, tc.metric, lbl); v != tc.want {
				t.Errorf("%s%v = %v; want %v", tc.metric, tc.labels, v, tc.want)
			}
		}
		if len(find(all, "kube_pod_container_resource_limits", merge(ctr, map[string]string{"resource": "cpu"}))) != 0 {
			t.Error("a CPU limit series for a container without one")
		}
		if len(find(all, "container_cpu_usage_seconds_total", map[string]string{"namespace": "inv", "pod": info.labels["pod"], "container": "app"})) != 1 {
			t.Error("no container_cpu_usage_seconds_total for the pod")
		}
	}
	if v := one(t, all, "kube_namespace_status_phase", map[string]string{"namespace": "inv", "phase": "Active"}); v != 1 {
		t.Errorf("kube_namespace_status_phase{inv,Active} = %v", v)
	}
	one(t, all, "kube_persistentvolumeclaim_info", map[string]string{"namespace": "inv", "persistentvolumeclaim": "data", "storageclass": "standard"})
	if v := one(t, all, "kube_persistentvolumeclaim_resource_requests_storage_bytes", map[string]string{"namespace": "inv", "persistentvolumeclaim": "data"}); v != 5<<30 {
		t.Errorf("PVC storage request = %v; want 5Gi", v)
	}
	if len(find(all, "node_cpu_usage_seconds_total", node)) != 1 || len(find(all, "node_memory_working_set_bytes", node)) != 1 {
		t.Error("no node usage series for edge-spot")
	}
	if st := col.Stats(); st.UsageSource != "kubelet" || st.LastError != "" {
		t.Errorf("collector stats %+v; want usage from the kubelet, no error", st)
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
