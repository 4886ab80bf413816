// Package rollouts is the fleet-scale scenario of rollouts: a real hub
// process (`tether serve`) and 1,000 simulated agents (tether-fleetsim:
// real enrolment, TLS, yamux, gRPC and status outbox, no Helm) in another
// process, and every rollout policy under them: Progressive's
// maxConcurrency checked at every sample, offline sites with Skip, Wait
// and Fail, failures over the budget with Halt and Rollback, a stage that
// needs approval, a closed maintenance window, pre-staged revisions
// activating on agents whose link is cut, and the hub killed with
// SIGKILL mid-rollout.
//
// Both binaries are built without the race detector: it allows 8128 live
// goroutines per process, and 1,000 agent sessions need more on each side.
package rollouts

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) {
	b, err := e2etest.Build(false)
	if err == nil {
		err = buildSimulator(b.Dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins = b
	code := m.Run()
	b.Remove()
	os.Exit(code)
}

// fleetSize is the CI fleet: 1,000 agents.
const fleetSize = 1000

// Labels: the first 50 clusters are the canary ring, every tenth one is a
// shop (maintenance windows).
func labels(i int) map[string]string {
	l := map[string]string{"ring": "main"}
	if i < 50 {
		l["ring"] = "canary"
	}
	if i%10 == 3 {
		l["site"] = "shop"
	}
	return l
}

// mcs is a MultiClusterService NAME in namespace NAME deploying chart sim
// at version, with the rollout policy (YAML lines under rollout:).
func mcs(name, version, policy string) string {
	tmpl := "sim-" + strings.ReplaceAll(version, ".", "-")
	return fmt.Sprintf(`apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: %[3]s, namespace: %[1]s}
spec: {helm: {chartSpec: {chart: sim, version: %[2]s, sourceRef: {name: tether-local}}}}
---
apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: %[1]s, namespace: %[1]s}
spec:
  clusterSelector: {matchLabels: {fleet: sim}}
  serviceSpec:
    services: [{template: %[3]s, name: %[1]s, namespace: apps}]
  rollout:
%[4]s
`, name, version, tmpl, indent(policy))
}

func indent(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i, l := range lines {
		lines[i] = "    " + strings.TrimSpace(l)
	}
	return strings.Join(lines, "\n")
}

// onVersion counts the agents whose service name runs version Deployed.
func onVersion(as map[string]Agent, name, version string) (n int, missing []string) {
	for c, a := range as {
		v, st := a.Service("apps", name)
		if v == version && st == "Deployed" {
			n++
		} else {
			missing = append(missing, c)
		}
	}
	slices.Sort(missing)
	return n, missing
}

// baseline rolls revision 1 (chart 1.0.0) out everywhere at once, so the
// policy under test starts from a fleet that has a previous revision.
func (f *fleet) baseline(t *testing.T, name string) {
	t.Helper()
	f.apply(t, mcs(name, "1.0.0", "strategy: All\nmaxConcurrency: 100%\nminSuccessTime: 0s"))
	f.waitRollout(t, name, name, "revision 1 everywhere", 3*time.Minute, func(r *Record) bool {
		return r.Phase == "Complete" && r.Counts()["Succeeded"] == fleetSize
	})
	e2etest.Eventually(t, "every agent on 1.0.0", time.Minute, func() (bool, string) {
		n, missing := onVersion(f.mustAgents(t), name, "1.0.0")
		return n == fleetSize, fmt.Sprintf("%d on 1.0.0; e.g. %v", n, missing[:min(5, len(missing))])
	})
}

func TestFleetRollouts(t *testing.T) {
	f := startFleet(t, bins, fleetOptions{agents: fleetSize, deployDelay: 50 * time.Millisecond, labels: labels, simFlags: []string{"--seed", "7"}})
	f.pushCharts(t, "1.0.0", "2.0.0")

	// Progressive: at no sample are more than maxConcurrency clusters
	// Progressing (hub side), nor more agents holding 2.0.0 without having
	// deployed it than that (agent side).
	t.Run("ProgressiveMaxConcurrency", func(t *testing.T) {
		const name, max = "progressive", 100
		f.baseline(t, name)
		f.apply(t, mcs(name, "2.0.0", "strategy: Progressive\nmaxConcurrency: 10%\nminSuccessTime: 0s"))
		samples, busy := 0, 0
		e2etest.Eventually(t, "progressive rollout complete", 5*time.Minute, func() (bool, string) {
			r, err := f.rollout(name, name)
			if err != nil {
				return false, err.Error()
			}
			if r.Revision != 2 {
				return false, fmt.Sprintf("revision %d", r.Revision)
			}
			samples++
			c := r.Counts()
			if c["Progressing"] > max {
				t.Fatalf("sample %d: %d clusters Progressing, maxConcurrency %d: %v", samples, c["Progressing"], max, c)
			}
			if c["Progressing"] > 0 {
				busy++
			}
			inflight := 0
			for _, a := range f.mustAgents(t) {
				if v, st := a.Service("apps", name); v == "2.0.0" && st != "Deployed" {
					inflight++
				}
			}
			if inflight > max {
				t.Fatalf("sample %d: %d agents hold 2.0.0 not yet deployed, maxConcurrency %d", samples, inflight, max)
			}
			return r.Phase == "Complete" && c["Succeeded"] == fleetSize, fmt.Sprintf("%s %v", r.Phase, c)
		})
		if busy < 3 {
			t.Errorf("only %d of %d samples saw the rollout in flight: not a continuous check", busy, samples)
		}
		if n, missing := onVersion(f.mustAgents(t), name, "2.0.0"); n != fleetSize {
			t.Errorf("%d agents on 2.0.0 after Complete; e.g. %v", n, missing[:min(5, len(missing))])
		}
		t.Logf("%d samples, %d with clusters in flight", samples, busy)
	})

	// Skip: 10% offline; the wave finishes without them (Deferred, still
	// on 1.0.0), and they catch up when back.
	t.Run("OfflineSkip", func(t *testing.T) {
		const name = "skip"
		f.baseline(t, name)
		dark := f.pick(t, 1, 0.10)
		f.setOnline(t, dark, false)
		f.apply(t, mcs(name, "2.0.0", "strategy: Progressive\nmaxConcurrency: 25%\nminSuccessTime: 0s\nofflineClusters: Skip"))
		r := f.waitRollout(t, name, name, "complete without the dark sites", 5*time.Minute, func(r *Record) bool {
			return r.Revision == 2 && r.Phase == "Complete"
		})
		c := r.Counts()
		if c["Succeeded"] != fleetSize-len(dark) || c["Deferred"] != len(dark) {
			t.Fatalf("at Complete: %v, want %d Succeeded and %d Deferred", c, fleetSize-len(dark), len(dark))
		}
		as := f.mustAgents(t)
		for _, d := range dark {
			if v, _ := as[d].Service("apps", name); v != "1.0.0" || r.Clusters[d].State != "Deferred" {
				t.Errorf("dark %s: agent holds %q, rollout says %s; want 1.0.0 and Deferred", d, v, r.Clusters[d].State)
			}
		}
		f.setOnline(t, dark, true)
		f.waitRollout(t, name, name, "the dark sites caught up", 3*time.Minute, func(r *Record) bool {
			return r.Counts()["Succeeded"] == fleetSize
		})
		e2etest.Eventually(t, "every agent on 2.0.0", time.Minute, func() (bool, string) {
			n, missing := onVersion(f.mustAgents(t), name, "2.0.0")
			return n == fleetSize, fmt.Sprintf("%d on 2.0.0; e.g. %v", n, missing[:min(5, len(missing))])
		})
	})

	// Wait: the offline sites hold the rollout: it does not complete, and
	// they stay Pending on 1.0.0, until they are back.
	t.Run("OfflineWait", func(t *testing.T) {
		const name = "wait"
		f.baseline(t, name)
		dark := f.pick(t, 2, 0.01)
		f.setOnline(t, dark, false)
		f.apply(t, mcs(name, "2.0.0", "strategy: Progressive\nmaxConcurrency: 50%\nminSuccessTime: 0s\nofflineClusters: Wait"))
		// The reconcile that records the last online success would also
		// finish the stage if the dark sites did not hold it.
		r := f.waitRollout(t, name, name, "every online site succeeded", 5*time.Minute, func(r *Record) bool {
			return r.Revision == 2 && r.Counts()["Succeeded"] == fleetSize-len(dark)
		})
		if r.Phase != "Progressing" {
			t.Fatalf("with %d sites offline and Wait: phase %s (%s), want Progressing", len(dark), r.Phase, r.Reason)
		}
		as := f.mustAgents(t)
		for _, d := range dark {
			if v, _ := as[d].Service("apps", name); v != "1.0.0" || r.Clusters[d].State != "Pending" {
				t.Errorf("dark %s: agent holds %q, rollout says %s; want 1.0.0 and Pending", d, v, r.Clusters[d].State)
			}
		}
		f.setOnline(t, dark, true)
		f.waitRollout(t, name, name, "complete once they are back", 3*time.Minute, func(r *Record) bool {
			return r.Phase == "Complete" && r.Counts()["Succeeded"] == fleetSize
		})
	})

	// Fail: offline sites count as failures; crossing maxFailures halts.
	t.Run("OfflineFailHalts", func(t *testing.T) {
		const name = "failoffline"
		f.baseline(t, name)
		dark := f.pick(t, 3, 0.01)
		f.setOnline(t, dark, false)
		f.apply(t, mcs(name, "2.0.0", "strategy: Progressive\nmaxConcurrency: 10%\nminSuccessTime: 0s\nofflineClusters: Fail\nmaxFailures: 5"))
		r := f.waitRollout(t, name, name, "halted", 5*time.Minute, func(r *Record) bool {
			return r.Revision == 2 && (r.Phase == "Halted" || r.Phase == "Complete")
		})
		if r.Phase != "Halted" {
			t.Fatalf("%d offline with Fail and maxFailures 5: phase %s %v", len(dark), r.Phase, r.Counts())
		}
		c := r.Counts()
		if c["Failed"] <= 5 || c["Pending"] == 0 {
			t.Errorf("halted with %v: want more than 5 Failed and clusters left Pending", c)
		}
		for name, cs := range r.Clusters {
			if cs.State == "Failed" && !slices.Contains(dark, name) {
				t.Errorf("online cluster %s failed: %+v", name, *cs)
			}
		}
		f.setOnline(t, dark, true)
	})

	// Failures injected above the budget: Halt stops admitting; Rollback
	// takes the failed and in-flight clusters back to 1.0.0.
	for _, onFailure := range []string{"Halt", "Rollback"} {
		t.Run("FailuresOverBudget"+onFailure, func(t *testing.T) {
			name := "budget-" + strings.ToLower(onFailure)
			f.baseline(t, name)
			f.setFailure(t, 0.05, "2.0.0")
			defer f.setFailure(t, 0, "")
			f.apply(t, mcs(name, "2.0.0", "strategy: Progressive\nmaxConcurrency: 10%\nminSuccessTime: 0s\nmaxFailures: 3\nonFailure: "+onFailure))
			want := map[string]string{"Halt": "Halted", "Rollback": "RolledBack"}[onFailure]
			r := f.waitRollout(t, name, name, want, 5*time.Minute, func(r *Record) bool {
				return r.Revision == 2 && (r.Phase == want || r.Phase == "Complete")
			})
			if r.Phase != want {
				t.Fatalf("5%% failing, maxFailures 3, onFailure %s: phase %s %v", onFailure, r.Phase, r.Counts())
			}
			c := r.Counts()
			if c["Failed"] < 4 || c["Pending"] == 0 {
				t.Errorf("%s with %v: want more than 3 Failed and clusters never admitted", want, c)
			}
			if onFailure == "Halt" {
				return
			}
			// Rollback: failed and in-flight clusters are admitted back
			// to revision 1 and their agents run 1.0.0 again.
			var back []string
			for c, cs := range r.Clusters {
				if cs.State == "Failed" || cs.State == "Skipped" {
					if cs.Admitted != 1 {
						t.Errorf("%s %s: admitted %d after rollback, want 1", c, cs.State, cs.Admitted)
					}
					back = append(back, c)
				}
			}
			e2etest.Eventually(t, "rolled-back agents on 1.0.0", 2*time.Minute, func() (bool, string) {
				as := f.mustAgents(t)
				var wrong []string
				for _, c := range back {
					if v, st := as[c].Service("apps", name); v != "1.0.0" || st != "Deployed" {
						wrong = append(wrong, c+"="+v+"/"+st)
					}
				}
				return len(wrong) == 0, fmt.Sprintf("%d of %d not back on 1.0.0: %v", len(wrong), len(back), wrong[:min(5, len(wrong))])
			})
			for c, cs := range r.Clusters {
				if cs.State == "Succeeded" {
					if v, _ := f.mustAgents(t)[c].Service("apps", name); v != "2.0.0" {
						t.Errorf("%s succeeded with revision 2 but runs %s after the rollback", c, v)
					}
					break
				}
			}
		})
	}

	// Staged: the canary ring goes first; main waits for approval.
	t.Run("StageNeedsApproval", func(t *testing.T) {
		const name = "staged"
		f.baseline(t, name)
		f.apply(t, mcs(name, "2.0.0", `strategy: Staged
maxConcurrency: 100%
minSuccessTime: 0s
stages:
  - {name: canary, clusterSelector: {matchLabels: {ring: canary}}}
  - {name: main, clusterSelector: {matchLabels: {ring: main}}, promotion: Manual}`))
		r := f.waitRollout(t, name, name, "canary done", 3*time.Minute, func(r *Record) bool {
			return r.Revision == 2 && len(r.Stages) > 0 && r.Stages[0].Phase == "Done"
		})
		if r.Stages[1].Phase != "Waiting" || r.Stages[1].Counts["Pending"] != fleetSize-50 {
			t.Fatalf("before approval: stages %+v", r.Stages)
		}
		n, _ := onVersion(f.mustAgents(t), name, "2.0.0")
		if n != 50 {
			t.Fatalf("before approval %d agents on 2.0.0, want the 50 canaries", n)
		}
		out := f.bins.MustRun(t, f.hub.Env, "tether", "rollout", "status", name, "-n", name)
		if !strings.Contains(out, "main") || !strings.Contains(out, "Waiting") {
			t.Errorf("status before approval:\n%s", out)
		}
		t.Logf("tether rollout status before approval:\n%s", firstLines(out, 12))
		f.bins.MustRun(t, f.hub.Env, "tether", "rollout", "approve", name, "main", "-n", name)
		f.waitRollout(t, name, name, "complete after approval", 3*time.Minute, func(r *Record) bool {
			return r.Phase == "Complete" && r.Counts()["Succeeded"] == fleetSize
		})
	})

	// A maintenance window that is closed now keeps its clusters (the
	// shops) on 1.0.0; the others go on.
	t.Run("ClosedWindowBlocks", func(t *testing.T) {
		const name = "window"
		f.baseline(t, name)
		h := (time.Now().UTC().Hour() + 12) % 24 // opens 12 hours from now, for one hour
		f.apply(t, mcs(name, "2.0.0", fmt.Sprintf(`strategy: Progressive
maxConcurrency: 100%%
minSuccessTime: 0s
maintenanceWindows:
  - {name: shop-nights, schedule: "0 %d * * *", timeZone: UTC, duration: 1h, clusterSelector: {matchLabels: {site: shop}}}`, h)))
		r := f.waitRollout(t, name, name, "every site outside the window succeeded", 3*time.Minute, func(r *Record) bool {
			return r.Revision == 2 && r.Counts()["Succeeded"] == fleetSize-100
		})
		as := f.mustAgents(t)
		for c, cs := range r.Clusters {
			shop := f.labels[c]["site"] == "shop"
			v, _ := as[c].Service("apps", name)
			switch {
			case shop && (cs.State != "Pending" || v != "1.0.0"):
				t.Errorf("shop %s: %s on %s, want Pending on 1.0.0 (window closed)", c, cs.State, v)
			case !shop && v != "2.0.0":
				t.Errorf("%s (no window) runs %s, want 2.0.0", c, v)
			}
		}
		if r.Phase == "Complete" {
			t.Errorf("rollout Complete with 100 shops outside their window")
		}
	})

	// Pre-staging: the shops' turn comes while their window is closed, so
	// they are Staged: revision 2 is delivered with the window times and
	// they stay on 1.0.0. Their links are cut before the window opens; at
	// its start each one activates 2.0.0 from its cache, with no link,
	// and when the links come back the reports make them Succeeded.
	t.Run("PreStagedActivateWithLinkCut", func(t *testing.T) {
		const name = "prestage"
		f.baseline(t, name)
		start := time.Now().UTC().Truncate(time.Minute).Add(3 * time.Minute)
		f.apply(t, mcs(name, "2.0.0", fmt.Sprintf(`strategy: Progressive
maxConcurrency: 100%%
minSuccessTime: 0s
preStage: true
maintenanceWindows:
  - {name: shop-nights, schedule: "%d %d * * *", timeZone: UTC, duration: 1h, clusterSelector: {matchLabels: {site: shop}}}`, start.Minute(), start.Hour())))
		r := f.waitRollout(t, name, name, "shops staged, the rest succeeded", 3*time.Minute, func(r *Record) bool {
			return r.Revision == 2 && r.Counts()["Succeeded"] == fleetSize-100 && r.Counts()["Staged"] == 100
		})
		var shops []string
		as := f.mustAgents(t)
		for c, cs := range r.Clusters {
			if f.labels[c]["site"] != "shop" {
				continue
			}
			shops = append(shops, c)
			if v, _ := as[c].Service("apps", name); cs.State != "Staged" || v != "1.0.0" {
				t.Errorf("shop %s: %s on %s, want Staged on 1.0.0 before its window", c, cs.State, v)
			}
		}
		slices.Sort(shops)
		out := f.bins.MustRun(t, f.hub.Env, "tether", "rollout", "status", name, "-n", name)
		if !strings.Contains(out, "STAGED") {
			t.Errorf("status does not show the Staged count:\n%s", out)
		}
		t.Logf("tether rollout status with the shops staged:\n%s", firstLines(out, 8))

		f.setOnline(t, shops, false)
		if !time.Now().Before(start) {
			t.Fatalf("the shops' links were cut after their window opened (%s): too slow a setup to show activation without a link", start.Format(time.RFC3339))
		}
		e2etest.Eventually(t, "every shop on 2.0.0 with its link down", time.Until(start)+2*time.Minute, func() (bool, string) {
			as := f.mustAgents(t)
			on, connected := 0, 0
			var missing []string
			for _, c := range shops {
				if as[c].Connected {
					connected++
				}
				if v, st := as[c].Service("apps", name); v == "2.0.0" && st == "Deployed" {
					on++
				} else {
					missing = append(missing, c)
				}
			}
			if connected > 0 {
				t.Fatalf("%d shops connected while their links are cut", connected)
			}
			return on == len(shops), fmt.Sprintf("%d of %d on 2.0.0; e.g. %v", on, len(shops), missing[:min(5, len(missing))])
		})
		f.setOnline(t, shops, true)
		f.waitRollout(t, name, name, "every cluster succeeded once the shops reported", 3*time.Minute, func(r *Record) bool {
			return r.Phase == "Complete" && r.Counts()["Succeeded"] == fleetSize
		})
	})

	// Last: the hub is killed with SIGKILL mid-rollout and restarted. No
	// cluster that had succeeded is redone (its record is unchanged and its
	// agent applies nothing more), and the rollout completes.
	t.Run("HubKilledMidRollout", func(t *testing.T) {
		const name = "crash"
		f.baseline(t, name)
		f.apply(t, mcs(name, "2.0.0", "strategy: Progressive\nmaxConcurrency: 5%\nminSuccessTime: 0s"))
		before := f.waitRollout(t, name, name, "a third succeeded", 5*time.Minute, func(r *Record) bool {
			return r.Revision == 2 && r.Counts()["Succeeded"] >= fleetSize/3
		})
		if err := syscall.Kill(f.hub.Proc.PID(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		// Read the agents once the hub is gone: nothing can change their
		// record of 2.0.0 applies from now until the restart.
		e2etest.Eventually(t, "agents see the hub gone", time.Minute, func() (bool, string) {
			up := 0
			for _, a := range f.mustAgents(t) {
				if a.Connected {
					up++
				}
			}
			return up == 0, fmt.Sprintf("%d still connected", up)
		})
		applies := map[string]int{}
		for c, a := range f.mustAgents(t) {
			applies[c] = a.Applies
		}
		f.hub.Proc.Stop(t) // reaps the killed process
		f.hub.Restart(t)
		after := f.waitRollout(t, name, name, "complete after the restart", 5*time.Minute, func(r *Record) bool {
			return r.Phase == "Complete" && r.Counts()["Succeeded"] == fleetSize
		})
		as := f.mustAgents(t)
		redone := 0
		for c, b := range before.Clusters {
			if b.State != "Succeeded" {
				continue
			}
			a := after.Clusters[c]
			if a.State != "Succeeded" || !a.Since.Equal(b.Since) || a.Admitted != b.Admitted || a.Succeeded != b.Succeeded {
				t.Errorf("%s succeeded before the kill: %+v; after: %+v", c, *b, *a)
			}
			if as[c].Applies != applies[c] {
				redone++
				t.Errorf("%s succeeded before the kill, but its agent applied %d more times after it", c, as[c].Applies-applies[c])
			}
		}
		t.Logf("%d clusters had succeeded before SIGKILL; %d redone", before.Counts()["Succeeded"], redone)
	})
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}
