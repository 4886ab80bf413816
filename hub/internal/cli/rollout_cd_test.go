package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/rollout"
	"github.com/tetherfleet/tether/hub/internal/server"
)

// TestServeRefusesBadClusterDeploymentRollout: a bad policy file stops
// `tether serve` before it opens anything, naming the file and the
// field.
func TestServeRefusesBadClusterDeploymentRollout(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "cd-rollout.yaml")
	if err := os.WriteFile(bad, []byte("rollout:\n  strategy: Progressive\n  maxConcurrency: 150%\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	code, _, errs := run(t, "", "serve", "--data-dir", data, "--agent-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0", "--cluster-deployment-rollout", bad)
	if code == 0 || !strings.Contains(errs, "--cluster-deployment-rollout: "+bad+": rollout.maxConcurrency:") {
		t.Errorf("serve with a bad policy: exit %d, stderr %q", code, errs)
	}
	if _, err := os.Stat(data); !os.IsNotExist(err) {
		t.Errorf("data dir created by a refused start: %v", err)
	}
	code, _, errs = run(t, "", "serve", "--data-dir", data, "--cluster-deployment-rollout", filepath.Join(dir, "missing.yaml"))
	if code == 0 || !strings.Contains(errs, "missing.yaml") {
		t.Errorf("serve with a missing policy file: exit %d, stderr %q", code, errs)
	}
	if help := mustRun(t, "", "serve", "--help"); !strings.Contains(help, "--cluster-deployment-rollout") {
		t.Errorf("serve --help does not list --cluster-deployment-rollout")
	}
}

// TestRolloutClusterDeploymentsCommands: on a hub with a hub-wide
// ClusterDeployment rollout, NAME clusterdeployments reaches it through
// status, pause, resume, history and undo.
func TestRolloutClusterDeploymentsCommands(t *testing.T) {
	dir := t.TempDir()
	policy := filepath.Join(dir, "cd-rollout.yaml")
	if err := os.WriteFile(policy, []byte("rollout: {strategy: Progressive, maxConcurrency: 2}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := startHubWith(t, filepath.Join(dir, "data"), func(c *server.Config) { c.ClusterDeploymentRollout = policy })
	deadline := time.Now().Add(30 * time.Second)
	var out string
	for {
		code, o, _ := run(t, "", "--config", h.admin, "rollout", "status", "clusterdeployments", "-o", "json")
		if code == 0 {
			out = o
			break
		}
		if code != exitNotFound || time.Now().After(deadline) {
			t.Fatalf("rollout status clusterdeployments: exit %d", code)
		}
		time.Sleep(20 * time.Millisecond) // polling for the controller's first write, with a deadline
	}
	var rec rollout.Record
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Scope != rollout.ScopeClusterDeployments || rec.Phase != rollout.PhaseComplete {
		t.Errorf("status: %+v", rec)
	}
	if got := mustRun(t, "", "--config", h.admin, "rollout", "status", "clusterdeployments"); !strings.Contains(got, "Rollout of ClusterDeployment changes (hub-wide): wave 0") || !strings.Contains(got, "CLUSTERDEPLOYMENT") {
		t.Errorf("status table:\n%s", got)
	}
	if got := mustRun(t, "", "--config", h.admin, "rollout", "pause", "clusterdeployments"); !strings.Contains(got, "rollout clusterdeployments paused") {
		t.Errorf("pause: %s", got)
	}
	mustRun(t, "", "--config", h.admin, "rollout", "resume", "clusterdeployments")
	if got := mustRun(t, "", "--config", h.admin, "rollout", "history", "clusterdeployments"); !strings.Contains(got, "CLUSTERDEPLOYMENT") {
		t.Errorf("history: %s", got)
	}
	if code, _, errs := run(t, "", "--config", h.admin, "rollout", "undo", "clusterdeployments"); code != exitUsage || !strings.Contains(errs, "--cluster-deployment NAMESPACE/NAME is required") {
		t.Errorf("undo without --cluster-deployment: exit %d %q", code, errs)
	}
	if code, _, _ := run(t, "", "--config", h.admin, "rollout", "undo", "clusterdeployments", "--cluster-deployment", "acme/nothere"); code != exitNotFound {
		t.Errorf("undo of no ClusterDeployment: exit %d, want %d", code, exitNotFound)
	}
	// With -n it is an MCS's name.
	if code, _, _ := run(t, "", "--config", h.admin, "rollout", "status", "clusterdeployments", "-n", "default"); code != exitNotFound {
		t.Errorf("status clusterdeployments -n default: exit %d, want %d", code, exitNotFound)
	}
	if help := mustRun(t, "", "rollout", "--help"); !strings.Contains(help, "clusterdeployments") {
		t.Errorf("rollout --help does not explain clusterdeployments")
	}
}
