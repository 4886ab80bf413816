package rollout

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// restStage holds the clusters of a Staged rollout that no stage selects;
// it runs last, promoted automatically.
const restStage = "(rest)"

// allStage is the one stage of All and Progressive rollouts.
const allStage = "all"

// health is what a cluster's agent reported for the revision it is
// admitted to.
type health int

const (
	healthUnknown  health = iota // not (yet) Deployed at that revision
	healthDeployed               // every service Deployed at that revision
	healthFailed                 // a service Failed at that revision
)

// clusterView is one fleet cluster as a step sees it.
type clusterView struct {
	Name   string
	Labels map[string]string
	Online bool
	// Health of the revision the cluster is admitted to; healthUnknown
	// until its desired state reflects that revision.
	Health  health
	Message string
	// HasServices: its desired state holds services of this MCS now.
	HasServices bool
	// Member: the source selects the cluster now (an MCS's selector; a
	// ClusterDeployment names it).
	Member bool
	// Target is the revision the cluster is to take: the rollout's
	// revision for an MCS, its ClusterDeployment's for the hub-wide one.
	Target uint64
}

// policy is a compiled spec.rollout.
type policy struct {
	strategy    string
	stages      []stageDef
	maxConc     objects.IntOrPercent
	minSuccess  time.Duration
	deadline    time.Duration
	maxFailures objects.IntOrPercent
	rollback    bool
	offline     string
	windows     []*objects.Window
	preStage    bool
}

// stagedWindows is how many window occurrences a staged cluster receives.
const stagedWindows = 4

type stageDef struct {
	name    string
	sel     *objects.LabelSelector // nil: every cluster
	maxConc objects.IntOrPercent
	manual  bool
	after   time.Duration
}

// compilePolicy turns a (validated) spec.rollout into a policy. Errors
// are not expected: the kind's validation refused them.
func compilePolicy(r *objects.Rollout) (*policy, error) {
	p := &policy{strategy: r.Strategy, maxConc: r.MaxConcurrency, maxFailures: r.MaxFailures,
		rollback: r.OnFailure == objects.OnFailureRollback, offline: r.OfflineClusters, preStage: r.PreStage}
	if p.offline == "" {
		p.offline = objects.OfflineSkip
	}
	var err error
	if p.minSuccess, err = objects.ParseDuration(r.MinSuccessTime, 0); err != nil {
		return nil, fmt.Errorf("minSuccessTime: %w", err)
	}
	if p.deadline, err = objects.ParseDuration(r.ProgressDeadline, objects.DefaultProgressDeadline); err != nil {
		return nil, fmt.Errorf("progressDeadline: %w", err)
	}
	switch r.Strategy {
	case objects.RolloutStaged:
		for _, s := range r.Stages {
			manual, after, err := objects.PromotionDelay(s.Promotion)
			if err != nil {
				return nil, fmt.Errorf("stage %s: %w", s.Name, err)
			}
			mc := s.MaxConcurrency
			if len(mc) == 0 {
				mc = r.MaxConcurrency
			}
			p.stages = append(p.stages, stageDef{name: s.Name, sel: &s.ClusterSelector, maxConc: mc, manual: manual, after: after})
		}
		p.stages = append(p.stages, stageDef{name: restStage, maxConc: r.MaxConcurrency})
	case objects.RolloutProgressive:
		p.stages = []stageDef{{name: allStage, maxConc: r.MaxConcurrency}}
	default:
		p.stages = []stageDef{{name: allStage, maxConc: objects.IntOrPercent(`"100%"`)}}
	}
	for i := range r.MaintenanceWindows {
		w, err := r.MaintenanceWindows[i].Compile()
		if err != nil {
			return nil, fmt.Errorf("maintenanceWindows[%d]: %w", i, err)
		}
		p.windows = append(p.windows, w)
	}
	return p, nil
}

func (p *policy) stageOf(labels map[string]string) string {
	for _, s := range p.stages {
		if s.sel == nil || s.sel.Matches(labels) {
			return s.name
		}
	}
	return restStage
}

// window reports whether a cluster may take a revision at now: no window
// selects it, or one that does is open. Else it says why and when the
// next one opens.
func (p *policy) window(labels map[string]string, now time.Time) (bool, string, time.Time) {
	var names []string
	var next time.Time
	for _, w := range p.windows {
		if !w.Selector.Matches(labels) {
			continue
		}
		open, at := w.OpenAt(now)
		if open {
			return true, "", time.Time{}
		}
		names = append(names, w.Name)
		if !at.IsZero() && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	if names == nil {
		return true, "", time.Time{}
	}
	why := "outside maintenance window " + strings.Join(names, ", ")
	if !next.IsZero() {
		why += "; next opens at " + next.UTC().Format(time.RFC3339)
	}
	return false, why, next
}

// occurrences are the next window occurrences (merged over the windows
// that select the cluster, by start) after now, at most stagedWindows.
func (p *policy) occurrences(labels map[string]string, now time.Time) []objects.Span {
	var all []objects.Span
	for _, w := range p.windows {
		if w.Selector.Matches(labels) {
			all = append(all, w.Occurrences(now, stagedWindows)...)
		}
	}
	slices.SortFunc(all, func(a, b objects.Span) int { return a.Start.Compare(b.Start) })
	if len(all) > stagedWindows {
		all = all[:stagedWindows]
	}
	return all
}

// beginRevision starts rolling out revision rev (superseding the
// current one): every cluster goes back to Pending for it, keeping the
// revision it is admitted to until it is admitted to rev.
func (r *Record) beginRevision(rev uint64, hash string, spec objects.MultiClusterServiceSpec, now time.Time) {
	if h := r.revision(r.Revision); h != nil && h.Outcome == "" {
		h.Outcome = fmt.Sprintf("Superseded by revision %d (%s)", rev, r.Phase)
	}
	spec.Rollout = nil
	r.History = append(r.History, RevisionRecord{Revision: rev, Hash: hash, Created: now, Spec: spec})
	r.Revision, r.Phase, r.Reason, r.Approved, r.Forgiven, r.Started, r.Stages = rev, PhaseProgressing, "", nil, 0, now, nil
	for _, c := range r.Clusters {
		c.State, c.Reason, c.Since, c.HealthySince = Pending, "", now, time.Time{}
		c.StagedRev, c.Windows = 0, nil
	}
}

// maxHistory bounds the revisions kept that no cluster is admitted to.
const maxHistory = 10

func (r *Record) pruneHistory() {
	used := map[uint64]bool{r.Revision: true}
	for _, c := range r.Clusters {
		used[c.Admitted], used[c.Before] = true, true
	}
	keepFrom := len(r.History) - maxHistory
	r.History = slices.DeleteFunc(r.History, func(h RevisionRecord) bool {
		keepFrom--
		return keepFrom >= 0 && !used[h.Revision]
	})
}

// finished states of a cluster for the current revision: they no longer
// hold their stage.
func finished(state string) bool {
	switch state {
	case Succeeded, Failed, TimedOut, Skipped, Deferred:
		return true
	}
	return false
}

// step advances the rollout of rec.Revision (an MCS's) over the fleet's
// clusters at now: a cluster is a member when spec selects it. See
// advance.
func (r *Record) step(p *policy, spec *objects.MultiClusterServiceSpec, views []clusterView, now time.Time) (changed []string, wake time.Time) {
	for i := range views {
		views[i].Member, views[i].Target = spec.ClusterSelector.Matches(views[i].Labels), r.Revision
	}
	return r.advance(p, views, now)
}

// inWave reports whether a cluster counts in the current rollout: every
// cluster of an MCS's; for the hub-wide ClusterDeployment rollout, the
// clusters of the current wave (see cd.go).
func (r *Record) inWave(s *ClusterStatus) bool {
	return r.Scope != ScopeClusterDeployments || s.Wave == r.Revision
}

// advance moves every member cluster towards its view's Target at now,
// under the policy: the one step logic of MCS rollouts and of the
// hub-wide ClusterDeployment rollout. It returns the clusters whose
// admitted revision changed (the caller records the store revision that
// admits them) and when it next needs to run without a change (zero:
// only on a change).
func (r *Record) advance(p *policy, views []clusterView, now time.Time) (changed []string, wake time.Time) {
	soon := func(t time.Time) {
		if t.After(now) && (wake.IsZero() || t.Before(wake)) {
			wake = t
		}
	}
	seen := map[string]bool{}
	for _, v := range views {
		seen[v.Name] = true
		s := r.Clusters[v.Name]
		member := v.Member || s != nil && s.Listed && s.Admitted != 0
		switch {
		case !member && s != nil:
			delete(r.Clusters, v.Name)
			continue
		case !member:
			continue
		case s == nil:
			s = &ClusterStatus{State: Pending, Since: now}
			r.Clusters[v.Name] = s
		}
		s.Stage = p.stageOf(v.Labels)
	}
	for name := range r.Clusters {
		if !seen[name] {
			delete(r.Clusters, name) // removed from the fleet
		}
	}
	byName := map[string]*clusterView{}
	for i := range views {
		byName[views[i].Name] = &views[i]
	}
	names := make([]string, 0, len(r.Clusters))
	for n := range r.Clusters {
		names = append(names, n)
	}
	slices.Sort(names)

	// Observe: what became of the clusters admitted to their target T.
	target := func(n string) uint64 { return byName[n].Target }
	for _, n := range names {
		s, v := r.Clusters[n], byName[n]
		T := v.Target
		if s.Listed && s.Admitted == T {
			switch s.State {
			case Succeeded, Failed, TimedOut, Skipped:
				continue
			}
			switch {
			case v.Health == healthFailed:
				s.State, s.Reason, s.Since, s.HealthySince = Failed, v.Message, now, time.Time{}
			case v.Health == healthDeployed:
				if s.HealthySince.IsZero() {
					s.HealthySince = now
				}
				if done := s.HealthySince.Add(p.minSuccess); !now.Before(done) {
					s.State, s.Reason, s.Since = Succeeded, "", now
					s.Succeeded = max(s.Succeeded, T)
				} else {
					if s.State != Progressing {
						s.Since = now
					}
					s.State, s.Reason = Progressing, "Deployed; soaking until "+done.UTC().Format(time.RFC3339)+" (minSuccessTime)"
					soon(done)
				}
			case !v.Online:
				s.HealthySince = time.Time{}
				switch p.offline {
				case objects.OfflineWait:
					s.State, s.Reason = Progressing, "offline; the rollout waits for it (offlineClusters: Wait)"
				case objects.OfflineFail:
					s.State, s.Reason, s.Since = Failed, "offline while progressing (offlineClusters: Fail)", now
				default:
					if s.State != Deferred {
						s.State, s.Reason, s.Since = Deferred, "offline while progressing; it catches up when it returns (offlineClusters: Skip)", now
					}
				}
			default:
				s.HealthySince = time.Time{}
				if s.State != Progressing || strings.HasPrefix(s.Reason, "offline") {
					s.State, s.Reason, s.Since = Progressing, "", now // (back) online: its deadline starts now
				}
				if p.deadline > 0 {
					if end := s.Since.Add(p.deadline); !now.Before(end) {
						s.State, s.Reason, s.Since = TimedOut, fmt.Sprintf("not Succeeded within progressDeadline %s", p.deadline), now
					} else {
						soon(end)
					}
				}
			}
			continue
		}
		// Not admitted to T yet.
		switch {
		case s.State == Staged:
			// Its agent activates T at the first window start, link or
			// not: from then on it is admitted to T (and progressing).
			if s.StagedRev == T && len(s.Windows) > 0 && !now.Before(s.Windows[0].Start) {
				s.Before, s.BeforeListed = s.Admitted, s.Listed
				s.Admitted, s.Listed, s.State, s.Reason, s.Since, s.HealthySince = T, true, Progressing, "", now, time.Time{}
				s.StagedRev, s.Windows = 0, nil
				changed = append(changed, n)
			} else if len(s.Windows) > 0 {
				soon(s.Windows[0].Start)
			}
		case s.State == Deferred && v.Online:
			s.State, s.Reason, s.Since = Pending, "back online", now
		case s.State == Pending && !v.Online:
			switch p.offline {
			case objects.OfflineFail:
				s.State, s.Reason, s.Since = Failed, "offline when its turn came (offlineClusters: Fail)", now
			case objects.OfflineWait:
				s.Reason = "offline; its stage waits for it (offlineClusters: Wait)"
			default:
				s.State, s.Reason, s.Since = Deferred, "offline when its turn came; it catches up when it returns (offlineClusters: Skip)", now
			}
		}
	}

	// Failure budget.
	fails, wave := -r.Forgiven, 0
	for _, s := range r.Clusters {
		if r.inWave(s) {
			wave++
			if s.State == Failed || s.State == TimedOut {
				fails++
			}
		}
	}
	budget, _ := objects.Scaled(p.maxFailures, wave, 0)
	if fails > budget && (r.Phase == PhaseProgressing || r.Phase == PhasePaused || r.Phase == PhaseComplete) {
		if p.rollback {
			for _, n := range names {
				s := r.Clusters[n]
				if s.State == Staged {
					s.State, s.Reason, s.Since, s.StagedRev, s.Windows = Skipped, "staged revision withdrawn (onFailure: Rollback)", now, 0, nil
					changed = append(changed, n)
					continue
				}
				if !s.Listed || s.Admitted != target(n) || s.State == Succeeded || !r.inWave(s) {
					continue
				}
				// Before 0: it had none of this MCS's services (a cluster
				// not listed before had none: those that had some were
				// listed when the rollout began).
				back := fmt.Sprintf("rolled back to revision %d", s.Before)
				if s.Before == 0 {
					back = "rolled back to none of its services (it had none before)"
				}
				if s.State == Failed || s.State == TimedOut {
					s.Reason += "; " + back
				} else {
					s.State, s.Reason, s.Since = Skipped, back, now
				}
				s.Admitted, s.Listed, s.HealthySince = s.Before, true, time.Time{}
				changed = append(changed, n)
			}
			r.Phase = PhaseRolledBack
			r.Reason = fmt.Sprintf("%d clusters failed or timed out, over maxFailures (%d): failed and in-flight clusters rolled back (onFailure: Rollback)", fails, budget)
		} else {
			r.Phase = PhaseHalted
			r.Reason = fmt.Sprintf("%d clusters failed or timed out, over maxFailures (%d): halted (onFailure: Halt); `tether rollout resume %s` goes on with a fresh budget", fails, budget, r.Name)
		}
	}

	// Stages.
	old := map[string]StageStatus{}
	for _, st := range r.Stages {
		old[st.Name] = st
	}
	inStage, waveInStage := map[string][]string{}, map[string]int{}
	for _, n := range names {
		inStage[r.Clusters[n].Stage] = append(inStage[r.Clusters[n].Stage], n)
		if r.inWave(r.Clusters[n]) {
			waveInStage[r.Clusters[n].Stage]++
		}
	}
	r.Stages = r.Stages[:0]
	active, blocked := -1, false
	for i, sd := range p.stages {
		if sd.name == restStage && len(inStage[sd.name]) == 0 {
			continue
		}
		st := StageStatus{Name: sd.name, DoneAt: old[sd.name].DoneAt}
		done := true
		for _, n := range inStage[sd.name] {
			done = done && finished(r.Clusters[n].State)
		}
		prevDone := r.Started
		if len(r.Stages) > 0 {
			prevDone = r.Stages[len(r.Stages)-1].DoneAt
		}
		switch {
		case blocked:
			st.Phase, st.Reason = StageWaiting, "after stage "+r.Stages[len(r.Stages)-1].Name
		case done && (len(inStage[sd.name]) == 0 || !st.DoneAt.IsZero() || old[sd.name].Phase == StageActive):
			st.Phase = StageDone
			if st.DoneAt.IsZero() {
				st.DoneAt = now
			}
		case sd.manual && !slices.Contains(r.Approved, sd.name) && old[sd.name].Phase != StageActive:
			st.Phase, st.Reason = StageWaiting, fmt.Sprintf("waiting for approval: tether rollout approve %s %s", r.Name, sd.name)
			blocked = true
		case sd.after > 0 && now.Before(prevDone.Add(sd.after)) && old[sd.name].Phase != StageActive:
			st.Phase, st.Reason = StageWaiting, "promotes at "+prevDone.Add(sd.after).UTC().Format(time.RFC3339)
			soon(prevDone.Add(sd.after))
			blocked = true
		default:
			st.Phase, active, blocked = StageActive, i, true
		}
		r.Stages = append(r.Stages, st)
	}
	if r.Phase == PhaseHalted || r.Phase == PhaseRolledBack {
		return changed, wake
	}
	if !blocked {
		r.Phase, r.Reason = PhaseComplete, ""
		if n := r.Counts()[Deferred]; n > 0 && r.Scope == ScopeClusterDeployments {
			r.Reason = fmt.Sprintf("%d deferred clusters take their ClusterDeployment's revision when they return", n)
		} else if n > 0 {
			r.Reason = fmt.Sprintf("%d deferred clusters take revision %d when they return", n, r.Revision)
		}
	} else {
		r.Phase, r.Reason = PhaseProgressing, ""
	}
	if r.Paused {
		r.Phase, r.Reason = PhasePaused, "paused: `tether rollout resume "+r.Name+"` goes on"
		return changed, wake
	}

	// Admit: clusters of finished stages that came back first (catch-up),
	// then the active stage's, by name, while slots are free.
	limitOf := func(sd stageDef) int {
		n, _ := objects.Scaled(sd.maxConc, waveInStage[sd.name], 1)
		return max(n, 1)
	}
	limit := 1
	if active >= 0 {
		limit = limitOf(p.stages[active])
	} else if len(p.stages) > 0 {
		limit = limitOf(p.stages[0])
	}
	counts := r.Counts()
	inflight := counts[Progressing] + counts[Staged] // a staged cluster activates by itself: it holds its slot
	for i, sd := range p.stages {
		if active >= 0 && i > active || active < 0 && !stageDone(r.Stages, sd.name) {
			break
		}
		for _, n := range inStage[sd.name] {
			s, v := r.Clusters[n], byName[n]
			if s.State != Pending || !v.Online {
				continue
			}
			T := v.Target
			if inflight >= limit {
				return changed, wake
			}
			ok, why, next := p.window(v.Labels, now)
			if !ok && p.preStage {
				if ws := p.occurrences(v.Labels, now); len(ws) > 0 {
					s.State, s.StagedRev, s.Windows, s.Since = Staged, T, ws, now
					s.Reason = "staged; its agent activates it at " + ws[0].Start.UTC().Format(time.RFC3339)
					soon(ws[0].Start)
					changed = append(changed, n)
					inflight++
					continue
				}
			}
			if !ok {
				s.Reason = why
				soon(next)
				continue
			}
			s.Before, s.BeforeListed = s.Admitted, s.Listed
			s.Admitted, s.Listed, s.State, s.Reason, s.Since, s.HealthySince = T, true, Progressing, "", now, time.Time{}
			changed = append(changed, n)
			inflight++
		}
	}
	return changed, wake
}

func stageDone(stages []StageStatus, name string) bool {
	for _, s := range stages {
		if s.Name == name {
			return s.Phase == StageDone
		}
	}
	return true // an empty rest stage
}
