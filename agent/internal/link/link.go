package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// Link states, as persisted and shown by `tether-agent status`.
const (
	StateEnrolling  = cache.LinkEnrolling
	StateConnecting = cache.LinkConnecting
	StateConnected  = cache.LinkConnected
	StateOffline    = cache.LinkOffline
	// StateRefused: the hub refused this agent's certificate (cluster
	// deleted or re-enrolled elsewhere); it keeps retrying at the cap.
	StateRefused = cache.LinkRefused
)

// Sentinel errors of the link; check them with errors.Is.
var (
	// ErrHubBusy: the hub refused the connection before TLS because of
	// its admission limits; the agent backs off at least busyBackoffSteps.
	ErrHubBusy = errors.New("hub is refusing connections (busy)")
	// ErrCertExpired: the agent's certificate expired; only a new join
	// token gets it back (the hub refuses an expired certificate).
	ErrCertExpired = errors.New("certificate expired")
	// ErrNotEnrolled: no identity in the cache and no token to get one.
	ErrNotEnrolled = errors.New("agent is not enrolled: pass --token and --hub once")
	// ErrOffline: the call needs the hub and the link is down.
	ErrOffline = errors.New("hub is not connected")
)

// Cache is the part of the agent's bbolt file the link uses.
type Cache interface {
	Identity() (cache.Identity, error)
	SaveIdentity(cache.Identity) error
	SaveLinkState(cache.LinkState) error
}

// Outbox is the agent's durable queue of payloads for the hub. Entries are
// removed only after the hub acknowledged storing them, or dead-lettered
// when they cannot be sent.
type Outbox interface {
	Batch(n int, sendable func(kind string) bool) ([]cache.OutboxEntry, error)
	Ack(seqs ...uint64) error
	DeadLetter(seq uint64) (kind string, err error)
	OutboxStats() (cache.OutboxStats, error)
}

// Outbox entry kinds the link knows how to send (see payloadKinds).
const (
	// KindStatus entries hold a marshalled fleetv1.StatusReport.
	KindStatus = fleetv1.PayloadKindStatus
	// KindMetrics entries hold a telemetryv1.MetricBatch (Encode).
	KindMetrics = telemetryv1.PayloadKind
)

// Handler receives desired state from the hub. Desired must persist the
// state before it returns: the link acknowledges it afterwards.
type Handler interface {
	Revision() uint64
	Desired(ctx context.Context, ds *fleetv1.DesiredState) error
}

// EpochHandler is a Handler that knows which hub history (epoch) its
// revision belongs to; the hello carries it so the hub can tell a revision
// of another history (a new or restored hub) and send the full state.
type EpochHandler interface {
	Epoch() string
}

// Config configures a Link.
type Config struct {
	Cache Cache
	// Hubs are hub agent addresses (HOST:PORT), tried in turn. Empty means
	// the ones saved at enrolment.
	Hubs []string
	// Token enrols the agent when the cache holds no identity.
	Token   string
	Handler Handler
	// Outbox holds status reports to send; nil sends none.
	Outbox Outbox
	Tunnel tunnel.Config
	// DialTimeout bounds TCP connect plus TLS handshake.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay.
	MinBackoff, MaxBackoff time.Duration
	Hostname               string
	// APIServer is the URL of the cluster's kube-apiserver as the agent
	// reaches it; the hub shows it to values templates. Empty without a
	// cluster.
	APIServer string
	Logger    *slog.Logger
	Now       func() time.Time
	// PostQuantum offers the hybrid X25519MLKEM768 key exchange. It adds
	// about 2.3 KB to every handshake, resumptions included, so it is off
	// by default for metered edge links; X25519 is used then.
	PostQuantum bool
	// ChartFetchTimeout bounds one chart download (at most maxChartSize,
	// 64 MiB: 10 minutes is about 110 KB/s). Default 10m.
	ChartFetchTimeout time.Duration
	// Dial opens the TCP connection; nil means net.Dialer.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Telemetry offers the metrics kind in Hello.payload_kinds (collection
	// is on). Off, metric batches already queued are held, not dropped.
	Telemetry bool
	// DrainRates bounds the drain of a kind in payload bytes per second,
	// so a backlog after an outage goes out without filling the link;
	// a kind not named (and 0) is not bounded. Status cannot be bounded:
	// it always goes first.
	DrainRates map[string]int64
}

// DefaultConfig returns production defaults; Cache must be set.
func DefaultConfig() Config {
	return Config{
		Tunnel:      tunnel.DefaultAgentConfig(),
		DialTimeout: 10 * time.Second,
		MinBackoff:  500 * time.Millisecond,
		MaxBackoff:  time.Minute,

		ChartFetchTimeout: 10 * time.Minute,
	}
}

// Status is a snapshot of the link.
type Status struct {
	Cluster     string    `json:"cluster"`
	State       string    `json:"state"`
	Hub         string    `json:"hub,omitempty"`
	Since       time.Time `json:"since"`
	LastContact time.Time `json:"lastContact,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
	Connects    uint64    `json:"connects"`
	CertExpires time.Time `json:"certExpires,omitzero"`
	Revision    uint64    `json:"revision"`
	// StatusTruncated counts services left out of status reports that
	// were over the hub's limits (see fleetv1.MaxReportServices).
	StatusTruncated uint64 `json:"statusTruncated,omitempty"`
}

// Link is an agent's connection to its hub.
type Link struct {
	cfg  Config
	log  *slog.Logger
	grpc *grpc.Server

	mu      sync.Mutex
	id      cache.Identity
	cert    tls.Certificate
	ca      *x509.Certificate
	renewAt time.Time
	// skew is the hub's clock minus this agent's, measured from the last
	// Welcome.server_time (bounded by MaxClockSkew).
	skew time.Duration
	// pendingID is a renewed identity whose save failed; the save is
	// retried before anything else.
	pendingID *cache.Identity
	st        Status
	hubIndex  int
	// client is the Fleet client of the live connection, nil when offline.
	client fleetv1.FleetClient
	// outboxKick wakes the outbox drain.
	outboxKick chan struct{}
	// tickets caches TLS session tickets so a reconnect resumes the session
	// instead of a full handshake with certificates.
	tickets tls.ClientSessionCache
	// kinds are the outbox payload kinds the link sends (payloadKinds).
	kinds []payloadKind
	// ackTimeout bounds the wait for the hub to acknowledge a batch.
	ackTimeout time.Duration
}

// New returns a Link; Run connects it.
func New(cfg Config) (*Link, error) {
	if cfg.Cache == nil {
		return nil, errors.New("link: Config.Cache is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tunnel.Logger == nil {
		cfg.Tunnel.Logger = cfg.Logger
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.ChartFetchTimeout <= 0 {
		cfg.ChartFetchTimeout = 10 * time.Minute
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	if cfg.MinBackoff <= 0 || cfg.MaxBackoff < cfg.MinBackoff {
		return nil, fmt.Errorf("link: backoff bounds %s..%s are not valid", cfg.MinBackoff, cfg.MaxBackoff)
	}
	if err := cfg.Tunnel.Validate(); err != nil {
		return nil, err
	}
	for kind, r := range cfg.DrainRates {
		if r < 0 || kind == KindStatus && r != 0 {
			return nil, fmt.Errorf("link: drain rate %d B/s of kind %q: must be >= 0, and status is never bounded", r, kind)
		}
	}
	l := &Link{cfg: cfg, log: cfg.Logger, outboxKick: make(chan struct{}, 1), tickets: tls.NewLRUClientSessionCache(4),
		kinds: payloadKinds(), ackTimeout: defaultAckTimeout}
	l.grpc = grpc.NewServer(tunnel.ServerOptions(cfg.Tunnel)...)
	fleetv1.RegisterAgentServer(l.grpc, &agentService{l: l})
	return l, nil
}

// Status returns a snapshot of the link.
func (l *Link) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.st
	if l.cfg.Handler != nil {
		s.Revision = l.cfg.Handler.Revision()
	}
	return s
}

func (l *Link) setState(state, hub string, err error) {
	now := l.cfg.Now()
	l.mu.Lock()
	if l.st.State != state {
		l.st.Since = now
	}
	l.st.State = state
	if hub != "" {
		l.st.Hub = hub
	}
	if state == StateConnected {
		l.st.LastContact = now
		l.st.LastError = ""
		l.st.NextAttempt = time.Time{}
	}
	if err != nil {
		l.st.LastError = err.Error()
	}
	st := l.st
	l.mu.Unlock()
	l.persist(st)
}

func (l *Link) persist(st Status) {
	err := l.cfg.Cache.SaveLinkState(cache.LinkState{
		State: st.State, Hub: st.Hub, Since: st.Since, LastContact: st.LastContact,
		LastError: st.LastError, ConnectedCount: st.Connects,
	})
	if err != nil {
		l.log.Warn("save link state", "err", err)
	}
}

// KickOutbox tells the link that new outbox entries are waiting.
func (l *Link) KickOutbox() {
	select {
	case l.outboxKick <- struct{}{}:
	default:
	}
}

// SetHandler sets the receiver of desired state when it could not be in
// Config.Handler because it is built from the link (the reconciler fetches
// charts through it). Call it before Run.
func (l *Link) SetHandler(h Handler) { l.cfg.Handler = h }

// Close stops the hub→agent gRPC server. Call after Run returned.
func (l *Link) Close() { l.grpc.Stop() }
