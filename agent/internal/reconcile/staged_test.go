package reconcile

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// hubCharts serves chart archives until its link is cut.
type hubCharts struct {
	mu      sync.Mutex
	charts  map[string][]byte
	down    bool
	fetched []string
}

func (h *hubCharts) FetchChart(_ context.Context, digest string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down {
		return nil, errors.New("link down")
	}
	h.fetched = append(h.fetched, digest)
	if b, ok := h.charts[digest]; ok {
		return b, nil
	}
	return nil, errors.New("no such chart")
}

// syncEngine is fakeEngine for a pass that applies services in parallel.
type syncEngine struct {
	mu sync.Mutex
	fakeEngine
}

func (e *syncEngine) Apply(ctx context.Context, r engine.Release) (engine.Result, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fakeEngine.Apply(ctx, r)
}

func (e *syncEngine) appliedNow() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.applied)
}

// fakeClock is the agent's hub clock in these tests.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }

func window(start time.Time, d time.Duration) *fleetv1.Window {
	return &fleetv1.Window{Start: timestamppb.New(start), End: timestamppb.New(start.Add(d))}
}

func status(r *Reconciler, k string) *fleetv1.ServiceStatus {
	for _, s := range r.Statuses() {
		if key(s.GetNamespace(), s.GetName()) == k {
			return s
		}
	}
	return nil
}

// TestStagedVersionActivatesInItsWindowWithoutLink: a staged next
// version's chart is fetched at once while the current version stays
// applied; at the window start (hub time) the agent switches to it with
// its link down, and a restarted agent outside the window stays on it. A
// staged version whose windows all passed is never activated.
func TestStagedVersionActivatesInItsWindowWithoutLink(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	c, err := cache.Open(path, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	d1, b1 := chartBytes("web 1.0.0")
	d2, b2 := chartBytes("web 2.0.0")
	d3, b3 := chartBytes("late 2.0.0")
	hub := &hubCharts{charts: map[string][]byte{d1: b1, d2: b2, d3: b3}}
	t0 := time.Date(2026, 12, 2, 22, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	eng := &syncEngine{}
	newRec := func(c *cache.Cache) *Reconciler {
		r, err := New(Config{Cache: c, Engine: eng, Charts: hub, Now: clock.Now, HubNow: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := newRec(c)
	ctx := context.Background()
	win := t0.Add(4 * time.Hour) // 02:00
	ds := &fleetv1.DesiredState{Revision: 5, Full: true, Services: []*fleetv1.Service{
		{Name: "web", Namespace: "a", ChartDigest: d1, ValuesHash: "v1", Staged: &fleetv1.StagedService{
			Next:    &fleetv1.Service{Name: "web", Namespace: "a", ChartDigest: d2, ChartVersion: "2.0.0", ValuesHash: "v2"},
			Windows: []*fleetv1.Window{window(win, 2*time.Hour), window(win.AddDate(0, 0, 1), 2*time.Hour)},
		}},
		{Name: "late", Namespace: "a", ChartDigest: d1, ValuesHash: "l1", Staged: &fleetv1.StagedService{
			Next:    &fleetv1.Service{Name: "late", Namespace: "a", ChartDigest: d3, ValuesHash: "l2"},
			Windows: []*fleetv1.Window{window(t0.Add(-3*time.Hour), time.Hour)}, // already over
		}},
	}}
	if err := r.Desired(ctx, ds); err != nil {
		t.Fatal(err)
	}
	r.Pass(ctx)
	applied := eng.appliedNow()
	if !slices.Contains(applied, "a/web@"+d1) || slices.Contains(applied, "a/web@"+d2) {
		t.Fatalf("before the window: applied %v, want a/web at its current chart only", applied)
	}
	if ok, err := c.HasChart(d2); err != nil || !ok {
		t.Fatalf("staged chart prefetched = %v, %v; want it in the cache", ok, err)
	}
	if r.stagedWake.IsZero() || !r.stagedWake.Equal(win) {
		t.Errorf("next wake %v, want the window start %v", r.stagedWake, win)
	}

	// The link is cut; the window opens.
	hub.mu.Lock()
	hub.down = true
	hub.mu.Unlock()
	clock.set(win.Add(time.Minute))
	r.Pass(ctx)
	applied = eng.appliedNow()
	if !slices.Contains(applied, "a/web@"+d2) {
		t.Fatalf("in the window with the link down: applied %v, want a/web@%s", applied, d2)
	}
	if s := status(r, "a/web"); s.GetState() != StateDeployed || s.GetLastDeployedHash() == "" {
		t.Fatalf("a/web status after activation = %v", s)
	}
	if slices.Contains(applied, "a/late@"+d3) {
		t.Errorf("a/late activated a staged version whose windows had passed: %v", applied)
	}

	// Restart outside the window: it stays on the next version.
	c.Close()
	c2, err := cache.Open(path, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	clock.set(win.Add(5 * time.Hour))
	eng.mu.Lock()
	eng.applied = nil
	eng.mu.Unlock()
	r2 := newRec(c2)
	r2.Pass(ctx)
	applied = eng.appliedNow()
	if !slices.Contains(applied, "a/web@"+d2) || slices.Contains(applied, "a/web@"+d1) {
		t.Fatalf("after a restart outside the window: applied %v, want a/web@%s", applied, d2)
	}
	if r2.Revision() != 5 {
		t.Errorf("revision after restart = %d, want 5 (activation keeps the held revision)", r2.Revision())
	}
	// Later the hub sends the same version as the plain service.
	if err := r2.Desired(ctx, &fleetv1.DesiredState{Revision: 6, Services: []*fleetv1.Service{
		{Name: "web", Namespace: "a", ChartDigest: d2, ChartVersion: "2.0.0", ValuesHash: "v2"}}}); err != nil {
		t.Fatal(err)
	}
	r2.Pass(ctx)
	if s := status(r2, "a/web"); s.GetState() != StateDeployed || s.GetRevision() != 6 {
		t.Errorf("a/web after the hub admitted it = %v, want Deployed at 6", s)
	}
}
