// Package reconcile keeps the agent's cluster in line with its desired
// state. It materialises the hub's desired-state deltas into the bbolt
// cache (before the link acknowledges them), installs and upgrades Helm
// releases in dependsOn order, watches their health, corrects drift,
// uninstalls what was deleted, and queues per-service status in the outbox.
// It works from the cache alone while the hub is unreachable, also across
// agent restarts.
package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	"github.com/tetherfleet/tether/protocol/backoff"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// Service states reported to the hub.
const (
	StatePending      = "Pending"
	StateProvisioning = "Provisioning"
	StateDeployed     = "Deployed"
	StateFailed       = "Failed"
	StateDeleting     = "Deleting"
	StateDeleted      = "Deleted"
	// StateDryRun: syncMode DryRun; the message says what would change.
	StateDryRun = "DryRun"
)

// Sync modes (k0rdent's), as fleetv1.Service.sync_mode carries them.
const (
	SyncContinuousWithDriftDetection = "ContinuousWithDriftDetection" // also ""
	SyncContinuous                   = "Continuous"
	SyncOneTime                      = "OneTime"
	SyncDryRun                       = "DryRun"
)

// OutboxKindStatus is the outbox kind of status reports (the link sends
// entries of this kind as StatusReport messages).
const OutboxKindStatus = "status"

// Cache is the part of the agent's bbolt file the reconciler uses.
type Cache interface {
	SaveDesired(rev uint64, payload []byte) error
	ReplaceDesired(rev uint64, payload []byte) error
	LatestDesired() (uint64, []byte, error)
	HasChart(digest string) (bool, error)
	Chart(digest string) ([]byte, error)
	PutChart(digest string, data []byte) error
	Enqueue(kind string, payload []byte) error
	DesiredRevisions() ([]uint64, error)
	Desired(rev uint64) ([]byte, error)
	// CollectCharts deletes the chart archives neither in keep nor
	// referenced by the release record.
	CollectCharts(keep []string) ([]string, error)
	// PendingAdoption and EndAdoption: see "Adoption" in the cache
	// package.
	PendingAdoption() (rev uint64, pending bool, err error)
	EndAdoption() error
}

// Engine applies Helm releases to the cluster.
type Engine interface {
	Apply(ctx context.Context, r engine.Release) (engine.Result, error)
	Repair(ctx context.Context, r engine.Release) (engine.Result, error)
	Health(ctx context.Context, name, namespace string) (engine.Health, error)
	Drift(ctx context.Context, name, namespace string, rules engine.DriftRules) (engine.Drift, error)
	Uninstall(ctx context.Context, name, namespace string) error
	List(ctx context.Context) ([]engine.ReleaseInfo, error)
	Adopt(ctx context.Context, r engine.Release) (bool, error)
	Get(ctx context.Context, name, namespace string) (engine.ReleaseInfo, error)
	Plan(ctx context.Context, r engine.Release) (engine.Plan, error)
}

// Charts fetches chart archives from the hub.
type Charts interface {
	FetchChart(ctx context.Context, digest string) ([]byte, error)
}

// Config configures a Reconciler.
type Config struct {
	Cache  Cache
	Engine Engine
	Charts Charts
	// Notify is called after status was queued in the outbox.
	Notify func()
	Logger *slog.Logger
	Now    func() time.Time
	// HubNow is the agent's estimate of the hub's clock (the link's,
	// measured at Welcome): staged versions activate in windows given in
	// hub time. Default Now.
	HubNow func() time.Time
	// Interval is how often releases are checked for drift when nothing
	// changes.
	Interval time.Duration
	// ProgressInterval is how often health is checked while a service is
	// being provisioned.
	ProgressInterval time.Duration
	// HealthTimeout is how long a release may take to become healthy
	// before it is reported Failed.
	HealthTimeout time.Duration
	// Concurrency bounds how many services are installed, upgraded,
	// checked or uninstalled at once. Default 4 (a small edge node).
	Concurrency int
	// OnService, when set, is called as a service's turn starts (tests
	// observe the order with it).
	OnService func(key string)
	// Watcher, when set, is told after every pass which services to
	// watch; its events come back through ObjectChanged.
	Watcher Watcher
	// Debounce is how long the events on one service's objects are
	// collected before they trigger one check. Default 200ms.
	Debounce time.Duration
	// RepairLimit drift repairs of one service within RepairWindow are a
	// repair loop (another controller changing the same objects): the
	// service is reported Failed and not repaired for a while that grows
	// with each loop. Defaults 5 and 10 minutes.
	RepairLimit  int
	RepairWindow time.Duration
}

// Watcher watches the objects of the releases of services
// ("namespace/name"); see observe.Watcher.
type Watcher interface {
	Watch(ctx context.Context, services []string) error
}

func (c *Config) observe(k string) {
	if c.OnService != nil {
		c.OnService(k)
	}
}

// DefaultConfig returns the defaults; Cache, Engine and Charts must be set.
func DefaultConfig() Config {
	return Config{Interval: 30 * time.Second, ProgressInterval: 2 * time.Second, HealthTimeout: 5 * time.Minute, Concurrency: 4,
		Debounce: 200 * time.Millisecond, RepairLimit: 5, RepairWindow: 10 * time.Minute}
}

// Reconciler is the agent's control loop.
type Reconciler struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu      sync.Mutex
	desired *fleetv1.DesiredState // the full materialised state
	svc     map[string]*svcState  // by namespace/name
	// reported is the last status queued, to queue only changes.
	reported []*fleetv1.ServiceStatus
	// adopted: the one-time adoption after a cache upgrade is done (only
	// Pass writes it).
	adopted atomic.Bool
	// running holds a lock per service: one runs at a time.
	running map[string]*sync.Mutex
	// stagedWake is the next staged window start (hub time; zero: none),
	// when Run makes a pass without waiting for Interval.
	stagedWake time.Time

	reportMu sync.Mutex

	// Events on watched objects: pending checks by service, due at a
	// time; changed wakes the loop that runs them.
	tmu     sync.Mutex
	pending map[string]pendingCheck
	changed chan struct{}
	stats   struct{ watchEvents, watchChecks, watchRepairs, passRepairs, healthChecks, checksDone atomic.Uint64 }
}

type pendingCheck struct {
	due  time.Time
	spec bool // more than a status changed
}

// svcState is what the loop remembers of one service between passes.
type svcState struct {
	namespace, name string
	state           string
	message         string
	hash            string // lastDeployedHash
	applied         string // hash last applied, healthy or not
	since           time.Time
	revision        uint64
	template        string
	// failures counts consecutive failed applies of failedHash; the next
	// attempt waits until retryAt, so a chart that never renders is not
	// re-rendered on every pass.
	failures   int
	failedHash string
	retryAt    time.Time
	// repairs are the times of recent drift repairs; loops counts repair
	// loops found, holdUntil ends the current one's pause.
	repairs   []time.Time
	loops     int
	holdUntil time.Time
	holdMsg   string
}

// retryDelay is the wait after n consecutive failed applies of the same
// desired service: 2 s doubling up to 5 minutes, without jitter (it paces
// one service on one agent: there is no herd to spread).
func retryDelay(n int) time.Duration {
	const first, limit = 2 * time.Second, 5 * time.Minute
	return backoff.Delay(first, limit, n-1)
}

// New loads the last desired state from the cache.
func New(cfg Config) (*Reconciler, error) {
	if cfg.Cache == nil || cfg.Engine == nil || cfg.Charts == nil {
		return nil, errors.New("reconcile: Config.Cache, Engine and Charts are required")
	}
	d := DefaultConfig()
	if cfg.Interval <= 0 {
		cfg.Interval = d.Interval
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = d.ProgressInterval
	}
	if cfg.HealthTimeout <= 0 {
		cfg.HealthTimeout = d.HealthTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = d.Concurrency
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = d.Debounce
	}
	if cfg.RepairLimit <= 0 {
		cfg.RepairLimit = d.RepairLimit
	}
	if cfg.RepairWindow <= 0 {
		cfg.RepairWindow = d.RepairWindow
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Notify == nil {
		cfg.Notify = func() {}
	}
	if cfg.HubNow == nil {
		cfg.HubNow = cfg.Now
	}
	r := &Reconciler{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1), desired: &fleetv1.DesiredState{Full: true}, svc: map[string]*svcState{}, running: map[string]*sync.Mutex{},
		pending: map[string]pendingCheck{}, changed: make(chan struct{}, 1)}
	rev, payload, err := cfg.Cache.LatestDesired()
	switch {
	case errors.Is(err, cache.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("reconcile: load desired state: %w", err)
	default:
		ds := &fleetv1.DesiredState{}
		if err := proto.Unmarshal(payload, ds); err != nil {
			return nil, fmt.Errorf("reconcile: cached desired revision %d: %w", rev, err)
		}
		r.desired = ds
	}
	return r, nil
}

// Revision is the desired-state revision the agent holds.
func (r *Reconciler) Revision() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired.GetRevision()
}

func key(namespace, name string) string { return namespace + "/" + name }

// Telemetry is the telemetry part (scrape configs) of the held desired
// state, as fleetv1.Merge keeps it; nil when it has none. Shared: do not
// modify.
func (r *Reconciler) Telemetry() *fleetv1.Telemetry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired.GetTelemetry()
}

// Epoch is the hub history (store identity) the held revision belongs to.
func (r *Reconciler) Epoch() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.desired.GetEpoch()
}

// Desired merges a delta (or full state) from the hub into the materialised
// state and saves it before returning, so the link acknowledges only what
// survives a crash. An older or equal revision of the same history is
// ignored. A full state of another epoch, or below the held revision, is
// the hub saying the agent's state is from another history (a new hub, or
// one restored from a backup): it replaces the held state, so services not
// in it are removed.
func (r *Reconciler) Desired(_ context.Context, ds *fleetv1.DesiredState) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.desired
	next, replace, err := fleetv1.Merge(cur, ds)
	if err != nil || next == nil {
		return err
	}
	if replace {
		r.log.Warn("hub sent a full state from another history; it replaces the held one",
			"revision", ds.GetRevision(), "epoch", ds.GetEpoch(), "held_revision", cur.GetRevision(), "held_epoch", cur.GetEpoch())
	}
	b, err := proto.Marshal(next)
	if err != nil {
		return err
	}
	save := r.cfg.Cache.SaveDesired
	if replace {
		save = r.cfg.Cache.ReplaceDesired
	}
	if err := save(next.GetRevision(), b); err != nil {
		return err
	}
	r.desired = next
	r.log.Info("desired state stored", "revision", next.GetRevision(), "services", len(next.GetServices()), "delta", !ds.GetFull())
	r.Kick()
	return nil
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// Kick asks for a reconcile pass now.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run reconciles until ctx is done.
func (r *Reconciler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { r.runChecks(ctx) })
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.kick:
		case <-t.C:
		}
		// This pass answers every kick so far (a timer and a kick both
		// ready must not make two passes).
		select {
		case <-r.kick:
		default:
		}
		busy := r.Pass(ctx)
		next := r.cfg.Interval
		if busy {
			next = r.cfg.ProgressInterval
		}
		r.mu.Lock()
		wake := r.stagedWake
		r.mu.Unlock()
		if !wake.IsZero() {
			next = min(next, max(wake.Sub(r.cfg.HubNow()), 0))
		}
		t.Reset(next)
	}
}

// Pass runs one reconcile pass and reports whether a service is still in
// progress. Services run on up to Config.Concurrency workers: one starts
// once every dependency it names has finished its turn in this pass (a
// dependency not Deployed leaves it Pending, as before); among those ready,
// higher priority starts first, then dependency order. Releases the
// desired state no longer holds are uninstalled on the same workers. The
// status is queued after every service, so one that takes long does not
// hold the others' reports.
func (r *Reconciler) Pass(ctx context.Context) (busy bool) {
	if !r.adopt(ctx) {
		return true // retry soon; nothing is applied or removed before
	}
	ds, prefetch := r.activateStaged()
	for _, digest := range prefetch {
		if _, err := r.chart(ctx, digest); err != nil {
			r.log.Warn("prefetch the chart of a staged version; retried on the next pass", "digest", digest, "err", err)
		}
	}
	order, cycle := topoOrder(ds.GetServices())
	byKey := make(map[string]*fleetv1.Service, len(order))
	for _, s := range order {
		byKey[key(s.GetNamespace(), s.GetName())] = s
	}
	var (
		mu       sync.Mutex
		done     = map[string]bool{} // Deployed in this pass
		finished = map[string]bool{} // had its turn in this pass
		started  = map[string]bool{}
		wake     = make(chan struct{}, 1)
		wg       sync.WaitGroup
		sem      = make(chan struct{}, r.cfg.Concurrency)
	)
	signal := func() {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	// ready lists the services whose dependencies (those in the desired
	// state and not in a cycle) all had their turn.
	ready := func() []*fleetv1.Service {
		var out []*fleetv1.Service
		for _, s := range order {
			k := key(s.GetNamespace(), s.GetName())
			if started[k] {
				continue
			}
			ok := true
			for _, d := range s.GetDependsOn() {
				dk := depKey(s, d)
				if _, in := byKey[dk]; in && !cycle[dk] && !finished[dk] && !cycle[k] {
					ok = false
					break
				}
			}
			if ok {
				out = append(out, s)
			}
		}
		slices.SortStableFunc(out, func(a, b *fleetv1.Service) int { return cmp.Compare(b.GetPriority(), a.GetPriority()) })
		return out
	}
	finish := func(k string, deployed, progressing bool) {
		mu.Lock()
		finished[k] = true
		done[k] = deployed
		busy = busy || progressing
		mu.Unlock()
		r.report(ds)
		signal()
	}
	if ds.GetRevision() > 0 {
		// Uninstalls do not wait for the applies (nothing depends on a
		// release being removed).
		r.removeDeleted(ctx, ds, sem, &wg)
	}
	for {
		mu.Lock()
		batch := ready()
		allStarted := len(started) == len(order)
		for _, s := range batch {
			started[key(s.GetNamespace(), s.GetName())] = true
		}
		mu.Unlock()
		if allStarted {
			break
		}
		for _, s := range batch {
			k := key(s.GetNamespace(), s.GetName())
			st := r.state(k, s, ds.GetRevision())
			if ctx.Err() != nil {
				finish(k, false, false)
				continue
			}
			if cycle[k] {
				r.set(st, StateFailed, "dependsOn forms a cycle")
				finish(k, false, false)
				continue
			}
			mu.Lock()
			dep, ok := waitingOn(s, done)
			mu.Unlock()
			if !ok {
				r.set(st, StatePending, fmt.Sprintf("waiting for %s to be Deployed", dep))
				finish(k, false, false)
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				finish(k, false, false)
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				r.runService(ctx, k, s, st, false)
				r.mu.Lock()
				state := st.state
				r.mu.Unlock()
				finish(k, state == StateDeployed, state == StateProvisioning)
			})
		}
		if len(batch) == 0 {
			<-wake // a service in flight finishes: more may be ready
		}
	}
	wg.Wait()
	r.report(ds)
	if ctx.Err() == nil && ds.GetRevision() > 0 {
		r.collectCharts(ds)
	}
	if r.cfg.Watcher != nil && ctx.Err() == nil {
		var keys []string
		for _, s := range order {
			if s.GetSyncMode() != SyncDryRun {
				keys = append(keys, key(s.GetNamespace(), s.GetName()))
			}
		}
		if err := r.cfg.Watcher.Watch(ctx, keys); err != nil {
			r.log.Warn("watch managed objects", "err", err)
		}
	}
	return busy
}

// runService runs service for one service, never two at once for the same
// service (a pass and a check a watch event asked for).
func (r *Reconciler) runService(ctx context.Context, k string, s *fleetv1.Service, st *svcState, watch bool) {
	l := r.serviceLock(k)
	l.Lock()
	defer l.Unlock()
	r.cfg.observe(k)
	r.service(ctx, s, st, watch)
}

func (r *Reconciler) serviceLock(k string) *sync.Mutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.running[k]
	if !ok {
		l = &sync.Mutex{}
		r.running[k] = l
	}
	return l
}

// adopt runs once after the cache was upgraded from schema 1, which had no
// release record: it adopts the releases the desired revision noted by the
// upgrade names, when each matches what the agent would write for it (see
// apply.Engine.Adopt). Every other release stays unowned: it is never
// uninstalled or upgraded, and a service of that name is reported Failed.
// It reports whether the reconciler may go on; false means "retry".
func (r *Reconciler) adopt(ctx context.Context) bool {
	if r.adopted.Load() {
		return true
	}
	rev, pending, err := r.cfg.Cache.PendingAdoption()
	if err != nil {
		r.log.Warn("adoption: read the cache", "err", err)
		return false
	}
	if !pending {
		r.adopted.Store(true)
		return true
	}
	var svcs []*fleetv1.Service
	payload, err := r.cfg.Cache.Desired(rev)
	switch {
	case errors.Is(err, cache.ErrNotFound):
		r.log.Warn("adoption: the desired revision noted by the cache upgrade is gone; adopting nothing", "revision", rev)
	case err != nil:
		r.log.Warn("adoption: read desired revision", "revision", rev, "err", err)
		return false
	default:
		ds := &fleetv1.DesiredState{}
		if err := proto.Unmarshal(payload, ds); err != nil {
			r.log.Warn("adoption: desired revision does not decode; adopting nothing", "revision", rev, "err", err)
		}
		svcs = ds.GetServices()
	}
	for _, s := range svcs {
		k := key(s.GetNamespace(), s.GetName())
		ok, err := r.cfg.Cache.HasChart(s.GetChartDigest())
		if err != nil || !ok {
			r.log.Warn("adoption: chart not cached; not adopting", "service", k, "chart", s.GetChartDigest(), "err", err)
			continue
		}
		chart, err := r.cfg.Cache.Chart(s.GetChartDigest())
		if err != nil {
			r.log.Warn("adoption: read chart", "service", k, "err", err)
			return false
		}
		rel := engine.Release{Name: s.GetName(), Namespace: s.GetNamespace(), Chart: chart, ValuesYAML: s.GetValuesYaml(), Hash: s.GetValuesHash(), ChartDigest: s.GetChartDigest()}
		adopted, err := r.cfg.Engine.Adopt(ctx, rel)
		switch {
		case errors.Is(err, engine.ErrForeignRelease), errors.Is(err, engine.ErrInvalidRelease):
			r.log.Warn("adoption: release not adopted; it stays untouched", "service", k, "err", err)
		case err != nil:
			r.log.Warn("adoption: will retry", "service", k, "err", err)
			return false
		case adopted:
			r.log.Info("adoption: release adopted", "service", k, "revision", rev)
		}
	}
	if err := r.cfg.Cache.EndAdoption(); err != nil {
		r.log.Warn("adoption: record the end", "err", err)
		return false
	}
	r.adopted.Store(true)
	return true
}

// collectCharts deletes cached chart archives that neither the desired
// state ds nor the revision before it names, nor the release record
// references (a release still installed from an older chart).
func (r *Reconciler) collectCharts(ds *fleetv1.DesiredState) {
	keep := map[string]bool{}
	for _, s := range ds.GetServices() {
		keep[s.GetChartDigest()] = true
		if next := s.GetStaged().GetNext(); next != nil {
			keep[next.GetChartDigest()] = true // prefetched for its window
		}
	}
	revs, err := r.cfg.Cache.DesiredRevisions()
	if err != nil {
		r.log.Warn("collect charts: list desired revisions", "err", err)
		return
	}
	for i := len(revs) - 1; i >= 0; i-- {
		if revs[i] >= ds.GetRevision() {
			continue
		}
		payload, err := r.cfg.Cache.Desired(revs[i])
		if err != nil {
			r.log.Warn("collect charts: read the previous desired revision", "revision", revs[i], "err", err)
			return
		}
		prev := &fleetv1.DesiredState{}
		if err := proto.Unmarshal(payload, prev); err != nil {
			r.log.Warn("collect charts: the previous desired revision does not decode; keeping every chart", "revision", revs[i], "err", err)
			return
		}
		for _, s := range prev.GetServices() {
			keep[s.GetChartDigest()] = true
		}
		break
	}
	removed, err := r.cfg.Cache.CollectCharts(slices.Sorted(mapsKeys(keep)))
	if err != nil {
		r.log.Warn("collect charts", "err", err)
		return
	}
	if len(removed) > 0 {
		r.log.Info("collected unneeded chart archives", "charts", removed)
	}
}

func (r *Reconciler) state(k string, s *fleetv1.Service, rev uint64) *svcState {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.svc[k]
	if !ok {
		st = &svcState{namespace: s.GetNamespace(), name: s.GetName(), state: StatePending, since: r.cfg.Now()}
		r.svc[k] = st
	}
	st.revision = rev
	st.template = s.GetTemplate()
	return st
}

func (r *Reconciler) set(st *svcState, state, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st.state != state {
		st.since = r.cfg.Now()
	}
	st.state, st.message = state, msg
}

// service brings one service towards Deployed.
func (r *Reconciler) service(ctx context.Context, s *fleetv1.Service, st *svcState, watch bool) {
	name, ns := s.GetName(), s.GetNamespace()
	r.mu.Lock()
	if st.failedHash != s.GetValuesHash() {
		st.failures, st.failedHash, st.retryAt = 0, "", time.Time{} // desired changed: try at once
	}
	wait := st.failures > 0 && r.cfg.Now().Before(st.retryAt)
	r.mu.Unlock()
	if wait {
		return
	}
	mode := s.GetSyncMode()
	switch mode {
	case "", SyncContinuousWithDriftDetection, SyncContinuous, SyncOneTime, SyncDryRun:
	default:
		r.set(st, StateFailed, fmt.Sprintf("syncMode %q is not one this agent knows (%s, %s, %s, %s); nothing applied",
			mode, SyncContinuousWithDriftDetection, SyncContinuous, SyncOneTime, SyncDryRun))
		return
	}
	chart, err := r.chart(ctx, s.GetChartDigest())
	if err != nil {
		r.set(st, StatePending, err.Error())
		return
	}
	rel := releaseOf(s, chart)
	if mode == SyncDryRun {
		r.dryRun(ctx, rel, st)
		return
	}
	if mode == SyncOneTime {
		// Installed once (and deployed): never upgraded or repaired.
		info, err := r.cfg.Engine.Get(ctx, name, ns)
		if err == nil && info.Status == engine.StatusDeployed {
			hash, note := s.GetValuesHash(), ""
			if info.Hash != engine.HashLabel(s.GetValuesHash()) {
				r.mu.Lock()
				hash = st.hash
				r.mu.Unlock()
				note = fmt.Sprintf("syncMode OneTime: installed once (revision %d); the current desired version is not applied", info.Revision)
			}
			r.health(ctx, s, st, hash, note)
			return
		}
	}
	res, err := r.cfg.Engine.Apply(ctx, rel)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		st.failures++
		st.failedHash = s.GetValuesHash()
		st.retryAt = r.cfg.Now().Add(retryDelay(st.failures))
		r.mu.Unlock()
		r.set(st, StateFailed, err.Error())
		r.log.Warn("apply failed; will retry", "service", key(ns, name), "err", err, "attempt", st.failures, "retry_in", retryDelay(st.failures))
		return
	}
	r.mu.Lock()
	st.failures, st.failedHash = 0, ""
	r.mu.Unlock()
	if res.Action != engine.ActionUnchanged {
		r.log.Info("release applied", "service", key(ns, name), "action", res.Action, "revision", res.Revision)
		r.mu.Lock()
		st.applied = s.GetValuesHash()
		st.since = r.cfg.Now()
		st.state = StateProvisioning
		st.message = string(res.Action)
		r.mu.Unlock()
	} else if mode == "" || mode == SyncContinuousWithDriftDetection {
		// Up to date by hash (also right after an agent restart, when this
		// loop has no memory yet): look for drift on the cluster.
		if d, err := r.cfg.Engine.Drift(ctx, name, ns, rel.Drift); err != nil {
			r.log.Warn("drift check failed", "service", key(ns, name), "err", err)
		} else if d.Drifted {
			if msg, held := r.repairLoop(st, d.Reasons); held {
				r.set(st, StateFailed, msg)
				return
			}
			r.log.Info("drift found; repairing", "service", key(ns, name), "reasons", d.Reasons, "watch_event", watch)
			if _, err := r.cfg.Engine.Repair(ctx, rel); err != nil {
				r.set(st, StateFailed, fmt.Sprintf("repair drift (%v): %v", d.Reasons, err))
				return
			}
			if watch {
				r.stats.watchRepairs.Add(1)
			} else {
				r.stats.passRepairs.Add(1)
			}
			r.set(st, StateProvisioning, "repaired drift: "+joinReasons(d.Reasons))
		} else {
			r.mu.Lock()
			st.loops = 0
			r.mu.Unlock()
		}
	}
	r.health(ctx, s, st, s.GetValuesHash(), "")
}

// releaseOf is the release a desired service asks for.
func releaseOf(s *fleetv1.Service, chart []byte) engine.Release {
	o := s.GetHelmOptions()
	return engine.Release{Name: s.GetName(), Namespace: s.GetNamespace(), Chart: chart, ValuesYAML: s.GetValuesYaml(),
		Hash: s.GetValuesHash(), ChartDigest: s.GetChartDigest(),
		Options: engine.Options{Timeout: time.Duration(max(o.GetTimeoutMs(), 0)) * time.Millisecond,
			SkipCRDs: o.GetSkipCrds(), DisableHooks: o.GetDisableHooks(), Atomic: o.GetAtomic()},
		Drift: driftRulesOf(s)}
}

// dryRun reports what applying rel would change (syncMode DryRun).
func (r *Reconciler) dryRun(ctx context.Context, rel engine.Release, st *svcState) {
	pl, err := r.cfg.Engine.Plan(ctx, rel)
	if err != nil {
		if ctx.Err() == nil {
			r.set(st, StateFailed, "dry run: "+err.Error())
		}
		return
	}
	msg := "dry run: up to date, nothing would change"
	switch pl.Action {
	case engine.ActionInstalled:
		msg = "dry run: would install: " + joinReasons(pl.Changes)
	case engine.ActionUpgraded:
		msg = "dry run: would upgrade: " + joinReasons(pl.Changes)
		if len(pl.Changes) == 0 {
			msg = "dry run: would upgrade (a new revision, no object changes)"
		}
	case engine.ActionRepaired:
		msg = "dry run: would repair drift: " + joinReasons(pl.Changes)
	}
	r.set(st, StateDryRun, msg)
}

// health sets st from the release's health: Deployed with lastDeployedHash
// hash when ready (or at once with helmOptions.wait false), Failed when not
// ready within the service's timeout. A note replaces the empty message of
// a Deployed service.
func (r *Reconciler) health(ctx context.Context, s *fleetv1.Service, st *svcState, hash, note string) {
	name, ns := s.GetName(), s.GetNamespace()
	timeout := r.cfg.HealthTimeout
	if ms := s.GetHelmOptions().GetTimeoutMs(); ms > 0 {
		timeout = time.Duration(ms) * time.Millisecond
	}
	h := engine.Health{Ready: true}
	if !s.GetHelmOptions().GetSkipWait() {
		var err error
		if h, err = r.cfg.Engine.Health(ctx, name, ns); err != nil {
			r.set(st, StateFailed, fmt.Sprintf("health check: %v", err))
			return
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case h.Ready:
		if st.state != StateDeployed {
			st.since = r.cfg.Now()
		}
		st.state, st.message, st.hash, st.applied = StateDeployed, note, hash, hash
	case r.cfg.Now().Sub(st.since) >= timeout:
		if st.state != StateFailed {
			st.since = r.cfg.Now()
		}
		st.state = StateFailed
		st.message = fmt.Sprintf("not healthy after %s: %s", timeout, h.Message)
	case st.state == StateDeployed:
		// Was healthy, is not now (a pod died): provisioning again.
		st.state, st.since, st.message = StateProvisioning, r.cfg.Now(), h.Message
	case st.state != StateFailed:
		st.state, st.message = StateProvisioning, h.Message
	}
}

func joinReasons(rs []string) string {
	if len(rs) > 3 {
		rs = append(rs[:3:3], fmt.Sprintf("and %d more", len(rs)-3))
	}
	out := ""
	for i, r := range rs {
		if i > 0 {
			out += "; "
		}
		out += r
	}
	return out
}

// chart returns a chart archive from the cache, fetching it from the hub
// once when missing.
func (r *Reconciler) chart(ctx context.Context, digest string) ([]byte, error) {
	if digest == "" {
		return nil, errors.New("desired state names no chart digest")
	}
	if ok, err := r.cfg.Cache.HasChart(digest); err != nil {
		return nil, err
	} else if ok {
		return r.cfg.Cache.Chart(digest)
	}
	b, err := r.cfg.Charts.FetchChart(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("chart %s is not cached and could not be fetched: %w", digest, err)
	}
	if err := r.cfg.Cache.PutChart(digest, b); err != nil {
		return nil, fmt.Errorf("cache chart %s: %w", digest, err)
	}
	return b, nil
}

// removeDeleted uninstalls, on the pass's workers (sem bounds them; wg
// waits for them), releases this agent manages that the desired state no
// longer holds. It never runs before a first desired state arrived, so a
// wiped cache cannot remove a cluster's services.
func (r *Reconciler) removeDeleted(ctx context.Context, ds *fleetv1.DesiredState, sem chan struct{}, wg *sync.WaitGroup) {
	want := map[string]bool{}
	for _, s := range ds.GetServices() {
		want[key(s.GetNamespace(), s.GetName())] = true
	}
	rels, err := r.cfg.Engine.List(ctx)
	if err != nil {
		r.log.Warn("list releases", "err", err)
		return
	}
	for _, rel := range rels {
		k := key(rel.Namespace, rel.Name)
		if want[k] {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		r.mu.Lock()
		st, ok := r.svc[k]
		if !ok {
			st = &svcState{}
			r.svc[k] = st
		}
		st.state, st.message, st.revision = StateDeleting, "", ds.GetRevision()
		r.mu.Unlock()
		wg.Go(func() {
			defer func() { <-sem }()
			l := r.serviceLock(k)
			l.Lock()
			defer l.Unlock()
			r.cfg.observe(k)
			if err := r.cfg.Engine.Uninstall(ctx, rel.Name, rel.Namespace); err != nil {
				r.set(st, StateFailed, fmt.Sprintf("uninstall: %v", err))
				return
			}
			r.log.Info("release uninstalled", "service", k)
			r.set(st, StateDeleted, "")
			r.report(ds)
		})
	}
}

// Statuses returns the current status of every service, sorted.
func (r *Reconciler) Statuses() []*fleetv1.ServiceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.statusesLocked()
}

func (r *Reconciler) statusesLocked() []*fleetv1.ServiceStatus {
	keys := slices.Sorted(mapsKeys(r.svc))
	out := make([]*fleetv1.ServiceStatus, 0, len(keys))
	for _, k := range keys {
		st := r.svc[k]
		ns, name := splitKey(k)
		out = append(out, &fleetv1.ServiceStatus{
			Name: name, Namespace: ns, Template: st.template, State: st.state, Revision: st.revision,
			LastDeployedHash: st.hash, Message: st.message, Time: timestamppb.New(st.since),
		})
	}
	return out
}

func splitKey(k string) (ns, name string) {
	for i := range len(k) {
		if k[i] == '/' {
			return k[:i], k[i+1:]
		}
	}
	return "", k
}

// report queues a status report when anything changed since the last one.
// Deleted services are reported once, then forgotten.
func (r *Reconciler) report(ds *fleetv1.DesiredState) {
	// One report at a time, so they reach the outbox in the order their
	// snapshots were taken.
	r.reportMu.Lock()
	defer r.reportMu.Unlock()
	r.mu.Lock()
	cur := r.statusesLocked()
	changed := len(cur) != len(r.reported)
	for i := 0; !changed && i < len(cur); i++ {
		a, b := cur[i], r.reported[i]
		changed = a.GetName() != b.GetName() || a.GetNamespace() != b.GetNamespace() || a.GetState() != b.GetState() ||
			a.GetMessage() != b.GetMessage() || a.GetRevision() != b.GetRevision() || a.GetLastDeployedHash() != b.GetLastDeployedHash()
	}
	for k, st := range r.svc {
		if st.state == StateDeleted {
			delete(r.svc, k)
		}
	}
	if !changed {
		r.mu.Unlock()
		return
	}
	r.reported = cur
	r.mu.Unlock()
	rep := &fleetv1.StatusReport{Revision: ds.GetRevision(), Services: cur, Observed: timestamppb.New(r.cfg.Now())}
	b, err := proto.Marshal(rep)
	if err == nil {
		err = r.cfg.Cache.Enqueue(OutboxKindStatus, b)
	}
	if err != nil {
		r.log.Warn("queue status report", "err", err)
		return
	}
	r.cfg.Notify()
}

// topoOrder orders services so dependencies come first; services in a
// dependency cycle are returned in cycle. dependsOn entries name a service
// as "namespace/name" or, in the same namespace, "name".
func topoOrder(svcs []*fleetv1.Service) (order []*fleetv1.Service, cycle map[string]bool) {
	byKey := map[string]*fleetv1.Service{}
	for _, s := range svcs {
		byKey[key(s.GetNamespace(), s.GetName())] = s
	}
	const (
		unseen = iota
		visiting
		visited
	)
	mark := map[string]int{}
	cycle = map[string]bool{}
	var visit func(k string, path []string)
	visit = func(k string, path []string) {
		switch mark[k] {
		case visited:
			return
		case visiting:
			for i := len(path) - 1; i >= 0; i-- {
				cycle[path[i]] = true
				if path[i] == k {
					break
				}
			}
			return
		}
		mark[k] = visiting
		s := byKey[k]
		for _, d := range s.GetDependsOn() {
			dk := depKey(s, d)
			if _, ok := byKey[dk]; ok {
				visit(dk, append(path, k))
			}
		}
		mark[k] = visited
		order = append(order, s)
	}
	for _, s := range svcs {
		k := key(s.GetNamespace(), s.GetName())
		visit(k, []string{k})
	}
	return order, cycle
}

func depKey(s *fleetv1.Service, dep string) string {
	for i := range len(dep) {
		if dep[i] == '/' {
			return dep
		}
	}
	return key(s.GetNamespace(), dep)
}

// waitingOn returns the first dependency not yet Deployed in this pass.
func waitingOn(s *fleetv1.Service, done map[string]bool) (string, bool) {
	for _, d := range s.GetDependsOn() {
		if !done[depKey(s, d)] {
			return d, false
		}
	}
	return "", true
}

// repairLoop records a drift repair of st about to happen and reports
// whether it must not: RepairLimit repairs within RepairWindow mean
// another controller keeps changing what the agent repairs. Then repairs
// pause (1 minute doubling with each loop, up to an hour) and msg says so.
func (r *Reconciler) repairLoop(st *svcState, reasons []string) (msg string, held bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.cfg.Now()
	if now.Before(st.holdUntil) {
		return st.holdMsg, true
	}
	kept := st.repairs[:0]
	for _, t := range st.repairs {
		if now.Sub(t) < r.cfg.RepairWindow {
			kept = append(kept, t)
		}
	}
	st.repairs = kept
	if len(st.repairs) >= r.cfg.RepairLimit {
		st.loops++
		pause := backoff.Delay(time.Minute, time.Hour, st.loops-1)
		st.holdUntil = now.Add(pause)
		st.holdMsg = fmt.Sprintf("repair loop: drift repaired %d times in %s and back again (%s); another controller may be changing these objects; not repairing for %s",
			len(st.repairs), r.cfg.RepairWindow, joinReasons(reasons), pause)
		st.repairs = nil
		r.log.Warn("drift repair loop; pausing repairs", "service", key(st.namespace, st.name), "loops", st.loops, "pause", pause, "reasons", reasons)
		return st.holdMsg, true
	}
	st.repairs = append(st.repairs, now)
	return "", false
}

// ObjectChanged is told (by the watcher) that an object of service
// ("namespace/name") was deleted or changed; spec is false for a status
// update only. Events on one service within Config.Debounce make one
// check. It never blocks.
func (r *Reconciler) ObjectChanged(service, object string, spec bool) {
	r.stats.watchEvents.Add(1)
	r.tmu.Lock()
	p, ok := r.pending[service]
	if !ok {
		p.due = time.Now().Add(r.cfg.Debounce)
	}
	p.spec = p.spec || spec
	r.pending[service] = p
	r.tmu.Unlock()
	r.log.Debug("managed object changed", "service", service, "object", object, "spec", spec)
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Stats counts what the watch did: events received, checks they
// triggered, and drift repairs made by those checks and by passes.
type Stats struct {
	WatchEvents, WatchChecks, WatchRepairs, PassRepairs uint64
	// HealthChecks counts watch checks that read health alone (a status
	// change of a Provisioning service); WatchChecksDone those of
	// WatchChecks that have finished.
	HealthChecks, WatchChecksDone uint64
}

// Stats returns the counters.
func (r *Reconciler) Stats() Stats {
	return Stats{WatchEvents: r.stats.watchEvents.Load(), WatchChecks: r.stats.watchChecks.Load(),
		WatchRepairs: r.stats.watchRepairs.Load(), PassRepairs: r.stats.passRepairs.Load(), HealthChecks: r.stats.healthChecks.Load(), WatchChecksDone: r.stats.checksDone.Load()}
}

// runChecks runs the checks watch events asked for, when due, on up to
// Config.Concurrency workers, until ctx is done.
func (r *Reconciler) runChecks(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, r.cfg.Concurrency)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.changed:
		case <-t.C:
		}
		now := time.Now()
		next := time.Duration(-1)
		due := map[string]bool{}
		r.tmu.Lock()
		for k, p := range r.pending {
			if wait := p.due.Sub(now); wait > 0 {
				if next < 0 || wait < next {
					next = wait
				}
				continue
			}
			due[k] = p.spec
			delete(r.pending, k)
		}
		r.tmu.Unlock()
		for _, k := range slices.Sorted(mapsKeys(due)) {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			spec := due[k]
			wg.Go(func() {
				defer func() { <-sem }()
				r.check(ctx, k, spec)
			})
		}
		if next >= 0 {
			t.Reset(next)
		}
	}
}

// check runs the turn of one service a watch event asked for, with the
// rules of a pass: a deleted or changed object of a Deployed or
// Provisioning service with drift detection is checked for drift (and
// repaired); a status change of a Provisioning one checks its health.
// Anything else waits for the next pass.
func (r *Reconciler) check(ctx context.Context, k string, spec bool) {
	if !r.adopted.Load() {
		return
	}
	r.mu.Lock()
	ds := r.desired
	st := r.svc[k]
	state := ""
	if st != nil {
		state = st.state
	}
	r.mu.Unlock()
	var s *fleetv1.Service
	for _, c := range ds.GetServices() {
		if key(c.GetNamespace(), c.GetName()) == k {
			s = c
		}
	}
	if s == nil || st == nil {
		return
	}
	mode := s.GetSyncMode()
	drift := mode == "" || mode == SyncContinuousWithDriftDetection
	switch {
	case spec && drift && (state == StateDeployed || state == StateProvisioning):
	case state == StateProvisioning && mode != SyncDryRun:
	default:
		return
	}
	r.stats.watchChecks.Add(1)
	defer r.stats.checksDone.Add(1)
	if !spec && state == StateProvisioning && r.healthOnly(ctx, k, s, st) {
		r.report(ds)
		return
	}
	r.runService(ctx, k, s, st, true)
	r.report(ds)
}

// healthOnly answers a status-only event of a Provisioning service whose
// desired version is the one last applied with its health alone: nothing
// about the release or its objects' specs changed, so the apply check
// and drift check of a full turn (a dozen reads of the API server per
// event, and a rollout sends several) would find what the turn that
// applied it found. It reports false, doing nothing, when a full turn is
// needed.
func (r *Reconciler) healthOnly(ctx context.Context, k string, s *fleetv1.Service, st *svcState) bool {
	switch s.GetSyncMode() {
	case "", SyncContinuousWithDriftDetection, SyncContinuous:
	default:
		return false
	}
	l := r.serviceLock(k)
	l.Lock()
	defer l.Unlock()
	r.mu.Lock()
	ok := st.state == StateProvisioning && st.applied != "" && st.applied == s.GetValuesHash() && st.failures == 0
	r.mu.Unlock()
	if !ok {
		return false
	}
	r.cfg.observe(k)
	r.stats.healthChecks.Add(1)
	r.health(ctx, s, st, s.GetValuesHash(), "")
	return true
}

// driftRulesOf is s's driftIgnore and driftExclusions.
func driftRulesOf(s *fleetv1.Service) engine.DriftRules {
	var r engine.DriftRules
	for _, sel := range s.GetDriftIgnore() {
		r.Ignore = append(r.Ignore, selectorOf(sel))
	}
	for _, x := range s.GetDriftExclusions() {
		ex := engine.DriftExclusion{Paths: x.GetPaths()}
		if t := x.GetTarget(); t != nil {
			sel := selectorOf(t)
			ex.Target = &sel
		}
		r.Exclude = append(r.Exclude, ex)
	}
	return r
}

func selectorOf(s *fleetv1.ObjectSelector) engine.ObjectSelector {
	return engine.ObjectSelector{Group: s.GetGroup(), Version: s.GetVersion(), Kind: s.GetKind(), Name: s.GetName(),
		Namespace: s.GetNamespace(), LabelSelector: s.GetLabelSelector(), AnnotationSelector: s.GetAnnotationSelector()}
}
