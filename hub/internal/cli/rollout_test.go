package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/rollout"
)

const stagedMCS = `apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: web-1, namespace: acme}
spec: {helm: {chartSpec: {chart: web, version: 1.0.0, sourceRef: {name: tether-local}}}}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: web-two, namespace: acme}
spec: {helm: {chartSpec: {chart: web, version: 2.0.0, sourceRef: {name: tether-local}}}}
---
apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: web, namespace: acme}
spec:
  serviceSpec:
    services: [{template: web-1, name: web, namespace: apps}]
  rollout:
    strategy: Staged
    stages:
      - {name: canary, clusterSelector: {matchLabels: {ring: canary}}}
      - {name: main, clusterSelector: {matchLabels: {ring: main}}, promotion: Manual}
`

// TestRolloutCommands: the rollout commands through a real hub: status
// (table and json), approve of a known and an unknown stage, pause and
// resume, history, and viewers may read but not steer.
func TestRolloutCommands(t *testing.T) {
	h := startHub(t)
	mustRun(t, stagedMCS, "--config", h.admin, "apply", "-f", "-")

	// The controller creates the rollout on its own loop.
	deadline := time.Now().Add(30 * time.Second)
	var out string
	for {
		code, o, _ := run(t, "", "--config", h.admin, "rollout", "status", "web", "-n", "acme", "-o", "json")
		if code == 0 {
			out = o
			break
		}
		if code != exitNotFound || time.Now().After(deadline) {
			t.Fatalf("rollout status: exit %d", code)
		}
		time.Sleep(20 * time.Millisecond) // polling for the controller's first write, with a deadline
	}
	var rec rollout.Record
	if err := json.Unmarshal([]byte(out), &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Name != "web" || len(rec.Stages) != 2 || rec.Stages[1].Name != "main" {
		t.Fatalf("status: %+v", rec)
	}
	table := mustRun(t, "", "--config", h.admin, "rollout", "status", "web", "-n", "acme")
	for _, want := range []string{"Rollout acme/web: revision 1", "STAGE", "canary", "main", "CLUSTER"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}

	// No cluster matches: every stage is done, so -w ends at once, 0.
	if got := mustRun(t, "", "--config", h.admin, "rollout", "status", "web", "-n", "acme", "-w"); !strings.Contains(got, "Complete [##############################] 0/0 clusters done") {
		t.Errorf("status -w:\n%s", got)
	}
	if code, _, errs := run(t, "", "--config", h.admin, "rollout", "status", "web", "-n", "acme", "-w", "-o", "json"); code != exitUsage || !strings.Contains(errs, "does not take -o") {
		t.Errorf("-w with -o: exit %d, %s", code, errs)
	}

	code, _, errs := run(t, "", "--config", h.admin, "rollout", "approve", "web", "nope", "-n", "acme")
	if code == 0 || !strings.Contains(errs, `stage "nope": unknown stage (stages: canary, main)`) {
		t.Errorf("approve unknown stage: exit %d, %s", code, errs)
	}
	if got := mustRun(t, "", "--config", h.admin, "rollout", "approve", "web", "main", "-n", "acme"); !strings.Contains(got, "stage main approved") {
		t.Errorf("approve: %s", got)
	}
	if got := mustRun(t, "", "--config", h.admin, "rollout", "pause", "web", "-n", "acme"); !strings.Contains(got, "rollout acme/web paused") {
		t.Errorf("pause: %s", got)
	}
	mustRun(t, "", "--config", h.admin, "rollout", "resume", "web", "-n", "acme")
	if got := mustRun(t, "", "--config", h.admin, "rollout", "history", "web", "-n", "acme"); !strings.Contains(got, "web=web-1") {
		t.Errorf("history: %s", got)
	}
	code, _, errs = run(t, "", "--config", h.admin, "rollout", "undo", "web", "-n", "acme", "--to-revision", "9")
	if code == 0 || !strings.Contains(errs, "unknown revision 9 (kept: 1)") {
		t.Errorf("undo to an unknown revision: exit %d, %s", code, errs)
	}

	// A second revision, then undo back to the first: a third revision
	// with the first one's services.
	mustRun(t, strings.ReplaceAll(stagedMCS, "template: web-1", "template: web-two"), "--config", h.admin, "apply", "-f", "-")
	waitRevision := func(want uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			var r rollout.Record
			if err := json.Unmarshal([]byte(mustRun(t, "", "--config", h.admin, "rollout", "status", "web", "-n", "acme", "-o", "json")), &r); err != nil {
				t.Fatal(err)
			}
			if r.Revision == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("rollout revision %d, want %d", r.Revision, want)
			}
			time.Sleep(20 * time.Millisecond) // polling the controller's loop, with a deadline
		}
	}
	waitRevision(2)
	if got := mustRun(t, "", "--config", h.admin, "rollout", "undo", "web", "-n", "acme"); !strings.Contains(got, "revision 1 re-applied") {
		t.Errorf("undo: %s", got)
	}
	waitRevision(3)
	hist := mustRun(t, "", "--config", h.admin, "rollout", "history", "web", "-n", "acme", "-o", "json")
	var revs []rollout.RevisionRecord
	if err := json.Unmarshal([]byte(hist), &revs); err != nil {
		t.Fatal(err)
	}
	if len(revs) != 3 || revs[2].Spec.ServiceSpec.Services[0].Template != "web-1" || !strings.HasPrefix(revs[1].Outcome, "Superseded by revision 3") {
		t.Errorf("history after undo: %s", hist)
	}

	viewer := h.userConfig(t, "vera", "viewer")
	mustRun(t, "", "--config", viewer, "rollout", "status", "web", "-n", "acme")
	if code, _, errs := run(t, "", "--config", viewer, "rollout", "pause", "web", "-n", "acme"); code == 0 || !strings.Contains(errs, "needs admin") {
		t.Errorf("viewer pause: exit %d, %s", code, errs)
	}
	if code, _, _ := run(t, "", "--config", h.admin, "rollout", "status", "nothere", "-n", "acme"); code != exitNotFound {
		t.Errorf("status of no rollout: exit %d, want %d", code, exitNotFound)
	}
}

func TestRolloutViewShowsProgressAndReasons(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	rec := &rollout.Record{Namespace: "acme", Name: "web", Revision: 7, Phase: rollout.PhaseProgressing,
		Stages: []rollout.StageStatus{{Name: "all", Phase: rollout.StageActive, Counts: map[string]int{rollout.Succeeded: 2, rollout.Progressing: 1, rollout.Deferred: 1}}},
		Clusters: map[string]*rollout.ClusterStatus{
			"a": {Stage: "all", State: rollout.Succeeded, Admitted: 7, Listed: true, Since: now.Add(-time.Hour)},
			"b": {Stage: "all", State: rollout.Succeeded, Admitted: 7, Listed: true, Since: now.Add(-time.Hour)},
			"c": {Stage: "all", State: rollout.Progressing, Admitted: 7, Listed: true, Since: now.Add(-time.Minute)},
			"d": {Stage: "all", State: rollout.Deferred, Admitted: 6, Listed: true, Since: now, Reason: "offline when its turn came"},
		}}
	var b strings.Builder
	printRollout(&b, rec, now)
	for _, want := range []string{
		"Rollout acme/web: revision 7, Progressing [###############---------------] 2/4 clusters done (2 succeeded)",
		"Progressing 1, Succeeded 2, Deferred 1",
		"offline when its turn came",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("view lacks %q:\n%s", want, b.String())
		}
	}
}
