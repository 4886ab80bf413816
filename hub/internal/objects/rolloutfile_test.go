package objects

import (
	"errors"
	"strings"
	"testing"
)

// TestParseRolloutPolicy: a policy file is read with spec.rollout's
// fields, defaults and validation, at the top level or under rollout:;
// a bad one is refused with the file and the field named.
func TestParseRolloutPolicy(t *testing.T) {
	r, err := ParseRolloutPolicy([]byte("rollout:\n  strategy: Progressive\n  maxConcurrency: 2\n"), "cd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if r.Strategy != RolloutProgressive || string(r.MaxConcurrency) != "2" || r.OnFailure != OnFailureHalt || r.OfflineClusters != OfflineSkip {
		t.Errorf("policy = %+v", r)
	}
	if r, err = ParseRolloutPolicy([]byte(`{"strategy": "Staged", "stages": [{"name": "canary", "clusterSelector": {"matchLabels": {"ring": "0"}}}]}`), "cd.json"); err != nil {
		t.Fatal(err)
	} else if r.Stages[0].Promotion != PromotionAuto {
		t.Errorf("stage promotion not defaulted: %+v", r.Stages)
	}
	for _, tc := range []struct{ name, in, want string }{
		{"percent over 100", "rollout: {strategy: Progressive, maxConcurrency: 150%}", "cd.yaml: rollout.maxConcurrency:"},
		{"top level", "strategy: Progressive\nmaxFailures: 200%\n", "cd.yaml: maxFailures:"},
		{"unknown field", "rollout: {strategy: Progressive, maxConcurency: 2}", `cd.yaml: rollout: unknown field "maxConcurency"`},
		{"unknown top-level field", "rollout: {strategy: All}\nextra: 1\n", "cd.yaml: extra: unknown field"},
		{"bad strategy", "rollout: {strategy: Fast}", `cd.yaml: rollout.strategy: "Fast"`},
		{"window never opens", "rollout:\n  strategy: Progressive\n  maintenanceWindows: [{name: feb, schedule: '0 2 30 2 *', duration: 1h}]\n", "cd.yaml: rollout.maintenanceWindows[0]:"},
		{"wrong type", "rollout: {strategy: Progressive, stages: 3}", "cd.yaml: rollout.stages: want"},
		{"empty", "# nothing\n", "cd.yaml: empty"},
		{"not YAML", "rollout: [", "cd.yaml: "},
		{"not a mapping", "- a\n- b\n", "cd.yaml: want a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseRolloutPolicy([]byte(tc.in), "cd.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v, want it to contain %q and match ErrInvalid", err, tc.want)
			}
		})
	}
}

// FuzzParseRolloutPolicy: any input is accepted as a valid policy or
// refused with an error; never a panic.
func FuzzParseRolloutPolicy(f *testing.F) {
	for _, s := range []string{
		"rollout: {strategy: Progressive, maxConcurrency: 2}",
		"strategy: Staged\nstages: [{name: a, clusterSelector: {matchLabels: {x: y}}, promotion: After 1h}]\n",
		"rollout:\n  strategy: Progressive\n  preStage: true\n  maintenanceWindows: [{name: n, schedule: '0 2 * * *', timeZone: Europe/Paris, duration: 3h}]\n",
		"rollout: {maxFailures: 10%, onFailure: Rollback, offlineClusters: Wait}",
		"{}", "rollout: null", "- 1",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRolloutPolicy(b, "f")
		if err == nil && r == nil {
			t.Fatal("nil policy without an error")
		}
	})
}
