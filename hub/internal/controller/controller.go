// Package controller is the hub's one watch loop: every controller (the
// desired-state compiler, the template resolver, and those to come) is a
// Reconcile function run by a Loop.
//
// A Loop reads the store's revision, calls Reconcile (which lists what it
// needs and acts on it), then watches the store from the revision that
// read reflects, so no change is missed between the list and the watch.
// Events that matter (Config.Relevant) are debounced into one further
// Reconcile; a Reconcile that leaves work pending asks to be called again
// after Result.RetryAfter; Config.Resync calls it periodically with no
// change. A watch that is compacted or expires (the store could not keep
// the loop's history or the loop fell behind) starts over with a fresh
// read at once; a failed Reconcile or watch starts over after a jittered,
// capped exponential backoff, reset by the next success. A closed store
// ends Run with an error; a cancelled context ends it with nil. Run owns
// every goroutine it starts and waits for them before it returns.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/protocol/backoff"
)

// Watcher is the part of the store a Loop uses.
type Watcher interface {
	Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan store.Event, error)
	Revision(ctx context.Context) (uint64, error)
}

// Result is what one Reconcile reports to its Loop.
type Result struct {
	// Revision is the store revision the Reconcile's read reflected (from
	// the tx.Revision of the Txn it listed in); the watch starts there. 0
	// means the revision the Loop read just before calling Reconcile.
	Revision uint64
	// RetryAfter, when positive, calls Reconcile again after it even with
	// no change: for work left pending (a chart that could not be fetched
	// yet). A later Reconcile's Result replaces it.
	RetryAfter time.Duration
}

// Config configures a Loop.
type Config struct {
	// Name names the controller in logs and errors.
	Name string
	// Store is watched for changes.
	Store Watcher
	// Kinds are the store kinds to watch; empty means every kind.
	Kinds []string
	// Reconcile brings the world in line with the store. It is never
	// called concurrently with itself.
	Reconcile func(ctx context.Context) (Result, error)
	// Relevant reports whether an event should cause a Reconcile; nil
	// means every event does.
	Relevant func(store.Event) bool
	// Debounce is how long after the first relevant event of a burst the
	// Loop reconciles; later events of the burst join that Reconcile.
	// Default 100ms.
	Debounce time.Duration
	// Resync, when positive, is how often the Loop reconciles with no
	// change. Default none.
	Resync time.Duration
	// MinBackoff and MaxBackoff bound the wait after a failure. Defaults
	// 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// Rand is the backoff's jitter source; nil means math/rand/v2.
	Rand   func() float64
	Logger *slog.Logger
}

// DefaultConfig returns the defaults New applies to zero fields.
func DefaultConfig() Config {
	return Config{Debounce: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("controller: Config.Name is required")
	case c.Store == nil || c.Reconcile == nil:
		return fmt.Errorf("controller %s: Config.Store and Reconcile are required", c.Name)
	case c.Debounce < 0, c.Resync < 0, c.MinBackoff < 0, c.MaxBackoff < 0:
		return fmt.Errorf("controller %s: Config durations must not be negative", c.Name)
	case c.MaxBackoff > 0 && c.MinBackoff > c.MaxBackoff:
		return fmt.Errorf("controller %s: MinBackoff %s is above MaxBackoff %s", c.Name, c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// Loop runs one controller.
type Loop struct {
	cfg Config
	log *slog.Logger
}

// New checks cfg and returns a Loop; Run starts it.
func New(cfg Config) (*Loop, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.Debounce == 0 {
		cfg.Debounce = d.Debounce
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = d.MinBackoff
		if cfg.MaxBackoff > 0 {
			cfg.MinBackoff = min(cfg.MinBackoff, cfg.MaxBackoff)
		}
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = max(d.MaxBackoff, cfg.MinBackoff)
	}
	if cfg.Relevant == nil {
		cfg.Relevant = func(store.Event) bool { return true }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Loop{cfg: cfg, log: cfg.Logger.With("controller", cfg.Name)}, nil
}

// errRelist ends a session that must start over at once: its watch was
// compacted or expired, which is no failure of the controller's.
var errRelist = errors.New("relist")

// Run reconciles and follows the store until ctx is done (nil) or the
// store is closed (an error wrapping store.ErrClosed, which does not name
// the controller: its owner does).
func (l *Loop) Run(ctx context.Context) error {
	bo := backoff.New(l.cfg.MinBackoff, l.cfg.MaxBackoff)
	bo.Rand = l.cfg.Rand
	for {
		err := l.session(ctx, bo)
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, store.ErrClosed):
			return err // the owner names the controller
		case errors.Is(err, errRelist):
			continue
		}
		wait := bo.Next()
		l.log.Warn("controller failed; starting over", "err", err, "retry_in", wait)
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// session reconciles once, then follows the watch until it ends. It
// returns errRelist for a watch to restart at once, or the failure.
func (l *Loop) session(ctx context.Context, bo *backoff.Backoff) error {
	before, err := l.cfg.Store.Revision(ctx)
	if err != nil {
		return fmt.Errorf("read store revision: %w", err)
	}
	res, err := l.reconcile(ctx)
	if err != nil {
		return err
	}
	from := res.Revision
	if from == 0 {
		from = before
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel (deferred later, runs first)
	defer cancel()
	events, err := l.watch(wctx, &wg, from)
	if errors.Is(err, store.ErrCompacted) {
		l.log.Info("watch compacted; listing again", "from_revision", from, "err", err)
		return errRelist
	}
	if err != nil {
		return err
	}
	// Read and watching: a success. (A watch that fails at once after a
	// good read still backs off.)
	bo.Reset()

	debounce := newTimer()
	defer debounce.stop()
	retry := newTimer()
	defer retry.stop()
	// Arm without pushing back: a steady stream of events still
	// reconciles every Debounce.
	arm := func() {
		if !debounce.armed {
			debounce.set(l.cfg.Debounce)
		}
	}
	afterReconcile := func(res Result) {
		retry.stop()
		if res.RetryAfter > 0 {
			retry.set(res.RetryAfter)
		}
	}
	afterReconcile(res)
	// Watching from revision 0 ("from now", an empty store) could miss a
	// write between the read and the watch; compare once it is up.
	if now, err := l.cfg.Store.Revision(ctx); err == nil && now > from {
		arm()
	}
	var resync <-chan time.Time
	if l.cfg.Resync > 0 {
		t := time.NewTicker(l.cfg.Resync)
		defer t.Stop()
		resync = t.C
	}
	for {
		var fire bool
		select {
		case <-ctx.Done():
			return nil
		case ev := <-events:
			if ev.Type == store.EventError {
				if errors.Is(ev.Err, store.ErrClosed) {
					return ev.Err
				}
				l.log.Info("watch ended; listing again", "err", ev.Err)
				return errRelist
			}
			if l.cfg.Relevant(ev) {
				arm()
			}
		case <-debounce.c():
			debounce.fired()
			fire = true
		case <-retry.c():
			retry.fired()
			fire = true
		case <-resync:
			fire = true
		}
		if fire {
			res, err := l.reconcile(ctx)
			if err != nil {
				return err
			}
			bo.Reset()
			afterReconcile(res)
		}
	}
}

func (l *Loop) reconcile(ctx context.Context) (Result, error) {
	res, err := l.cfg.Reconcile(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("reconcile: %w", err)
	}
	return res, nil
}

// watch opens one watch per kind (or one on every kind) and merges them
// into one channel, with goroutines wg waits for once ctx is cancelled. A
// watch closed without an error event (the store or ctx ended) ends with
// store.ErrWatchExpired, so the loop reads again.
func (l *Loop) watch(ctx context.Context, wg *sync.WaitGroup, from uint64) (<-chan store.Event, error) {
	kinds := l.cfg.Kinds
	if len(kinds) == 0 {
		kinds = []string{""}
	}
	out := make(chan store.Event)
	for _, kind := range kinds {
		ch, err := l.cfg.Store.Watch(ctx, kind, from)
		if err != nil {
			what := kind
			if what == "" {
				what = "all kinds"
			}
			return nil, fmt.Errorf("watch %s from revision %d: %w", what, from, err)
		}
		wg.Go(func() {
			for ev := range ch {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			select {
			case out <- store.Event{Type: store.EventError, Err: fmt.Errorf("watch %q closed: %w", kind, store.ErrWatchExpired)}:
			case <-ctx.Done():
			}
		})
	}
	return out, nil
}

// timer is a one-shot timer that knows whether it is armed; its channel
// is nil (never ready) while it is not.
type timer struct {
	t     *time.Timer
	armed bool
}

func newTimer() *timer {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timer{t: t}
}

func (t *timer) set(d time.Duration) { t.t.Reset(d); t.armed = true }
func (t *timer) stop()               { t.t.Stop(); t.armed = false }
func (t *timer) fired()              { t.armed = false }

func (t *timer) c() <-chan time.Time {
	if !t.armed {
		return nil
	}
	return t.t.C
}
