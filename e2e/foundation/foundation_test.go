// Package foundation is the end-to-end scenario of a connected fleet: the
// real `tether` and `tether-agent` binaries, a hub and two agents on
// loopback, enrolment, a hub outage and reconnection without tokens, and
// revocation.
package foundation

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

func run(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return bins.Run(t, env, args...)
}

func mustRun(t *testing.T, env []string, args ...string) string {
	t.Helper()
	return bins.MustRun(t, env, args...)
}

func start(t *testing.T, name string, args ...string) *e2etest.Proc {
	t.Helper()
	return bins.Start(t, name, nil, args...)
}

var eventually = e2etest.Eventually

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
	hub := bins.StartHub(t, "--heartbeat", "1s")
	hubDir, agentAddr, env := hub.Dir, hub.AgentAddr, hub.Env
	if fi, err := os.Stat(filepath.Join(hubDir, "admin.yaml")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin config: %v, mode %v; want mode 0600", err, fi.Mode())
	}

	dirs := map[string]string{}
	for _, name := range []string{"edge-a", "edge-b"} {
		tok := hub.Token(t, name)
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
	hub.Proc.Stop(t)
	eventually(t, "agent status Offline", 30*time.Second, func() (bool, string) {
		st := status(t, dirs["edge-a"])
		return st.Link.State == "Offline", fmt.Sprintf("%+v", st)
	})

	// Hub back: agents reconnect with only their data dir, no token.
	hub.Restart(t)
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

func TestWrongCAPinRefused(t *testing.T) {
	hub := bins.StartHub(t)
	tok := hub.Token(t, "edge-pin")
	// Same token, but pinning another CA: the agent must refuse the hub
	// before it sends the secret.
	parts := strings.Split(tok, ".")
	parts[3] = strings.Repeat("ab", 32)
	bad := strings.Join(parts, ".")
	dir := t.TempDir()
	_, errOut, code := run(t, nil, "tether-agent", "run", "--data-dir", dir, "--hub", hub.AgentAddr, "--token", bad, "--no-cluster")
	if code == 0 || !strings.Contains(errOut, "pinned CA") {
		t.Fatalf("agent with wrong CA pin: exit %d, stderr:\n%s\nwant a non-zero exit naming the pinned CA", code, errOut)
	}
	// The real token was not spent: it still enrols.
	p := start(t, "agent", "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", hub.AgentAddr, "--token", tok, "--no-cluster")
	eventually(t, "agent with the right token connects", time.Minute, func() (bool, string) {
		c := clusters(t, hub.Env)["edge-pin"]
		return c.State == "Connected", fmt.Sprint(c)
	})
	p.Stop(t)
}

func TestHubAddressThatIsNotAHub(t *testing.T) {
	// A plain HTTP server where the hub should be.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello")) }))
	defer srv.Close()
	hub := bins.StartHub(t)
	tok := hub.Token(t, "edge-x")
	dir := t.TempDir()
	start(t, "agent", "tether-agent", "run", "--data-dir", dir, "--hub", strings.TrimPrefix(srv.URL, "http://"), "--token", tok, "--no-cluster", "--max-backoff", "1s")
	eventually(t, "status names the bad hub address", time.Minute, func() (bool, string) {
		// The agent may not have created its files yet: retry on errors.
		out, errOut, code := run(t, nil, "tether-agent", "status", "--data-dir", dir, "-o", "json")
		var st agentStatus
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return false, errOut
		}
		return strings.Contains(st.Link.LastError, "did not complete a TLS handshake as a Tether hub"), fmt.Sprintf("%+v", st)
	})
}
