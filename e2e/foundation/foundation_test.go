// Package foundation is the end-to-end scenario of a connected fleet: the
// real `tether` and `tether-agent` binaries, a hub and two agents on
// loopback, enrolment, a hub outage and reconnection without tokens, and
// revocation.
package foundation

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tether-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for name, pkg := range map[string]string{
		"tether":       "github.com/tetherfleet/tether/hub/cmd/tether",
		"tether-agent": "github.com/tetherfleet/tether/agent/cmd/tether-agent",
	} {
		out, err := exec.Command("go", "build", "-race", "-o", filepath.Join(dir, name), pkg).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a background process whose output goes to a log file that is
// printed when the test fails.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, args[0]), args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- log of %s ---\n%s", name, b)
		}
	})
	return p
}

// stop sends SIGTERM and waits for the process to exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("%s did not exit within 20s of SIGTERM", p.cmd.Path)
	}
}

// run runs a CLI command to completion.
func run(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, args[0]), args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("%v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func mustRun(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, errOut, code := run(t, env, args...)
	if code != 0 {
		t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
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
		time.Sleep(100 * time.Millisecond)
	}
}

type cluster struct {
	Name         string `json:"name"`
	State        string `json:"state"`
	AgentVersion string `json:"agentVersion"`
	Address      string `json:"address"`
}

func clusters(t *testing.T, env []string) map[string]cluster {
	t.Helper()
	out, errOut, code := run(t, env, "tether", "get", "clusters", "-o", "json")
	if code != 0 {
		t.Fatalf("get clusters: exit %d: %s", code, errOut)
	}
	var cs []cluster
	if err := json.Unmarshal([]byte(out), &cs); err != nil {
		t.Fatalf("get clusters -o json: %v\n%s", err, out)
	}
	m := map[string]cluster{}
	for _, c := range cs {
		m[c.Name] = c
	}
	return m
}

type agentStatus struct {
	Running bool `json:"running"`
	Link    struct {
		Cluster   string `json:"cluster"`
		State     string `json:"state"`
		LastError string `json:"lastError"`
	} `json:"link"`
}

func status(t *testing.T, dataDir string) agentStatus {
	t.Helper()
	out := mustRun(t, nil, "tether-agent", "status", "--data-dir", dataDir, "-o", "json")
	var st agentStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("tether-agent status -o json: %v\n%s", err, out)
	}
	return st
}

func TestConnectedFleet(t *testing.T) {
	hubDir := t.TempDir()
	agentAddr, apiAddr := freeAddr(t), freeAddr(t)
	hubArgs := []string{"tether", "serve", "--data-dir", hubDir, "--agent-addr", agentAddr, "--api-addr", apiAddr, "--heartbeat", "1s"}
	hub := start(t, "hub", hubArgs...)
	env := []string{"TETHER_CONFIG=" + filepath.Join(hubDir, "admin.yaml")}
	eventually(t, "hub console API", 30*time.Second, func() (bool, string) {
		out, errOut, code := run(t, env, "tether", "version")
		return code == 0 && strings.Contains(out, "Hub:"), errOut
	})
	if fi, err := os.Stat(filepath.Join(hubDir, "admin.yaml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin config: %v, mode %v; want mode 0600", err, fi.Mode())
	}

	dirs := map[string]string{}
	for _, name := range []string{"edge-a", "edge-b"} {
		tok := strings.TrimSpace(mustRun(t, env, "tether", "token", "create", "--cluster", name, "--ttl", "10m"))
		dirs[name] = t.TempDir()
		start(t, name, "tether-agent", "run", "--data-dir", dirs[name], "--hub", agentAddr, "--token", tok, "--max-backoff", "2s", "--no-cluster")
	}
	allState := func(want string) func() (bool, string) {
		return func() (bool, string) {
			cs := clusters(t, env)
			ok := len(cs) == 2
			for _, c := range cs {
				ok = ok && c.State == want
			}
			return ok, fmt.Sprint(cs)
		}
	}
	eventually(t, "two agents Connected", time.Minute, allState("Connected"))
	wide := mustRun(t, env, "tether", "get", "clusters", "-o", "wide")
	for _, col := range []string{"NAME", "STATE", "LAST SEEN", "AGENT", "ADDRESS", "edge-a", "edge-b", "Connected"} {
		if !strings.Contains(wide, col) {
			t.Errorf("get clusters -o wide lacks %q:\n%s", col, wide)
		}
	}
	desc := mustRun(t, env, "tether", "describe", "cluster", "edge-a")
	if !strings.Contains(desc, "answered over the tunnel") {
		t.Errorf("describe did not reach the agent over the hub→agent direction:\n%s", desc)
	}
	if st := status(t, dirs["edge-a"]); st.Link.State != "Connected" || st.Link.Cluster != "edge-a" || !st.Running {
		t.Errorf("agent status while connected = %+v", st)
	}

	// Hub down: agents report Offline and keep retrying.
	hub.stop(t)
	eventually(t, "agent status Offline", 30*time.Second, func() (bool, string) {
		st := status(t, dirs["edge-a"])
		return st.Link.State == "Offline", fmt.Sprintf("%+v", st)
	})

	// Hub back: agents reconnect with only their data dir, no token.
	start(t, "hub-restarted", hubArgs...)
	eventually(t, "agents reconnect after hub restart", time.Minute, allState("Connected"))

	// Delete revokes: the agent is disconnected and refused from then on.
	mustRun(t, env, "tether", "delete", "cluster", "edge-b")
	eventually(t, "revoked agent refused", 30*time.Second, func() (bool, string) {
		st := status(t, dirs["edge-b"])
		return st.Link.State == "Refused" && strings.Contains(st.Link.LastError, "deleted"), fmt.Sprintf("%+v", st)
	})
	if cs := clusters(t, env); len(cs) != 1 || cs["edge-a"].State != "Connected" {
		t.Errorf("after deleting edge-b the fleet is %v; want only edge-a, Connected", cs)
	}

	// Exit codes: unknown cluster is 3, bad usage is 2.
	if _, _, code := run(t, env, "tether", "describe", "cluster", "nope"); code != 3 {
		t.Errorf("describe unknown cluster: exit %d, want 3", code)
	}
	if _, _, code := run(t, env, "tether", "get", "widgets"); code != 2 {
		t.Errorf("get unknown kind: exit %d, want 2", code)
	}
}

func TestAgentStatusWithoutAgentOrHub(t *testing.T) {
	dir := t.TempDir()
	// Never enrolled, never run: status still answers from an empty dir?
	// No bbolt file yet: it must say so clearly and fail.
	_, errOut, code := run(t, nil, "tether-agent", "status", "--data-dir", dir)
	if code == 0 || !strings.Contains(errOut, dir) {
		t.Errorf("status of empty data dir: exit %d, stderr %q; want an error naming the dir", code, errOut)
	}
}
