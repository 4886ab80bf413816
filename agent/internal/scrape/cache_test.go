package scrape

import (
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestScrapeConfigsSurviveRestartInCache: the scrape configs travel in the
// desired state the reconciler stores in bbolt (no cache change: the
// payload is the marshalled DesiredState), so an agent restarted while
// the hub is unreachable runs them again. A delta without telemetry keeps
// them; one with an empty set removes them.
func TestScrapeConfigsSurviveRestartInCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	db, err := cache.Open(path, cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	// What the reconciler does with each DesiredState from the hub.
	held := &fleetv1.DesiredState{Full: true}
	receive := func(ds *fleetv1.DesiredState) {
		t.Helper()
		next, _, err := fleetv1.Merge(held, ds)
		if err != nil || next == nil {
			t.Fatalf("merge: %v %v", next, err)
		}
		b, err := proto.Marshal(next)
		if err != nil {
			t.Fatal(err)
		}
		if err := db.SaveDesired(next.GetRevision(), b); err != nil {
			t.Fatal(err)
		}
		held = next
	}
	receive(&fleetv1.DesiredState{Revision: 3, Full: true, Epoch: "e", Telemetry: &fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{wireConfig("web")}}})
	receive(&fleetv1.DesiredState{Revision: 4, Epoch: "e", Services: []*fleetv1.Service{{Namespace: "a", Name: "b"}}}) // no telemetry: unchanged
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db, err = cache.Open(path, cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	rev, payload, err := db.LatestDesired()
	if err != nil {
		t.Fatal(err)
	}
	ds := &fleetv1.DesiredState{}
	if err := proto.Unmarshal(payload, ds); err != nil {
		t.Fatal(err)
	}
	cfgs := ds.GetTelemetry().GetScrapeConfigs()
	if rev != 4 || len(cfgs) != 1 || !proto.Equal(cfgs[0], wireConfig("web")) {
		t.Fatalf("after restart: revision %d, scrape configs %v", rev, cfgs)
	}
	if _, err := compileJob(cfgs[0]); err != nil {
		t.Fatalf("cached config does not run: %v", err)
	}
	held = ds
	receive(&fleetv1.DesiredState{Revision: 5, Epoch: "e", Telemetry: &fleetv1.Telemetry{}})
	_, payload, _ = db.LatestDesired()
	ds = &fleetv1.DesiredState{}
	if err := proto.Unmarshal(payload, ds); err != nil || len(ds.GetTelemetry().GetScrapeConfigs()) != 0 {
		t.Fatalf("an empty set did not remove the configs: %v %v", ds.GetTelemetry(), err)
	}
}
