package alerting

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/rules"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/util/strutil"

	"github.com/tetherfleet/tether/hub/internal/controller"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// TSDB is the part of the hub's TSDB (*telemetry.DB) the manager uses:
// queries for rules, appends for recording rules and the fleet series.
type TSDB interface {
	storage.Queryable
	storage.AppendableV2
}

// ObjectLister lists API objects (objects.Repo).
type ObjectLister interface {
	List(ctx context.Context, kind, namespace string) ([]objects.Object, error)
}

// Store is the part of the hub store the manager uses: the controller's
// watch and the silences.
type Store interface {
	controller.Watcher
	SilenceStore
	Get(ctx context.Context, kind, namespace, name string) (store.Object, error)
}

// Config configures a Manager.
type Config struct {
	// TSDB, Objects and Store are required.
	TSDB    TSDB
	Objects ObjectLister
	Store   Store
	// Fleet, Reports and Sessions feed the fleet collector; without Fleet
	// it does not run (and the built-in rules find no series).
	Fleet    ClusterLister
	Reports  ReportLister
	Sessions SessionLister
	// Builtin configures the built-in fleet rules.
	Builtin BuiltinRules
	// EvalInterval is the rule groups' default interval. Default 30s.
	EvalInterval time.Duration
	// CollectInterval is how often the fleet series are appended.
	// Default 30s.
	CollectInterval time.Duration
	// ResendDelay is how often a firing alert is handed to the
	// dispatcher again. Default 1m.
	ResendDelay time.Duration
	// ExternalURL is the hub's console URL, for alerts' generatorURL.
	ExternalURL string
	// ExternalLabels are the hub's external labels: notifications carry
	// them (DispatcherConfig.ExternalLabels) and rule templates see them
	// as $externalLabels, as in Prometheus. Rule queries do not: the
	// TSDB's series do not have them.
	ExternalLabels labels.Labels
	// Engine evaluates rules; nil makes one.
	Engine promql.QueryEngine
	// HTTPClient sends webhooks; nil means one with a 30s timeout.
	HTTPClient *http.Client
	// Dispatcher configures the notification dispatcher (its Now and
	// Logger default to the manager's).
	Dispatcher DispatcherConfig
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// DefaultConfig returns the defaults New applies to zero fields.
func DefaultConfig() Config {
	return Config{Builtin: DefaultBuiltinRules(), EvalInterval: 30 * time.Second, CollectInterval: 30 * time.Second, ResendDelay: time.Minute}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.TSDB == nil || c.Objects == nil || c.Store == nil:
		return errors.New("alerting: Config.TSDB, Objects and Store are required")
	case c.EvalInterval < 0, c.CollectInterval < 0, c.ResendDelay < 0:
		return errors.New("alerting: Config intervals must not be negative")
	}
	return c.Builtin.Validate()
}

// Manager evaluates the rules and dispatches the alerts.
type Manager struct {
	cfg      Config
	log      *slog.Logger
	rules    *rules.Manager
	loader   *loader
	disp     *Dispatcher
	coll     *collector
	silences *Silences

	mu         sync.Mutex
	loadErrors map[string]string // rule file or policy -> why it is not in force
	running    bool
	ready      chan struct{} // closed after the first reconcile
	readyOnce  sync.Once
	cancel     context.CancelFunc
}

// New checks cfg and returns a Manager; Run starts it.
func New(cfg Config) (*Manager, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.EvalInterval == 0 {
		cfg.EvalInterval = d.EvalInterval
	}
	if cfg.CollectInterval == 0 {
		cfg.CollectInterval = d.CollectInterval
	}
	if cfg.ResendDelay == 0 {
		cfg.ResendDelay = d.ResendDelay
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Engine == nil {
		cfg.Engine = newEngine(cfg.Logger)
	}
	dc := cfg.Dispatcher
	if dc.Now == nil {
		dc.Now = cfg.Now
	}
	if dc.Logger == nil {
		dc.Logger = cfg.Logger
	}
	if dc.ExternalURL == "" {
		dc.ExternalURL = cfg.ExternalURL
	}
	if dc.ExternalLabels.IsEmpty() {
		dc.ExternalLabels = cfg.ExternalLabels
	}
	m := &Manager{cfg: cfg, log: cfg.Logger, loader: &loader{files: map[string]*rulefmt.RuleGroups{}},
		disp: NewDispatcher(dc), silences: &Silences{Store: cfg.Store, Now: cfg.Now},
		loadErrors: map[string]string{}, ready: make(chan struct{})}
	if cfg.Fleet != nil {
		m.coll = &collector{fleet: cfg.Fleet, reports: cfg.Reports, sessions: cfg.Sessions, db: cfg.TSDB}
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.rules = rules.NewManager(&rules.ManagerOptions{
		QueryFunc:    rules.EngineQueryFunc(cfg.Engine, cfg.TSDB),
		NotifyFunc:   m.notify,
		Context:      ctx,
		AppendableV2: cfg.TSDB,
		Queryable:    cfg.TSDB,
		Logger:       cfg.Logger.With("component", "rules"),
		ResendDelay:  cfg.ResendDelay,
		// For state survives a hub restart: it is read back from the
		// ALERTS_FOR_STATE series.
		OutageTolerance: time.Hour,
		ForGracePeriod:  10 * time.Minute,
		GroupLoader:     m.loader,
		Parser:          objects.PromQLParser,
		ExternalURL:     nil,
	})
	return m, nil
}

func newEngine(log *slog.Logger) *promql.Engine {
	return promql.NewEngine(promql.EngineOpts{
		Logger: log, MaxSamples: 50_000_000, Timeout: 2 * time.Minute,
		LookbackDelta: 5 * time.Minute, EnableAtModifier: true, EnableNegativeOffset: true,
	})
}

// Dispatcher returns the manager's dispatcher.
func (m *Manager) Dispatcher() *Dispatcher { return m.disp }

// Silences returns the silences store the manager reads.
func (m *Manager) Silences() *Silences { return m.silences }

// notify hands alerts from the rule manager to the dispatcher.
func (m *Manager) notify(_ context.Context, expr string, alerts ...*rules.Alert) {
	out := make([]*Alert, 0, len(alerts))
	for _, a := range alerts {
		al := &Alert{Labels: a.Labels, Annotations: a.Annotations, StartsAt: a.FiredAt, EndsAt: a.ValidUntil,
			GeneratorURL: m.cfg.ExternalURL + strutil.TableLinkForExpression(expr)}
		if !a.ResolvedAt.IsZero() {
			al.EndsAt = a.ResolvedAt
		}
		out = append(out, al)
	}
	m.disp.Put(out...)
}

// loader is the rule manager's GroupLoader: rule "files" are objects
// ("PrometheusRule ns/name") and the built-in group, parsed at reconcile.
type loader struct {
	mu    sync.Mutex
	files map[string]*rulefmt.RuleGroups
}

func (l *loader) Load(id string, _ bool, _ model.ValidationScheme) (*rulefmt.RuleGroups, []error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.files[id]
	if !ok {
		return nil, []error{fmt.Errorf("rule file %q is gone", id)}
	}
	return g, nil
}

func (l *loader) Parse(q string) (parser.Expr, error) { return objects.PromQLParser.ParseExpr(q) }

// builtinFile is the rule "file" of the built-in rules.
const builtinFile = "tether/builtin"

// Run evaluates rules, collects fleet series, reloads on changes and
// sends notifications until ctx is done. It waits for every goroutine it
// started.
func (m *Manager) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("alerting: Run called twice")
	}
	m.running = true
	m.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	loop, err := controller.New(controller.Config{
		Name:      "alerting",
		Store:     m.cfg.Store,
		Kinds:     []string{objects.KindPrometheusRule, objects.KindNotificationPolicy, objects.KindSecret, SilenceKind},
		Reconcile: m.reconcile,
		Resync:    5 * time.Minute,
		Logger:    m.log,
	})
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	rulesDone := make(chan struct{})
	wg.Go(func() { m.rules.Run(); close(rulesDone) })
	wg.Go(func() { _ = m.disp.Run(ctx) })
	if m.coll != nil {
		wg.Go(func() { m.collectLoop(ctx) })
	}
	var loopErr error
	wg.Go(func() {
		loopErr = loop.Run(ctx)
		cancel()
	})
	<-ctx.Done()
	m.rules.Stop()
	m.cancel()
	<-rulesDone
	wg.Wait()
	if loopErr != nil {
		return fmt.Errorf("alerting controller: %w", loopErr)
	}
	return nil
}

func (m *Manager) collectLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.CollectInterval)
	defer t.Stop()
	for {
		if err := m.coll.collect(ctx, m.cfg.Now()); err != nil && ctx.Err() == nil {
			m.log.Warn("fleet series not collected", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// reconcile loads the rules, policies and silences from the store.
func (m *Manager) reconcile(ctx context.Context) (controller.Result, error) {
	rev, err := m.cfg.Store.Revision(ctx)
	if err != nil {
		return controller.Result{}, err
	}
	loadErrs := map[string]string{}
	files := map[string]*rulefmt.RuleGroups{}
	if !m.cfg.Builtin.Disabled {
		g, err := m.cfg.Builtin.groups()
		if err != nil {
			return controller.Result{}, err
		}
		files[builtinFile] = g
	}
	prs, err := m.cfg.Objects.List(ctx, objects.KindPrometheusRule, "")
	if err != nil {
		return controller.Result{}, err
	}
	for _, o := range prs {
		pr := o.(*objects.PrometheusRule)
		id := pr.Key()
		g, fe := pr.Spec.ParseRules()
		if len(fe) > 0 {
			loadErrs[id] = (&objects.ObjectError{Kind: pr.Kind, Key: id, Fields: fe}).Error()
			continue
		}
		files[id] = g
	}
	m.loader.mu.Lock()
	m.loader.files = files
	m.loader.mu.Unlock()
	ids := slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	})
	if err := m.rules.Update(m.cfg.EvalInterval, ids, m.cfg.ExternalLabels, m.cfg.ExternalURL, nil); err != nil {
		return controller.Result{}, fmt.Errorf("load rules: %w", err)
	}

	policies, perrs, err := m.loadPolicies(ctx)
	if err != nil {
		return controller.Result{}, err
	}
	for k, v := range perrs {
		loadErrs[k] = v
	}
	m.disp.SetPolicies(policies)
	sils, err := m.silences.List(ctx)
	if err != nil {
		return controller.Result{}, err
	}
	m.disp.SetSilences(sils)
	m.mu.Lock()
	m.loadErrors = loadErrs
	m.mu.Unlock()
	for k, v := range loadErrs {
		m.log.Warn("alerting object not in force", "object", k, "err", v)
	}
	m.readyOnce.Do(func() { close(m.ready) })
	return controller.Result{Revision: rev}, nil
}

// loadPolicies compiles every NotificationPolicy with its secrets. A
// policy that cannot be compiled (a Secret key missing) is left out and
// named in errs.
func (m *Manager) loadPolicies(ctx context.Context) ([]*policy, map[string]string, error) {
	objs, err := m.cfg.Objects.List(ctx, objects.KindNotificationPolicy, "")
	if err != nil {
		return nil, nil, err
	}
	errs := map[string]string{}
	var out []*policy
	for _, o := range objs {
		np := o.(*objects.NotificationPolicy)
		ns := np.Metadata.Namespace
		p, err := m.compilePolicy(ctx, np, func(ref objects.SecretKeyRef) (string, error) {
			so, err := m.cfg.Objects.List(ctx, objects.KindSecret, ns)
			if err != nil {
				return "", err
			}
			for _, s := range so {
				sec := s.(*objects.Secret)
				if sec.Metadata.Name != ref.Name {
					continue
				}
				if v, ok := sec.Data[ref.Key]; ok {
					return string(v), nil
				}
				if v, ok := sec.StringData[ref.Key]; ok {
					return v, nil
				}
				return "", fmt.Errorf("key %q not in Secret %s/%s", ref.Key, ns, ref.Name)
			}
			return "", fmt.Errorf("no Secret %s/%s", ns, ref.Name)
		})
		if err != nil {
			errs[np.Key()] = err.Error()
			continue
		}
		out = append(out, p)
	}
	return out, errs, nil
}

func (m *Manager) compilePolicy(_ context.Context, np *objects.NotificationPolicy, secret secretFunc) (*policy, error) {
	root, err := compileRoute(&np.Spec.Route, nil, "0")
	if err != nil {
		return nil, err
	}
	p := &policy{key: np.Metadata.Namespace + "/" + np.Metadata.Name, root: root, receivers: map[string]*receiver{}}
	for i := range np.Spec.Receivers {
		r, err := compileReceiver(&np.Spec.Receivers[i], secret, m.cfg.HTTPClient)
		if err != nil {
			return nil, err
		}
		p.receivers[r.name] = r
	}
	return p, nil
}

// LoadErrors names the rule and policy objects not in force, with why.
func (m *Manager) LoadErrors() map[string]string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]string, len(m.loadErrors))
	for k, v := range m.loadErrors {
		out[k] = v
	}
	return out
}

// evaluate runs every rule group once at ts (tests drive the clock with
// it; Run evaluates each group every interval).
func (m *Manager) evaluate(ctx context.Context, ts time.Time) {
	for _, g := range m.rules.RuleGroups() {
		rules.DefaultEvalIterationFunc(ctx, g, ts)
	}
}
