package controller_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/tetherfleet/tether/hub/internal/controller"
	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
)

// Every test's Run must have stopped all it started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const kind = "Thing"

// countingStore is the real bbolt store, counting the watches opened.
type countingStore struct {
	*boltstore.Store
	watches atomic.Int32
	// opened gets a token (if there is room) each time a watch opens.
	opened chan struct{}
}

func (s *countingStore) Watch(ctx context.Context, kind string, from uint64) (<-chan store.Event, error) {
	s.watches.Add(1)
	select {
	case s.opened <- struct{}{}:
	default:
	}
	return s.Store.Watch(ctx, kind, from)
}

func openStore(t *testing.T, opts boltstore.Options) *countingStore {
	t.Helper()
	opts.NoSync = true
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &countingStore{Store: s, opened: make(chan struct{}, 1)}
}

func put(t *testing.T, s store.Store, k, name string) {
	t.Helper()
	if _, err := s.Create(context.Background(), store.Object{Kind: k, Name: name, Value: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
}

// seen is what one Reconcile call read: how many Things there were.
type seen struct{ things int }

// recorder is a Reconcile that lists Things and reports each call on a
// channel; gate, if set, holds a call until the test lets it go.
type recorder struct {
	s     store.Store
	calls chan seen
	gate  func(call int)
	fail  func(call int) error
	retry func(call int) time.Duration
	n     atomic.Int32
}

func newRecorder(s store.Store) *recorder {
	return &recorder{s: s, calls: make(chan seen, 1000)}
}

func (r *recorder) Reconcile(ctx context.Context) (controller.Result, error) {
	call := int(r.n.Add(1))
	if r.gate != nil {
		r.gate(call)
	}
	if r.fail != nil {
		if err := r.fail(call); err != nil {
			r.calls <- seen{things: -1}
			return controller.Result{}, err
		}
	}
	objs, err := r.s.List(ctx, kind, "")
	if err != nil {
		return controller.Result{}, err
	}
	r.calls <- seen{things: len(objs)}
	var res controller.Result
	if r.retry != nil {
		res.RetryAfter = r.retry(call)
	}
	return res, nil
}

// hold makes Reconcile call number call wait, once it has started
// (entered is closed), until release is closed.
func (r *recorder) hold(call int) (entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	r.gate = func(n int) {
		if n == call {
			close(entered)
			<-release
		}
	}
	return entered, release
}

// next waits for the next Reconcile call.
func (r *recorder) next(t *testing.T, what string) seen {
	t.Helper()
	select {
	case s := <-r.calls:
		return s
	case <-time.After(10 * time.Second):
		t.Fatalf("no reconcile: %s", what)
		return seen{}
	}
}

// start runs a Loop; the returned stop cancels it and checks Run ended
// with nil.
func start(t *testing.T, cfg controller.Config) (stop func()) {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	l, err := controller.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run after cancel = %v, want nil", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestLoopCoalescesABurstIntoOneReconcile: fifty writes made while the
// first Reconcile runs reach the loop as fifty events at once; they cause
// one more Reconcile. Events of other kinds are ignored by
// Relevant.
func TestLoopCoalescesABurstIntoOneReconcile(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	put(t, s, "Seed", "seed") // a revision above 0, so the watch replays the burst
	r := newRecorder(s)
	entered, release := r.hold(1)
	start(t, controller.Config{
		Store: s, Kinds: []string{kind, "Other"}, Reconcile: r.Reconcile,
		Relevant: func(ev store.Event) bool { return ev.Object.Kind == kind },
		Debounce: time.Second, // far longer than reading fifty buffered events
	})
	<-entered
	for i := range 50 {
		put(t, s, kind, fmt.Sprintf("t%d", i))
	}
	close(release)
	// The first call lists after the burst; the watch, from the revision
	// read before it, still delivers the burst's fifty events.
	if got := r.next(t, "initial"); got.things != 50 {
		t.Fatalf("initial reconcile saw %d things, want 50", got.things)
	}
	if got := r.next(t, "after the burst"); got.things != 50 {
		t.Fatalf("reconcile after the burst saw %d things, want 50", got.things)
	}
	// One more change: the next reconcile is the third call, so the burst
	// cost exactly one.
	put(t, s, "Other", "ignored")
	put(t, s, kind, "last")
	if got := r.next(t, "after one more write"); got.things != 51 {
		t.Fatalf("reconcile saw %d things, want 51", got.things)
	}
	if n := r.n.Load(); n != 3 {
		t.Fatalf("%d reconciles for 52 events in two bursts, want 3", n)
	}
}

// TestLoopRelistsAfterWatchExpires: the loop's watch falls behind while a
// Reconcile runs (a one-event buffer) and the store expires it; the loop
// lists again at once, opens a new watch, and still sees every write.
func TestLoopRelistsAfterWatchExpires(t *testing.T) {
	s := openStore(t, boltstore.Options{WatchBuffer: 1})
	r := newRecorder(s)
	entered, release := r.hold(2)
	start(t, controller.Config{Store: s, Kinds: []string{kind}, Reconcile: r.Reconcile, Debounce: time.Millisecond})
	r.next(t, "initial")
	put(t, s, kind, "first")
	<-entered // reconciling "first"; the watch is not read meanwhile
	for i := range 10 {
		put(t, s, kind, fmt.Sprintf("t%d", i))
	}
	close(release)
	if got := r.next(t, "for the first write"); got.things != 11 {
		t.Fatalf("reconcile saw %d things, want 11", got.things)
	}
	// The relist reconciles (again seeing 11) and opens a new watch, which
	// delivers the next write. The expired watch's last events may arm one
	// more debounced reconcile first, also seeing 11.
	put(t, s, kind, "after")
	for {
		got := r.next(t, "a write on the new watch")
		if got.things == 12 {
			break
		}
		if got.things != 11 {
			t.Fatalf("reconcile saw %d things, want 11 or 12", got.things)
		}
	}
	// The relist's Reconcile may already have listed "after" (12) before
	// the loop opened its new watch, which it does once that Reconcile
	// returns: wait for the watch rather than read the count at once.
	deadline := time.After(10 * time.Second)
	for s.watches.Load() < 2 {
		select {
		case <-deadline:
			t.Fatalf("%d watches opened, want a second one after the expiry", s.watches.Load())
		case <-s.opened:
		}
	}
}

// TestLoopRelistsAfterCompaction: the store dropped the history the loop
// would watch from (writes during the first Reconcile overflow a
// two-event history), so the watch is refused as compacted; the loop
// lists again at once and watches from the new revision.
func TestLoopRelistsAfterCompaction(t *testing.T) {
	s := openStore(t, boltstore.Options{HistorySize: 2})
	put(t, s, "Seed", "seed") // a revision above 0 to watch from
	r := newRecorder(s)
	entered, release := r.hold(1)
	start(t, controller.Config{Store: s, Reconcile: r.Reconcile, Debounce: time.Millisecond})
	<-entered
	for i := range 5 {
		put(t, s, kind, fmt.Sprintf("t%d", i))
	}
	close(release)
	r.next(t, "initial")
	if got := r.next(t, "the relist"); got.things != 5 {
		t.Fatalf("relist saw %d things, want 5", got.things)
	}
	put(t, s, kind, "after")
	if got := r.next(t, "a write on the new watch"); got.things != 6 {
		t.Fatalf("reconcile saw %d things, want 6", got.things)
	}
	if n := s.watches.Load(); n != 2 {
		t.Fatalf("%d watches opened, want 2 (one compacted, one from the relist)", n)
	}
}

// logs collects the loop's log records.
type logs struct {
	mu      sync.Mutex
	retries []time.Duration
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logs) WithGroup(string) slog.Handler            { return l }
func (l *logs) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			l.mu.Lock()
			l.retries = append(l.retries, a.Value.Duration())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

func (l *logs) waits() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Duration(nil), l.retries...)
}

// TestLoopBacksOffAfterFailingReconcile: each failed Reconcile doubles the
// wait (jitter pinned to 1x); a success resets it, so the next failure
// waits the minimum again.
func TestLoopBacksOffAfterFailingReconcile(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	r := newRecorder(s)
	r.fail = func(call int) error {
		switch {
		case call <= 4:
			return fmt.Errorf("attempt %d: %w", call, errors.New("boom"))
		case call == 6:
			return errors.New("boom again")
		}
		return nil
	}
	lg := &logs{}
	start(t, controller.Config{
		Store: s, Reconcile: r.Reconcile, Debounce: time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
		Rand: func() float64 { return 0.5 }, Logger: slog.New(lg),
	})
	for i := range 4 {
		if got := r.next(t, "failing"); got.things != -1 {
			t.Fatalf("call %d: %+v, want a failure", i+1, got)
		}
	}
	r.next(t, "the first success")
	put(t, s, kind, "x") // call 6 fails, call 7 succeeds
	if got := r.next(t, "failing again"); got.things != -1 {
		t.Fatalf("call 6: %+v, want a failure", got)
	}
	if got := r.next(t, "the relist after it"); got.things != 1 {
		t.Fatalf("call 7 saw %d things, want 1", got.things)
	}
	ms := time.Millisecond
	want := []time.Duration{ms, 2 * ms, 4 * ms, 4 * ms, ms}
	got := lg.waits()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("waits after failures = %v, want %v (doubling to the cap, reset by the success)", got, want)
	}
}

// TestLoopRetriesPendingWork: a Reconcile that leaves work pending asks
// for another call, which comes with no store change.
func TestLoopRetriesPendingWork(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	r := newRecorder(s)
	r.retry = func(call int) time.Duration {
		if call < 3 {
			return time.Millisecond
		}
		return 0
	}
	start(t, controller.Config{Store: s, Reconcile: r.Reconcile})
	for i := range 3 {
		r.next(t, fmt.Sprintf("call %d", i+1))
	}
}

// TestLoopResyncs: with Resync set the loop reconciles with no change.
func TestLoopResyncs(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	r := newRecorder(s)
	start(t, controller.Config{Store: s, Reconcile: r.Reconcile, Resync: time.Millisecond})
	for i := range 3 {
		r.next(t, fmt.Sprintf("call %d", i+1))
	}
}

// TestLoopStopsCleanlyWhileBackingOff: cancelling during a long backoff
// wait returns nil at once (goleak in TestMain checks nothing is left).
func TestLoopStopsCleanlyWhileBackingOff(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	r := newRecorder(s)
	r.fail = func(int) error { return errors.New("always") }
	stop := start(t, controller.Config{Store: s, Reconcile: r.Reconcile, MinBackoff: time.Hour, MaxBackoff: time.Hour})
	r.next(t, "the failure")
	stop()
}

// TestLoopStopsCleanlyWhileWatching: cancelling with watches of several
// kinds open returns nil and ends their goroutines.
func TestLoopStopsCleanlyWhileWatching(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	r := newRecorder(s)
	stop := start(t, controller.Config{Store: s, Kinds: []string{kind, "A", "B"}, Reconcile: r.Reconcile})
	r.next(t, "initial")
	put(t, s, "B", "b")
	r.next(t, "a change of one of the kinds")
	if n := s.watches.Load(); n != 3 {
		t.Fatalf("%d watches, want one per kind", n)
	}
	stop()
}

// TestLoopEndsWhenStoreCloses: a closed store is not retried forever; Run
// returns an error wrapping store.ErrClosed.
func TestLoopEndsWhenStoreCloses(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	r := newRecorder(s)
	l, err := controller.New(controller.Config{Name: "things", Store: s, Reconcile: r.Reconcile})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- l.Run(context.Background()) }()
	r.next(t, "initial")
	s.Close()
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrClosed) {
			t.Fatalf("Run after store close = %v, want store.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after the store closed")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	s := openStore(t, boltstore.Options{})
	rec := func(context.Context) (controller.Result, error) { return controller.Result{}, nil }
	for _, tt := range []struct {
		name string
		cfg  controller.Config
	}{
		{"no name", controller.Config{Store: s, Reconcile: rec}},
		{"no store", controller.Config{Name: "x", Reconcile: rec}},
		{"no reconcile", controller.Config{Name: "x", Store: s}},
		{"negative debounce", controller.Config{Name: "x", Store: s, Reconcile: rec, Debounce: -1}},
		{"min over max", controller.Config{Name: "x", Store: s, Reconcile: rec, MinBackoff: time.Second, MaxBackoff: time.Millisecond}},
	} {
		if _, err := controller.New(tt.cfg); err == nil {
			t.Errorf("%s: New succeeded", tt.name)
		}
	}
}
