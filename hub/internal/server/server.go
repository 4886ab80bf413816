// Package server assembles a hub: store, CA, fleet registry, agent gateway
// and console API, run by `tether serve`.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/tetherfleet/tether/hub/internal/alerting"
	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/pki"
	"github.com/tetherfleet/tether/hub/internal/provision"
	"github.com/tetherfleet/tether/hub/internal/remotewrite"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/rollout"
	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
	"github.com/tetherfleet/tether/hub/internal/templates"
)

// Config configures a hub.
type Config struct {
	// DataDir holds the store, the CA and the admin console config.
	DataDir string
	// AgentAddr is where agents connect (TLS + yamux + gRPC).
	AgentAddr string
	// APIAddr is where the console API listens (HTTPS).
	APIAddr string
	// Hosts are extra names and IPs for the serving certificate.
	Hosts []string
	// AgentCertTTL is the lifetime of agent certificates.
	AgentCertTTL time.Duration
	// Heartbeat is the agent heartbeat interval.
	Heartbeat time.Duration
	// SystemNamespaces hold ServiceTemplates every namespace may use.
	SystemNamespaces []string
	// Admission limits on agent connections (gateway.Config has the
	// details); 0 means the gateway's default.
	MaxAgentConns        int
	MaxAgentConnsPerAddr int
	AgentConnRate        float64
	AgentConnBurst       int
	// NewCA allows creating a new CA when the pki directory is missing
	// although the store holds clusters. Their agents trust the lost CA
	// and must all be enrolled again with new join tokens.
	NewCA bool
	// Console bounds the console API's HTTP server.
	Console ConsoleLimits
	// ManagementKubeconfig is the kubeconfig (kubectl's rules: a path
	// list) of the Cluster API management cluster ClusterDeployments
	// with a ClusterTemplate provision on; "" means none.
	ManagementKubeconfig string
	// AdvertiseAgentAddrs are the agent addresses written into the agent
	// chart the hub installs into clusters it provisions; empty means
	// AgentAddr.
	AdvertiseAgentAddrs []string
	// ClusterDeploymentRollout is a file holding the hub-wide rollout
	// policy ClusterDeployment changes roll out under (spec.rollout's
	// fields; objects.ParseRolloutPolicy); "" means they apply at once.
	ClusterDeploymentRollout string
	// RemoteWrite are the stores the hub forwards its metrics to;
	// RemoteWriteMaxQueueBytes bounds their queue on disk (0: the
	// remotewrite default).
	RemoteWrite              []remotewrite.Endpoint
	RemoteWriteMaxQueueBytes int64
	// ExternalLabels tell this hub apart downstream, as Prometheus'
	// global.external_labels do: every series remote write sends and
	// every alert notifications carry gets them, unless it has a value
	// of its own for the name. The TSDB and rule queries never see them.
	// remotewrite.CheckExternalLabel says what is allowed.
	ExternalLabels map[string]string
	// TSDB configures the metrics store under DataDir/tsdb.
	TSDB TSDBConfig
	// Alerting configures alert rules; nil means DefaultAlertingConfig.
	Alerting *AlertingConfig
	Logger   *slog.Logger
	// Out receives the human-readable first-start message; nil means stderr.
	Out io.Writer
}

// ConsoleLimits bound the console API's HTTP server, so a slow or idle
// client cannot hold a connection (and its goroutine and buffers) forever.
// Zero fields take the defaults of DefaultConsoleLimits.
type ConsoleLimits struct {
	// ReadHeaderTimeout bounds the TLS handshake and the request headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included.
	ReadTimeout time.Duration
	// WriteTimeout bounds a request from the end of its headers to the end
	// of the response.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and headers.
	MaxHeaderBytes int
	// MaxBodyBytes bounds every request body; endpoints have lower bounds
	// of their own (1 MiB for JSON, 8 MiB for apply).
	MaxBodyBytes int64
}

// DefaultConsoleLimits returns the console API's default limits. Reading a
// request may take up to 5 minutes, for a 64 MiB chart push on a slow link.
func DefaultConsoleLimits() ConsoleLimits {
	return ConsoleLimits{
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       5 * time.Minute,
		WriteTimeout:      5 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		MaxBodyBytes:      api.MaxRequestBody,
	}
}

func (l ConsoleLimits) withDefaults() ConsoleLimits {
	d := DefaultConsoleLimits()
	if l.ReadHeaderTimeout <= 0 {
		l.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.WriteTimeout <= 0 {
		l.WriteTimeout = d.WriteTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	return l
}

// DefaultConfig returns a Config with the documented defaults.
func DefaultConfig() Config {
	return Config{
		DataDir:      "tether-data",
		AgentAddr:    "127.0.0.1:7070",
		APIAddr:      "127.0.0.1:7443",
		AgentCertTTL: 30 * 24 * time.Hour,
		Heartbeat:    30 * time.Second,

		SystemNamespaces:     objects.DefaultSystemNamespaces(),
		MaxAgentConns:        gateway.DefaultMaxConns,
		MaxAgentConnsPerAddr: gateway.DefaultMaxConnsPerAddr,
		AgentConnRate:        gateway.DefaultConnRatePerAddr,
		AgentConnBurst:       gateway.DefaultConnBurstPerAddr,
		Console:              DefaultConsoleLimits(),
		TSDB:                 TSDBConfig{Retention: telemetry.DefaultRetention, OutOfOrderWindow: telemetry.DefaultOutOfOrderWindow, SeriesCache: telemetry.DefaultMaxCachedSeries},
	}
}

// Hub is a running hub.
type Hub struct {
	cfg       Config
	log       *slog.Logger
	store     *boltstore.Store
	ca        *pki.CA
	fleet     *fleet.Registry
	objects   *objects.Repo
	charts    *charts.Store
	desired   *desired.Compiler
	rollouts  *rollout.Controller
	templates *templates.Resolver
	provision *provision.Controller
	reports   *reports.Reports
	gw        *gateway.Gateway
	agentLn   net.Listener
	apiLn     net.Listener
	api       *http.Server
	adminCfg  string
	tsdb      *telemetry.DB
	forward   *remotewrite.Forwarder
	metrics   *telemetry.Receiver
	prom      *telemetry.API
	alerts    *alerting.Manager
}

// loadRolloutPolicy reads the --cluster-deployment-rollout file; ""
// means none.
func loadRolloutPolicy(path string) (*objects.Rollout, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("hub: --cluster-deployment-rollout: %w", err)
	}
	r, err := objects.ParseRolloutPolicy(data, path)
	if err != nil {
		return nil, fmt.Errorf("hub: --cluster-deployment-rollout: %w", err)
	}
	return r, nil
}

// AdminConfigPath is where a hub writes its admin console config.
func AdminConfigPath(dataDir string) string { return filepath.Join(dataDir, "admin.yaml") }

func storePath(dataDir string) string { return filepath.Join(dataDir, "hub.db") }
func pkiPath(dataDir string) string   { return filepath.Join(dataDir, "pki") }

// New opens the data directory, creating the CA and admin user on first
// start, and binds both listeners. Run serves them.
func New(ctx context.Context, cfg Config) (_ *Hub, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Out == nil {
		cfg.Out = os.Stderr
	}
	if cfg.DataDir == "" {
		return nil, errors.New("hub: data dir is required")
	}
	cdPolicy, err := loadRolloutPolicy(cfg.ClusterDeploymentRollout)
	if err != nil {
		return nil, err // before anything is opened: a bad file changes nothing
	}
	if err := checkExternalLabels(cfg.ExternalLabels); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("hub: create data dir: %w", err)
	}
	h := &Hub{cfg: cfg, log: cfg.Logger}
	// Close what was opened if New fails (h, not the nil result).
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	now := time.Now()
	// The store first: its lock keeps a second hub off this data dir, and
	// it says whether a fleet trusts the CA.
	h.store, err = boltstore.Open(storePath(cfg.DataDir), boltstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	if h.ca, err = h.loadCA(ctx, now); err != nil {
		return nil, err
	}
	h.fleet, err = fleet.New(fleet.Config{Store: h.store, Logger: cfg.Logger, CAFingerprint: h.ca.FingerprintSum()})
	if err != nil {
		return nil, err
	}
	if h.objects, err = objects.NewRepo(objects.RepoConfig{Store: h.store, SystemNamespaces: cfg.SystemNamespaces}); err != nil {
		return nil, err
	}
	h.charts, err = charts.New(charts.Config{Dir: filepath.Join(cfg.DataDir, "charts"), Store: h.store, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	if h.rollouts, err = rollout.New(rollout.Config{Store: h.store, Logger: cfg.Logger, ClusterDeploymentRollout: cdPolicy}); err != nil {
		return nil, err
	}
	dcfg := desired.DefaultConfig()
	dcfg.Store, dcfg.Logger, dcfg.Admitter = h.store, cfg.Logger, h.rollouts
	if cfg.SystemNamespaces != nil {
		dcfg.SystemNamespaces = cfg.SystemNamespaces
	}
	if h.desired, err = desired.New(dcfg); err != nil {
		return nil, err
	}
	h.rollouts.SetCompiled(h.desired.Compiled)
	h.templates, err = templates.New(templates.Config{Repo: h.objects, Charts: h.charts, Watcher: h.store, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	if err := h.newProvisioning(); err != nil {
		return nil, err
	}
	h.reports = &reports.Reports{Store: h.store}
	hosts := append([]string{"localhost", "127.0.0.1", "::1"}, cfg.Hosts...)
	for _, a := range []string{cfg.AgentAddr, cfg.APIAddr} {
		if host, _, err := net.SplitHostPort(a); err == nil && host != "" {
			hosts = append(hosts, host)
		}
	}
	if hn, err := os.Hostname(); err == nil {
		hosts = append(hosts, hn)
	}
	serving, err := h.ca.ServerCert(hosts, 365*24*time.Hour, now)
	if err != nil {
		return nil, fmt.Errorf("hub: serving certificate: %w", err)
	}
	gcfg := gateway.DefaultConfig()
	gcfg.Registry = h.fleet
	gcfg.Signer = h.ca
	gcfg.Certificate = serving
	gcfg.ClientCAs = h.ca.Pool()
	gcfg.Logger = cfg.Logger
	gcfg.Desired = desiredSource{h.desired}
	gcfg.Charts = h.charts
	gcfg.Status = h.reports
	if cfg.AgentCertTTL > 0 {
		gcfg.CertTTL = cfg.AgentCertTTL
	}
	if cfg.Heartbeat > 0 {
		gcfg.Heartbeat = cfg.Heartbeat
	}
	cfg.admission(&gcfg)
	if err := h.openTelemetry(&gcfg); err != nil {
		return nil, err
	}
	h.gw, err = gateway.New(gcfg)
	if err != nil {
		return nil, err
	}
	h.rollouts.SetOnline(func(cluster string) bool { _, ok := h.gw.Session(cluster); return ok })
	if err := h.newAlerting("https://" + cfg.APIAddr); err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	if h.agentLn, err = lc.Listen(ctx, "tcp", cfg.AgentAddr); err != nil {
		return nil, fmt.Errorf("hub: agent listener: %w", err)
	}
	if h.apiLn, err = lc.Listen(ctx, "tcp", cfg.APIAddr); err != nil {
		return nil, fmt.Errorf("hub: console API listener: %w", err)
	}
	users := &api.Users{Store: h.store, Now: time.Now}
	lim := cfg.Console.withDefaults()
	h.api = &http.Server{
		Handler: http.MaxBytesHandler(api.Handler(api.Config{
			Fleet: h.fleet, Gateway: h.gw, Auth: users, Logger: cfg.Logger,
			Objects: h.objects, Charts: h.charts, Desired: h.desired, Reports: h.reports,
			Rollouts: h.rollouts, Prometheus: h.prom, Targets: h.metrics, Alerts: h.alerts.Handler(),
		}), lim.MaxBodyBytes),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{serving}},
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		ReadTimeout:       lim.ReadTimeout,
		WriteTimeout:      lim.WriteTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	if err := h.ensureAdmin(ctx, users); err != nil {
		return nil, err
	}
	return h, nil
}

// admission copies the set admission limits into gcfg.
func (c *Config) admission(gcfg *gateway.Config) {
	if c.MaxAgentConns > 0 {
		gcfg.MaxConns = c.MaxAgentConns
	}
	if c.MaxAgentConnsPerAddr > 0 {
		gcfg.MaxConnsPerAddr = c.MaxAgentConnsPerAddr
	}
	if c.AgentConnRate > 0 {
		gcfg.ConnRatePerAddr = c.AgentConnRate
	}
	if c.AgentConnBurst > 0 {
		gcfg.ConnBurstPerAddr = c.AgentConnBurst
	}
}

// loadCA loads the CA, creating it only on a hub that has no fleet yet (or
// with Config.NewCA): a lost pki directory must not silently give the
// fleet a CA that none of its agents trusts.
func (h *Hub) loadCA(ctx context.Context, now time.Time) (*pki.CA, error) {
	dir := pkiPath(h.cfg.DataDir)
	ca, err := pki.LoadCA(dir, now)
	if err == nil {
		if h.cfg.NewCA {
			return nil, fmt.Errorf("hub: --new-ca: a CA already exists in %s (fingerprint %s); --new-ca only creates a CA when it is missing. Move ca.crt and ca.key away first if you really mean to replace it", dir, ca.Fingerprint())
		}
		return ca, nil
	}
	if !errors.Is(err, pki.ErrNoCA) {
		return nil, fmt.Errorf("hub: %w", err)
	}
	reg, err := fleet.New(fleet.Config{Store: h.store})
	if err != nil {
		return nil, err
	}
	cs, err := reg.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("hub: list clusters to check the missing CA: %w", err)
	}
	if len(cs) > 0 {
		enrolled := 0
		for _, c := range cs {
			if !c.Enrolled.IsZero() {
				enrolled++
			}
		}
		if !h.cfg.NewCA {
			return nil, fmt.Errorf("hub: the CA is missing: %s has no ca.crt and no ca.key, but the store %s holds %d clusters (%d enrolled) whose agents and join tokens trust that CA. "+
				"Restore ca.crt and ca.key from a backup of %s into it, then start again. "+
				"To create a new CA instead, start with --new-ca: every agent must then be enrolled again with a new join token, and every console config needs the new CA",
				dir, storePath(h.cfg.DataDir), len(cs), enrolled, dir)
		}
		h.log.Warn("creating a new CA for a fleet that trusted the missing one (--new-ca): every agent must be enrolled again with a new join token",
			"pki_dir", dir, "clusters", len(cs), "enrolled", enrolled)
	}
	ca, err = pki.CreateCA(dir, now)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	return ca, nil
}

func (h *Hub) ensureAdmin(ctx context.Context, users *api.Users) error {
	h.adminCfg = AdminConfigPath(h.cfg.DataDir)
	server := "https://" + h.apiLn.Addr().String()
	// The config is written (and fsynced) before the admin user is
	// committed: a failed write stores nothing and is retried on the next
	// start.
	created, err := users.EnsureAdmin(ctx, func(tok string) error {
		return writeAdminConfig(h.adminCfg, server, h.ca, tok)
	})
	if err != nil {
		return fmt.Errorf("hub: admin user: %w", err)
	}
	if !created {
		// Keep the file's server address current if the API moved.
		if c, err := api.LoadClientConfig(h.adminCfg); err == nil {
			if _, _, err := users.Authenticate(ctx, c.Token); err != nil {
				h.log.Warn("the token in the admin console config is not valid (its user was revoked or reset). To issue a new one, stop the hub and run `tether serve --reset-admin` with the same --data-dir",
					"path", h.adminCfg, "err", err)
			}
			c.Server = server
			c.CertificateAuthority = string(h.ca.CertPEM())
			return api.WriteClientConfig(h.adminCfg, c)
		}
		h.log.Warn("admin console config missing; its token was shown once. To issue a new one, stop the hub and run `tether serve --reset-admin` with the same --data-dir",
			"path", h.adminCfg, "data_dir", h.cfg.DataDir)
		return nil
	}
	abs, _ := filepath.Abs(h.adminCfg)
	fmt.Fprintf(h.cfg.Out, "Tether hub initialised. Admin console config written to %s\nUse it with:\n\n  export %s=%s\n\n", abs, api.EnvConfig, abs)
	return nil
}

func writeAdminConfig(path, server string, ca *pki.CA, token string) error {
	err := api.WriteClientConfig(path, api.ClientConfig{Server: server, CertificateAuthority: string(ca.CertPEM()), Token: token})
	if err != nil {
		return fmt.Errorf("admin console config: %w", err)
	}
	return nil
}

// ResetAdmin gives the admin user a new token and writes a new admin
// console config, on the data dir of a stopped hub (`tether serve
// --reset-admin`). It refuses while a hub holds the store. The config's
// server address is kept from the old admin config if it is readable, else
// it is https://cfg.APIAddr. It returns the config's path.
func ResetAdmin(ctx context.Context, cfg Config) (string, error) {
	if cfg.Out == nil {
		cfg.Out = os.Stderr
	}
	dbPath := storePath(cfg.DataDir)
	if _, err := os.Stat(dbPath); err != nil {
		return "", fmt.Errorf("reset admin: no hub store at %s (%v): pass the --data-dir of an initialised hub", dbPath, err)
	}
	st, err := boltstore.Open(dbPath, boltstore.Options{LockTimeout: time.Second})
	if errors.Is(err, boltstore.ErrLocked) {
		return "", fmt.Errorf("reset admin: the hub store %s is locked: a hub is running on data dir %s. Stop it, then run `tether serve --reset-admin` again", dbPath, cfg.DataDir)
	}
	if err != nil {
		return "", fmt.Errorf("reset admin: %w", err)
	}
	defer st.Close()
	ca, err := pki.LoadCA(pkiPath(cfg.DataDir), time.Now())
	if err != nil {
		return "", fmt.Errorf("reset admin: %w", err)
	}
	path := AdminConfigPath(cfg.DataDir)
	server := "https://" + cfg.APIAddr
	if old, err := api.LoadClientConfig(path); err == nil {
		server = old.Server
	}
	users := &api.Users{Store: st, Now: time.Now}
	if err := users.ResetAdmin(ctx, func(tok string) error { return writeAdminConfig(path, server, ca, tok) }); err != nil {
		return "", fmt.Errorf("reset admin: %w", err)
	}
	if err := st.Close(); err != nil {
		return "", fmt.Errorf("reset admin: close store: %w", err)
	}
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(cfg.Out, "Admin token reset; the old admin token no longer works. Admin console config written to %s\nUse it with:\n\n  export %s=%s\n\n", abs, api.EnvConfig, abs)
	return abs, nil
}

// AgentAddr is the bound agent listener address.
func (h *Hub) AgentAddr() string { return h.agentLn.Addr().String() }

// APIAddr is the bound console API address.
func (h *Hub) APIAddr() string { return h.apiLn.Addr().String() }

// CAFingerprint is the hub CA's fingerprint, as embedded in join tokens.
func (h *Hub) CAFingerprint() string { return h.ca.Fingerprint() }

// AdminConfig is the path of the admin console config.
func (h *Hub) AdminConfig() string { return h.adminCfg }

// Gateway exposes the agent gateway (for tests and benchmarks).
func (h *Hub) Gateway() *gateway.Gateway { return h.gw }

// Fleet exposes the registry (for tests and benchmarks).
func (h *Hub) Fleet() *fleet.Registry { return h.fleet }

// Run serves until ctx is done, then shuts down and closes the store. The
// first component to fail stops the others; its error, naming it, is
// returned once all have stopped.
func (h *Hub) Run(ctx context.Context) error {
	defer h.close()
	h.log.Info("hub serving", "agent_addr", h.AgentAddr(), "api_addr", h.APIAddr(), "ca", h.ca.Fingerprint(), "data_dir", h.cfg.DataDir)
	return runComponents(ctx, h.log, h.components())
}

// components are the hub's long-running parts. A new controller is one
// more entry.
func (h *Hub) components() []component {
	return []component{
		{"agent gateway", func(ctx context.Context) error { return h.gw.Serve(ctx, h.agentLn) }},
		{"desired-state compiler", h.desired.Run},
		{"rollout controller", h.rollouts.Run},
		{"template resolver", h.templates.Run},
		{"provisioning controller", h.provision.Run},
		{"console API", h.serveAPI},
		{"remote write", h.forward.Run},
		{"alert rules", h.alerts.Run},
	}
}

// serveAPI serves the console API until ctx is done, then shuts it down,
// giving requests in flight up to 5 seconds.
func (h *Hub) serveAPI(ctx context.Context) error {
	served := make(chan error, 1)
	go func() { served <- h.api.ServeTLS(h.apiLn, "", "") }()
	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = h.api.Shutdown(sctx)
		err = <-served
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (h *Hub) close() {
	if h.agentLn != nil {
		h.agentLn.Close()
	}
	if h.apiLn != nil {
		h.apiLn.Close()
	}
	h.closeTelemetry()
	if h.store != nil {
		if err := h.store.Close(); err != nil {
			h.log.Warn("close store", "err", err)
		}
	}
}

// desiredSource adapts the compiler to what the gateway asks.
type desiredSource struct{ *desired.Compiler }

func (d desiredSource) HasChart(ctx context.Context, cluster, digest string) (bool, error) {
	st, err := d.State(ctx, cluster)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, s := range st.Services {
		if s.ChartDigest == digest {
			return true, nil
		}
	}
	return false, nil
}

// newProvisioning builds the provisioning controller, with a client of
// the management cluster when one is configured.
func (h *Hub) newProvisioning() error {
	pcfg := provision.DefaultConfig()
	pcfg.Store, pcfg.Repo, pcfg.Charts, pcfg.Logger = h.store, h.objects, h.charts, h.cfg.Logger
	pcfg.Fleet, pcfg.HubAddrs = h.fleet, []string{h.cfg.AgentAddr}
	if len(h.cfg.AdvertiseAgentAddrs) > 0 {
		pcfg.HubAddrs = h.cfg.AdvertiseAgentAddrs
	}
	pcfg.SystemNamespaces = h.cfg.SystemNamespaces
	if pcfg.SystemNamespaces == nil {
		pcfg.SystemNamespaces = objects.DefaultSystemNamespaces()
	}
	if h.cfg.ManagementKubeconfig != "" {
		mc, err := provision.ManagementClient(h.cfg.ManagementKubeconfig, h.log)
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		pcfg.Management = mc
	}
	var err error
	h.provision, err = provision.New(pcfg)
	return err
}
