package reconcile

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// lockedEngine installs everything healthy except the releases in fail;
// safe for the parallel pass.
type lockedEngine struct {
	Engine
	fail    map[string]bool
	mu      sync.Mutex
	applied []string
}

func (f *lockedEngine) Apply(_ context.Context, r engine.Release) (engine.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, r.Namespace+"/"+r.Name)
	if f.fail[r.Name] {
		return engine.Result{}, errors.New("render failed")
	}
	return engine.Result{Action: engine.ActionInstalled, Revision: 1}, nil
}

func (f *lockedEngine) Health(context.Context, string, string) (engine.Health, error) {
	return engine.Health{Ready: true}, nil
}

func (f *lockedEngine) List(context.Context) ([]engine.ReleaseInfo, error) { return nil, nil }

// TestParallelPassKeepsDependencyRules: in a parallel pass a cycle is
// Failed, a service depending on a cycle, on a service not in the desired
// state or on one that failed is Pending and never applied, and the
// pass ends (nothing waits forever on such a dependency); the rest are
// Deployed.
func TestParallelPassKeepsDependencyRules(t *testing.T) {
	c, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	dg, b := chartBytes("chart")
	if err := c.PutChart(dg, b); err != nil {
		t.Fatal(err)
	}
	eng := &lockedEngine{fail: map[string]bool{"bad": true}}
	r, err := New(Config{Cache: c, Engine: eng, Charts: noCharts{}, Concurrency: 2})
	if err != nil {
		t.Fatal(err)
	}
	s := func(name string, deps ...string) *fleetv1.Service {
		return &fleetv1.Service{Name: name, Namespace: "n", ChartDigest: dg, ValuesHash: name, DependsOn: deps}
	}
	ds := &fleetv1.DesiredState{Revision: 1, Full: true, Services: []*fleetv1.Service{
		s("x", "y"), s("y", "x"), s("z", "x"), s("m", "missing"), s("bad"), s("after", "bad"),
		s("ok"), s("db"), s("app", "db"), s("top", "app"), s("self", "self"),
	}}
	if err := r.Desired(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	r.Pass(t.Context())
	want := map[string]string{"x": StateFailed, "y": StateFailed, "self": StateFailed, "z": StatePending, "m": StatePending,
		"bad": StateFailed, "after": StatePending, "ok": StateDeployed, "db": StateDeployed, "app": StateDeployed, "top": StateDeployed}
	got := map[string]string{}
	for _, st := range r.Statuses() {
		got[st.GetName()] = st.GetState()
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %s, want %s", name, got[name], w)
		}
	}
	for _, a := range eng.applied {
		switch a {
		case "n/x", "n/y", "n/z", "n/m", "n/after", "n/self":
			t.Errorf("%s was applied; its dependencies were not Deployed", a)
		}
	}
}
