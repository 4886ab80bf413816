// Package assemble builds and runs a Tether agent from a Config: the bbolt
// cache, the engine (release records and the Helm worker), the reconciler, the hub link and the local
// status socket, wired through small interfaces each consumer declares.
// `tether-agent run` only parses flags into a Config and calls New and
// Run; tests call the same functions (see docs/design/agent.md).
//
// Construction order is fixed by who needs whom: the cache first (every
// part reads or writes it), then the engine, then the link (it needs no
// other part), then the reconciler (it fetches charts through the link and
// wakes its outbox drain), and last the link is told the reconciler is
// where desired state goes (link.SetHandler), before it runs.
package assemble

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/localapi"
	"github.com/tetherfleet/tether/agent/internal/observe"
	"github.com/tetherfleet/tether/agent/internal/reconcile"
	"github.com/tetherfleet/tether/agent/internal/telemetry"
	"github.com/tetherfleet/tether/agent/internal/worker"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
	"github.com/tetherfleet/tether/protocol/version"
)

// DBFile is the name of the agent's bbolt file in its data directory.
const DBFile = "agent.db"

// Config configures an Agent.
type Config struct {
	// DataDir holds the bbolt file and the status socket (required).
	DataDir string
	// Link configures the hub link: Hubs, Token, MaxBackoff, PostQuantum
	// and the like. Its Cache, Outbox, Handler, Logger and APIServer are
	// set by the assembly and must be left empty.
	Link link.Config
	// NoCluster runs the link only: enrol, connect and report, without
	// managing a cluster (no Helm engine, no reconciler).
	NoCluster bool
	// Kubeconfig is the cluster to manage; empty means $KUBECONFIG,
	// in-cluster, else ~/.kube/config.
	Kubeconfig string
	// DriftInterval and HealthTimeout tune the reconciler; 0 keeps its
	// defaults.
	DriftInterval, HealthTimeout time.Duration
	// ApplyConcurrency bounds how many services the reconciler works on
	// at once; 0 keeps its default (4).
	ApplyConcurrency int
	// HelmWorker is the Helm worker binary (tether-agent-helm); empty:
	// the one next to this executable, else the first in $PATH.
	HelmWorker string
	// WorkerIdle: the worker is stopped after this long without work;
	// 0 keeps the supervisor's default (20s), negative keeps it running.
	WorkerIdle time.Duration
	// WorkerArgs are extra arguments for the worker (its log flags).
	WorkerArgs []string
	// Telemetry configures metric collection and its outbox kind.
	Telemetry TelemetryConfig
	// Logger; nil discards.
	Logger *slog.Logger
}

// TelemetryConfig configures the agent's metrics: collection, its share
// of the outbox and its drain rate.
type TelemetryConfig struct {
	// Interval between collections of inventory and usage; 0 turns
	// collection off (and the metrics kind is not offered to the hub).
	// Off with NoCluster.
	Interval time.Duration
	// OutboxBytes is the on-disk quota of queued metric batches; the
	// oldest are evicted (and counted as dropped) beyond it.
	OutboxBytes int64
	// DrainRate bounds the drain of queued metric batches in bytes per
	// second (0: unbounded); status reports always go first.
	DrainRate int64
	// Usage also collects CPU and memory usage.
	Usage bool
}

// DefaultTelemetryConfig: every 15 s, 512 MiB on disk (about 4 days of a
// 2,000-series cluster; docs/design/telemetry.md), drained at 256 KiB/s.
func DefaultTelemetryConfig() TelemetryConfig {
	return TelemetryConfig{Interval: 15 * time.Second, OutboxBytes: link.DefaultMetricsOutboxBytes, DrainRate: 256 << 10, Usage: true}
}

// DefaultConfig returns production defaults; DataDir must be set.
func DefaultConfig() Config {
	return Config{Link: link.DefaultConfig(), Telemetry: DefaultTelemetryConfig()}
}

// Validate reports what is wrong with c, changing nothing.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("assemble: Config.DataDir is required")
	}
	if c.Link.Cache != nil || c.Link.Outbox != nil || c.Link.Handler != nil {
		return errors.New("assemble: Config.Link.Cache, Outbox and Handler are set by the assembly; leave them empty")
	}
	if c.DriftInterval < 0 || c.HealthTimeout < 0 {
		return fmt.Errorf("assemble: drift interval %s and health timeout %s must not be negative", c.DriftInterval, c.HealthTimeout)
	}
	if c.ApplyConcurrency < 0 {
		return fmt.Errorf("assemble: apply concurrency %d must not be negative", c.ApplyConcurrency)
	}
	if t := c.Telemetry; t.Interval < 0 || t.OutboxBytes < 0 || t.DrainRate < 0 {
		return fmt.Errorf("assemble: telemetry interval %s, outbox bytes %d and drain rate %d must not be negative", t.Interval, t.OutboxBytes, t.DrainRate)
	}
	if t := c.Telemetry; t.OutboxBytes > 0 && t.OutboxBytes < telemetryv1.MaxEncodedBytes {
		return fmt.Errorf("assemble: telemetry outbox bytes %d must hold at least one batch (%d)", t.OutboxBytes, telemetryv1.MaxEncodedBytes)
	}
	return nil
}

// Agent is an assembled agent: New builds it, Run runs it, Close releases
// it. Installed releases are never touched by stopping it.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	cache  *cache.Cache
	worker *worker.Supervisor // nil with NoCluster
	rec    *reconcile.Reconciler
	link   *link.Link
	// watch reports changes of managed objects to rec; nil with
	// NoCluster.
	watch *observe.Watcher
	// ship enqueues metric batches (nil with NoCluster); collect runs the
	// agent's own collection (nil when off).
	ship    *telemetry.Shipper
	scrapes *scrapes
	collect *telemetry.Collector

	mu      sync.Mutex
	running bool
	closed  bool
	stop    context.CancelFunc
	wg      sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// New builds an agent: it opens (creating if needed) the data directory
// and its bbolt file, and, unless NoCluster, finds the cluster and makes
// the Helm engine and the reconciler. Nothing connects before Run.
func New(cfg Config) (a *Agent, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.Link.Hubs = SplitHubs(cfg.Link.Hubs)
	a = &Agent{cfg: cfg, log: cfg.Logger}
	var eng *worker.Engine
	defer func() {
		if err != nil {
			a.release()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir %s: %w", cfg.DataDir, err)
	}
	if a.cache, err = cache.Open(filepath.Join(cfg.DataDir, DBFile), cache.Options{OutboxKinds: outboxKinds(cfg.Telemetry)}); err != nil {
		return nil, err
	}
	lcfg := cfg.Link
	lcfg.Cache, lcfg.Outbox, lcfg.Logger = a.cache, a.cache, cfg.Logger
	var rc *rest.Config
	if !cfg.NoCluster {
		if rc, err = observe.LoadRESTConfig(cfg.Kubeconfig); err != nil {
			return nil, fmt.Errorf("find the cluster to manage (--kubeconfig, $KUBECONFIG, in-cluster or ~/.kube/config; --no-cluster to run without one): %w", err)
		}
		lcfg.APIServer = rc.Host
		if eng, err = a.newEngine(rc); err != nil {
			return nil, err
		}
		// Metrics are offered whenever the agent manages a cluster: scrape
		// configs from the hub produce them even with collection off.
		lcfg.Telemetry = true
		if cfg.Telemetry.DrainRate > 0 {
			lcfg.DrainRates = map[string]int64{link.KindMetrics: cfg.Telemetry.DrainRate}
		}
	}
	if a.link, err = link.New(lcfg); err != nil {
		return nil, err
	}
	if rc != nil {
		if err := a.newTelemetry(rc); err != nil {
			return nil, err
		}
	}
	if eng != nil {
		rcfg := reconcile.DefaultConfig()
		rcfg.Cache, rcfg.Engine, rcfg.Logger = a.cache, eng, cfg.Logger
		rcfg.Charts, rcfg.Notify, rcfg.HubNow = a.link, a.link.KickOutbox, a.link.HubNow
		if cfg.DriftInterval > 0 {
			rcfg.Interval = cfg.DriftInterval
		}
		if cfg.HealthTimeout > 0 {
			rcfg.HealthTimeout = cfg.HealthTimeout
		}
		if cfg.ApplyConcurrency > 0 {
			rcfg.Concurrency = cfg.ApplyConcurrency
		}
		rcfg.Watcher = a.watch
		if a.rec, err = reconcile.New(rcfg); err != nil {
			return nil, err
		}
		if a.scrapes, err = newScrapes(a, rc, a.rec); err != nil {
			return nil, err
		}
		a.link.SetHandler(handler{Reconciler: a.rec, s: a.scrapes})
	}
	return a, nil
}

// outboxKinds are the link's outbox kinds with the metrics quota set.
func outboxKinds(t TelemetryConfig) []cache.OutboxKind {
	kinds := link.OutboxKinds()
	for i := range kinds {
		if kinds[i].Name == link.KindMetrics && t.OutboxBytes > 0 {
			kinds[i].MaxBytes = t.OutboxBytes
		}
	}
	return kinds
}

// newTelemetry builds the shipper every metrics producer emits to, and
// the collector of the agent's own inventory and usage when it is on.
func (a *Agent) newTelemetry(rc *rest.Config) error {
	var err error
	a.ship, err = telemetry.NewShipper(telemetry.ShipperConfig{
		Cluster: func() string {
			id, err := a.cache.Identity()
			if err != nil {
				return ""
			}
			return id.Cluster
		},
		Outbox: a.cache, Notify: a.link.KickOutbox,
	})
	if err != nil || a.cfg.Telemetry.Interval <= 0 {
		return err
	}
	tcfg := telemetry.DefaultConfig()
	tcfg.RESTConfig, tcfg.Emitter, tcfg.Logger = rc, a.ship, a.log
	tcfg.Interval, tcfg.Usage = a.cfg.Telemetry.Interval, a.cfg.Telemetry.Usage
	a.collect, err = telemetry.New(tcfg)
	return err
}

// Emitter is where metric producers (the scrape loops) send their
// batches: it labels them with the cluster and queues them in the
// outbox. nil with NoCluster.
func (a *Agent) Emitter() telemetry.Emitter {
	if a.ship == nil {
		return nil
	}
	return a.ship
}

// newEngine builds the agent's engine: the release-record reader over
// the cluster (no Helm) and the supervisor of the Helm worker, which runs
// only while there is Helm work.
func (a *Agent) newEngine(rc *rest.Config) (*worker.Engine, error) {
	obs, err := observe.New(observe.Config{RESTConfig: rc, Logger: a.log})
	if err != nil {
		return nil, err
	}
	reader, err := observe.NewReader(observe.ReaderConfig{Records: a.cache, Observer: obs, Logger: a.log})
	if err != nil {
		return nil, err
	}
	// Events go to the reconciler, made after the engine; the watcher
	// runs only once Run starts, when it exists.
	a.watch, err = observe.NewWatcher(observe.WatcherConfig{Observer: obs, Records: a.cache, Logger: a.log,
		OnChange: func(c observe.Change) { a.rec.ObjectChanged(c.Service, c.Object, c.Spec) }})
	if err != nil {
		return nil, err
	}
	path, err := FindHelmWorker(a.cfg.HelmWorker)
	if err != nil {
		return nil, err
	}
	wcfg := worker.DefaultConfig()
	wcfg.Path, wcfg.Records, wcfg.Logger, wcfg.AgentVersion = path, a.cache, a.log, version.Get()
	if a.cfg.Kubeconfig != "" {
		wcfg.Args = append(wcfg.Args, "--kubeconfig", a.cfg.Kubeconfig)
	}
	wcfg.Args = append(wcfg.Args, a.cfg.WorkerArgs...)
	if a.cfg.WorkerIdle != 0 {
		wcfg.IdleTimeout = a.cfg.WorkerIdle
	}
	if a.worker, err = worker.New(wcfg); err != nil {
		return nil, err
	}
	return worker.NewEngine(a.worker, reader, a.log), nil
}

// HelmWorkerName is the Helm worker's binary name.
const HelmWorkerName = "tether-agent-helm"

// FindHelmWorker returns the Helm worker binary: path when given (it must
// exist), else tether-agent-helm next to this executable, else the first
// in $PATH.
func FindHelmWorker(path string) (string, error) {
	if path != "" {
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("helm worker --helm-worker %s: %w", path, err)
		}
		return path, nil
	}
	var next string
	if exe, err := os.Executable(); err == nil {
		next = filepath.Join(filepath.Dir(exe), HelmWorkerName)
		if _, err := os.Stat(next); err == nil {
			return next, nil
		}
	}
	if p, err := exec.LookPath(HelmWorkerName); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("helm worker %s not found next to this executable (%s) nor in $PATH: install it beside tether-agent, pass --helm-worker PATH, or run with --no-cluster", HelmWorkerName, next)
}

// ErrClosed: Run was called on a closed agent, or twice.
var ErrClosed = errors.New("agent is closed or already running")

// Run runs the agent until ctx is done: the local status socket, the
// reconciler and the hub link (enrolment on first start, then connected
// forever). A cancelled ctx returns nil; an error means the agent cannot
// go on (enrolment refused, not enrolled, the socket in use). Run once;
// then Close.
func (a *Agent) Run(ctx context.Context) error {
	a.mu.Lock()
	if a.running || a.closed {
		a.mu.Unlock()
		return ErrClosed
	}
	a.running = true
	ctx, cancel := context.WithCancel(ctx)
	a.stop = cancel
	a.wg.Add(1)
	a.mu.Unlock()
	defer a.wg.Done()
	defer cancel()

	local, err := localapi.Listen(a.cfg.DataDir, func() any { return a.Status() }, a.log)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // before wg.Wait: the goroutines stop on ctx
	wg.Go(func() {
		if err := local.Run(ctx); err != nil {
			a.log.Warn("local status socket", "err", err)
		}
	})
	if a.rec != nil {
		wg.Go(func() {
			if err := a.watch.Run(ctx); err != nil {
				a.log.Warn("watch managed objects", "err", err)
			}
		})
		wg.Go(func() {
			if err := a.rec.Run(ctx); err != nil {
				a.log.Error("reconcile loop", "err", err)
			}
		})
	}
	if a.scrapes != nil {
		wg.Go(func() {
			if err := a.scrapes.run(ctx); err != nil {
				a.log.Error("scrape configs", "err", err)
			}
		})
	}
	if a.collect != nil {
		wg.Go(func() {
			if err := a.collect.Run(ctx); err != nil {
				a.log.Error("telemetry collection", "err", err)
			}
		})
	}
	a.log.Info("agent starting", "version", version.Get(), "data_dir", a.cfg.DataDir, "manages_cluster", a.rec != nil)
	return a.link.Run(ctx)
}

// Close stops Run if it is running, waits for every goroutine the agent
// started, and closes the link, the engine and the bbolt file (flushed).
// Releases stay installed. It is idempotent and returns the first close
// error of the cache.
func (a *Agent) Close() error {
	a.closeOnce.Do(func() {
		a.mu.Lock()
		a.closed = true
		stop := a.stop
		a.mu.Unlock()
		if stop != nil {
			stop()
		}
		a.wg.Wait()
		a.closeErr = a.release()
	})
	return a.closeErr
}

// release closes what New opened, in reverse order.
func (a *Agent) release() error {
	if a.link != nil {
		a.link.Close()
	}
	if a.worker != nil {
		if err := a.worker.Close(); err != nil {
			a.log.Warn("stop helm worker", "err", err)
		}
	}
	if a.cache != nil {
		if err := a.cache.Close(); err != nil {
			return fmt.Errorf("close cache %s: %w", filepath.Join(a.cfg.DataDir, DBFile), err)
		}
	}
	return nil
}

// SplitHubs splits comma-separated hub addresses (--hub a,b --hub c) and
// drops empty ones.
func SplitHubs(in []string) []string {
	var out []string
	for _, h := range in {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
