// Package measure records what the edge agent costs on a real cluster: the
// resident memory of a real tether-agent process, idle and with services
// cached, next to a real hub. Benchmarks only (they run with -bench, not in
// CI); results and the commands that produced them are in
// docs/agent-numbers.md:
//
//	go test -run '^$' -bench AgentRSS -benchtime 1x -timeout 30m -v ./e2e/measure/
package measure

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/repo"

	"github.com/tetherfleet/tether/e2e/cluster"
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
	binDir := buildBins(b)
	root := moduleRoot(b)
	repoURL := helmRepo(b, filepath.Join(root, "..", "shared", "testdata", "charts", "podinfo"))

	hub := startHub(b, binDir)
	kube := cluster.Start(b, cluster.Options{Name: "measure", NodeCount: 2})
	const name = "edge-rss"
	token := strings.TrimSpace(hub.mustRun(b, "tether", "token", "create", "--cluster", name, "--ttl", "10m"))
	agent := startProc(b, binDir, "agent", nil, "tether-agent", "run", "--data-dir", b.TempDir(),
		"--hub", hub.agentAddr, "--token", token, "--kubeconfig", kube.KubeconfigPath)
	hub.mustRun(b, "tether", "label", "cluster", name, "tier=edge")
	eventually(b, "agent connected", 2*time.Minute, func() (bool, string) {
		var cl struct{ State string }
		hub.json(b, &cl, "tether", "get", "cluster", name, "-o", "json")
		return cl.State == "Connected", cl.State
	})

	last, peak := sampleRSS(b, agent.pid(), settle)
	b.ReportMetric(mib(last), "MiB-idle")
	b.ReportMetric(mib(peak), "MiB-idle-peak")
	logStatus(b, "idle", agent.pid())
	hubIdle, _ := vmRSS(hub.proc.pid())

	var doc strings.Builder
	fmt.Fprintf(&doc, services, repoURL)
	for i := 1; i <= serviceCount; i++ {
		fmt.Fprintf(&doc, service, i)
	}
	if out, errOut, code := hub.run(b, []byte(doc.String()), "tether", "apply", "-f", "-"); code != 0 {
		b.Fatalf("tether apply: exit %d: %s%s", code, out, errOut)
	}
	start := time.Now()
	loadPeak := int64(0)
	eventually(b, fmt.Sprintf("%d services Deployed", serviceCount), 10*time.Minute, func() (bool, string) {
		if n, err := vmRSS(agent.pid()); err == nil {
			loadPeak = max(loadPeak, n)
		}
		var rows []struct{ Cluster, Namespace, Name, State, Message string }
		hub.json(b, &rows, "tether", "get", "services", "-o", "json")
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

	last, peak = sampleRSS(b, agent.pid(), settle)
	b.ReportMetric(mib(last), "MiB-20svc")
	b.ReportMetric(mib(peak), "MiB-20svc-peak")
	logStatus(b, fmt.Sprintf("%d services", serviceCount), agent.pid())
	if n, err := vmRSS(hub.proc.pid()); err == nil {
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
		n, err := vmRSS(pid)
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

// vmRSS reads VmRSS from /proc/PID/status, in bytes.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(rest) // "123456 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("unexpected VmRSS line %q", s.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse %q: %w", s.Text(), err)
		}
		return kb * 1024, nil
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// buildBins builds tether and tether-agent as shipped: no -race, whose
// runtime would multiply the memory measured. (e2etest.Build builds with
// -race and its helpers take *testing.T, hence this file's own.)
func buildBins(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, pkg := range map[string]string{
		"tether":       "github.com/tetherfleet/tether/hub/cmd/tether",
		"tether-agent": "github.com/tetherfleet/tether/agent/cmd/tether-agent",
	} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg).CombinedOutput()
		if err != nil {
			tb.Fatalf("build %s: %v\n%s", name, err, out)
		}
	}
	return dir
}

func moduleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// helmRepo serves the packaged charts as a Helm repository on loopback.
func helmRepo(tb testing.TB, chartDirs ...string) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, d := range chartDirs {
		ch, err := loader.LoadDir(d)
		if err != nil {
			tb.Fatalf("load chart %s: %v", d, err)
		}
		if _, err := chartutil.Save(ch, dir); err != nil {
			tb.Fatalf("package chart %s: %v", d, err)
		}
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	tb.Cleanup(srv.Close)
	idx, err := repo.IndexDirectory(dir, srv.URL)
	if err != nil {
		tb.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		tb.Fatal(err)
	}
	return srv.URL
}

// proc is a background process whose log is printed if the benchmark fails.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func startProc(tb testing.TB, binDir, name string, env []string, args ...string) *proc {
	tb.Helper()
	logPath := filepath.Join(tb.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, args[0]), args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
			tb.Errorf("%s did not exit within 30s of SIGTERM", name)
		}
		if tb.Failed() {
			out, _ := os.ReadFile(logPath)
			if len(out) > 20000 {
				out = out[len(out)-20000:]
			}
			tb.Logf("--- log of %s (tail) ---\n%s", name, out)
		}
	})
	return p
}

type hub struct {
	proc      *proc
	binDir    string
	agentAddr string
	env       []string
}

func startHub(tb testing.TB, binDir string) *hub {
	tb.Helper()
	dir := tb.TempDir()
	h := &hub{binDir: binDir, agentAddr: freeAddr(tb), env: []string{"TETHER_CONFIG=" + filepath.Join(dir, "admin.yaml")}}
	h.proc = startProc(tb, binDir, "hub", nil, "tether", "serve", "--data-dir", dir,
		"--agent-addr", h.agentAddr, "--api-addr", freeAddr(tb))
	eventually(tb, "hub console API", time.Minute, func() (bool, string) {
		out, errOut, code := h.run(tb, nil, "tether", "version")
		return code == 0 && strings.Contains(out, "Hub:") && !strings.Contains(out, "unreachable"), out + errOut
	})
	return h
}

func (h *hub) run(tb testing.TB, stdin []byte, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.binDir, args[0]), args[1:]...)
	cmd.Env = append(os.Environ(), h.env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		tb.Fatalf("%v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func (h *hub) mustRun(tb testing.TB, args ...string) string {
	tb.Helper()
	out, errOut, code := h.run(tb, nil, args...)
	if code != 0 {
		tb.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (h *hub) json(tb testing.TB, v any, args ...string) {
	tb.Helper()
	out := h.mustRun(tb, args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		tb.Fatalf("%s: decode output: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, state := cond()
		if ok {
			return
		}
		if state != "" {
			last = state
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s; last state:\n%s", timeout, what, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
