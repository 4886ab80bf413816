package rollout

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// fleetSim drives Record.step with a fake clock and fake agents: a
// cluster admitted to a revision reports Deployed (or Failed, or
// nothing) at the next step.
type fleetSim struct {
	t       *testing.T
	now     time.Time
	rec     *Record
	pol     *policy
	spec    objects.MultiClusterServiceSpec
	views   []clusterView
	fail    map[string]bool // reports Failed
	silent  map[string]bool // never reports
	maxSeen int             // most clusters Progressing and online after any step
}

func newSim(t *testing.T, r objects.Rollout, n int, labels func(i int) map[string]string) *fleetSim {
	t.Helper()
	mcs := &objects.MultiClusterService{Spec: objects.MultiClusterServiceSpec{Rollout: &r}}
	setDefaults(mcs)
	pol, err := compilePolicy(mcs.Spec.Rollout)
	if err != nil {
		t.Fatal(err)
	}
	s := &fleetSim{t: t, now: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), pol: pol, fail: map[string]bool{}, silent: map[string]bool{}}
	s.rec = &Record{Name: "web", Namespace: "acme", Clusters: map[string]*ClusterStatus{}}
	s.rec.beginRevision(1, "h1", s.spec, s.now)
	for i := range n {
		l := map[string]string{}
		if labels != nil {
			l = labels(i)
		}
		s.views = append(s.views, clusterView{Name: fmt.Sprintf("c%02d", i), Labels: l, Online: true})
	}
	return s
}

// setDefaults applies the kind's defaulting, as apply does.
func setDefaults(o *objects.MultiClusterService) { objects.Default(o) }

func (s *fleetSim) view(name string) *clusterView {
	i := slices.IndexFunc(s.views, func(v clusterView) bool { return v.Name == name })
	return &s.views[i]
}

func (s *fleetSim) setOnline(name string, on bool) { s.view(name).Online = on }

// step reports health as the agents would, then runs one step.
func (s *fleetSim) step() []string {
	s.t.Helper()
	for i := range s.views {
		v := &s.views[i]
		v.Health, v.Message = healthUnknown, ""
		c := s.rec.Clusters[v.Name]
		if c == nil || !c.Listed || c.Admitted != s.rec.Revision || !v.Online || s.silent[v.Name] {
			continue
		}
		if s.fail[v.Name] {
			v.Health, v.Message = healthFailed, "service apps/web: Failed: boom"
		} else {
			v.Health = healthDeployed
		}
	}
	admitted, _ := s.rec.step(s.pol, &s.spec, s.views, s.now)
	n := 0
	for name, c := range s.rec.Clusters {
		if c.State == Progressing && s.view(name).Online {
			n++
		}
	}
	s.maxSeen = max(s.maxSeen, n)
	return admitted
}

// run steps until the phase is not Progressing (or 200 steps), moving
// the clock by dt each step.
func (s *fleetSim) run(dt time.Duration) {
	s.t.Helper()
	for range 200 {
		s.step()
		if s.rec.Phase != PhaseProgressing {
			return
		}
		s.now = s.now.Add(dt)
	}
}

func (s *fleetSim) states() string {
	var parts []string
	for _, v := range s.views {
		if c := s.rec.Clusters[v.Name]; c != nil {
			parts = append(parts, v.Name+"="+c.State)
		}
	}
	return strings.Join(parts, " ")
}

func (s *fleetSim) state(name string) *ClusterStatus { return s.rec.Clusters[name] }

func TestMaxConcurrencyHonouredAtEveryStep(t *testing.T) {
	for _, tc := range []struct {
		name    string
		r       objects.Rollout
		n, want int
	}{
		{"number", objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent("3")}, 10, 3},
		{"percent rounds up", objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent(`"25%"`)}, 10, 3},
		{"default one", objects.Rollout{Strategy: objects.RolloutProgressive}, 5, 1},
		{"soak keeps slots", objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent("2"), MinSuccessTime: "10m"}, 6, 2},
		{"all at once", objects.Rollout{Strategy: objects.RolloutAll}, 7, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSim(t, tc.r, tc.n, nil)
			s.run(time.Minute)
			if s.rec.Phase != PhaseComplete {
				t.Fatalf("phase %s (%s): %s", s.rec.Phase, s.rec.Reason, s.states())
			}
			if s.maxSeen != tc.want {
				t.Errorf("most clusters in progress at once = %d, want %d", s.maxSeen, tc.want)
			}
			if c := s.rec.Counts(); c[Succeeded] != tc.n {
				t.Errorf("counts %v, want %d Succeeded", c, tc.n)
			}
		})
	}
}

func TestOfflineClusters(t *testing.T) {
	base := objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent("2"), MaxFailures: objects.IntOrPercent("0")}
	t.Run("Skip defers and catches up on return", func(t *testing.T) {
		r := base
		r.OfflineClusters = objects.OfflineSkip
		s := newSim(t, r, 5, nil)
		s.setOnline("c01", false)
		s.run(time.Minute)
		if s.rec.Phase != PhaseComplete || s.state("c01").State != Deferred || s.rec.Counts()[Succeeded] != 4 {
			t.Fatalf("phase %s: %s", s.rec.Phase, s.states())
		}
		if s.state("c01").Listed {
			t.Errorf("a deferred cluster was admitted while offline")
		}
		s.setOnline("c01", true)
		s.step() // back: Pending, admitted
		s.step() // reports Deployed
		if got := s.state("c01"); got.State != Succeeded || got.Succeeded != 1 {
			t.Errorf("c01 after return: %+v", got)
		}
	})
	t.Run("Wait holds the wave", func(t *testing.T) {
		r := base
		r.OfflineClusters = objects.OfflineWait
		s := newSim(t, r, 5, nil)
		s.setOnline("c01", false)
		for range 20 {
			s.step()
			s.now = s.now.Add(time.Minute)
		}
		if s.rec.Phase != PhaseProgressing || s.state("c01").State != Pending || !strings.Contains(s.state("c01").Reason, "waits") {
			t.Fatalf("phase %s, c01 %+v", s.rec.Phase, s.state("c01"))
		}
		s.setOnline("c01", true)
		s.run(time.Minute)
		if s.rec.Phase != PhaseComplete {
			t.Errorf("phase %s after return: %s", s.rec.Phase, s.states())
		}
	})
	t.Run("Fail counts against maxFailures", func(t *testing.T) {
		r := base
		r.OfflineClusters = objects.OfflineFail
		s := newSim(t, r, 5, nil)
		s.setOnline("c00", false)
		s.run(time.Minute)
		if s.rec.Phase != PhaseHalted || s.state("c00").State != Failed {
			t.Fatalf("phase %s: %s", s.rec.Phase, s.states())
		}
	})
	t.Run("Fail within budget", func(t *testing.T) {
		r := base
		r.OfflineClusters, r.MaxFailures = objects.OfflineFail, objects.IntOrPercent(`"20%"`)
		s := newSim(t, r, 5, nil)
		s.setOnline("c00", false)
		s.run(time.Minute)
		if s.rec.Phase != PhaseComplete || s.rec.Counts()[Succeeded] != 4 {
			t.Fatalf("phase %s: %s", s.rec.Phase, s.states())
		}
	})
}

func TestFailuresHaltOrRollBack(t *testing.T) {
	for _, onFailure := range []string{objects.OnFailureHalt, objects.OnFailureRollback} {
		t.Run(onFailure, func(t *testing.T) {
			r := objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent("2"), MaxFailures: objects.IntOrPercent("1"), OnFailure: onFailure}
			s := newSim(t, r, 8, nil)
			// Revision 1 is everywhere; roll out revision 2.
			s.run(time.Minute)
			s.rec.beginRevision(2, "h2", s.spec, s.now)
			s.fail["c02"], s.fail["c04"] = true, true
			s.silent["c03"] = true // in flight when the budget is crossed
			s.run(time.Minute)
			want := map[string]string{objects.OnFailureHalt: PhaseHalted, objects.OnFailureRollback: PhaseRolledBack}[onFailure]
			if s.rec.Phase != want {
				t.Fatalf("phase %s (%s), want %s: %s", s.rec.Phase, s.rec.Reason, want, s.states())
			}
			for _, n := range []string{"c00", "c01"} {
				if c := s.state(n); c.State != Succeeded || c.Admitted != 2 {
					t.Errorf("%s: %+v, want Succeeded at 2", n, c)
				}
			}
			for _, n := range []string{"c02", "c03", "c04"} {
				c := s.state(n)
				wantRev := map[string]uint64{objects.OnFailureHalt: 2, objects.OnFailureRollback: 1}[onFailure]
				if c.Admitted != wantRev {
					t.Errorf("%s admitted to %d, want %d (%+v)", n, c.Admitted, wantRev, c)
				}
			}
			for _, n := range []string{"c05", "c06", "c07"} {
				if c := s.state(n); c.Admitted != 1 || c.State != Pending {
					t.Errorf("%s: %+v, want Pending on revision 1 (no admission after the halt)", n, c)
				}
			}
			if onFailure == objects.OnFailureRollback && s.state("c03").State != Skipped {
				t.Errorf("in-flight c03: %+v, want Skipped (rolled back)", s.state("c03"))
			}
			// Nothing more happens, however long.
			s.now = s.now.Add(time.Hour)
			if got := s.step(); len(got) != 0 {
				t.Errorf("admitted %v after %s", got, s.rec.Phase)
			}
		})
	}
}

func TestResumeAfterHaltGivesAFreshBudget(t *testing.T) {
	r := objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent("1")}
	s := newSim(t, r, 3, nil)
	s.fail["c00"] = true
	s.run(time.Minute)
	if s.rec.Phase != PhaseHalted {
		t.Fatalf("phase %s", s.rec.Phase)
	}
	s.rec.Phase, s.rec.Forgiven = PhaseProgressing, 1 // what Resume does
	s.run(time.Minute)
	if s.rec.Phase != PhaseComplete || s.rec.Counts()[Succeeded] != 2 {
		t.Fatalf("phase %s: %s", s.rec.Phase, s.states())
	}
}

func TestProgressDeadline(t *testing.T) {
	r := objects.Rollout{Strategy: objects.RolloutProgressive, ProgressDeadline: "10m", MaxFailures: objects.IntOrPercent("5")}
	s := newSim(t, r, 2, nil)
	s.silent["c00"] = true
	s.run(3 * time.Minute)
	if c := s.state("c00"); c.State != TimedOut || !strings.Contains(c.Reason, "progressDeadline 10m") {
		t.Errorf("c00: %+v", c)
	}
	if s.rec.Phase != PhaseComplete {
		t.Errorf("phase %s", s.rec.Phase)
	}
}

func TestStagePromotion(t *testing.T) {
	ring := func(i int) map[string]string {
		return map[string]string{"ring": map[bool]string{true: "canary", false: "main"}[i < 2]}
	}
	stages := func(promo string) objects.Rollout {
		return objects.Rollout{Strategy: objects.RolloutStaged, MaxConcurrency: objects.IntOrPercent(`"100%"`), Stages: []objects.RolloutStage{
			{Name: "canary", ClusterSelector: objects.LabelSelector{MatchLabels: map[string]string{"ring": "canary"}}},
			{Name: "main", ClusterSelector: objects.LabelSelector{MatchLabels: map[string]string{"ring": "main"}}, Promotion: promo},
		}}
	}
	t.Run("Manual", func(t *testing.T) {
		s := newSim(t, stages(objects.PromotionManual), 5, ring)
		for range 10 {
			s.step()
			s.now = s.now.Add(time.Hour)
		}
		if s.rec.Stages[0].Phase != StageDone || s.rec.Stages[1].Phase != StageWaiting || !strings.Contains(s.rec.Stages[1].Reason, "tether rollout approve web main") {
			t.Fatalf("stages %+v", s.rec.Stages)
		}
		if c := s.rec.Counts(); c[Succeeded] != 2 || c[Pending] != 3 {
			t.Fatalf("counts %v", c)
		}
		s.rec.Approved = append(s.rec.Approved, "main")
		s.run(time.Minute)
		if s.rec.Phase != PhaseComplete || s.rec.Counts()[Succeeded] != 5 {
			t.Fatalf("after approval: %s %s", s.rec.Phase, s.states())
		}
	})
	t.Run("After", func(t *testing.T) {
		s := newSim(t, stages("After 30m"), 5, ring)
		s.step()
		s.step() // canary done
		doneAt := s.rec.Stages[0].DoneAt
		for s.now.Before(doneAt.Add(29 * time.Minute)) {
			s.now = s.now.Add(time.Minute)
			if got := s.step(); len(got) != 0 {
				t.Fatalf("admitted %v at %v, before the promotion at %v", got, s.now, doneAt.Add(30*time.Minute))
			}
		}
		s.now = doneAt.Add(30 * time.Minute)
		if got := s.step(); len(got) != 3 {
			t.Fatalf("admitted %v at the promotion time, want the 3 main clusters", got)
		}
	})
	t.Run("unselected clusters go last", func(t *testing.T) {
		s := newSim(t, stages(objects.PromotionAuto), 4, func(i int) map[string]string {
			if i == 3 {
				return map[string]string{"ring": "lab"}
			}
			return ring(i)
		})
		s.run(time.Minute)
		if s.rec.Phase != PhaseComplete || s.state("c03").Stage != restStage || s.state("c03").State != Succeeded {
			t.Fatalf("%s %s %+v", s.rec.Phase, s.states(), s.state("c03"))
		}
	})
}

func TestMaintenanceWindows(t *testing.T) {
	r := objects.Rollout{Strategy: objects.RolloutAll, MaintenanceWindows: []objects.MaintenanceWindow{
		{Name: "shop-nights", Schedule: "0 2 * * *", TimeZone: "UTC", Duration: "2h", ClusterSelector: objects.LabelSelector{MatchLabels: map[string]string{"site": "shop"}}},
	}}
	s := newSim(t, r, 3, func(i int) map[string]string {
		if i == 0 {
			return map[string]string{"site": "shop"}
		}
		return map[string]string{}
	})
	s.step()
	s.step()
	if c := s.state("c00"); c.State != Pending || !strings.Contains(c.Reason, "outside maintenance window shop-nights; next opens at 2026-12-03T02:00:00Z") {
		t.Fatalf("c00: %+v", c)
	}
	if s.rec.Counts()[Succeeded] != 2 {
		t.Fatalf("others: %s", s.states())
	}
	s.now = time.Date(2026, 12, 3, 2, 0, 0, 0, time.UTC)
	if got := s.step(); !slices.Equal(got, []string{"c00"}) {
		t.Fatalf("admitted %v when the window opened", got)
	}
}

// TestSupersede: a newer revision during a rollout: clusters keep the
// revision they were admitted to until they are admitted to the newer
// one, none goes below one it succeeded with, and the superseded
// revision is recorded as such.
func TestSupersede(t *testing.T) {
	r := objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent("1")}
	s := newSim(t, r, 4, nil)
	s.run(time.Minute) // revision 1 everywhere
	s.rec.beginRevision(2, "h2", s.spec, s.now)
	s.step()
	s.step() // c00 on 2
	s.silent["c01"] = true
	s.step() // c01 admitted to 2, in flight
	s.rec.beginRevision(3, "h3", s.spec, s.now)
	if h := s.rec.revision(2); !strings.HasPrefix(h.Outcome, "Superseded by revision 3") {
		t.Errorf("revision 2 outcome %q", h.Outcome)
	}
	if c := s.state("c01"); c.Admitted != 2 || c.State != Pending {
		t.Errorf("c01 after supersede: %+v, want Pending, still admitted to 2", c)
	}
	delete(s.silent, "c01")
	for range 50 {
		s.step()
		for n, c := range s.rec.Clusters {
			if c.Listed && c.Admitted < c.Succeeded {
				t.Fatalf("%s admitted to %d below its succeeded %d", n, c.Admitted, c.Succeeded)
			}
		}
		if s.rec.Phase == PhaseComplete {
			break
		}
		s.now = s.now.Add(time.Minute)
	}
	for n, c := range s.rec.Clusters {
		if c.Admitted != 3 || c.Succeeded != 3 {
			t.Errorf("%s: %+v, want on 3", n, c)
		}
	}
}

// TestRollbackOfAFirstRevisionRemovesItsServices: a cluster that had
// none of the MCS's services before goes back to none, not to keeping
// the failed revision.
func TestRollbackOfAFirstRevisionRemovesItsServices(t *testing.T) {
	r := objects.Rollout{Strategy: objects.RolloutProgressive, OnFailure: objects.OnFailureRollback}
	s := newSim(t, r, 3, nil)
	s.fail["c00"] = true
	s.run(time.Minute)
	c := s.state("c00")
	if s.rec.Phase != PhaseRolledBack || !c.Listed || c.Admitted != 0 || !strings.Contains(c.Reason, "rolled back to none") {
		t.Fatalf("phase %s, c00 %+v", s.rec.Phase, c)
	}
	adm := string(s.rec.admission(1))
	if !strings.Contains(adm, `"c00":0`) {
		t.Errorf("admission %s does not admit c00 to none", adm)
	}
}

// TestPreStage: under preStage a cluster whose turn comes while its
// window is closed is Staged with the next window occurrences (holding a
// slot), and is admitted (Progressing) at the first window start whether
// online or not, then succeeds when it reports.
func TestPreStage(t *testing.T) {
	r := objects.Rollout{Strategy: objects.RolloutProgressive, MaxConcurrency: objects.IntOrPercent("2"), PreStage: true,
		MaintenanceWindows: []objects.MaintenanceWindow{
			{Name: "nights", Schedule: "0 2 * * *", TimeZone: "UTC", Duration: "2h", ClusterSelector: objects.LabelSelector{MatchLabels: map[string]string{"site": "shop"}}},
		}}
	s := newSim(t, r, 3, func(i int) map[string]string { return map[string]string{"site": "shop"} })
	got := s.step()
	if !slices.Equal(got, []string{"c00", "c01"}) {
		t.Fatalf("staged %v, want c00 c01 (maxConcurrency 2)", got)
	}
	c := s.state("c00")
	if c.State != Staged || c.StagedRev != 1 || c.Listed || len(c.Windows) != stagedWindows {
		t.Fatalf("c00 = %+v, want Staged at revision 1 with %d windows, not listed", c, stagedWindows)
	}
	first := time.Date(2026, 12, 3, 2, 0, 0, 0, time.UTC)
	if !c.Windows[0].Start.Equal(first) || !c.Windows[0].End.Equal(first.Add(2*time.Hour)) || !c.Windows[1].Start.Equal(first.AddDate(0, 0, 1)) {
		t.Fatalf("c00 windows = %v", c.Windows)
	}
	if c2 := s.state("c02"); c2.State != Pending {
		t.Fatalf("c02 = %+v: a staged cluster must hold its slot", c2)
	}
	adm := decodeAdmission(t, s.rec.admission(1))
	if st, ok := adm.Staged["c00"]; !ok || st.Revision != 1 || len(st.Windows) != stagedWindows {
		t.Fatalf("admission staged = %+v", adm.Staged)
	}
	if _, ok := adm.Specs[1]; !ok {
		t.Fatalf("admission lacks the staged revision's spec: %+v", adm)
	}
	// The window opens while c00 is offline: admitted all the same (its
	// agent activated the revision itself).
	s.setOnline("c00", false)
	s.now = first
	got = s.step()
	if !slices.Contains(got, "c00") || !slices.Contains(got, "c01") {
		t.Fatalf("admitted %v at the window start, want c00 and c01", got)
	}
	if c := s.state("c00"); !c.Listed || c.Admitted != 1 || c.StagedRev != 0 {
		t.Fatalf("c00 after the window start = %+v", c)
	}
	s.setOnline("c00", true)
	s.run(time.Minute)
	if n := s.rec.Counts()[Succeeded]; n != 3 {
		t.Fatalf("succeeded %d, want 3: %s", n, s.states())
	}
}

func decodeAdmission(t *testing.T, b []byte) admission {
	t.Helper()
	var a admission
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	return a
}
