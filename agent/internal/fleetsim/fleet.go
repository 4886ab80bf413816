package fleetsim

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
)

// Outage takes a share of the fleet offline for a while: at At after Run
// starts, Fraction of the agents (chosen by the seed, the same ones on
// every run) go dark for For.
type Outage struct {
	Fraction float64
	At, For  time.Duration
}

// ParseOutage reads "FRACTION@AT+FOR", e.g. "0.1@5s+30s".
func ParseOutage(s string) (Outage, error) {
	frac, rest, ok1 := strings.Cut(s, "@")
	at, dur, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 {
		return Outage{}, fmt.Errorf("outage %q: want FRACTION@AT+FOR, e.g. 0.1@5s+30s", s)
	}
	var o Outage
	var err error
	if o.Fraction, err = strconv.ParseFloat(frac, 64); err != nil || o.Fraction < 0 || o.Fraction > 1 {
		return Outage{}, fmt.Errorf("outage %q: fraction %q: want a number from 0 to 1", s, frac)
	}
	if o.At, err = time.ParseDuration(at); err != nil || o.At < 0 {
		return Outage{}, fmt.Errorf("outage %q: start %q: want a duration ≥ 0", s, at)
	}
	if o.For, err = time.ParseDuration(dur); err != nil || o.For <= 0 {
		return Outage{}, fmt.Errorf("outage %q: duration %q: want a duration > 0", s, dur)
	}
	return o, nil
}

// Config configures a Fleet.
type Config struct {
	// Hub is the hub's agent address (HOST:PORT).
	Hub string
	// Identities are the enrolled agents (Enroll), one simulated agent each.
	Identities []cache.Identity
	// DeployDelay is how long a simulated apply takes.
	DeployDelay time.Duration
	// FailRate is the share of agents (by seed) whose services fail;
	// FailChartVersion, if set, limits failures to that chart version.
	FailRate         float64
	FailChartVersion string
	// Seed chooses the failing and the offline agents.
	Seed     uint64
	Outages  []Outage
	Parallel int
	// CacheDir, if set, gives each agent a real agent cache file
	// (bbolt, CLUSTER.db, fsync off) for its identity, link state,
	// desired state and outbox, instead of memory only.
	CacheDir string
	// MaxBackoff caps each link's reconnect delay.
	MaxBackoff time.Duration
	Logger     *slog.Logger
	Now        func() time.Time
}

// DefaultConfig returns the defaults; Hub and Identities must be set.
func DefaultConfig() Config {
	return Config{DeployDelay: 100 * time.Millisecond, Parallel: 32, MaxBackoff: 5 * time.Second}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Hub == "":
		return errors.New("fleetsim: Config.Hub is required")
	case len(c.Identities) == 0:
		return errors.New("fleetsim: no identities (enrol first)")
	case c.FailRate < 0 || c.FailRate > 1:
		return fmt.Errorf("fleetsim: fail rate %v: want 0..1", c.FailRate)
	case c.DeployDelay < 0:
		return fmt.Errorf("fleetsim: deploy delay %s is negative", c.DeployDelay)
	case c.Parallel < 1:
		return fmt.Errorf("fleetsim: parallel %d: must be at least 1", c.Parallel)
	case c.MaxBackoff < 500*time.Millisecond:
		return fmt.Errorf("fleetsim: max backoff %s: must be at least 500ms", c.MaxBackoff)
	}
	return nil
}

// Fleet is many simulated agents in one process.
type Fleet struct {
	cfg    Config
	log    *slog.Logger
	agents []*agent
	byName map[string]*agent

	mu               sync.Mutex
	failRate         float64
	failChartVersion string
}

// New returns a Fleet; Run connects it.
func New(cfg Config) (*Fleet, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	f := &Fleet{cfg: cfg, log: cfg.Logger, byName: map[string]*agent{}, failRate: cfg.FailRate, failChartVersion: cfg.FailChartVersion}
	for i := range cfg.Identities {
		id := cfg.Identities[i]
		if _, dup := f.byName[id.Cluster]; dup || id.Cluster == "" {
			return nil, fmt.Errorf("fleetsim: identity %d: cluster %q is empty or repeated", i, id.Cluster)
		}
		a := &agent{f: f, store: newMemStore(&id, cfg.Now), cluster: id.Cluster, svc: map[string]*svcState{},
			online: true, wake: make(chan struct{}, 1), failScore: score(cfg.Seed, "fail", id.Cluster)}
		f.agents = append(f.agents, a)
		if cfg.CacheDir != "" {
			if err := a.openCache(cfg.CacheDir, id); err != nil {
				f.closeCaches()
				return nil, err
			}
		}
		f.byName[id.Cluster] = a
	}
	return f, nil
}

// openCache gives a its cache file in dir.
func (a *agent) openCache(dir string, id cache.Identity) error {
	opts := cache.DefaultOptions()
	opts.OutboxKinds, opts.NoSync, opts.Now = link.OutboxKinds(), true, a.f.cfg.Now
	db, err := cache.Open(filepath.Join(dir, id.Cluster+".db"), opts)
	if err != nil {
		return fmt.Errorf("fleetsim: cache of %s: %w", id.Cluster, err)
	}
	a.store.db = db
	if err := db.SaveIdentity(id); err != nil {
		return fmt.Errorf("fleetsim: cache of %s: %w", id.Cluster, err)
	}
	return nil
}

// closeCaches stops every agent's deploys and closes its cache file.
func (f *Fleet) closeCaches() {
	for _, a := range f.agents {
		a.stop()
		if a.store.db != nil {
			if err := a.store.db.Close(); err != nil {
				f.log.Error("close cache", "cluster", a.cluster, "err", err)
			}
		}
	}
}

// score is a deterministic number in [0,1) for (seed, what, cluster).
func score(seed uint64, what, cluster string) float64 {
	h := fnv.New64a()
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seed)
	h.Write(b[:])
	h.Write([]byte(what))
	h.Write([]byte{0})
	h.Write([]byte(cluster))
	// FNV's high bits barely change between names that differ in their
	// last characters (sim-00001, sim-00002): finish with splitmix64's mixer.
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return float64(x>>11) / (1 << 53)
}

// Pick returns the ceil(fraction·N) clusters an outage with this index
// takes down: the same ones for the same seed.
func (f *Fleet) Pick(index int, fraction float64) []string {
	names := make([]string, len(f.agents))
	for i, a := range f.agents {
		names[i] = a.cluster
	}
	what := "offline-" + strconv.Itoa(index)
	slices.SortFunc(names, func(x, y string) int {
		sx, sy := score(f.cfg.Seed, what, x), score(f.cfg.Seed, what, y)
		switch {
		case sx < sy:
			return -1
		case sx > sy:
			return 1
		}
		return strings.Compare(x, y)
	})
	n := int(math.Ceil(fraction * float64(len(names))))
	return names[:min(n, len(names))]
}

func (f *Fleet) failure() (float64, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failRate, f.failChartVersion
}

// SetFailure changes the fail rate and chart version at run time.
func (f *Fleet) SetFailure(rate float64, chartVersion string) error {
	if rate < 0 || rate > 1 {
		return fmt.Errorf("fail rate %v: want 0..1", rate)
	}
	f.mu.Lock()
	f.failRate, f.failChartVersion = rate, chartVersion
	f.mu.Unlock()
	return nil
}

// SetOnline takes clusters offline (their links are cut) or back online.
func (f *Fleet) SetOnline(clusters []string, online bool) error {
	var as []*agent
	for _, c := range clusters {
		a := f.byName[c]
		if a == nil {
			return fmt.Errorf("cluster %q is not simulated here", c)
		}
		as = append(as, a)
	}
	for _, a := range as {
		a.setOnline(online)
	}
	return nil
}

// Statuses returns every agent's status, in cluster order.
func (f *Fleet) Statuses() []AgentStatus {
	out := make([]AgentStatus, 0, len(f.agents))
	for _, a := range f.agents {
		out = append(out, a.status())
	}
	slices.SortFunc(out, func(x, y AgentStatus) int { return strings.Compare(x.Cluster, y.Cluster) })
	return out
}

func (f *Fleet) newLink(a *agent) (*link.Link, error) {
	cfg := link.DefaultConfig()
	cfg.Cache = a.store
	cfg.Outbox = a.store
	cfg.Handler = a
	cfg.Hubs = []string{f.cfg.Hub}
	cfg.Logger = f.log.With("cluster", a.cluster)
	cfg.MaxBackoff = f.cfg.MaxBackoff
	cfg.Hostname = "fleetsim"
	cfg.Now = f.cfg.Now
	return link.New(cfg)
}

// Run connects every agent (at most Parallel connecting at once while
// starting), plays the outage schedule, and returns when ctx is done and
// every link has stopped (and the cache files are closed). ready, if set, is called once every agent
// connected for the first time (or gave up).
func (f *Fleet) Run(ctx context.Context, ready func()) error {
	var wg sync.WaitGroup
	defer f.closeCaches()
	defer wg.Wait()
	start := f.cfg.Now()
	wg.Go(func() { f.playOutages(ctx, start) })
	sem := make(chan struct{}, f.cfg.Parallel)
	var up sync.WaitGroup
	for _, a := range f.agents {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		up.Add(1)
		wg.Go(func() {
			a.run(ctx, func() { <-sem; up.Done() })
		})
	}
	if ready != nil {
		wg.Go(func() {
			up.Wait()
			if ctx.Err() == nil {
				ready()
			}
		})
	}
	<-ctx.Done()
	return nil
}

// playOutages runs the schedule: each outage's agents go dark at At and
// come back at At+For.
func (f *Fleet) playOutages(ctx context.Context, start time.Time) {
	type event struct {
		at       time.Duration
		clusters []string
		online   bool
	}
	var evs []event
	for i, o := range f.cfg.Outages {
		picked := f.Pick(i, o.Fraction)
		evs = append(evs, event{o.At, picked, false}, event{o.At + o.For, picked, true})
	}
	slices.SortStableFunc(evs, func(x, y event) int { return int(x.at - y.at) })
	for _, e := range evs {
		t := time.NewTimer(time.Until(start.Add(e.at)))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		f.log.Info("outage schedule", "online", e.online, "clusters", len(e.clusters))
		_ = f.SetOnline(e.clusters, e.online)
	}
}

// ControlRequest is the body of the control API's POST calls.
type ControlRequest struct {
	Clusters []string `json:"clusters,omitempty"`
	// Fraction with Index picks clusters as outage Index would.
	Fraction float64 `json:"fraction,omitempty"`
	Index    int     `json:"index,omitempty"`
	// FailRate and FailChartVersion for /v1/failure.
	FailRate         float64 `json:"failRate,omitempty"`
	FailChartVersion string  `json:"failChartVersion,omitempty"`
}

// Handler is the simulator's control API, for tests and benchmarks on
// loopback (no authentication: never expose it):
//
//	GET  /v1/agents                   []AgentStatus
//	POST /v1/offline, /v1/online      ControlRequest{clusters | fraction,index} → the clusters
//	POST /v1/failure                  ControlRequest{failRate, failChartVersion}
func (f *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/agents", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, f.Statuses())
	})
	setOnline := func(on bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			var req ControlRequest
			if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8<<20)).Decode(&req); err != nil {
				http.Error(w, "decode request: "+err.Error(), http.StatusBadRequest)
				return
			}
			clusters := req.Clusters
			if len(clusters) == 0 {
				clusters = f.Pick(req.Index, req.Fraction)
			}
			if err := f.SetOnline(clusters, on); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			writeJSON(w, clusters)
		}
	}
	mux.HandleFunc("POST /v1/offline", setOnline(false))
	mux.HandleFunc("POST /v1/online", setOnline(true))
	mux.HandleFunc("POST /v1/failure", func(w http.ResponseWriter, r *http.Request) {
		var req ControlRequest
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "decode request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if err := f.SetFailure(req.FailRate, req.FailChartVersion); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, req)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Enroll redeems each join token with a real link and returns the
// identities, in token order. A link stops as soon as its identity is
// saved.
func Enroll(ctx context.Context, log *slog.Logger, hub string, tokens []string, parallel int) ([]cache.Identity, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ids := make([]cache.Identity, len(tokens))
	errs := make([]error, len(tokens))
	sem := make(chan struct{}, max(parallel, 1))
	var wg sync.WaitGroup
loop:
	for i, tok := range tokens {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Go(func() {
			defer func() { <-sem }()
			st := newMemStore(nil, time.Now)
			cfg := link.DefaultConfig()
			cfg.Cache, cfg.Hubs, cfg.Token, cfg.Logger, cfg.MaxBackoff = st, []string{hub}, tok, log, 5*time.Second
			cfg.Hostname = "fleetsim"
			l, err := link.New(cfg)
			if err != nil {
				errs[i] = err
				return
			}
			defer l.Close()
			lctx, cancel := context.WithCancel(ctx)
			var inner sync.WaitGroup
			inner.Go(func() {
				select {
				case <-st.saved:
				case <-lctx.Done():
				}
				cancel()
			})
			err = l.Run(lctx)
			cancel()
			inner.Wait()
			id, ierr := st.Identity()
			if err = errors.Join(err, ierr); err != nil {
				errs[i] = fmt.Errorf("token %d: %w", i+1, err)
				return
			}
			ids[i] = id
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("enrolment interrupted: %w", err)
	}
	var failed []error
	for _, err := range errs {
		if err != nil {
			failed = append(failed, err)
		}
	}
	if len(failed) > 0 {
		return nil, fmt.Errorf("%d of %d enrolments failed; first: %w", len(failed), len(tokens), failed[0])
	}
	return ids, nil
}
