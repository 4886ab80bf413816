package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/kube"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/tetherfleet/tether/agent/internal/engine"
	"github.com/tetherfleet/tether/agent/internal/observe"
)

// Errors returned by the engine. Wrapped with the release they concern;
// check with errors.Is. All but ErrClosed are package engine's.
var (
	// ErrInvalidRelease: the Release is unusable (bad name, namespace,
	// chart archive or values). Nothing was changed.
	ErrInvalidRelease = engine.ErrInvalidRelease
	// ErrForeignRelease: a Helm release secret of that name exists that
	// this agent did not write (no record of it in Config.Records, an
	// unknown revision, or content that differs from what the agent
	// wrote); the engine never installs over, upgrades, uninstalls or
	// reads such a release.
	ErrForeignRelease = engine.ErrForeignRelease
	// ErrReleaseNotFound: no release of that name in that namespace.
	ErrReleaseNotFound = engine.ErrReleaseNotFound
	// ErrNotReady: WaitHealthy gave up; the message says what is not ready.
	ErrNotReady = engine.ErrNotReady
	// ErrClosed: the engine was closed.
	ErrClosed = errors.New("apply engine closed")
)

// Labels the engine puts on the Helm release records (the storage
// Secrets), not on the chart's objects (see package engine).
const (
	// LabelManagedBy marks releases tether owns; its value is ManagedByValue.
	LabelManagedBy = engine.LabelManagedBy
	ManagedByValue = engine.ManagedByValue
	// LabelHash holds the release's hash in label form (see HashLabel).
	LabelHash = engine.LabelHash
)

// Config configures an Engine. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// RESTConfig reaches the cluster; see LoadRESTConfig. Required.
	RESTConfig *rest.Config
	// Records holds the record of the releases the engine wrote, the only
	// source of truth for what it owns (normally the agent's cache).
	// Required.
	Records Records
	// Now is the clock for the record's timestamps. Default time.Now.
	Now func() time.Time
	// Logger receives progress and Helm's debug output. Default: discard.
	Logger *slog.Logger
	// MaxHistory is the number of release revisions Helm keeps. Default 5.
	MaxHistory int
	// Timeout bounds one Helm operation's hooks and waits. Default 5m.
	Timeout time.Duration
	// HealthTimeout is WaitHealthy's default when it gets 0. Default 5m.
	HealthTimeout time.Duration
	// PollInterval is how often WaitHealthy looks. Default 2s.
	PollInterval time.Duration
}

// DefaultConfig returns the defaults; RESTConfig is left nil.
func DefaultConfig() Config {
	return Config{
		Logger:        slog.New(slog.DiscardHandler),
		MaxHistory:    5,
		Timeout:       5 * time.Minute,
		HealthTimeout: 5 * time.Minute,
		PollInterval:  2 * time.Second,
	}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.MaxHistory == 0 {
		c.MaxHistory = d.MaxHistory
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.HealthTimeout == 0 {
		c.HealthTimeout = d.HealthTimeout
	}
	if c.PollInterval == 0 {
		c.PollInterval = d.PollInterval
	}
	return c
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.RESTConfig == nil:
		return errors.New("apply config: RESTConfig is required")
	case c.Records == nil:
		return errors.New("apply config: Records is required (the agent's record of the releases it installed)")
	case c.MaxHistory < 0:
		return fmt.Errorf("apply config: MaxHistory %d is negative", c.MaxHistory)
	case c.Timeout < 0, c.HealthTimeout < 0, c.PollInterval < 0:
		return errors.New("apply config: durations must not be negative")
	}
	return nil
}

// Engine applies and checks the Helm releases of one cluster. It is safe
// for concurrent use; operations on the same release run one at a time.
type Engine struct {
	cfg    Config
	log    *slog.Logger
	rest   *rest.Config
	disc   discovery.CachedDiscoveryInterface
	mapper meta.ResettableRESTMapper
	obs    *observe.Observer
	server *apiServer
	kube   kubernetes.Interface

	mu     sync.Mutex
	closed bool
	locks  map[releaseKey]chan struct{} // one-slot semaphores, per release
	wg     sync.WaitGroup               // Helm calls in flight
}

// New returns an engine for the cluster cfg.RESTConfig reaches. It does not
// contact the cluster.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	rc := rest.CopyConfig(cfg.RESTConfig)
	if rc.QPS == 0 {
		// Helm lists and patches many objects; client-go's 5 QPS default
		// makes a chart like ingress-nginx crawl.
		rc.QPS, rc.Burst = 50, 100
	}
	hc, err := rest.HTTPClientFor(rc)
	if err != nil {
		return nil, fmt.Errorf("apply: HTTP client: %w", err)
	}
	dc, err := discovery.NewDiscoveryClientForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("apply: discovery client: %w", err)
	}
	obs, err := observe.New(observe.Config{RESTConfig: rc, HTTPClient: hc, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	kc, err := kubernetes.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("apply: clientset: %w", err)
	}
	server := newAPIServer(cfg.Logger, dc, kc)
	disc := versionedDiscovery{CachedDiscoveryInterface: memory.NewMemCacheClient(dc), server: server}
	return &Engine{
		cfg:    cfg,
		log:    cfg.Logger,
		rest:   rc,
		disc:   disc,
		mapper: restmapper.NewDeferredDiscoveryRESTMapper(disc),
		obs:    obs,
		server: server,
		kube:   kc,
		locks:  map[releaseKey]chan struct{}{},
	}, nil
}

// Close refuses new operations and waits for Helm calls still running
// (those whose callers gave up). It leaves installed releases alone and is
// safe to call more than once.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.wg.Wait()
	return nil
}

type releaseKey struct{ namespace, name string }

func (k releaseKey) String() string { return k.namespace + "/" + k.name }

// lock takes the release's lock, or gives up when ctx is done.
func (e *Engine) lock(ctx context.Context, k releaseKey) (unlock func(), err error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	ch := e.locks[k]
	if ch == nil {
		ch = make(chan struct{}, 1)
		e.locks[k] = ch
	}
	e.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for the previous operation on the release: %w", context.Cause(ctx))
	}
}

// runLocked runs fn under the release lock on a goroutine the engine owns,
// with a context that is not cancelled: Helm must not be interrupted half
// way. If ctx ends first, runLocked returns ctx's cause and fn finishes in
// the background, keeping the lock until it does.
func runLocked[T any](e *Engine, ctx context.Context, k releaseKey, fn func(context.Context) (T, error)) (T, error) {
	var zero T
	unlock, err := e.lock(ctx, k)
	if err != nil {
		return zero, err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		unlock()
		return zero, ErrClosed
	}
	e.wg.Add(1)
	e.mu.Unlock()

	type outcome struct {
		v   T
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		defer e.wg.Done()
		defer unlock()
		v, err := fn(context.WithoutCancel(ctx))
		done <- outcome{v, err}
	}()
	select {
	case o := <-done:
		return o.v, o.err
	case <-ctx.Done():
		return zero, fmt.Errorf("%w (the Helm operation goes on in the background)", context.Cause(ctx))
	}
}

// helmConfig returns a Helm action configuration for one namespace,
// storing releases in Secrets through an ownedDriver: Helm reads only
// releases this agent wrote, and what it writes is recorded (with
// chartDigest, which may be empty).
func (e *Engine) helmConfig(namespace, chartDigest string) (*action.Configuration, error) {
	hc, err := e.rawHelmConfig(namespace)
	if err != nil {
		return nil, err
	}
	hc.Releases.Driver = &ownedDriver{Driver: hc.Releases.Driver, e: e, namespace: namespace, chart: chartDigest}
	return hc, nil
}

// rawHelmConfig is helmConfig without the ownership check: only for
// reading releases in order to judge them (adoption).
func (e *Engine) rawHelmConfig(namespace string) (*action.Configuration, error) {
	g := &restGetter{config: e.rest, disc: e.disc, mapper: e.mapper, namespace: namespace}
	hc := new(action.Configuration)
	helmLog := func(format string, v ...any) {
		if e.log.Enabled(context.Background(), slog.LevelDebug) {
			e.log.Debug(fmt.Sprintf(format, v...), "component", "helm", "namespace", namespace)
		}
	}
	if err := hc.Init(g, namespace, "secret", helmLog); err != nil {
		return nil, fmt.Errorf("helm init for namespace %s: %w", namespace, err)
	}
	// Helm's Secrets driver, over a client that also works where the API
	// server refuses unconditional updates (see unconditionalSecrets).
	d := driver.NewSecrets(unconditionalSecrets{SecretInterface: e.kube.CoreV1().Secrets(namespace)})
	d.Log = helmLog
	hc.Releases = storage.Init(d)
	if kc, ok := hc.KubeClient.(*kube.Client); ok {
		kc.Namespace = namespace
		hc.KubeClient = &kubeClient{Client: kc, server: e.server}
	}
	return hc, nil
}

// restGetter is the genericclioptions.RESTClientGetter Helm needs, over a
// rest.Config, sharing one cached discovery client and REST mapper.
type restGetter struct {
	config    *rest.Config
	disc      discovery.CachedDiscoveryInterface
	mapper    meta.RESTMapper
	namespace string
}

func (g *restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.config), nil }
func (g *restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	return g.disc, nil
}
func (g *restGetter) ToRESTMapper() (meta.RESTMapper, error) { return g.mapper, nil }
func (g *restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	return clientcmd.NewDefaultClientConfig(*clientcmdapi.NewConfig(),
		&clientcmd.ConfigOverrides{Context: clientcmdapi.Context{Namespace: g.namespace}})
}
