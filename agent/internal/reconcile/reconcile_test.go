package reconcile

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// noEngine fails every call: these tests exercise state handling only; the
// Helm side runs against a real cluster in e2e/services.
type noEngine struct{ Engine }

type noCharts struct{}

func (noCharts) FetchChart(context.Context, string) ([]byte, error) {
	return nil, errors.New("offline")
}

func newReconciler(t *testing.T, path string) (*Reconciler, *cache.Cache) {
	t.Helper()
	c, err := cache.Open(path, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r, err := New(Config{Cache: c, Engine: noEngine{}, Charts: noCharts{}})
	if err != nil {
		t.Fatal(err)
	}
	return r, c
}

func svc(ns, name string, deps ...string) *fleetv1.Service {
	return &fleetv1.Service{Name: name, Namespace: ns, ChartDigest: "sha256:x", ValuesHash: name, DependsOn: deps}
}

func names(ds *fleetv1.DesiredState) []string {
	var out []string
	for _, s := range ds.GetServices() {
		out = append(out, s.GetNamespace()+"/"+s.GetName())
	}
	return out
}

func TestDesiredDeltasPersistBeforeAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.db")
	r, c := newReconciler(t, path)
	ctx := context.Background()
	steps := []struct {
		name string
		ds   *fleetv1.DesiredState
		want []string
		rev  uint64
	}{
		{"full", &fleetv1.DesiredState{Revision: 5, Full: true, Services: []*fleetv1.Service{svc("a", "web"), svc("b", "db")}}, []string{"a/web", "b/db"}, 5},
		{"delta adds and changes", &fleetv1.DesiredState{Revision: 7, Services: []*fleetv1.Service{svc("c", "cache"), svc("a", "web")}}, []string{"a/web", "b/db", "c/cache"}, 7},
		{"tombstone deletes", &fleetv1.DesiredState{Revision: 9, Tombstones: []*fleetv1.Tombstone{{Name: "db", Namespace: "b", Revision: 9}}}, []string{"a/web", "c/cache"}, 9},
		{"stale delta ignored", &fleetv1.DesiredState{Revision: 8, Services: []*fleetv1.Service{svc("x", "stale")}}, []string{"a/web", "c/cache"}, 9},
		{"same full again ignored", &fleetv1.DesiredState{Revision: 9, Full: true}, []string{"a/web", "c/cache"}, 9},
		{"full replaces", &fleetv1.DesiredState{Revision: 12, Full: true, Services: []*fleetv1.Service{svc("z", "only")}}, []string{"z/only"}, 12},
	}
	for _, st := range steps {
		if err := r.Desired(ctx, st.ds); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := names(r.desired); !equal(got, st.want) || r.Revision() != st.rev {
			t.Fatalf("%s: services %v rev %d; want %v rev %d", st.name, got, r.Revision(), st.want, st.rev)
		}
	}
	// What was acknowledged survives a restart.
	c.Close()
	r2, _ := newReconciler(t, path)
	if got := names(r2.desired); r2.Revision() != 12 || !equal(got, []string{"z/only"}) {
		t.Fatalf("after reopen: %v rev %d", got, r2.Revision())
	}
}

func TestDesiredRejectsBadService(t *testing.T) {
	r, _ := newReconciler(t, filepath.Join(t.TempDir(), "agent.db"))
	err := r.Desired(context.Background(), &fleetv1.DesiredState{Revision: 3, Full: true, Services: []*fleetv1.Service{{Name: "x"}}})
	if err == nil || r.Revision() != 0 {
		t.Fatalf("service without namespace: err %v, revision %d; want an error and nothing stored", err, r.Revision())
	}
}

func TestTopoOrder(t *testing.T) {
	svcs := []*fleetv1.Service{svc("n", "app", "n/db", "cache"), svc("n", "db"), svc("n", "cache", "db"), svc("n", "x", "y"), svc("n", "y", "n/x")}
	order, cycle := topoOrder(svcs)
	pos := map[string]int{}
	for i, s := range order {
		pos[s.GetName()] = i
	}
	if !(pos["db"] < pos["cache"] && pos["cache"] < pos["app"]) {
		t.Errorf("order %v: dependencies must come first", names(&fleetv1.DesiredState{Services: order}))
	}
	if !cycle["n/x"] || !cycle["n/y"] || cycle["n/app"] {
		t.Errorf("cycle = %v; want exactly n/x and n/y", cycle)
	}
	if len(order) != len(svcs) {
		t.Errorf("order has %d services, want %d", len(order), len(svcs))
	}
}

func TestWaitingOn(t *testing.T) {
	s := svc("n", "app", "db")
	if dep, ok := waitingOn(s, map[string]bool{}); ok || dep != "db" {
		t.Errorf("waitingOn with nothing deployed = %q, %v", dep, ok)
	}
	if _, ok := waitingOn(s, map[string]bool{"n/db": true}); !ok {
		t.Error("waitingOn with db deployed should be satisfied")
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRetryDelay(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{{0, 2 * time.Second}, {1, 2 * time.Second}, {2, 4 * time.Second}, {5, 32 * time.Second}, {8, 256 * time.Second}, {9, 5 * time.Minute}, {1000, 5 * time.Minute}} {
		if got := retryDelay(tt.n); got != tt.want {
			t.Errorf("retryDelay(%d) = %s, want %s", tt.n, got, tt.want)
		}
	}
}

// fakeEngine installs everything at once and healthy: for the tests of
// what the reconciler does around the engine.
type fakeEngine struct {
	Engine
	applied []string
}

func (f *fakeEngine) Apply(_ context.Context, r engine.Release) (engine.Result, error) {
	f.applied = append(f.applied, r.Namespace+"/"+r.Name+"@"+r.ChartDigest)
	return engine.Result{Action: engine.ActionInstalled, Revision: 1}, nil
}

func (f *fakeEngine) Health(context.Context, string, string) (engine.Health, error) {
	return engine.Health{Ready: true}, nil
}

func (f *fakeEngine) List(context.Context) ([]engine.ReleaseInfo, error) { return nil, nil }

func chartBytes(s string) (string, []byte) {
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:]), []byte(s)
}

// TestUnneededChartsAreCollected: charts the current desired state, the
// revision before it and the release record need stay in the cache; the
// rest are deleted after a pass (they were kept forever).
func TestUnneededChartsAreCollected(t *testing.T) {
	c, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	eng := &fakeEngine{}
	r, err := New(Config{Cache: c, Engine: eng, Charts: noCharts{}})
	if err != nil {
		t.Fatal(err)
	}
	charts := []string{"chart-1", "chart-2", "chart-3", "unneeded", "installed-old"}
	var digests []string
	put := func(i int) {
		if err := c.PutChart(digests[i], []byte(charts[i])); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range charts {
		d, _ := chartBytes(s)
		digests = append(digests, d)
	}
	put(3)
	put(4)
	// The release record says an older chart is still installed.
	if err := c.SaveReleaseRecord(cache.ReleaseRecord{Namespace: "other", Name: "old", Revisions: []cache.ReleaseRevision{{Revision: 1, Digest: "sha256:x", Chart: digests[4]}}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for rev, d := range digests[:3] {
		put(rev) // as if fetched from the hub
		ds := &fleetv1.DesiredState{Revision: uint64(rev + 1), Full: true, Services: []*fleetv1.Service{{Name: "web", Namespace: "a", ChartDigest: d, ValuesHash: d}}}
		if err := r.Desired(ctx, ds); err != nil {
			t.Fatal(err)
		}
		r.Pass(ctx)
	}
	for i, want := range []bool{false, true, true, false, true} {
		if ok, err := c.HasChart(digests[i]); err != nil || ok != want {
			t.Errorf("chart %d cached = %v, %v; want %v", i+1, ok, err, want)
		}
	}
	if len(eng.applied) != 3 {
		t.Errorf("applied %v, want three revisions", eng.applied)
	}
}

type adoptingEngine struct {
	fakeEngine
	adopt    []string
	adoptErr error
}

func (a *adoptingEngine) Adopt(_ context.Context, r engine.Release) (bool, error) {
	a.adopt = append(a.adopt, r.Namespace+"/"+r.Name+"@"+r.ChartDigest)
	return a.adoptErr == nil, a.adoptErr
}

// TestAdoptionAfterSchema1Upgrade: on a cache file upgraded from schema 1
// the reconciler asks the engine to adopt the services of the desired
// revision the upgrade noted, before anything else, and only once; a
// transient failure is retried, a refusal is final.
func TestAdoptionAfterSchema1Upgrade(t *testing.T) {
	src, err := os.Open("../cache/testdata/state-v1.db.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	zr, err := gzip.NewReader(src)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.db")
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := cache.Open(path, cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	eng := &adoptingEngine{adoptErr: errors.New("cluster unreachable")}
	r, err := New(Config{Cache: c, Engine: eng, Charts: noCharts{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if busy := r.Pass(ctx); !busy || len(eng.applied) != 0 {
		t.Fatalf("pass with adoption failing: busy %v, applied %v; want a retry and nothing applied", busy, eng.applied)
	}
	eng.adoptErr = fmt.Errorf("adopt: %w", engine.ErrForeignRelease)
	r.Pass(ctx)
	want := "applications-web/nginx-web@" + digestOfString("chart archive v1 fixture")
	if len(eng.adopt) != 2 || eng.adopt[1] != want {
		t.Fatalf("Adopt calls = %v, want two for %s", eng.adopt, want)
	}
	if _, pending, err := c.PendingAdoption(); err != nil || pending {
		t.Errorf("PendingAdoption after adoption = %v, %v", pending, err)
	}
	r.Pass(ctx)
	r2, err := New(Config{Cache: c, Engine: eng, Charts: noCharts{}})
	if err != nil {
		t.Fatal(err)
	}
	r2.Pass(ctx)
	if len(eng.adopt) != 2 {
		t.Errorf("Adopt calls after adoption ended = %v", eng.adopt)
	}
}

func digestOfString(s string) string { d, _ := chartBytes(s); return d }
