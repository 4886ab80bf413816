package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// eventually polls cond every interval until it holds or the deadline
// passes, then fails the test with the last observation.
func eventually(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for {
		ok, seen := cond(ctx)
		if ok {
			return
		}
		if ctx.Err() == nil { // else seen is only "context deadline exceeded"
			last = seen
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not true within %s; last seen: %s", what, timeout, last)
		case <-tick.C:
		}
	}
}

func TestDeploymentRunsOnKwokNode(t *testing.T) {
	c := cluster.Start(t, cluster.Options{
		Nodes: []cluster.NodeSpec{{Name: "edge-a", CPU: "8", Memory: "32Gi", InstanceType: "m5.2xlarge", Region: "eu-west-1"}},
	})
	ctx := t.Context()

	node, err := c.Clientset.CoreV1().Nodes().Get(ctx, "edge-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Labels[cluster.LabelInstanceType]; got != "m5.2xlarge" {
		t.Errorf("node instance type label = %q, want m5.2xlarge", got)
	}
	if got := node.Labels[cluster.LabelRegion]; got != "eu-west-1" {
		t.Errorf("node region label = %q, want eu-west-1", got)
	}
	if got := node.Status.Allocatable.Cpu().String(); got != "8" {
		t.Errorf("node allocatable cpu = %s, want 8", got)
	}
	if got := node.Status.Allocatable.Memory().String(); got != "32Gi" {
		t.Errorf("node allocatable memory = %s, want 32Gi", got)
	}

	const ns = "shop"
	if err := c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"app": "web"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "web",
					Image: "registry.example/web:1.0", // never pulled: kwok runs no containers
					// All of the node's CPU: only fits because the
					// scheduler sees the allocatable the harness set.
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
						corev1.ResourceCPU: node.Status.Allocatable.Cpu().DeepCopy(),
					}},
				}}},
			},
		},
	}
	if err := c.Client.Create(ctx, dep); err != nil {
		t.Fatal(err)
	}

	eventually(t, "deployment shop/web Available", 2*time.Minute, func(ctx context.Context) (bool, string) {
		var d appsv1.Deployment
		if err := c.Client.Get(ctx, client.ObjectKeyFromObject(dep), &d); err != nil {
			return false, err.Error()
		}
		for _, cond := range d.Status.Conditions {
			if cond.Type == appsv1.DeploymentAvailable && cond.Status == corev1.ConditionTrue && d.Status.AvailableReplicas == 1 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("status %+v", d.Status)
	})

	var pods corev1.PodList
	if err := c.Client.List(ctx, &pods, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) != 1 {
		t.Fatalf("pods in %s = %d, want 1", ns, len(pods.Items))
	}
	pod := pods.Items[0]
	if pod.Status.Phase != corev1.PodRunning || pod.Spec.NodeName != "edge-a" {
		t.Fatalf("pod %s: phase %s on node %q, want Running on edge-a", pod.Name, pod.Status.Phase, pod.Spec.NodeName)
	}

	out, err := exec.CommandContext(ctx, "kubectl", "--kubeconfig", c.KubeconfigPath, "get", "pods", "-n", ns, "-o", "wide").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get pods: %v\n%s", err, out)
	}
	t.Logf("kubectl get pods -n %s -o wide:\n%s", ns, out)
	if !strings.Contains(string(out), pod.Name) || !strings.Contains(string(out), "Running") || !strings.Contains(string(out), "edge-a") {
		t.Errorf("kubectl output lacks pod %s Running on edge-a:\n%s", pod.Name, out)
	}
}

func TestClustersAreIsolated(t *testing.T) {
	// Launched concurrently: the harness must cope with that too.
	type result struct {
		c   *cluster.Cluster
		err error
	}
	results := make(chan result, 2)
	for _, name := range []string{"iso-a", "iso-b"} {
		go func() {
			c, err := cluster.Launch(t.Context(), cluster.Options{Name: name, Dir: t.TempDir()})
			results <- result{c, err}
		}()
	}
	var cs []*cluster.Cluster
	for range 2 {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
			continue
		}
		cs = append(cs, r.c)
		t.Cleanup(func() {
			if t.Failed() {
				t.Log(r.c.LogTails(30))
			}
			if err := r.c.Stop(); err != nil {
				t.Error(err)
			}
		})
	}
	if t.Failed() {
		t.FailNow()
	}
	a, b := cs[0], cs[1]
	if a.Server == b.Server {
		t.Fatalf("both clusters serve on %s", a.Server)
	}
	ctx := t.Context()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "only-in-a", Namespace: "default"}, Data: map[string]string{"k": "v"}}
	if err := a.Client.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	if err := a.Client.Get(ctx, client.ObjectKeyFromObject(cm), &corev1.ConfigMap{}); err != nil {
		t.Fatalf("configmap missing in the cluster it was created in: %v", err)
	}
	err := b.Client.Get(ctx, client.ObjectKeyFromObject(cm), &corev1.ConfigMap{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("configmap created in %s: get from %s = %v, want NotFound", a.Name, b.Name, err)
	}
	// Distinct credentials too: a's token means nothing to b.
	if _, err := b.Clientset.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	crossed := *b.RESTConfig
	crossed.BearerToken = a.RESTConfig.BearerToken
	if _, err := newClientset(t, &crossed).CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); !apierrors.IsUnauthorized(err) {
		t.Fatalf("%s's token against %s: err = %v, want Unauthorized", a.Name, b.Name, err)
	}
}

func TestTeardownLeavesNothing(t *testing.T) {
	c, err := cluster.Launch(t.Context(), cluster.Options{Name: "teardown", NodeCount: 1})
	if err != nil {
		t.Fatal(err)
	}
	comps := c.Components()
	dir := c.Dir
	if len(comps) != 5 {
		t.Errorf("components = %d (%v), want etcd, apiserver, controller-manager, scheduler, kwok", len(comps), comps)
	}
	var ports []int
	for _, comp := range comps {
		ports = append(ports, comp.Ports...)
		if err := syscall.Kill(comp.PID, 0); err != nil {
			t.Errorf("%s pid %d not running before Stop: %v", comp.Name, comp.PID, err)
		}
	}
	if len(ports) == 0 {
		t.Fatal("no ports recorded")
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil { // idempotent
		t.Fatal(err)
	}
	for _, comp := range comps {
		// Stop reaped the leader; no live process may remain in its group.
		if live := liveGroupMembers(t, comp.PID); len(live) > 0 {
			t.Errorf("%s process group %d still has live processes %v after Stop", comp.Name, comp.PID, live)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", comp.PID)); err == nil {
			t.Errorf("%s pid %d still in /proc after Stop", comp.Name, comp.PID)
		}
	}
	for _, p := range ports {
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d still in use after Stop: %v", p, err)
			continue
		}
		l.Close()
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("cluster dir %s still exists after Stop (stat: %v)", dir, err)
	}
}

func TestMissingBinariesSayMakeE2EBins(t *testing.T) {
	_, err := cluster.Launch(t.Context(), cluster.Options{BinDir: t.TempDir(), NodeCount: 1})
	if !errors.Is(err, cluster.ErrBinariesMissing) {
		t.Fatalf("Launch with empty bin dir: err = %v, want ErrBinariesMissing", err)
	}
	if !strings.Contains(err.Error(), "make e2e-bins") || !strings.Contains(err.Error(), "kube-apiserver") {
		t.Errorf("error does not name the missing binary and the fix: %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts cluster.Options
		ok   bool
	}{
		{"zero", cluster.Options{}, true},
		{"nodes", cluster.Options{Nodes: []cluster.NodeSpec{{Name: "a", CPU: "2", Memory: "4Gi"}}, NodeCount: 2}, true},
		{"negative count", cluster.Options{NodeCount: -1}, false},
		{"bad cpu", cluster.Options{Nodes: []cluster.NodeSpec{{CPU: "lots"}}}, false},
		{"duplicate", cluster.Options{Nodes: []cluster.NodeSpec{{Name: "a"}, {Name: "a"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.opts.Validate(); (err == nil) != tc.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func newClientset(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// liveGroupMembers lists the pids of non-zombie processes in group pgid.
func liveGroupMembers(t *testing.T, pgid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		i := strings.LastIndexByte(string(st), ')')
		f := strings.Fields(string(st[i+1:])) // state ppid pgrp ...
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}
