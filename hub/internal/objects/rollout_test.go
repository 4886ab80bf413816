package objects

import (
	"strings"
	"testing"
	"time"
)

const rolloutMCS = `apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: web, namespace: acme}
spec:
  serviceSpec:
    services: [{template: simple-nginx-1.0.0, name: web}]
  rollout:
`

func decodeRollout(t *testing.T, rollout string) (*MultiClusterService, error) {
	t.Helper()
	var b strings.Builder
	b.WriteString(rolloutMCS)
	for _, l := range strings.Split(strings.TrimSpace(rollout), "\n") {
		b.WriteString("    " + l + "\n")
	}
	objs, err := Decode([]byte(b.String()), "mcs.yaml")
	if err != nil {
		return nil, err
	}
	return objs[0].(*MultiClusterService), nil
}

func TestRolloutDefaultsAndAccepts(t *testing.T) {
	mcs, err := decodeRollout(t, `
strategy: Staged
maxConcurrency: 10%
maxFailures: 2
minSuccessTime: 5m
stages:
  - {name: canary, clusterSelector: {matchLabels: {ring: canary}}, promotion: Manual}
  - {name: rest, clusterSelector: {matchLabels: {ring: main}}, promotion: "After 1h", maxConcurrency: 25}
maintenanceWindows:
  - {name: nights, schedule: "0 2 * * *", timeZone: Europe/Paris, duration: 4h, clusterSelector: {matchLabels: {site: shop}}}`)
	if err != nil {
		t.Fatal(err)
	}
	r := mcs.Spec.Rollout
	if r.OnFailure != OnFailureHalt || r.OfflineClusters != OfflineSkip || r.Stages[0].Promotion != PromotionManual {
		t.Errorf("defaults not applied: %+v", r)
	}
	if n, _ := Scaled(r.MaxConcurrency, 25, 1); n != 3 {
		t.Errorf("10%% of 25 = %d, want 3 (rounded up)", n)
	}
	if n, _ := Scaled(r.Stages[1].MaxConcurrency, 1000, 1); n != 25 {
		t.Errorf("stage maxConcurrency = %d, want 25", n)
	}
	if manual, after, err := PromotionDelay(r.Stages[1].Promotion); manual || after != time.Hour || err != nil {
		t.Errorf("promotion = %v %v %v", manual, after, err)
	}
}

func TestRolloutRefusesBadInput(t *testing.T) {
	for _, tc := range []struct{ name, rollout, want string }{
		{"percent over 100", "strategy: Progressive\nmaxConcurrency: 150%", `spec.rollout.maxConcurrency: "150%": a percent must be at most 100%`},
		{"failures percent over 100", "maxFailures: 101%", "spec.rollout.maxFailures"},
		{"unknown field", "strategy: Progressive\nmaxUnavailable: 1", "spec.rollout.maxUnavailable: unknown field"},
		{"unknown strategy", "strategy: Canary", `spec.rollout.strategy: "Canary": want All, Progressive or Staged`},
		{"zero concurrency", "strategy: Progressive\nmaxConcurrency: 0", "spec.rollout.maxConcurrency: must be at least 1"},
		{"duplicate stage", "strategy: Staged\nstages: [{name: a, clusterSelector: {matchLabels: {r: '1'}}}, {name: a, clusterSelector: {matchLabels: {r: '2'}}}]", `spec.rollout.stages[1].name: "a": duplicate stage name`},
		{"overlapping stages", "strategy: Staged\nstages: [{name: a, clusterSelector: {matchLabels: {r: '1'}}}, {name: b, clusterSelector: {matchLabels: {z: '2'}}}]", `spec.rollout.stages[1].clusterSelector: overlaps stages[0] ("a"): a cluster labelled r=1,z=2 matches both`},
		{"stage selects all twice", "strategy: Staged\nstages: [{name: a}, {name: b}]", "both select every cluster"},
		{"staged without stages", "strategy: Staged", "spec.rollout.stages: required"},
		{"bad promotion", "strategy: Staged\nstages: [{name: a, promotion: Later}]", "spec.rollout.stages[0].promotion"},
		{"window never opens", "maintenanceWindows: [{name: w, schedule: '0 0 30 2 *', duration: 1h}]", "never fires, so the window never opens"},
		{"window zero duration", "maintenanceWindows: [{name: w, schedule: '0 0 * * *', duration: '0'}]", "a window of length 0 never opens"},
		{"window bad zone", "maintenanceWindows: [{name: w, schedule: '0 0 * * *', duration: 1h, timeZone: Mars/Olympus}]", `timeZone "Mars/Olympus"`},
		{"window bad cron", "maintenanceWindows: [{name: w, schedule: '61 * * * *', duration: 1h}]", `minute "61": "61": out of range 0-59`},
		{"bad deadline", "progressDeadline: soon", "spec.rollout.progressDeadline: want a duration"},
		{"bad offline", "offlineClusters: Ignore", "spec.rollout.offlineClusters"},
		{"preStage without windows", "strategy: Progressive\npreStage: true", "spec.rollout.preStage: needs maintenanceWindows"},
		{"preStage with All", "preStage: true\nmaintenanceWindows: [{name: w, schedule: '0 2 * * *', duration: 1h}]", "spec.rollout.preStage: needs strategy Progressive or Staged"},
		{"preStage not a bool", "strategy: Progressive\npreStage: soon", "spec.rollout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeRollout(t, tc.rollout)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestWindowOccurrences(t *testing.T) {
	w, err := (&MaintenanceWindow{Name: "n", Schedule: "0 2 * * 1-5", TimeZone: "Europe/Paris", Duration: "3h"}).Compile()
	if err != nil {
		t.Fatal(err)
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	// Friday 03:00 Paris: the open one first, then Monday..Wednesday.
	got := w.Occurrences(time.Date(2026, 12, 4, 3, 0, 0, 0, paris), 4)
	var want []Span
	for _, d := range []int{4, 7, 8, 9} {
		s := time.Date(2026, 12, d, 2, 0, 0, 0, paris).UTC()
		want = append(want, Span{Start: s, End: s.Add(3 * time.Hour)})
	}
	if len(got) != len(want) {
		t.Fatalf("Occurrences = %v, want %v", got, want)
	}
	for i := range got {
		if !got[i].Start.Equal(want[i].Start) || !got[i].End.Equal(want[i].End) || got[i].Start.Location() != time.UTC {
			t.Errorf("occurrence %d = %v, want %v (UTC)", i, got[i], want[i])
		}
	}
}

func TestWindowOpenAt(t *testing.T) {
	w, err := (&MaintenanceWindow{Name: "n", Schedule: "0 2 * * 1-5", TimeZone: "Europe/Paris", Duration: "3h"}).Compile()
	if err != nil {
		t.Fatal(err)
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	for _, tc := range []struct {
		at       time.Time
		open     bool
		nextOpen time.Time
	}{
		{time.Date(2026, 12, 2, 1, 59, 0, 0, paris), false, time.Date(2026, 12, 2, 2, 0, 0, 0, paris)}, // Wednesday
		{time.Date(2026, 12, 2, 2, 0, 0, 0, paris), true, time.Time{}},
		{time.Date(2026, 12, 2, 4, 59, 0, 0, paris), true, time.Time{}},
		{time.Date(2026, 12, 2, 5, 0, 0, 0, paris), false, time.Date(2026, 12, 3, 2, 0, 0, 0, paris)},
		{time.Date(2026, 12, 5, 3, 0, 0, 0, paris), false, time.Date(2026, 12, 7, 2, 0, 0, 0, paris)}, // Saturday
		{time.Date(2026, 12, 2, 1, 30, 0, 0, time.UTC), true, time.Time{}},                            // 02:30 Paris
	} {
		open, next := w.OpenAt(tc.at)
		if open != tc.open || !next.Equal(tc.nextOpen) {
			t.Errorf("OpenAt(%v) = %v, %v; want %v, %v", tc.at, open, next, tc.open, tc.nextOpen)
		}
	}
}

// FuzzMaintenanceWindow: any schedule, zone and duration either is
// refused or gives a window whose next opening is after the time asked
// and that is open then.
func FuzzMaintenanceWindow(f *testing.F) {
	f.Add("0 2 * * 1-5", "Europe/Paris", "3h", int64(1764669600))
	f.Add("*/15 */2 1,15 */3 0,7", "UTC", "10m", int64(0))
	f.Add("0 0 29 2 *", "America/New_York", "1h", int64(4102444800))
	f.Add("0 0 30 2 *", "", "1h", int64(0))
	f.Add("59 23 31 12 6", "Asia/Kathmandu", "1m", int64(-1))
	f.Fuzz(func(t *testing.T, sched, zone, dur string, at int64) {
		w, err := (&MaintenanceWindow{Name: "w", Schedule: sched, TimeZone: zone, Duration: dur}).Compile()
		if err != nil {
			return
		}
		now := time.Unix(at%(1<<40), 0)
		open, next := w.OpenAt(now)
		if open || next.IsZero() {
			return
		}
		if !next.After(now) {
			t.Fatalf("closed at %v, next opens at %v: not after", now, next)
		}
		if o, _ := w.OpenAt(next); !o {
			t.Fatalf("not open at its next opening %v", next)
		}
	})
}

// FuzzRolloutDecode: any spec.rollout is refused with an error, or
// decodes to a policy whose numbers and durations resolve.
func FuzzRolloutDecode(f *testing.F) {
	f.Add(`{strategy: Staged, maxConcurrency: "10%", maxFailures: 2, minSuccessTime: 5m, stages: [{name: a, clusterSelector: {matchLabels: {r: "1"}}, promotion: Manual}, {name: b, clusterSelector: {matchLabels: {r: "2"}}, promotion: "After 1h"}]}`)
	f.Add(`{strategy: Progressive, maxConcurrency: 3, offlineClusters: Wait, onFailure: Rollback, progressDeadline: "0"}`)
	f.Add(`{maintenanceWindows: [{name: w, schedule: "0 2 * * 1-5", timeZone: Europe/Paris, duration: 3h}]}`)
	f.Add(`{maxConcurrency: "100%", maxFailures: "0%"}`)
	f.Fuzz(func(t *testing.T, rollout string) {
		objs, err := Decode([]byte(rolloutMCS[:len(rolloutMCS)-1]+" "+rollout+"\n"), "fuzz")
		if err != nil {
			return
		}
		r := objs[0].(*MultiClusterService).Spec.Rollout
		if r == nil {
			return
		}
		for _, v := range []IntOrPercent{r.MaxConcurrency, r.MaxFailures} {
			if n, err := Scaled(v, 1000, 1); err != nil || n < 0 || n > 1000 && strings.Contains(string(v), "%") {
				t.Fatalf("accepted %s resolves to %d, %v", v, n, err)
			}
		}
		for _, d := range []string{r.MinSuccessTime, r.ProgressDeadline} {
			if _, err := ParseDuration(d, 0); err != nil {
				t.Fatalf("accepted duration %q: %v", d, err)
			}
		}
		for _, w := range r.MaintenanceWindows {
			if _, err := w.Compile(); err != nil {
				t.Fatalf("accepted window %+v: %v", w, err)
			}
		}
	})
}
