// Package e2etest runs the real tether and tether-agent binaries for the
// end-to-end scenarios: it builds them once per test binary, starts them as
// background processes whose logs are printed when a test fails, runs CLI
// commands, and waits on conditions with deadlines.
package e2etest

import (
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
	"strings"
	"syscall"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/repo"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// Bins holds the built binaries.
type Bins struct {
	Dir string
}

// Build compiles tether, tether-agent and tether-agent-helm into a new temporary directory,
// with the race detector when race is set (tests) and without it when
// measuring (its runtime multiplies memory); Remove the directory after
// use.
func Build(race bool) (*Bins, error) {
	dir, err := os.MkdirTemp("", "tether-e2e-bin-")
	if err != nil {
		return nil, err
	}
	for name, pkg := range map[string]string{
		"tether":       "github.com/tetherfleet/tether/hub/cmd/tether",
		"tether-agent": "github.com/tetherfleet/tether/agent/cmd/tether-agent",
		// The agent finds its Helm worker next to itself.
		"tether-agent-helm": "github.com/tetherfleet/tether/agent/cmd/tether-agent-helm",
	} {
		args := []string{"build", "-o", filepath.Join(dir, name), pkg}
		if race {
			args = append(args[:1], append([]string{"-race"}, args[1:]...)...)
		}
		out, err := exec.Command("go", args...).CombinedOutput()
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("build %s: %v\n%s", name, err, out)
		}
	}
	return &Bins{Dir: dir}, nil
}

// Main builds the binaries into *bins, runs the tests and removes the
// binaries: the whole TestMain of a scenario package.
func Main(m *testing.M, bins **Bins) {
	b, err := Build(true)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bins = b
	code := m.Run()
	b.Remove()
	os.Exit(code)
}

// Remove deletes the binaries.
func (b *Bins) Remove() { os.RemoveAll(b.Dir) }

// Proc is a background process whose output goes to a log file that is
// printed when the test fails.
type Proc struct {
	cmd  *exec.Cmd
	Log  string
	done chan struct{}
}

// Start runs a binary (args[0]: "tether" or "tether-agent") in the
// background until Stop or the end of the test.
func (b *Bins) Start(t testing.TB, name string, env []string, args ...string) *Proc {
	t.Helper()
	return StartProc(t, name, filepath.Join(b.Dir, args[0]), env, args[1:]...)
}

// StartProc runs the binary at path in the background until Stop or the
// end of the test, its output in a log printed when the test fails.
func StartProc(t testing.TB, name, path string, env []string, args ...string) *Proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Proc{cmd: cmd, Log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			if len(b) > 20000 {
				b = b[len(b)-20000:]
			}
			t.Logf("--- log of %s (tail) ---\n%s", name, b)
		}
	})
	return p
}

// PID is the process ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM and waits for the process to exit.
func (p *Proc) Stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("%s did not exit within 30s of SIGTERM", p.cmd.Path)
	}
}

// Run runs a command to completion.
func (b *Bins) Run(t testing.TB, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return b.RunStdin(t, env, nil, args...)
}

// RunStdin runs a command with stdin.
func (b *Bins) RunStdin(t testing.TB, env []string, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(b.Dir, args[0]), args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("%v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// MustRun runs a command that must succeed and returns its stdout.
func (b *Bins) MustRun(t testing.TB, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := b.Run(t, env, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// JSON runs a command that must succeed and decodes its stdout into v.
func (b *Bins) JSON(t testing.TB, env []string, v any, args ...string) {
	t.Helper()
	out := b.MustRun(t, env, args...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("%s: decode output: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// FreeAddr returns a loopback address with a free port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Eventually polls cond until it holds or the deadline passes; cond
// returns whether it holds and a description of the current state for the
// failure message.
func Eventually(t testing.TB, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
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
			t.Fatalf("timed out after %s waiting for %s; last state:\n%s", timeout, what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Hub is a running hub process and the environment to reach it.
type Hub struct {
	Proc      *Proc
	Dir       string
	AgentAddr string
	APIAddr   string
	Env       []string
	args      []string
	bins      *Bins
}

// StartHub starts `tether serve` on free loopback ports and waits for its
// console API.
func (b *Bins) StartHub(t testing.TB, extra ...string) *Hub {
	t.Helper()
	h := &Hub{Dir: t.TempDir(), AgentAddr: FreeAddr(t), APIAddr: FreeAddr(t), bins: b}
	h.args = append([]string{"tether", "serve", "--data-dir", h.Dir, "--agent-addr", h.AgentAddr, "--api-addr", h.APIAddr}, extra...)
	h.Env = []string{"TETHER_CONFIG=" + filepath.Join(h.Dir, "admin.yaml")}
	h.Restart(t)
	return h
}

// Restart starts the hub again with the same data dir and ports (after
// Proc.Stop).
func (h *Hub) Restart(t testing.TB) {
	t.Helper()
	h.Proc = h.bins.Start(t, "hub", nil, h.args...)
	Eventually(t, "hub console API", time.Minute, func() (bool, string) {
		out, errOut, code := h.bins.Run(t, h.Env, "tether", "version")
		return code == 0 && strings.Contains(out, "Hub:") && !strings.Contains(out, "unreachable"), out + errOut
	})
}

// Token creates a join token for cluster.
func (h *Hub) Token(t testing.TB, cluster string) string {
	t.Helper()
	return strings.TrimSpace(h.bins.MustRun(t, h.Env, "tether", "token", "create", "--cluster", cluster, "--ttl", "10m"))
}

// RepoRoot finds the module root, where ../shared lies beside it.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// SharedChart is the directory of an upstream test chart in
// ../shared/testdata/charts (beside the checkout).
func SharedChart(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(RepoRoot(t), "..", "shared", "testdata", "charts", name)
	if _, err := os.Stat(filepath.Join(dir, "Chart.yaml")); err != nil {
		t.Fatalf("test chart %s missing: want it at %s (shared/testdata beside the checkout): %v", name, dir, err)
	}
	return dir
}

// PackageChartTo writes a chart directory's .tgz into outDir, as `helm
// package` does, and returns its path.
func PackageChartTo(t testing.TB, chartDir, outDir string) string {
	t.Helper()
	ch, err := loader.LoadDir(chartDir)
	if err != nil {
		t.Fatalf("load chart %s: %v", chartDir, err)
	}
	path, err := chartutil.Save(ch, outDir)
	if err != nil {
		t.Fatalf("package chart %s: %v", chartDir, err)
	}
	return path
}

// PackageChart returns a chart directory's .tgz bytes.
func PackageChart(t testing.TB, chartDir string) []byte {
	t.Helper()
	b, err := os.ReadFile(PackageChartTo(t, chartDir, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// HelmRepo packages chart directories into a real Helm repository
// (index.yaml + archives) served on loopback until the test ends, and
// returns its URL.
func HelmRepo(t testing.TB, chartDirs ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range chartDirs {
		PackageChartTo(t, d, dir)
	}
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	idx, err := repo.IndexDirectory(dir, srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if err := idx.WriteFile(filepath.Join(dir, "index.yaml"), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL
}

// Service is one row of `tether get services -o json`.
type Service struct {
	Cluster, Namespace, Name, State, Message string
	Revision, DesiredRevision                uint64
}

// Services returns the hub's services keyed "cluster/namespace/name".
func (h *Hub) Services(t testing.TB) map[string]Service {
	t.Helper()
	var rows []Service
	h.bins.JSON(t, h.Env, &rows, "tether", "get", "services", "-o", "json")
	m := make(map[string]Service, len(rows))
	for _, r := range rows {
		m[r.Cluster+"/"+r.Namespace+"/"+r.Name] = r
	}
	return m
}

// WaitServices waits until every "cluster/namespace/name" key has the
// wanted state.
func (h *Hub) WaitServices(t testing.TB, timeout time.Duration, want map[string]string) {
	t.Helper()
	Eventually(t, fmt.Sprintf("services %v", want), timeout, func() (bool, string) {
		got := h.Services(t)
		for k, st := range want {
			if got[k].State != st {
				return false, fmt.Sprintf("%+v", got)
			}
		}
		return true, ""
	})
}

// HelmCLI returns the helm binary `make e2e-bins` builds into the harness
// binaries (the Helm version the agent links), for benchmarks that compare
// with it.
func HelmCLI(tb testing.TB) string {
	tb.Helper()
	binDir, err := cluster.BinDir("")
	if err != nil {
		tb.Fatal(err)
	}
	helm := filepath.Join(binDir, "helm")
	if _, err := os.Stat(helm); err != nil {
		tb.Fatalf("helm CLI: %v (run make e2e-bins)", err)
	}
	return helm
}
