// Package measure records what the edge agent costs on a real cluster: the
// resident memory of a real tether-agent process, idle and with services
// cached, next to a real hub. Benchmarks only (they run with -bench, not in
// CI); results and the commands that produced them are in
// docs/BENCHMARKS.md (section Agent):
//
//	go test -run '^$' -bench AgentRSS -benchtime 1x -timeout 30m -v ./e2e/measure/
package measure

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// serviceCount is how many podinfo releases the loaded measurement caches.
const serviceCount = 20

// settle is how long RSS is sampled, once a second, after each phase.
const settle = 30 * time.Second

// BenchmarkAgentRSS runs a hub and one agent (binaries built without -race,
// as shipped) against a harness cluster with two kwok nodes, and reports
// the agent's VmRSS: enrolled and connected with no services, then with
// serviceCount podinfo releases (one MultiClusterService, one namespace
// each) all Deployed. Each phase reports the last sample and the peak of a
// settle window.
func BenchmarkAgentRSS(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		agentRSS(b)
		b.StartTimer()
	}
}

func agentRSS(b *testing.B) {
	bins, err := e2etest.Build(false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bins.Remove)
	repoURL := e2etest.HelmRepo(b, e2etest.SharedChart(b, "podinfo"))

	hub := bins.StartHub(b)
	kube := cluster.Start(b, cluster.Options{Name: "measure", NodeCount: 2})
	const name = "edge-rss"
	agent := bins.Start(b, "agent", nil, "tether-agent", "run", "--data-dir", b.TempDir(),
		"--hub", hub.AgentAddr, "--token", hub.Token(b, name), "--kubeconfig", kube.KubeconfigPath)
	bins.MustRun(b, hub.Env, "tether", "label", "cluster", name, "tier=edge")
	e2etest.Eventually(b, "agent connected", 2*time.Minute, func() (bool, string) {
		var cl struct{ State string }
		bins.JSON(b, hub.Env, &cl, "tether", "get", "cluster", name, "-o", "json")
		return cl.State == "Connected", cl.State
	})

	last, peak := sampleRSS(b, agent.PID(), settle)
	b.ReportMetric(mib(last), "MiB-idle")
	b.ReportMetric(mib(peak), "MiB-idle-peak")
	logStatus(b, "idle", agent.PID())
	hubIdle, _ := cluster.VmRSS(hub.Proc.PID())

	var doc strings.Builder
	fmt.Fprintf(&doc, services, repoURL)
	for i := 1; i <= serviceCount; i++ {
		fmt.Fprintf(&doc, service, i)
	}
	if out, errOut, code := bins.RunStdin(b, hub.Env, []byte(doc.String()), "tether", "apply", "-f", "-"); code != 0 {
		b.Fatalf("tether apply: exit %d: %s%s", code, out, errOut)
	}
	start := time.Now()
	loadPeak := int64(0)
	e2etest.Eventually(b, fmt.Sprintf("%d services Deployed", serviceCount), 10*time.Minute, func() (bool, string) {
		if n, err := cluster.VmRSS(agent.PID()); err == nil {
			loadPeak = max(loadPeak, n)
		}
		var rows []struct{ Cluster, Namespace, Name, State, Message string }
		bins.JSON(b, hub.Env, &rows, "tether", "get", "services", "-o", "json")
		deployed := 0
		for _, r := range rows {
			if r.Cluster == name && r.State == "Deployed" {
				deployed++
			}
		}
		return deployed == serviceCount, fmt.Sprintf("%d/%d Deployed: %+v", deployed, serviceCount, rows)
	})
	b.ReportMetric(time.Since(start).Seconds(), "s-to-all-Deployed")
	b.ReportMetric(mib(loadPeak), "MiB-applying-peak")

	last, peak = sampleRSS(b, agent.PID(), settle)
	b.ReportMetric(mib(last), "MiB-20svc")
	b.ReportMetric(mib(peak), "MiB-20svc-peak")
	logStatus(b, fmt.Sprintf("%d services", serviceCount), agent.PID())
	if n, err := cluster.VmRSS(hub.Proc.PID()); err == nil {
		b.Logf("hub VmRSS: %.1f MiB idle, %.1f MiB with %d services", mib(hubIdle), mib(n), serviceCount)
	}
}

const services = `
apiVersion: tether.dev/v1alpha1
kind: HelmRepository
metadata: {name: testrepo, namespace: apps}
spec: {url: %q}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: podinfo-6.14.1, namespace: apps}
spec:
  helm:
    chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: testrepo}}
---
apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: rss, namespace: apps}
spec:
  clusterSelector: {matchLabels: {tier: edge}}
  serviceSpec:
    services:
`

const service = `      - template: podinfo-6.14.1
        name: podinfo-%02[1]d
        namespace: svc-%02[1]d
        values: |
          replicaCount: 1
`

// sampleRSS samples the process's VmRSS once a second for d and returns
// the last sample and the largest.
func sampleRSS(tb testing.TB, pid int, d time.Duration) (last, peak int64) {
	tb.Helper()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.After(d)
	for {
		n, err := cluster.VmRSS(pid)
		if err != nil {
			tb.Fatal(err)
		}
		last, peak = n, max(peak, n)
		select {
		case <-end:
			return last, peak
		case <-tick.C:
		}
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// logStatus logs how the resident memory divides: RssAnon is the Go heap,
// stacks and runtime; RssFile the pages of the binary (and other files)
// that were touched.
func logStatus(tb testing.TB, phase string, pid int) {
	tb.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	var parts []string
	for line := range strings.Lines(string(b)) {
		for _, k := range []string{"VmRSS:", "RssAnon:", "RssFile:", "RssShmem:", "VmHWM:", "Threads:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				parts = append(parts, k+" "+strings.TrimSpace(v))
			}
		}
	}
	tb.Logf("agent %s: %s", phase, strings.Join(parts, ", "))
}
