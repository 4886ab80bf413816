package reconcile_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	"github.com/tetherfleet/tether/agent/internal/observe"
	"github.com/tetherfleet/tether/agent/internal/reconcile"
	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// One cluster (one simulated node) serves every test of this file; tests
// use their own namespaces.
var shared = cluster.Shared{Options: cluster.Options{Name: "reconcile", NodeCount: 1}}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// testCluster returns the shared cluster, started on first use. Missing
// binaries fail the test with the harness's message (run `make e2e-bins`).
func testCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	return shared.Get(t)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// newEngine returns the real Helm engine over c with a real cache file as
// its release record.
func newEngine(t *testing.T, c *cluster.Cluster) (*apply.Engine, *cache.Cache) {
	t.Helper()
	db, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	e, err := apply.New(apply.Config{RESTConfig: c.RESTConfig, Records: db, Logger: testLogger(t),
		Timeout: 2 * time.Minute, PollInterval: 250 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); db.Close() })
	return e, db
}

type cachedCharts struct{}

func (cachedCharts) FetchChart(context.Context, string) ([]byte, error) {
	return nil, errors.New("offline: charts come from the cache")
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// chartOf packages a chart of files and stores it in db; it returns the
// digest.
func chartOf(t *testing.T, db *cache.Cache, name string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	files["Chart.yaml"] = "apiVersion: v2\nname: " + name + "\nversion: 0.1.0\n"
	for p, s := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b := e2etest.PackageChart(t, dir)
	dg := digestOf(b)
	if err := db.PutChart(dg, b); err != nil {
		t.Fatal(err)
	}
	return dg
}

func configMapChart(t *testing.T, db *cache.Cache) string {
	return chartOf(t, db, "cm", map[string]string{
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  v: {{ .Values.v | default \"1\" | quote }}\n",
	})
}

func brokenChart(t *testing.T, db *cache.Cache) string {
	return chartOf(t, db, "broken", map[string]string{
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ .Values.a | nosuchfunc }}\n",
	})
}

func ensureNamespace(t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	_, err := c.Clientset.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// countingEngine wraps the real engine: it counts the calls in flight and
// keeps the highest count, logs when each service's Apply starts and ends,
// and can hold an Apply until a condition holds (hold returns a channel
// closed when it may go on).
type countingEngine struct {
	reconcile.Engine
	mu       sync.Mutex
	inFlight int
	maxSeen  int
	events   []string // "start ns/name", "end ns/name"
	hold     func(key string) <-chan struct{}
	changed  chan struct{} // signalled on every event
}

func newCounting(e reconcile.Engine) *countingEngine {
	return &countingEngine{Engine: e, changed: make(chan struct{}, 1)}
}

func (c *countingEngine) enter() func() {
	c.mu.Lock()
	c.inFlight++
	c.maxSeen = max(c.maxSeen, c.inFlight)
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.inFlight--
		c.mu.Unlock()
	}
}

func (c *countingEngine) event(e string) {
	c.mu.Lock()
	c.events = append(c.events, e)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *countingEngine) snapshot() ([]string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.events...), c.maxSeen
}

func (c *countingEngine) Apply(ctx context.Context, r engine.Release) (engine.Result, error) {
	defer c.enter()()
	k := r.Namespace + "/" + r.Name
	c.event("start " + k)
	if c.hold != nil {
		if ch := c.hold(k); ch != nil {
			select {
			case <-ch:
			case <-time.After(time.Minute): // the test then fails on the order
			case <-ctx.Done():
			}
		}
	}
	res, err := c.Engine.Apply(ctx, r)
	c.event("end " + k)
	return res, err
}

func (c *countingEngine) Repair(ctx context.Context, r engine.Release) (engine.Result, error) {
	defer c.enter()()
	return c.Engine.Repair(ctx, r)
}

func (c *countingEngine) Health(ctx context.Context, name, ns string) (engine.Health, error) {
	defer c.enter()()
	return c.Engine.Health(ctx, name, ns)
}

func (c *countingEngine) Drift(ctx context.Context, name, ns string, rules engine.DriftRules) (engine.Drift, error) {
	defer c.enter()()
	return c.Engine.Drift(ctx, name, ns, rules)
}

func (c *countingEngine) Uninstall(ctx context.Context, name, ns string) error {
	defer c.enter()()
	c.event("uninstall " + ns + "/" + name)
	return c.Engine.Uninstall(ctx, name, ns)
}

func index(events []string, e string) int {
	for i, x := range events {
		if x == e {
			return i
		}
	}
	return -1
}

func statusOf(t *testing.T, r *reconcile.Reconciler, k string) *fleetv1.ServiceStatus {
	t.Helper()
	for _, s := range r.Statuses() {
		if s.GetNamespace()+"/"+s.GetName() == k {
			return s
		}
	}
	t.Fatalf("no status for %s in %v", k, r.Statuses())
	return nil
}

// TestIndependentServicesApplyInParallel: with Concurrency 3, independent
// services are in flight together (the first three Applies are held until
// three are in flight: a sequential pass would never get there), never
// more than three engine calls at once; a service depending on another
// starts only after it ended; a service that fails and one that is slow
// (held until every other service had its turn) hold none of the others;
// uninstalls run on the same workers.
func TestIndependentServicesApplyInParallel(t *testing.T) {
	c := testCluster(t)
	real, db := newEngine(t, c)
	eng := newCounting(real)
	const bound = 3
	cm, broken := configMapChart(t, db), brokenChart(t, db)
	ns := "par"
	ensureNamespace(t, c, ns)
	k := func(name string) string { return ns + "/" + name }
	independent := []string{"a", "b", "c", "d", "e", "f"}

	var (
		mu        sync.Mutex
		entered   int
		barrier   = make(chan struct{})
		othersEnd = make(chan struct{})
	)
	eng.hold = func(key string) <-chan struct{} {
		if key == k("slow") {
			return othersEnd
		}
		mu.Lock()
		defer mu.Unlock()
		entered++
		if entered == bound-1 { // the slow one holds the third slot
			close(barrier)
		}
		return barrier
	}
	var turns sync.Map
	r, err := reconcile.New(reconcile.Config{Cache: db, Engine: eng, Charts: cachedCharts{}, HealthTimeout: time.Minute,
		Concurrency: bound, Logger: testLogger(t),
		OnService: func(key string) { turns.Store(key, true) }})
	if err != nil {
		t.Fatal(err)
	}
	svc := func(name, chart string, prio int32, deps ...string) *fleetv1.Service {
		return &fleetv1.Service{Name: name, Namespace: ns, ChartDigest: chart, ValuesHash: "h-" + name, Priority: prio, DependsOn: deps}
	}
	ds := &fleetv1.DesiredState{Revision: 1, Full: true}
	// slow has the highest priority, so it takes a slot first.
	ds.Services = append(ds.Services, svc("slow", cm, 200), svc("bad", broken, 100), svc("db", cm, 100), svc("app", cm, 100, "db"))
	for _, n := range independent {
		ds.Services = append(ds.Services, svc(n, cm, 100))
	}
	// othersEnd closes once every service but slow ended its Apply.
	go func() {
		for {
			ev, _ := eng.snapshot()
			n := 0
			for _, s := range ds.Services {
				if s.GetName() != "slow" && index(ev, "end "+k(s.GetName())) >= 0 {
					n++
				}
			}
			if n == len(ds.Services)-1 {
				close(othersEnd)
				return
			}
			select {
			case <-eng.changed:
			case <-t.Context().Done():
				return
			}
		}
	}()
	if err := r.Desired(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	r.Pass(t.Context())

	ev, maxSeen := eng.snapshot()
	t.Logf("events: %v; at most %d engine calls in flight", ev, maxSeen)
	if maxSeen > bound {
		t.Errorf("%d engine calls in flight at once; the bound is %d", maxSeen, bound)
	}
	if maxSeen < bound {
		t.Errorf("at most %d engine calls in flight; want %d (independent services in parallel)", maxSeen, bound)
	}
	if s, e := index(ev, "start "+k("app")), index(ev, "end "+k("db")); s < 0 || s < e {
		t.Errorf("app (dependsOn db) started at event %d, db ended at %d; want after", s, e)
	}
	if s, e := index(ev, "end "+k("slow")), len(ev)-1; s != e {
		t.Errorf("slow ended at event %d of %d; every other service should end before it (none waits for it)", s, e)
	}
	for _, n := range append(independent, "db", "app", "slow") {
		if st := statusOf(t, r, k(n)); st.GetState() != reconcile.StateDeployed {
			t.Errorf("%s: %v, want Deployed", n, st)
		}
	}
	if st := statusOf(t, r, k("bad")); st.GetState() != reconcile.StateFailed {
		t.Errorf("bad: %v, want Failed", st)
	}
	for _, s := range ds.Services {
		if _, ok := turns.Load(k(s.GetName())); !ok {
			t.Errorf("%s had no turn", s.GetName())
		}
	}

	// Removing every independent service uninstalls them, in parallel
	// too, and never above the bound.
	eng.hold = nil
	eng.mu.Lock()
	eng.maxSeen, eng.events = 0, nil
	eng.mu.Unlock()
	var tomb []*fleetv1.Tombstone
	for _, n := range independent {
		tomb = append(tomb, &fleetv1.Tombstone{Name: n, Namespace: ns, Revision: 2})
	}
	if err := r.Desired(t.Context(), &fleetv1.DesiredState{Revision: 2, Tombstones: tomb}); err != nil {
		t.Fatal(err)
	}
	r.Pass(t.Context())
	ev, maxSeen = eng.snapshot()
	if maxSeen > bound {
		t.Errorf("uninstall: %d engine calls in flight at once; the bound is %d", maxSeen, bound)
	}
	for _, n := range independent {
		if index(ev, "uninstall "+k(n)) < 0 {
			t.Errorf("%s not uninstalled: %v", n, ev)
		}
		if _, err := c.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), n+"-cm", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("ConfigMap of %s after uninstall: %v", n, err)
		}
	}
}

// runWatched runs a reconciler over the real engine with a watcher of the
// managed objects, whose periodic pass (also while a service is
// Provisioning) comes once an hour: what is repaired, or becomes healthy,
// after the first pass does so because of a watch event. It
// returns the reconciler; both stop at the end of the test.
func runWatched(t *testing.T, c *cluster.Cluster, cfg reconcile.Config, ds *fleetv1.DesiredState) *reconcile.Reconciler {
	t.Helper()
	obs, err := observe.New(observe.Config{RESTConfig: c.RESTConfig})
	if err != nil {
		t.Fatal(err)
	}
	var r *reconcile.Reconciler
	w, err := observe.NewWatcher(observe.WatcherConfig{Observer: obs, Records: cfg.Cache.(*cache.Cache), Logger: testLogger(t),
		OnChange: func(ch observe.Change) { r.ObjectChanged(ch.Service, ch.Object, ch.Spec) }})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Watcher, cfg.Charts, cfg.Logger, cfg.Interval, cfg.ProgressInterval = w, cachedCharts{}, testLogger(t), time.Hour, time.Hour
	if r, err = reconcile.New(cfg); err != nil {
		t.Fatal(err)
	}
	// Stored before Run starts: its kick and Run's first timer make one
	// pass, the last for an hour.
	if err := r.Desired(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.Run(ctx) })
	wg.Go(func() { _ = r.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return r
}

// eventually polls cond until it holds, failing the test after timeout.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, seen := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s; last seen: %s", what, timeout, seen)
		}
		<-tick.C
	}
}

func stateOf(r *reconcile.Reconciler, k string) *fleetv1.ServiceStatus {
	for _, s := range r.Statuses() {
		if s.GetNamespace()+"/"+s.GetName() == k {
			return s
		}
	}
	return nil
}

// TestDeletedDeploymentComesBackOnWatchEvent: a managed Deployment that
// is deleted is repaired by the check its delete event triggers (the
// periodic pass is an hour away; the watch-repair counter says so), and
// the service is Deployed again once its pods are, also from the
// Deployment's own status events.
func TestDeletedDeploymentComesBackOnWatchEvent(t *testing.T) {
	c := testCluster(t)
	e, db := newEngine(t, c)
	podinfo := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	dg := digestOf(podinfo)
	if err := db.PutChart(dg, podinfo); err != nil {
		t.Fatal(err)
	}
	const ns = "watch-web"
	ensureNamespace(t, c, ns)
	ds := &fleetv1.DesiredState{Revision: 1, Full: true, Services: []*fleetv1.Service{
		{Name: "podinfo", Namespace: ns, ChartDigest: dg, ValuesYaml: []byte("replicaCount: 1\n"), ValuesHash: "p1"}}}
	r := runWatched(t, c, reconcile.Config{Cache: db, Engine: e, HealthTimeout: 2 * time.Minute}, ds)
	k := ns + "/podinfo"
	deployed := func() (bool, string) {
		s := stateOf(r, k)
		return s.GetState() == reconcile.StateDeployed, fmt.Sprint(s)
	}
	eventually(t, "podinfo Deployed", 2*time.Minute, deployed)
	before := r.Stats()
	if err := c.Clientset.AppsV1().Deployments(ns).Delete(t.Context(), "podinfo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the Deployment repaired by a watch-triggered check", time.Minute, func() (bool, string) {
		_, err := c.Clientset.AppsV1().Deployments(ns).Get(t.Context(), "podinfo", metav1.GetOptions{})
		st := r.Stats()
		return err == nil && st.WatchRepairs > before.WatchRepairs, fmt.Sprintf("get: %v; stats %+v", err, st)
	})
	eventually(t, "podinfo Deployed again", 2*time.Minute, deployed)
	if st := r.Stats(); st.PassRepairs != before.PassRepairs {
		t.Errorf("a pass repaired drift (%+v); the test wants the watch to", st)
	}
}

// TestRepairLoopIsBackedOff: another controller that sets a managed
// ConfigMap back every time the agent repairs it is detected after
// RepairLimit repairs: the service is Failed, saying so, and repairs
// stop.
func TestRepairLoopIsBackedOff(t *testing.T) {
	c := testCluster(t)
	e, db := newEngine(t, c)
	cm := configMapChart(t, db)
	const ns = "watch-loop"
	ensureNamespace(t, c, ns)
	const limit = 2
	ds := &fleetv1.DesiredState{Revision: 1, Full: true, Services: []*fleetv1.Service{
		{Name: "fight", Namespace: ns, ChartDigest: cm, ValuesHash: "c1"}}}
	r := runWatched(t, c, reconcile.Config{Cache: db, Engine: e, RepairLimit: limit, RepairWindow: time.Hour, Debounce: 50 * time.Millisecond}, ds)
	k := ns + "/fight"
	eventually(t, "fight Deployed", time.Minute, func() (bool, string) {
		s := stateOf(r, k)
		return s.GetState() == reconcile.StateDeployed, fmt.Sprint(s)
	})
	// The other controller: it watches the ConfigMap and sets v to
	// "theirs" whenever it is not.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	cms := c.Clientset.CoreV1().ConfigMaps(ns)
	wg.Go(func() {
		for ctx.Err() == nil {
			wt, err := cms.Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=fight-cm"})
			if err != nil {
				return
			}
			for ev := range wt.ResultChan() {
				got, ok := ev.Object.(*corev1.ConfigMap)
				if !ok || got.Data["v"] == "theirs" {
					continue
				}
				got.Data["v"] = "theirs"
				_, _ = cms.Update(ctx, got, metav1.UpdateOptions{})
			}
			wt.Stop()
		}
	})
	eventually(t, "the repair loop reported", time.Minute, func() (bool, string) {
		s := stateOf(r, k)
		return s.GetState() == reconcile.StateFailed && strings.Contains(s.GetMessage(), "repair loop"), fmt.Sprint(s)
	})
	if st := r.Stats(); st.WatchRepairs+st.PassRepairs != limit {
		t.Errorf("repairs before the loop was found: %+v; want %d", st, limit)
	}
}
