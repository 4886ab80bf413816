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
	"path/filepath"
	"strings"
	"syscall"
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
// the agent's memory: the sum of VmRSS over the agent and its children
// (its Helm worker, while one runs) and, where a memory cgroup can be
// made, what the kernel charges to the agent's cgroup. Phases: enrolled
// and connected with no services; applying serviceCount podinfo releases
// (one MultiClusterService, one namespace each); steady once all are
// Deployed and the worker has stopped; the same under a limitMiB cgroup
// limit; and a second agent that runs the link only (--no-cluster). Each
// phase reports the median and the peak of once-a-second samples.
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
	cg, run := agentCgroup(b, bins, "cluster")
	agent := bins.Start(b, "agent", nil, run, "run", "--data-dir", b.TempDir(),
		"--hub", hub.AgentAddr, "--token", hub.Token(b, name), "--kubeconfig", kube.KubeconfigPath)
	bins.MustRun(b, hub.Env, "tether", "label", "cluster", name, "tier=edge")
	waitConnected(b, bins, hub, name)

	idle := sampleFor(agent.PID(), cg, settle)
	report(b, "idle", idle, cg)
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
	var applying window
	e2etest.Eventually(b, fmt.Sprintf("%d services Deployed", serviceCount), 10*time.Minute, func() (bool, string) {
		applying = append(applying, read(agent.PID(), cg))
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
	_, _, peak := applying.stats(func(s sample) int64 { return s.tree })
	b.ReportMetric(mib(peak), "MiB-applying-peak")

	// Steady: the worker stops once it has been idle (20 s by default);
	// from then on only the agent runs.
	stopWait := time.Now()
	e2etest.Eventually(b, "the helm worker to stop once idle", 3*time.Minute, func() (bool, string) {
		n := len(tree(agent.PID()))
		return n == 1, fmt.Sprintf("%d processes", n)
	})
	b.Logf("helm worker stopped %.1f s after all were Deployed", time.Since(stopWait).Seconds()+0)
	steady := sampleFor(agent.PID(), cg, 2*settle)
	report(b, "20svc", steady, cg)
	b.ReportMetric(100*steady.withWorker(), "pct-samples-with-worker")
	if cg != nil {
		b.ReportMetric(mib(cg.peak()), "MiB-cgroup-peak")
		b.Logf("agent cgroup after %d services: %s", serviceCount, cg.stat("rss", "cache", "mapped_file", "total_rss", "total_cache", "anon", "file"))
	}
	logStatus(b, fmt.Sprintf("%d services", serviceCount), agent.PID())
	if cg != nil {
		underLimit(b, bins, hub, name, agent, cg)
	}
	if n, err := cluster.VmRSS(hub.Proc.PID()); err == nil {
		b.Logf("hub VmRSS: %.1f MiB idle, %.1f MiB with %d services", mib(hubIdle), mib(n), serviceCount)
	}

	logLines(b, agent.Log, "helm worker", "apply failed", "release applied")

	// Link only: another agent that manages no cluster. The first one
	// stops first, so that the binary's pages it maps can be dropped and
	// the new agent is charged for those it touches.
	agent.Stop(b)
	const linkName = "edge-rss-link"
	lcg, lrun := agentCgroup(b, bins, "link")
	link := bins.Start(b, "agent-link", nil, lrun, "run", "--data-dir", b.TempDir(),
		"--hub", hub.AgentAddr, "--token", hub.Token(b, linkName), "--no-cluster")
	waitConnected(b, bins, hub, linkName)
	report(b, "linkonly", sampleFor(link.PID(), lcg, settle), lcg)
	logStatus(b, "link only", link.PID())
}

// limitMiB is the target for a steady agent with 20 services; the
// benchmark puts its cgroup under that limit to show that what the kernel
// charges beyond it (page cache of the binaries and the bbolt file) is
// reclaimable: the agent and its services keep running.
const limitMiB = 48

// underLimit caps the agent's cgroup at limitMiB for a settle window and
// reports its charge, OOM kills and whether every service stays Deployed
// and the agent connected. The cap is removed afterwards.
func underLimit(b *testing.B, bins *e2etest.Bins, hub *e2etest.Hub, name string, agent *e2etest.Proc, cg *memCgroup) {
	if err := cg.limit(limitMiB << 20); err != nil {
		b.Logf("cannot set a %d MiB limit on the agent's cgroup: %v", limitMiB, err)
		return
	}
	defer cg.limit(0)
	w := sampleFor(agent.PID(), cg, settle)
	report(b, "20svc-limited", w, cg)
	var rows []struct{ Cluster, State string }
	bins.JSON(b, hub.Env, &rows, "tether", "get", "services", "-o", "json")
	deployed := 0
	for _, r := range rows {
		if r.Cluster == name && r.State == "Deployed" {
			deployed++
		}
	}
	var cl struct{ State string }
	bins.JSON(b, hub.Env, &cl, "tether", "get", "cluster", name, "-o", "json")
	b.Logf("under a %d MiB cgroup limit for %s: %d OOM kills, agent alive: %v, %s, %d/%d services Deployed",
		limitMiB, settle, cg.ooms(), syscall.Kill(agent.PID(), 0) == nil, cl.State, deployed, serviceCount)
	b.ReportMetric(float64(cg.ooms()), "oom-kills-under-limit")
}

// logLines logs the lines of the agent's log that contain one of keys.
func logLines(b *testing.B, path string, keys ...string) {
	data, err := os.ReadFile(path)
	if err != nil {
		b.Logf("agent log: %v", err)
		return
	}
	n := 0
	for line := range strings.Lines(string(data)) {
		for _, k := range keys {
			if strings.Contains(line, k) {
				n++
				if n <= 60 {
					b.Logf("agent log: %s", strings.TrimSpace(line))
				}
				break
			}
		}
	}
}

func waitConnected(b *testing.B, bins *e2etest.Bins, hub *e2etest.Hub, name string) {
	e2etest.Eventually(b, name+" connected", 2*time.Minute, func() (bool, string) {
		var cl struct{ State string }
		bins.JSON(b, hub.Env, &cl, "tether", "get", "cluster", name, "-o", "json")
		return cl.State == "Connected", cl.State
	})
}

// agentCgroup makes a memory cgroup for one agent and returns the name of
// the wrapper that starts tether-agent in it, with the binaries' page
// cache dropped so that the agent is charged for the pages it touches.
// Where the cgroup hierarchy is not writable the agent runs as is and
// only the VmRSS sums are reported (said in the log).
func agentCgroup(b *testing.B, bins *e2etest.Bins, suffix string) (*memCgroup, string) {
	dropPageCache(b, filepath.Join(bins.Dir, "tether-agent"), filepath.Join(bins.Dir, "tether-agent-helm"))
	cg, err := newMemCgroup(b, suffix)
	if err != nil {
		b.Logf("no memory cgroup for the %s agent (%v): reporting VmRSS sums only", suffix, err)
		return nil, "tether-agent"
	}
	return cg, cg.wrapper(b, bins.Dir, "tether-agent")
}

// report records a window: the VmRSS sum over the agent and its children
// (median and peak) and the cgroup's charge (median).
func report(b *testing.B, phase string, w window, cg *memCgroup) {
	last, median, peak := w.stats(func(s sample) int64 { return s.tree })
	b.ReportMetric(mib(median), "MiB-"+phase)
	b.ReportMetric(mib(peak), "MiB-"+phase+"-peak")
	msg := fmt.Sprintf("%s: VmRSS sum over the agent and its children: last %.1f, median %.1f, peak %.1f MiB over %d samples (worker running in %.0f%%)",
		phase, mib(last), mib(median), mib(peak), len(w), 100*w.withWorker())
	if cg != nil {
		cl, cm, cp := w.stats(func(s sample) int64 { return s.cg })
		b.ReportMetric(mib(cm), "MiB-"+phase+"-cgroup")
		msg += fmt.Sprintf("; cgroup charge: last %.1f, median %.1f, peak %.1f MiB", mib(cl), mib(cm), mib(cp))
	}
	b.Log(msg)
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
