package reconcile

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// neverReady applies everything and is never healthy.
type neverReady struct {
	fakeEngine
	opts []engine.Options
}

func (f *neverReady) Apply(ctx context.Context, r engine.Release) (engine.Result, error) {
	f.opts = append(f.opts, r.Options)
	if len(f.opts) > 1 {
		return engine.Result{Action: engine.ActionUnchanged, Revision: 1}, nil
	}
	return f.fakeEngine.Apply(ctx, r)
}

func (f *neverReady) Drift(context.Context, string, string, engine.DriftRules) (engine.Drift, error) {
	return engine.Drift{}, nil
}

func (f *neverReady) Health(context.Context, string, string) (engine.Health, error) {
	return engine.Health{Message: "0/1 replicas available"}, nil
}

// TestHelmTimeoutBoundsTheHealthWait: helmOptions.timeout, not the agent's
// HealthTimeout, decides when a service that never becomes healthy is
// Failed; the options reach the engine; an unknown sync mode applies
// nothing.
func TestHelmTimeoutBoundsTheHealthWait(t *testing.T) {
	c, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	eng := &neverReady{}
	r, err := New(Config{Cache: c, Engine: eng, Charts: noCharts{}, HealthTimeout: time.Hour, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	dg, b := chartBytes("chart")
	if err := c.PutChart(dg, b); err != nil {
		t.Fatal(err)
	}
	opts := &fleetv1.HelmOptions{TimeoutMs: 30000, SkipCrds: true, DisableHooks: true, Atomic: true}
	ds := &fleetv1.DesiredState{Revision: 1, Full: true, Services: []*fleetv1.Service{
		{Name: "web", Namespace: "apps", ChartDigest: dg, ValuesHash: "h1", HelmOptions: opts},
		{Name: "odd", Namespace: "apps", ChartDigest: dg, ValuesHash: "h1", SyncMode: "Sometimes"},
	}}
	if err := r.Desired(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	state := func(name string) *fleetv1.ServiceStatus {
		for _, s := range r.Statuses() {
			if s.GetName() == name {
				return s
			}
		}
		return nil
	}
	r.Pass(t.Context())
	want := engine.Options{Timeout: 30 * time.Second, SkipCRDs: true, DisableHooks: true, Atomic: true}
	if len(eng.opts) != 1 || eng.opts[0] != want {
		t.Fatalf("engine got %+v; want one apply with %+v (none for the unknown sync mode)", eng.opts, want)
	}
	if s := state("odd"); s.GetState() != StateFailed || !strings.Contains(s.GetMessage(), `syncMode "Sometimes"`) {
		t.Errorf("odd: %v", s)
	}
	if s := state("web"); s.GetState() != StateProvisioning {
		t.Fatalf("web: %v, want Provisioning", s)
	}
	now = now.Add(31 * time.Second)
	r.Pass(t.Context())
	if s := state("web"); s.GetState() != StateFailed || !strings.Contains(s.GetMessage(), "not healthy after 30s") {
		t.Fatalf("web after 31s: %v, want Failed after the service's 30s timeout", s)
	}
}
