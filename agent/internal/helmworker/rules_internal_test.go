package helmworker

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/tetherfleet/tether/agent/internal/apply"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// TestReleaseOfCarriesDriftRules: the drift rules the agent sends with an
// apply reach the engine, so an upgrade or repair keeps excluded fields;
// rules that do not decode are refused, not dropped.
func TestReleaseOfCarriesDriftRules(t *testing.T) {
	want := apply.DriftRules{Exclude: []apply.DriftExclusion{{Paths: []string{"/spec/replicas"}}}}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	r, err := releaseOf(&workerv1.Release{Name: "web", Namespace: "shop", DriftRulesJson: b})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Drift, want) {
		t.Fatalf("drift rules %+v, want %+v", r.Drift, want)
	}
	if _, err := releaseOf(&workerv1.Release{Name: "web", Namespace: "shop", DriftRulesJson: []byte("{")}); err == nil {
		t.Fatal("bad drift rules accepted")
	}
}
