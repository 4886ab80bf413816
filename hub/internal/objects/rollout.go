package objects

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // maintenance windows name IANA zones; the hub may run without /usr/share/zoneinfo
)

// Rollout strategies, offline policies, failure actions and promotions of
// a MultiClusterService's spec.rollout (see docs/design/rollouts.md).
const (
	RolloutAll         = "All"
	RolloutProgressive = "Progressive"
	RolloutStaged      = "Staged"

	OfflineSkip = "Skip"
	OfflineWait = "Wait"
	OfflineFail = "Fail"

	OnFailureHalt     = "Halt"
	OnFailureRollback = "Rollback"

	PromotionManual = "Manual"
	PromotionAuto   = "Auto"
	// A promotion "After DURATION" (or "After: DURATION") starts the stage
	// that long after the previous one finished.
	promotionAfter = "After"
)

// Rollout is a MultiClusterService's rollout policy: when each matching
// cluster may take a new revision of its services.
type Rollout struct {
	// Strategy: All (every cluster at once, the default), Progressive
	// (maxConcurrency clusters at a time) or Staged (stages in order).
	Strategy string `json:"strategy,omitempty"`
	// MaxConcurrency: clusters in progress at once, a number or a percent
	// of the rollout's clusters ("10%"). Default 1 for Progressive and
	// Staged; All ignores it.
	MaxConcurrency IntOrPercent `json:"maxConcurrency,omitempty"`
	// MinSuccessTime: how long every service must stay Deployed before a
	// cluster counts as Succeeded. Default 0.
	MinSuccessTime string `json:"minSuccessTime,omitempty"`
	// ProgressDeadline: a cluster not Succeeded this long after it was
	// admitted is TimedOut. Default 30m; "0" means none.
	ProgressDeadline string `json:"progressDeadline,omitempty"`
	// MaxFailures: Failed and TimedOut clusters tolerated, a number or a
	// percent; one more halts the rollout. Default 0.
	MaxFailures IntOrPercent `json:"maxFailures,omitempty"`
	// OnFailure: Halt (the default) or Rollback.
	OnFailure string `json:"onFailure,omitempty"`
	// OfflineClusters: Skip (the default), Wait or Fail.
	OfflineClusters string `json:"offlineClusters,omitempty"`
	// Stages are used by Staged, in order.
	Stages []RolloutStage `json:"stages,omitempty"`
	// MaintenanceWindows: a cluster one of them selects takes a new
	// revision only while one of those that select it is open.
	MaintenanceWindows []MaintenanceWindow `json:"maintenanceWindows,omitempty"`
	// PreStage: a cluster whose turn comes while its windows are closed
	// receives the revision ahead of time, with the next window
	// occurrences, and its agent activates it itself when one opens
	// (even with its link down). Needs maintenanceWindows.
	PreStage bool `json:"preStage,omitempty"`
}

// RolloutStage is one stage of a Staged rollout.
type RolloutStage struct {
	Name            string        `json:"name"`
	ClusterSelector LabelSelector `json:"clusterSelector,omitzero"`
	// MaxConcurrency defaults to the rollout's.
	MaxConcurrency IntOrPercent `json:"maxConcurrency,omitempty"`
	// Promotion: Manual (tether rollout approve), Auto (the default) or
	// "After DURATION" after the previous stage finished.
	Promotion string `json:"promotion,omitempty"`
}

// MaintenanceWindow is a recurring window: it opens at every time the
// cron schedule names, in TimeZone, and stays open for Duration.
type MaintenanceWindow struct {
	Name string `json:"name"`
	// Schedule: five cron fields, minute hour day-of-month month
	// day-of-week, each *, a number, a range a-b, a list, and /step.
	Schedule string `json:"schedule"`
	// TimeZone: an IANA zone such as Europe/Paris; default UTC.
	TimeZone        string        `json:"timeZone,omitempty"`
	Duration        string        `json:"duration"`
	ClusterSelector LabelSelector `json:"clusterSelector,omitzero"`
}

// IntOrPercent is a JSON number or a string "N%". It is kept as the raw
// JSON so the strict decoder takes either; Validate checks it.
type IntOrPercent = json.RawMessage

// Scaled resolves an IntOrPercent against total: a percent rounds up
// (10% of 5 is 1), a number is taken as is; empty gives def.
func Scaled(v IntOrPercent, total, def int) (int, error) {
	if len(bytes.TrimSpace(v)) == 0 {
		return def, nil
	}
	n, pct, err := parseIntOrPercent(v)
	if err != nil {
		return 0, err
	}
	if !pct {
		return n, nil
	}
	return (n*total + 99) / 100, nil
}

func parseIntOrPercent(v IntOrPercent) (n int, pct bool, err error) {
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		var i int
		if err := json.Unmarshal(v, &i); err != nil {
			return 0, false, fmt.Errorf("want a non-negative integer or a percent such as \"10%%\", got %s", v)
		}
		if i < 0 {
			return 0, false, fmt.Errorf("want a non-negative integer, got %d", i)
		}
		return i, false, nil
	}
	num, isPct := strings.CutSuffix(strings.TrimSpace(s), "%")
	i, err := strconv.Atoi(num)
	if err != nil || i < 0 {
		return 0, false, fmt.Errorf("want a non-negative integer or a percent such as \"10%%\", got %q", s)
	}
	if isPct && i > 100 {
		return 0, false, fmt.Errorf("%q: a percent must be at most 100%%", s)
	}
	return i, isPct, nil
}

// ParseDuration reads a rollout duration ("90s", "30m", "1h30m", "0");
// empty gives def.
func ParseDuration(s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 30m or 1h30m, got %q", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("want a duration that is not negative, got %q", s)
	}
	return d, nil
}

// DefaultProgressDeadline is a rollout's progressDeadline when it names none.
const DefaultProgressDeadline = 30 * time.Minute

// PromotionDelay parses a stage's promotion: manual, or the delay after
// the previous stage finished (0 for Auto).
func PromotionDelay(p string) (manual bool, after time.Duration, err error) {
	switch p {
	case "", PromotionAuto:
		return false, 0, nil
	case PromotionManual:
		return true, 0, nil
	}
	rest, ok := strings.CutPrefix(p, promotionAfter)
	if !ok {
		return false, 0, fmt.Errorf("want Manual, Auto or \"After DURATION\" (After 30m), got %q", p)
	}
	rest = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest), ":"))
	d, err := ParseDuration(rest, 0)
	if err != nil || rest == "" {
		return false, 0, fmt.Errorf("promotion %q: want \"After DURATION\" such as \"After 30m\"", p)
	}
	return false, d, nil
}

// setDefaults fills the policy's defaults in place (nil: nothing).
func (r *Rollout) setDefaults() {
	if r == nil {
		return
	}
	if r.Strategy == "" {
		r.Strategy = RolloutAll
	}
	if r.OnFailure == "" {
		r.OnFailure = OnFailureHalt
	}
	if r.OfflineClusters == "" {
		r.OfflineClusters = OfflineSkip
	}
	for i := range r.Stages {
		if r.Stages[i].Promotion == "" {
			r.Stages[i].Promotion = PromotionAuto
		}
	}
	for i := range r.MaintenanceWindows {
		if r.MaintenanceWindows[i].TimeZone == "" {
			r.MaintenanceWindows[i].TimeZone = "UTC"
		}
	}
}

// validateRollout checks a rollout policy; p is its path (spec.rollout).
func validateRollout(r *Rollout, p path, errs *FieldErrors) {
	if r == nil {
		return
	}
	switch r.Strategy {
	case RolloutAll, RolloutProgressive, RolloutStaged:
	default:
		errs.add(p.child("strategy"), "%q: want All, Progressive or Staged", r.Strategy)
	}
	checkIOP := func(v IntOrPercent, at path) {
		if len(v) == 0 {
			return
		}
		if _, _, err := parseIntOrPercent(v); err != nil {
			errs.add(at, "%v", err)
		}
	}
	checkIOP(r.MaxConcurrency, p.child("maxConcurrency"))
	checkIOP(r.MaxFailures, p.child("maxFailures"))
	if n, pct, err := parseIntOrPercent(r.MaxConcurrency); len(r.MaxConcurrency) > 0 && err == nil && n == 0 {
		errs.add(p.child("maxConcurrency"), "must be at least 1 (or 1%%): 0%s would never start a cluster", map[bool]string{true: "%"}[pct])
	}
	for _, d := range []struct {
		v  string
		at string
	}{{r.MinSuccessTime, "minSuccessTime"}, {r.ProgressDeadline, "progressDeadline"}} {
		if _, err := ParseDuration(d.v, 0); err != nil {
			errs.add(p.child(d.at), "%v", err)
		}
	}
	switch r.OnFailure {
	case OnFailureHalt, OnFailureRollback:
	default:
		errs.add(p.child("onFailure"), "%q: want Halt or Rollback", r.OnFailure)
	}
	switch r.OfflineClusters {
	case OfflineSkip, OfflineWait, OfflineFail:
	default:
		errs.add(p.child("offlineClusters"), "%q: want Skip, Wait or Fail", r.OfflineClusters)
	}
	if r.Strategy == RolloutStaged && len(r.Stages) == 0 {
		errs.add(p.child("stages"), "required for strategy Staged")
	}
	if r.Strategy != RolloutStaged && len(r.Stages) > 0 {
		errs.add(p.child("stages"), "only used by strategy Staged (strategy is %s)", r.Strategy)
	}
	names := map[string]int{}
	for i, s := range r.Stages {
		sp := p.child("stages").index(i)
		switch {
		case s.Name == "":
			errs.add(sp.child("name"), "required")
		case names[s.Name] > 0:
			errs.add(sp.child("name"), "%q: duplicate stage name (also stages[%d])", s.Name, names[s.Name]-1)
		default:
			names[s.Name] = i + 1
		}
		validateSelector(&s.ClusterSelector, sp.child("clusterSelector"), errs)
		checkIOP(s.MaxConcurrency, sp.child("maxConcurrency"))
		if _, _, err := PromotionDelay(s.Promotion); err != nil {
			errs.add(sp.child("promotion"), "%v", err)
		}
		for j := range i {
			if why, overlap := selectorsOverlap(&r.Stages[j].ClusterSelector, &s.ClusterSelector); overlap {
				errs.add(sp.child("clusterSelector"), "overlaps stages[%d] (%q): %s; a cluster must belong to one stage", j, r.Stages[j].Name, why)
			}
		}
	}
	wnames := map[string]bool{}
	for i, w := range r.MaintenanceWindows {
		wp := p.child("maintenanceWindows").index(i)
		if w.Name == "" {
			errs.add(wp.child("name"), "required")
		} else if wnames[w.Name] {
			errs.add(wp.child("name"), "%q: duplicate window name", w.Name)
		}
		wnames[w.Name] = true
		validateSelector(&w.ClusterSelector, wp.child("clusterSelector"), errs)
		if _, err := w.Compile(); err != nil {
			errs.add(wp, "%v", err)
		}
	}
	if r.PreStage && len(r.MaintenanceWindows) == 0 {
		errs.add(p.child("preStage"), "needs maintenanceWindows (it delivers a revision ahead of a window)")
	}
	if r.PreStage && (r.Strategy == "" || r.Strategy == RolloutAll) {
		errs.add(p.child("preStage"), "needs strategy Progressive or Staged (All admits every cluster at once)")
	}
}

// selectorsOverlap reports whether two stage selectors certainly select
// a common cluster, when that can be decided from matchLabels alone: two
// selectors without expressions overlap unless some key they both name
// has different values. With expressions it reports no overlap (not
// decidable here; the controller puts such a cluster in the first stage).
func selectorsOverlap(a, b *LabelSelector) (string, bool) {
	if len(a.MatchExpressions) > 0 || len(b.MatchExpressions) > 0 {
		return "", false
	}
	for k, v := range a.MatchLabels {
		if w, ok := b.MatchLabels[k]; ok && w != v {
			return "", false
		}
	}
	merged := map[string]string{}
	for k, v := range a.MatchLabels {
		merged[k] = v
	}
	for k, v := range b.MatchLabels {
		merged[k] = v
	}
	if len(merged) == 0 {
		return "both select every cluster", true
	}
	keys := sortedKeys(merged)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+merged[k])
	}
	return "a cluster labelled " + strings.Join(parts, ",") + " matches both", true
}

// maxWindow bounds a maintenance window's duration.
const maxWindow = 31 * 24 * time.Hour

// Window is a compiled maintenance window.
type Window struct {
	Name     string
	Selector LabelSelector
	sched    *schedule
	loc      *time.Location
	dur      time.Duration
}

// Compile parses the window; an error says which part is wrong, including
// a schedule that never fires (such as 30 February).
func (w *MaintenanceWindow) Compile() (*Window, error) {
	s, err := parseSchedule(w.Schedule)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %v", w.Schedule, err)
	}
	tz := w.TimeZone
	if tz == "" {
		tz = "UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return nil, fmt.Errorf("timeZone %q: not a known IANA time zone", tz)
	}
	d, err := ParseDuration(w.Duration, 0)
	if err != nil {
		return nil, fmt.Errorf("duration: %v", err)
	}
	if d <= 0 {
		return nil, fmt.Errorf("duration: required and must be positive (a window of length 0 never opens)")
	}
	if d > maxWindow {
		return nil, fmt.Errorf("duration %s: at most %s (a longer window is no window)", d, maxWindow)
	}
	// 8 years covers every day-of-month/month/weekday combination that
	// can ever occur (29 February on a given weekday recurs within 28).
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, loc)
	if _, ok := s.next(start, start.AddDate(28, 0, 0)); !ok {
		return nil, fmt.Errorf("schedule %q never fires, so the window never opens", w.Schedule)
	}
	return &Window{Name: w.Name, Selector: w.ClusterSelector, sched: s, loc: loc, dur: d}, nil
}

// OpenAt reports whether the window is open at t, and when it next opens
// (when it is closed; zero if not within a year).
func (w *Window) OpenAt(t time.Time) (bool, time.Time) {
	t = t.In(w.loc)
	// Open iff a start falls in (t-dur, t].
	from := t.Add(-w.dur)
	if s, ok := w.sched.next(from, t.Add(time.Minute)); ok && !s.After(t) {
		return true, time.Time{}
	}
	s, ok := w.sched.next(t, t.AddDate(1, 0, 0))
	if !ok {
		return false, time.Time{}
	}
	return false, s
}

// Span is one occurrence of a window: [Start, End).
type Span struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Occurrences returns up to n occurrences of the window that end after t
// (the one open at t first, if any), within a year, in UTC.
func (w *Window) Occurrences(t time.Time, n int) []Span {
	var out []Span
	t = t.In(w.loc)
	from, limit := t.Add(-w.dur), t.AddDate(1, 0, 0)
	for len(out) < n {
		s, ok := w.sched.next(from, limit)
		if !ok {
			break
		}
		if e := s.Add(w.dur); e.After(t) {
			out = append(out, Span{Start: s.UTC(), End: e.UTC()})
		}
		from = s
	}
	return out
}

// ---- cron ----

type schedule struct {
	minute, hour, dom, month, dow uint64 // bit sets
	domStar, dowStar              bool
}

func parseSchedule(s string) (*schedule, error) {
	f := strings.Fields(s)
	if len(f) != 5 {
		return nil, fmt.Errorf("want 5 fields (minute hour day-of-month month day-of-week), got %d", len(f))
	}
	var sc schedule
	var err error
	parts := []struct {
		dst      *uint64
		lo, hi   int
		name     string
		wildcard *bool
	}{
		{&sc.minute, 0, 59, "minute", nil}, {&sc.hour, 0, 23, "hour", nil},
		{&sc.dom, 1, 31, "day-of-month", &sc.domStar}, {&sc.month, 1, 12, "month", nil},
		{&sc.dow, 0, 7, "day-of-week", &sc.dowStar},
	}
	for i, p := range parts {
		if *p.dst, err = parseField(f[i], p.lo, p.hi); err != nil {
			return nil, fmt.Errorf("%s %q: %v", p.name, f[i], err)
		}
		if p.wildcard != nil {
			*p.wildcard = f[i] == "*" || strings.HasPrefix(f[i], "*/")
		}
	}
	if sc.dow&(1<<7) != 0 { // 7 is Sunday too
		sc.dow |= 1
	}
	return &sc, nil
}

func parseField(f string, lo, hi int) (uint64, error) {
	var bits uint64
	for _, item := range strings.Split(f, ",") {
		rng, stepS, hasStep := strings.Cut(item, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepS)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("step %q: want a positive number", stepS)
			}
			step = n
		}
		a, b := lo, hi
		if rng != "*" {
			as, bs, isRange := strings.Cut(rng, "-")
			var err error
			if a, err = strconv.Atoi(as); err != nil {
				return 0, fmt.Errorf("%q: want *, a number, a range a-b or a list", item)
			}
			b = a
			if isRange {
				if b, err = strconv.Atoi(bs); err != nil {
					return 0, fmt.Errorf("%q: want *, a number, a range a-b or a list", item)
				}
			} else if hasStep {
				b = hi
			}
			if a < lo || b > hi || a > b {
				return 0, fmt.Errorf("%q: out of range %d-%d", item, lo, hi)
			}
		}
		for v := a; v <= b; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, nil
}

func (s *schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domStar || s.dowStar { // cron: when one is *, the other decides
		return dom && dow
	}
	return dom || dow
}

// next returns the first time strictly after t (minute resolution) that
// the schedule names, searching up to limit.
func (s *schedule) next(t, limit time.Time) (time.Time, bool) {
	loc := t.Location()
	t = t.Truncate(time.Minute).Add(time.Minute)
	for !t.After(limit) {
		if s.month&(1<<uint(t.Month())) == 0 {
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, loc)
			continue
		}
		if !s.dayMatches(t) {
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, loc)
			continue
		}
		if s.hour&(1<<uint(t.Hour())) == 0 {
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, loc)
			continue
		}
		if s.minute&(1<<uint(t.Minute())) == 0 {
			t = t.Add(time.Minute)
			continue
		}
		return t, true
	}
	return time.Time{}, false
}
