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
	"sync"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/pki"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
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
	Logger               *slog.Logger
	// Out receives the human-readable first-start message; nil means stderr.
	Out io.Writer
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
	templates *templates.Resolver
	reports   *reports.Reports
	gw        *gateway.Gateway
	agentLn   net.Listener
	apiLn     net.Listener
	api       *http.Server
	adminCfg  string
}

// AdminConfigPath is where a hub writes its admin console config.
func AdminConfigPath(dataDir string) string { return filepath.Join(dataDir, "admin.yaml") }

// New opens the data directory, creating the CA and admin user on first
// start, and binds both listeners. Run serves them.
func New(ctx context.Context, cfg Config) (h *Hub, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Out == nil {
		cfg.Out = os.Stderr
	}
	if cfg.DataDir == "" {
		return nil, errors.New("hub: data dir is required")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("hub: create data dir: %w", err)
	}
	h = &Hub{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			h.close()
		}
	}()
	now := time.Now()
	h.ca, err = pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "pki"), now)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	h.store, err = boltstore.Open(filepath.Join(cfg.DataDir, "hub.db"), boltstore.Options{})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
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
	dcfg := desired.DefaultConfig()
	dcfg.Store, dcfg.Logger = h.store, cfg.Logger
	if cfg.SystemNamespaces != nil {
		dcfg.SystemNamespaces = cfg.SystemNamespaces
	}
	if h.desired, err = desired.New(dcfg); err != nil {
		return nil, err
	}
	h.templates, err = templates.New(templates.Config{Repo: h.objects, Charts: h.charts, Watcher: h.store, Logger: cfg.Logger})
	if err != nil {
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
	h.gw, err = gateway.New(gcfg)
	if err != nil {
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
	h.api = &http.Server{
		Handler: api.Handler(api.Config{
			Fleet: h.fleet, Gateway: h.gw, Auth: users, Logger: cfg.Logger,
			Objects: h.objects, Charts: h.charts, Desired: h.desired, Reports: h.reports,
		}),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{serving}},
		ReadHeaderTimeout: 10 * time.Second,
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

func (h *Hub) ensureAdmin(ctx context.Context, users *api.Users) error {
	h.adminCfg = AdminConfigPath(h.cfg.DataDir)
	tok, created, err := users.EnsureAdmin(ctx)
	if err != nil {
		return fmt.Errorf("hub: admin user: %w", err)
	}
	if !created {
		// Keep the file's server address current if the API moved.
		if c, err := api.LoadClientConfig(h.adminCfg); err == nil {
			c.Server = "https://" + h.apiLn.Addr().String()
			c.CertificateAuthority = string(h.ca.CertPEM())
			return api.WriteClientConfig(h.adminCfg, c)
		}
		h.log.Warn("admin console config missing; its token was shown once", "path", h.adminCfg)
		return nil
	}
	c := api.ClientConfig{
		Server:               "https://" + h.apiLn.Addr().String(),
		CertificateAuthority: string(h.ca.CertPEM()),
		Token:                tok,
	}
	if err := api.WriteClientConfig(h.adminCfg, c); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	abs, _ := filepath.Abs(h.adminCfg)
	fmt.Fprintf(h.cfg.Out, "Tether hub initialised. Admin console config written to %s\nUse it with:\n\n  export %s=%s\n\n", abs, api.EnvConfig, abs)
	return nil
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

// Run serves until ctx is done, then shuts down and closes the store.
func (h *Hub) Run(ctx context.Context) error {
	defer h.close()
	h.log.Info("hub serving", "agent_addr", h.AgentAddr(), "api_addr", h.APIAddr(), "ca", h.ca.Fingerprint(), "data_dir", h.cfg.DataDir)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	wg.Go(func() {
		if err := h.gw.Serve(ctx, h.agentLn); err != nil {
			errs <- err
			cancel()
		}
	})
	wg.Go(func() {
		if err := h.desired.Run(ctx); err != nil {
			errs <- fmt.Errorf("desired-state compiler: %w", err)
			cancel()
		}
	})
	wg.Go(func() {
		if err := h.templates.Run(ctx); err != nil {
			errs <- fmt.Errorf("template resolver: %w", err)
			cancel()
		}
	})
	wg.Go(func() {
		if err := h.api.ServeTLS(h.apiLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("console API: %w", err)
			cancel()
		}
	})
	<-ctx.Done()
	sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer scancel()
	_ = h.api.Shutdown(sctx)
	wg.Wait()
	close(errs)
	return <-errs
}

func (h *Hub) close() {
	if h.agentLn != nil {
		h.agentLn.Close()
	}
	if h.apiLn != nil {
		h.apiLn.Close()
	}
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
