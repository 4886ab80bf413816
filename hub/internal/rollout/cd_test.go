package rollout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// newCDEnv is a hub whose ClusterDeployment changes roll out under the
// hub-wide policy (nil: none), with n clusters edge-00.. labelled by
// labels(i), each with a ClusterDeployment acme/edge-NN running web-1,
// established before the test's change.
func newCDEnv(t *testing.T, policy string, n int, labels func(i int) map[string]string) *hubEnv {
	t.Helper()
	e := &hubEnv{t: t, ctx: t.Context(), path: t.TempDir() + "/hub.db",
		now: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), offline: map[string]bool{}, reported: map[string]uint64{}, failing: map[string]bool{}}
	if policy != "" {
		r, err := objects.ParseRolloutPolicy([]byte(policy), "policy.yaml")
		if err != nil {
			t.Fatal(err)
		}
		e.cdPolicy = r
	}
	e.start()
	t.Cleanup(func() { e.st.Close() })
	e.apply(templates)
	e.resolve("web-1")
	e.resolve("web-2")
	for i := range n {
		l := map[string]string{}
		if labels != nil {
			l = labels(i)
		}
		e.putCluster(fmt.Sprintf("edge-%02d", i), l)
	}
	e.applyCDs("web-1", n)
	for range 3 * n {
		e.round()
		if e.cdsOn("web-1") == n && (policy == "" || e.cdStatus().Phase == PhaseComplete) {
			break
		}
	}
	if got := e.cdsOn("web-1"); got != n {
		t.Fatalf("setup: %d of %d clusters on web-1", got, n)
	}
	return e
}

// applyCDs applies ClusterDeployments acme/edge-00.. (n) running template.
func (e *hubEnv) applyCDs(template string, n int) {
	e.t.Helper()
	y := ""
	for i := range n {
		y += fmt.Sprintf(`---
apiVersion: tether.dev/v1alpha1
kind: ClusterDeployment
metadata: {name: edge-%02d, namespace: acme}
spec:
  template: adopted
  serviceSpec:
    services: [{template: %s, name: web, namespace: apps}]
`, i, template)
	}
	e.apply(y)
}

// cdTemplate is the template of the ClusterDeployment's service in the
// cluster's desired state.
func (e *hubEnv) cdTemplate(cluster string) string {
	st, err := e.comp.State(e.ctx, cluster)
	if err != nil {
		return ""
	}
	for _, s := range st.Services {
		if s.Source.Kind == objects.KindClusterDeployment {
			return s.Template
		}
	}
	return ""
}

func (e *hubEnv) cdsOn(template string) int {
	n := 0
	for _, c := range e.clusters {
		if e.cdTemplate(c) == template {
			n++
		}
	}
	return n
}

func (e *hubEnv) cdStatus() *Record {
	e.t.Helper()
	rec, err := e.ctl.Status(e.ctx, ClusterDeploymentsNamespace, ClusterDeploymentsName)
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func (e *hubEnv) cd(cluster string) *ClusterStatus { return e.cdStatus().Clusters["acme/"+cluster] }

// TestCDRolloutProgressiveSurvivesRestart: five ClusterDeployments change
// at once under Progressive maxConcurrency 2: after every round at most
// two clusters are Progressing and at most two hold the new serviceSpec
// without having succeeded; those not admitted keep the old one. The hub
// is rebuilt from its store mid-rollout: no cluster that succeeded is
// redone, and the wave completes.
func TestCDRolloutProgressiveSurvivesRestart(t *testing.T) {
	const n = 5
	e := newCDEnv(t, "rollout: {strategy: Progressive, maxConcurrency: 2, minSuccessTime: 2m, maxFailures: 0}\n", n, nil)
	wave := e.cdStatus().Revision
	e.applyCDs("web-2", n)
	check := func(round int) *Record {
		rec := e.cdStatus()
		if c := rec.Counts()[Progressing]; c > 2 {
			t.Fatalf("round %d: %d Progressing, over maxConcurrency 2", round, c)
		}
		unfinished := 0
		for _, c := range e.clusters {
			if e.cdTemplate(c) == "web-2" && rec.Clusters["acme/"+c].State != Succeeded {
				unfinished++
			}
		}
		if unfinished > 2 {
			t.Fatalf("round %d: %d clusters on web-2 without having succeeded", round, unfinished)
		}
		return rec
	}
	var rec *Record
	for round := range 8 {
		e.round()
		rec = check(round)
		if rec.Counts()[Succeeded] > 0 {
			break
		}
	}
	if rec.Revision != wave+1 || rec.Phase != PhaseProgressing {
		t.Fatalf("mid-rollout: wave %d phase %s, want wave %d Progressing", rec.Revision, rec.Phase, wave+1)
	}
	succeeded := map[string]ClusterStatus{}
	for k, c := range rec.Clusters {
		if c.State == Succeeded && c.Admitted == c.Target {
			succeeded[k] = *c
		}
	}
	if len(succeeded) == 0 || len(succeeded) == n {
		t.Fatalf("want the restart mid-rollout; succeeded %d: %v", len(succeeded), rec.Counts())
	}
	if got := e.cdTemplate("edge-04"); got != "web-1" {
		t.Errorf("edge-04, not admitted yet, has %q; want web-1 kept", got)
	}

	e.restart()
	for round := range 20 {
		e.round()
		rec = check(round)
		for k, was := range succeeded {
			c := rec.Clusters[k]
			if c.State != Succeeded || c.AdmittedAt != was.AdmittedAt || !c.Since.Equal(was.Since) {
				t.Fatalf("%s redone after restart: was %+v, now %+v", k, was, c)
			}
		}
		if rec.Phase == PhaseComplete {
			break
		}
	}
	if rec.Phase != PhaseComplete || rec.Counts()[Succeeded] != n || e.cdsOn("web-2") != n {
		t.Fatalf("after restart: %s %v, %d on web-2", rec.Phase, rec.Counts(), e.cdsOn("web-2"))
	}
	if h, err := e.ctl.History(e.ctx, ClusterDeploymentsNamespace, ClusterDeploymentsName); err != nil || len(h) != 2*n || h[0].ClusterDeployment != "acme/edge-00" {
		t.Errorf("history: %v %+v", err, h)
	}
}

// TestCDRolloutWindowBlocks: a cluster a maintenance window selects
// keeps its ClusterDeployment's old serviceSpec while the window is
// closed and takes the new one when it opens; a cluster no window
// selects goes at once.
func TestCDRolloutWindowBlocks(t *testing.T) {
	e := newCDEnv(t, `rollout:
  strategy: Progressive
  maxConcurrency: 2
  maintenanceWindows: [{name: shop-mornings, schedule: "0 10 * * *", duration: 1h, clusterSelector: {matchLabels: {site: shop}}}]
`, 2, func(i int) map[string]string {
		if i == 0 {
			return map[string]string{"site": "shop"}
		}
		return nil
	})
	// The setup ran in the window (10:00); now it is closed.
	e.mu.Lock()
	e.now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	e.mu.Unlock()
	e.applyCDs("web-2", 2)
	for range 5 {
		e.round()
	}
	if got := e.cdTemplate("edge-01"); got != "web-2" {
		t.Errorf("edge-01 (no window) has %q, want web-2", got)
	}
	if got, c := e.cdTemplate("edge-00"), e.cd("edge-00"); got != "web-1" || c.State != Pending || !strings.Contains(c.Reason, "outside maintenance window shop-mornings") {
		t.Fatalf("edge-00 (window closed) has %q, %+v; want web-1 kept, Pending", got, c)
	}
	e.mu.Lock()
	e.now = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e.mu.Unlock()
	for range 3 {
		e.round()
	}
	if got, c := e.cdTemplate("edge-00"), e.cd("edge-00"); got != "web-2" || c.State != Succeeded {
		t.Errorf("edge-00 in its window: %q, %+v", got, c)
	}
}

// TestCDRolloutOfflineSkipCatchesUp: with offlineClusters Skip an
// offline cluster is Deferred, does not hold the wave, and takes its
// ClusterDeployment's new serviceSpec when it returns.
func TestCDRolloutOfflineSkipCatchesUp(t *testing.T) {
	e := newCDEnv(t, "rollout: {strategy: Progressive, maxConcurrency: 2, offlineClusters: Skip}\n", 4, nil)
	e.offline["edge-02"] = true
	e.applyCDs("web-2", 4)
	for range 8 {
		e.round()
	}
	rec := e.cdStatus()
	if rec.Phase != PhaseComplete || rec.Clusters["acme/edge-02"].State != Deferred || rec.Counts()[Succeeded] != 3 {
		t.Fatalf("with edge-02 offline: %s %v %+v", rec.Phase, rec.Counts(), rec.Clusters["acme/edge-02"])
	}
	if got := e.cdTemplate("edge-02"); got != "web-1" {
		t.Errorf("offline edge-02 has %q, want web-1 until it returns", got)
	}
	delete(e.offline, "edge-02")
	for range 3 {
		e.round()
	}
	if c := e.cd("edge-02"); c.State != Succeeded || e.cdTemplate("edge-02") != "web-2" {
		t.Errorf("edge-02 back: %+v on %q", c, e.cdTemplate("edge-02"))
	}
}

// TestCDRolloutFailureOverBudget: failures over maxFailures halt the
// wave (onFailure Halt: nothing new admitted until resume) or roll the
// failed clusters back to their ClusterDeployment's previous serviceSpec
// (onFailure Rollback).
func TestCDRolloutFailureOverBudget(t *testing.T) {
	for _, onFailure := range []string{objects.OnFailureHalt, objects.OnFailureRollback} {
		t.Run(onFailure, func(t *testing.T) {
			e := newCDEnv(t, "rollout: {strategy: Progressive, maxConcurrency: 2, maxFailures: 0, onFailure: "+onFailure+"}\n", 5, nil)
			e.failing["edge-00"], e.failing["edge-01"], e.failTemplate = true, true, "web-2"
			e.applyCDs("web-2", 5)
			for range 6 {
				e.round()
			}
			rec := e.cdStatus()
			want := map[string]string{objects.OnFailureHalt: PhaseHalted, objects.OnFailureRollback: PhaseRolledBack}[onFailure]
			if rec.Phase != want || rec.Counts()[Failed] != 2 || rec.Counts()[Pending] != 3 {
				t.Fatalf("phase %s %v (%s), want %s with 2 Failed and 3 Pending", rec.Phase, rec.Counts(), rec.Reason, want)
			}
			for _, c := range []string{"edge-02", "edge-03", "edge-04"} {
				if got := e.cdTemplate(c); got != "web-1" {
					t.Errorf("%s (not admitted) has %q, want web-1", c, got)
				}
			}
			failedOn := map[string]string{objects.OnFailureHalt: "web-2", objects.OnFailureRollback: "web-1"}[onFailure]
			for _, c := range []string{"edge-00", "edge-01"} {
				if got := e.cdTemplate(c); got != failedOn {
					t.Errorf("failed %s has %q, want %s", c, got, failedOn)
				}
			}
			if _, err := e.ctl.Resume(e.ctx, ClusterDeploymentsNamespace, ClusterDeploymentsName); err != nil {
				t.Fatal(err)
			}
			for range 6 {
				e.round()
			}
			if rec = e.cdStatus(); rec.Phase != PhaseComplete || rec.Counts()[Succeeded] != 3 || e.cdsOn("web-2") != 3+map[string]int{objects.OnFailureHalt: 2}[onFailure] {
				t.Errorf("after resume: %s %v, %d on web-2", rec.Phase, rec.Counts(), e.cdsOn("web-2"))
			}
			// undo gives the serviceSpec before the failed revision.
			spec, rev, err := e.ctl.UndoClusterDeploymentSpec(e.ctx, "acme", "edge-00", 0)
			if err != nil || len(spec.Services) != 1 || spec.Services[0].Template != "web-1" || rev != e.cd("edge-00").Target-1 {
				t.Errorf("undo: %v %d %+v", err, rev, spec)
			}
			if _, _, err := e.ctl.UndoClusterDeploymentSpec(e.ctx, "acme", "edge-00", 99); !errors.Is(err, ErrUnknownRevision) {
				t.Errorf("undo to 99: %v", err)
			}
		})
	}
}

// TestCDWithoutPolicyAppliesAtOnce: without --cluster-deployment-rollout
// a ClusterDeployment change reaches its cluster at once, and there is no
// hub-wide rollout to show.
func TestCDWithoutPolicyAppliesAtOnce(t *testing.T) {
	e := newCDEnv(t, "", 5, nil)
	e.applyCDs("web-2", 5)
	e.round()
	if got := e.cdsOn("web-2"); got != 5 {
		t.Errorf("%d of 5 clusters on web-2 after one round, want all", got)
	}
	if _, err := e.ctl.Status(e.ctx, ClusterDeploymentsNamespace, ClusterDeploymentsName); !errors.Is(err, ErrNotFound) {
		t.Errorf("status: %v, want ErrNotFound", err)
	}
}

// TestCDRolloutGatesNewClusterDeployments: a ClusterDeployment applied
// under a gradual hub-wide policy gives its cluster nothing before the
// controller admits it (the compiler recompiles first here), and then
// its first serviceSpec rolls out under the policy like any change.
func TestCDRolloutGatesNewClusterDeployments(t *testing.T) {
	e := newCDEnv(t, "rollout: {strategy: Progressive, maxConcurrency: 1}\n", 0, nil)
	for i := range 3 {
		e.putCluster(fmt.Sprintf("edge-%02d", i), nil)
	}
	e.applyCDs("web-1", 3)
	if _, err := e.comp.Recompile(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.cdsOn("web-1"); got != 0 {
		t.Fatalf("%d clusters got web-1 before the controller admitted any", got)
	}
	for round := range 8 {
		e.round()
		if got := e.cdStatus().Counts()[Progressing]; got > 1 {
			t.Fatalf("round %d: %d Progressing, over maxConcurrency 1", round, got)
		}
	}
	if rec := e.cdStatus(); rec.Phase != PhaseComplete || e.cdsOn("web-1") != 3 {
		t.Errorf("first serviceSpecs: %s %v, %d on web-1", rec.Phase, rec.Counts(), e.cdsOn("web-1"))
	}
}

// TestCDRolloutFlagDropped: a hub restarted without the policy mid-wave
// deletes the hub-wide state and every cluster takes its
// ClusterDeployment's live serviceSpec at once.
func TestCDRolloutFlagDropped(t *testing.T) {
	e := newCDEnv(t, "rollout: {strategy: Progressive, maxConcurrency: 1}\n", 4, nil)
	e.applyCDs("web-2", 4)
	e.round()
	if got := e.cdsOn("web-2"); got != 1 {
		t.Fatalf("%d on web-2 after one round of maxConcurrency 1", got)
	}
	e.cdPolicy = nil
	e.restart()
	e.round()
	e.round()
	if got := e.cdsOn("web-2"); got != 4 {
		t.Errorf("%d of 4 on web-2 after the policy was dropped, want all", got)
	}
	if _, err := e.ctl.Status(e.ctx, ClusterDeploymentsNamespace, ClusterDeploymentsName); !errors.Is(err, ErrNotFound) {
		t.Errorf("status: %v, want ErrNotFound", err)
	}
}

// TestCDRolloutPreStage: with preStage, a cluster whose turn comes while
// its window is closed is Staged: its desired state keeps web-1 and
// carries web-2 as the staged next version with the window's times; at
// the window start it is Progressing (its agent activates by itself)
// and then Succeeded on web-2.
func TestCDRolloutPreStage(t *testing.T) {
	e := newCDEnv(t, `rollout:
  strategy: Progressive
  maxConcurrency: 1
  preStage: true
  maintenanceWindows: [{name: mornings, schedule: "0 10 * * *", duration: 1h}]
`, 1, nil)
	e.mu.Lock()
	e.now = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	e.mu.Unlock()
	e.applyCDs("web-2", 1)
	for range 2 {
		e.round()
	}
	c := e.cd("edge-00")
	if c.State != Staged || len(c.Windows) == 0 {
		t.Fatalf("window closed, preStage: %+v, want Staged", c)
	}
	st, err := e.comp.State(e.ctx, "edge-00")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Services) != 1 || st.Services[0].Template != "web-1" || st.Services[0].Staged == nil || st.Services[0].Staged.Next.Template != "web-2" ||
		!st.Services[0].Staged.Windows[0].Start.Equal(time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)) {
		t.Fatalf("desired state while staged: %+v", st.Services)
	}
	e.mu.Lock()
	e.now = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	e.mu.Unlock()
	for range 3 {
		e.round()
	}
	if c := e.cd("edge-00"); c.State != Succeeded || e.cdTemplate("edge-00") != "web-2" {
		t.Errorf("after the window start: %+v on %q", c, e.cdTemplate("edge-00"))
	}
}
