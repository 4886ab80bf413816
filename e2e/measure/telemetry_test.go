package measure

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// BenchmarkAgentTelemetry runs a hub and a real agent against a harness
// cluster of two kwok nodes with simulated resource metrics and 100 pods
// (about 2,000 inventory and usage series), with metric collection off,
// at the default 15 s, and every second (to make its cost visible), and
// reports for each the agent's VmRSS (median, peak) and CPU (ms per
// second of wall time, utime+stime of the agent process) over a window.
//
//	go test -run '^$' -bench AgentTelemetry -benchtime 1x -timeout 30m -v ./e2e/measure/
func BenchmarkAgentTelemetry(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		agentTelemetry(b)
		b.StartTimer()
	}
}

func agentTelemetry(b *testing.B) {
	bins, err := e2etest.Build(false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bins.Remove)
	hub := bins.StartHub(b)
	kube := cluster.Start(b, cluster.Options{Name: "measure-tel", NodeCount: 2, ResourceMetrics: true})
	makePods(b, kube, 100)
	for _, mode := range []struct{ name, interval string }{{"off", "0"}, {"15s", "15s"}, {"1s", "1s"}} {
		name := "edge-tel-" + mode.name
		_, run := agentCgroup(b, bins, "tel-"+mode.name)
		dir := b.TempDir()
		agent := bins.Start(b, "agent-"+mode.name, nil, run, "run", "--data-dir", dir,
			"--hub", hub.AgentAddr, "--token", hub.Token(b, name), "--kubeconfig", kube.KubeconfigPath,
			"--telemetry-interval", mode.interval)
		waitConnected(b, bins, hub, name)
		cpu0, t0 := cpuTicks(b, agent.PID()), time.Now()
		w := sampleFor(agent.PID(), nil, 2*settle)
		cpu := float64(cpuTicks(b, agent.PID())-cpu0) * 10 / time.Since(t0).Seconds() // 100 ticks/s → ms
		_, median, peak := w.stats(func(s sample) int64 { return s.tree })
		b.ReportMetric(mib(median), "MiB-telemetry-"+mode.name)
		b.ReportMetric(mib(peak), "MiB-telemetry-"+mode.name+"-peak")
		b.ReportMetric(cpu, "cpu-ms/s-telemetry-"+mode.name)
		b.Logf("telemetry %s: VmRSS median %.1f MiB, peak %.1f MiB; CPU %.1f ms/s", mode.name, mib(median), mib(peak), cpu)
		logStatus(b, "telemetry "+mode.name, agent.PID())
		// The collector ran in the real binary: its counters, and the
		// batches waiting in the outbox.
		var st struct {
			Telemetry *struct {
				Collections, Failures uint64
				LastSeries            int
				LastError             string
				UsageSource           string
			}
			Outbox struct {
				Kinds map[string]struct{ Pending, Bytes, Dropped uint64 }
			}
		}
		bins.JSON(b, nil, &st, "tether-agent", "status", "--data-dir", dir, "-o", "json")
		b.Logf("telemetry %s: agent status telemetry %+v, metrics outbox %+v", mode.name, st.Telemetry, st.Outbox.Kinds["metrics"])
		if mode.interval != "0" && (st.Telemetry == nil || st.Telemetry.Collections == 0 || st.Telemetry.LastError != "") {
			b.Fatalf("telemetry %s: the agent did not collect: %+v", mode.name, st.Telemetry)
		}
		agent.Stop(b)
	}
}

// makePods runs n pods of one container on the cluster's kwok nodes.
func makePods(b *testing.B, kube *cluster.Cluster, n int32) {
	ctx := b.Context()
	labels := map[string]string{"app": "load", "app.kubernetes.io/instance": "load"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "load", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(n), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "example/load:1", Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("16Mi")},
				}}}},
			},
		},
	}
	if _, err := kube.Clientset.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	e2etest.Eventually(b, fmt.Sprintf("%d pods running", n), 3*time.Minute, func() (bool, string) {
		d, err := kube.Clientset.AppsV1().Deployments("default").Get(ctx, "load", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return d.Status.ReadyReplicas == n, fmt.Sprintf("%d ready", d.Status.ReadyReplicas)
	})
}

// cpuTicks is the utime+stime of pid, in clock ticks (1/100 s).
func cpuTicks(b *testing.B, pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th of the line.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ut + st
}
