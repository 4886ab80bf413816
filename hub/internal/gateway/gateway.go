// Package gateway accepts agent connections: one TLS 1.3 connection per
// agent with a yamux session on top, gRPC served on the streams the agent
// opens and dialled on streams the hub opens. It enrols agents, authorises
// every call by the identity in the client certificate, and tracks which
// clusters are connected.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/protocol/backoff"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// Registry is the part of the fleet registry the gateway uses.
type Registry interface {
	Enroll(ctx context.Context, token string, info fleet.AgentInfo, sign fleet.SignFunc) (string, fleet.Issued, error)
	Authorize(ctx context.Context, cluster, serial string) (fleet.Cluster, error)
	Renew(ctx context.Context, cluster, serial string, sign fleet.SignFunc) (fleet.Issued, error)
	SeenMany(ctx context.Context, contacts map[string]fleet.Contact) error
}

// Desired answers what a cluster should run, as deltas from a revision.
type Desired interface {
	Delta(ctx context.Context, cluster string, have uint64, haveEpoch string) (*fleetv1.DesiredState, error)
	// SubscribeFunc calls fn (which must not block) when cluster's desired
	// state changes; the returned function cancels.
	SubscribeFunc(cluster string, fn func()) func()
	// HasChart reports whether digest is in the cluster's desired state:
	// an agent may fetch only its own charts.
	HasChart(ctx context.Context, cluster, digest string) (bool, error)
}

// Charts serves chart archives by digest.
type Charts interface {
	Open(digest string) (io.ReadCloser, int64, error)
}

// StatusSink stores status reports from agents.
type StatusSink interface {
	SaveReport(ctx context.Context, cluster string, rep *fleetv1.StatusReport) error
}

// Signer signs agent certificates.
type Signer interface {
	SignAgentCSR(csrDER []byte, cluster string, ttl time.Duration, now time.Time) (certDER []byte, notAfter time.Time, err error)
}

// Config configures a Gateway.
type Config struct {
	Registry Registry
	Signer   Signer
	// Desired, Charts and Status serve services; nil leaves agents with no
	// desired state.
	Desired Desired
	Charts  Charts
	Status  StatusSink
	// Payloads receive agent payloads of kinds other than status (which
	// goes to Status), by kind; see docs/design/outbox.md. The hub offers
	// agents these kinds and "status" in Welcome.payload_kinds.
	Payloads map[string]PayloadReceiver
	// Features are the wire features this hub understands, named to agents
	// in Welcome.features (fleetv1.FeatureMetricSymbols, ...): at most
	// fleetv1.MaxFeatures, each non-empty UTF-8 of at most
	// fleetv1.MaxFeatureBytes, none twice. nil names none (an agent then
	// sends only what every hub reads).
	Features []string
	// Certificate is the hub's serving certificate; its chain should include
	// the CA so agents can pin it by fingerprint.
	Certificate tls.Certificate
	// ClientCAs verifies agent certificates.
	ClientCAs *x509.CertPool
	// CertTTL is the lifetime of agent certificates.
	CertTTL time.Duration
	// Heartbeat is how often agents send a heartbeat on their sync stream.
	Heartbeat time.Duration
	// HeartbeatTimeout closes a connection with a client certificate when
	// nothing came from its agent (a call, or a message on its sync
	// stream: heartbeats are the idle case) for this long. It is the hub's
	// liveness check on agents, so the hub's end of the tunnel sends no
	// keepalive pings of its own (DefaultConfig sets Tunnel.NoKeepAlive);
	// a dead agent whose TCP connection stays open is dropped after it.
	// 0 means 3 × Heartbeat (as agents are told it, in whole seconds; an
	// agent told 0 beats every 30 s), and at least 10 s.
	HeartbeatTimeout time.Duration
	// HandshakeTimeout bounds the TLS handshake of a new connection.
	HandshakeTimeout time.Duration
	// SeenInterval bounds how often heartbeats are written to the store.
	SeenInterval time.Duration
	// SeenFlush is how often recorded contacts (connects, disconnects,
	// heartbeats) are written to the store, in one batch.
	SeenFlush time.Duration
	// SetupTimeout closes a connection that has made no accepted call
	// (enrol or an authorised sync) this long after its handshake, so idle
	// or garbage connections cannot pile up.
	SetupTimeout time.Duration
	// MaxConns bounds agent connections open at once; MaxConnsPerAddr
	// those from one source IP. ConnRatePerAddr (per second) and
	// ConnBurstPerAddr are a token bucket for new connections from one
	// source IP. A connection over a limit is refused before TLS: it gets
	// one plaintext line starting with BusyPrefix and is closed.
	MaxConns         int
	MaxConnsPerAddr  int
	ConnRatePerAddr  float64
	ConnBurstPerAddr int
	// Tunnel configures sessions with a client certificate. Sessions
	// without one may only enrol; they get far tighter limits (see
	// enrolTunnelConfig) and always end SetupTimeout after their handshake.
	Tunnel tunnel.Config
	Logger *slog.Logger
	Now    func() time.Time
}

// DefaultConfig returns a Config with production defaults; Registry,
// Signer, Certificate and ClientCAs must still be set.
func DefaultConfig() Config {
	return Config{
		CertTTL:          30 * 24 * time.Hour,
		Heartbeat:        30 * time.Second,
		HandshakeTimeout: 10 * time.Second,
		SeenInterval:     5 * time.Minute,
		SeenFlush:        time.Second,
		SetupTimeout:     30 * time.Second,
		MaxConns:         DefaultMaxConns,
		MaxConnsPerAddr:  DefaultMaxConnsPerAddr,
		ConnRatePerAddr:  DefaultConnRatePerAddr,
		ConnBurstPerAddr: DefaultConnBurstPerAddr,
		Tunnel:           hubTunnelConfig(),
	}
}

// hubTunnelConfig is the tunnel configuration of agent sessions: the
// hub's liveness check is HeartbeatTimeout, so yamux keepalive is off on
// its end (a goroutine per agent saved); agents keep theirs.
func hubTunnelConfig() tunnel.Config {
	c := tunnel.DefaultConfig()
	c.NoKeepAlive = true
	// Streams beyond MaxTransports are reset unserved anyway; a backlog
	// of 32 cost each session a 256-byte queue.
	c.AcceptBacklog = c.MaxTransports
	return c
}

// heartbeatTimeout is HeartbeatTimeout, or its default.
func (c *Config) heartbeatTimeout() time.Duration {
	if c.HeartbeatTimeout > 0 {
		return c.HeartbeatTimeout
	}
	beat := c.Heartbeat.Truncate(time.Second)
	if beat <= 0 {
		// Welcome carries whole seconds; an agent told 0 beats every 30 s.
		beat = 30 * time.Second
	}
	// With a short heartbeat (tests use 1 s), a busy agent must not be
	// dropped for a few seconds' stall.
	return max(3*beat, minHeartbeatTimeout)
}

// minHeartbeatTimeout is the least default HeartbeatTimeout.
const minHeartbeatTimeout = 10 * time.Second

// Validate reports the first missing or wrong setting.
func (c *Config) Validate() error {
	for kind, r := range c.Payloads {
		switch {
		case !fleetv1.ValidPayloadKind(kind) || kind == fleetv1.PayloadKindStatus:
			return fmt.Errorf("gateway: Config.Payloads: kind %q is not a valid payload kind (or is status, which goes to Config.Status)", kind)
		case r == nil:
			return fmt.Errorf("gateway: Config.Payloads: kind %q has no receiver", kind)
		}
	}
	if len(c.Payloads)+1 > fleetv1.MaxPayloadKinds {
		return fmt.Errorf("gateway: Config.Payloads: %d kinds, at most %d", len(c.Payloads), fleetv1.MaxPayloadKinds-1)
	}
	if err := validateFeatures(c.Features); err != nil {
		return err
	}
	switch {
	case c.Registry == nil:
		return errors.New("gateway: Config.Registry is required")
	case c.Signer == nil:
		return errors.New("gateway: Config.Signer is required")
	case len(c.Certificate.Certificate) == 0:
		return errors.New("gateway: Config.Certificate is required")
	case c.ClientCAs == nil:
		return errors.New("gateway: Config.ClientCAs is required")
	case c.CertTTL < time.Minute:
		return fmt.Errorf("gateway: CertTTL %s is shorter than a minute", c.CertTTL)
	case c.Heartbeat <= 0 || c.HandshakeTimeout <= 0 || c.SetupTimeout <= 0 || c.SeenFlush <= 0:
		return errors.New("gateway: Heartbeat, HandshakeTimeout, SetupTimeout and SeenFlush must be positive")
	case c.HeartbeatTimeout < 0 || (c.HeartbeatTimeout > 0 && c.HeartbeatTimeout <= c.Heartbeat):
		return fmt.Errorf("gateway: HeartbeatTimeout %s must be 0 (3 × Heartbeat) or longer than Heartbeat %s", c.HeartbeatTimeout, c.Heartbeat)
	case c.MaxConns < 1 || c.MaxConnsPerAddr < 1 || c.MaxConnsPerAddr > c.MaxConns:
		return fmt.Errorf("gateway: MaxConns %d and MaxConnsPerAddr %d must be at least 1, and MaxConnsPerAddr at most MaxConns", c.MaxConns, c.MaxConnsPerAddr)
	case !(c.ConnRatePerAddr > 0) || c.ConnBurstPerAddr < 1:
		return fmt.Errorf("gateway: ConnRatePerAddr %v must be positive and ConnBurstPerAddr %d at least 1", c.ConnRatePerAddr, c.ConnBurstPerAddr)
	}
	return c.Tunnel.Validate()
}

// validateFeatures checks Config.Features against what an agent reads of
// Welcome.features (it ignores the rest, so the hub must not rely on it).
func validateFeatures(features []string) error {
	if len(features) > fleetv1.MaxFeatures {
		return fmt.Errorf("gateway: Config.Features: %d features, at most %d", len(features), fleetv1.MaxFeatures)
	}
	for i, f := range features {
		switch {
		case f == "":
			return fmt.Errorf("gateway: Config.Features[%d] is empty", i)
		case len(f) > fleetv1.MaxFeatureBytes:
			return fmt.Errorf("gateway: Config.Features[%d] is %d bytes, at most %d", i, len(f), fleetv1.MaxFeatureBytes)
		case !utf8.ValidString(f):
			return fmt.Errorf("gateway: Config.Features[%d] %q is not UTF-8", i, f)
		case slices.Contains(features[:i], f):
			return fmt.Errorf("gateway: Config.Features: %q appears twice", f)
		}
	}
	return nil
}

// maxTickets bounds the TLS session states kept for resumption (about 1.5
// KB each); beyond it the oldest are forgotten and those agents do a full
// handshake.
const maxTickets = 50000

// Gateway is the hub's agent endpoint.
type Gateway struct {
	cfg    Config
	log    *slog.Logger
	tls    *tls.Config
	tunnel *tunnel.Server
	grpc   *grpc.Server
	// enrolTunnel and enrolGRPC serve sessions without a client
	// certificate, with small limits: such a peer may only enrol.
	enrolTunnel *tunnel.Server
	enrolGRPC   *grpc.Server
	admission   *admission
	refusals    refusalLog

	mu       sync.Mutex
	sessions map[string]*agentSession // by cluster, only after a valid Hello
	conns    map[*tunnel.Session]*connState
	// gen counts, per cluster, the Disconnects (deletion, re-enrolment):
	// a call authorised under an older generation is refused.
	gen map[string]uint64
	wg  sync.WaitGroup

	// closing is set when Serve ends: sessions set up after that are
	// closed at once.
	closing bool

	seenMu sync.Mutex
	seen   map[string]fleet.Contact // contacts not yet written
}

// connState is what the gateway knows of one connection. It is made
// before the session serves (tunnel.SessionOptions.Data), so the first
// call always finds it.
type connState struct {
	// active is set by the first authorised call with a certificate.
	// Sessions without a certificate are never active: they end at
	// SetupTimeout whatever they do.
	active atomic.Bool
	// wire counts the connection's bytes, TLS included.
	wire *tunnel.CountingConn
	// release gives back the admission slot.
	release func()

	// Under Gateway.mu: the session, and the cluster of its certificate
	// once a call was authorised.
	sess    *tunnel.Session
	cluster string
	// setup closes a connection without a client certificate at
	// SetupTimeout. watch is the one timer of a connection with one: it
	// closes it if no call was accepted by SetupTimeout, when its agent
	// has sent nothing for HeartbeatTimeout, or when the certificate
	// expires.
	setup, watch *time.Timer
	// start is when the handshake ended (monotonic); heard, when the agent
	// last sent something, and expires, when the certificate expires, are
	// durations since start.
	start   time.Time
	heard   atomic.Int64
	expires time.Duration

	// writes is held (read) by every store write made for the session;
	// revoke takes it to wait for those in flight, and sets revoked so no
	// later one is made.
	writes  sync.RWMutex
	revoked atomic.Bool
}

// heard notes that the agent of a connection just sent something.
func (g *Gateway) heard(cs *connState) {
	if cs != nil && cs.watch != nil {
		cs.heard.Store(int64(time.Since(cs.start)))
	}
}

// watch runs when the timer of a connection with a certificate fires:
// it closes the connection, or sets the timer for the next check.
func (g *Gateway) watch(cs *connState, remote string, notAfter time.Time) {
	g.mu.Lock()
	sess := cs.sess
	g.mu.Unlock()
	if sess == nil {
		// Not registered yet (SetupTimeout is far longer than that takes).
		cs.watch.Reset(time.Second)
		return
	}
	now := time.Since(cs.start)
	timeout := g.cfg.heartbeatTimeout()
	idle := now - time.Duration(cs.heard.Load())
	switch {
	case !cs.active.Load():
		g.log.Info("closing agent connection that made no accepted call", "remote", remote, "after", g.cfg.SetupTimeout)
	case now >= cs.expires:
		g.log.Info("closing agent connection: its certificate expired", "remote", remote, "not_after", notAfter)
	case idle >= timeout:
		g.log.Info("closing agent connection: nothing from its agent", "remote", remote, "for", idle.Round(time.Millisecond))
	default:
		cs.watch.Reset(min(timeout-idle, cs.expires-now))
		return
	}
	sess.Close()
}

func connOf(sess *tunnel.Session) *connState {
	cs, _ := sess.Data().(*connState)
	return cs
}

// agentSession is one connected cluster.
type agentSession struct {
	cluster   string
	sess      *tunnel.Session
	remote    string
	since     time.Time
	version   string
	hostname  string
	revision  uint64
	lastBeat  time.Time
	lastSaved time.Time
	// wire counts the connection's bytes on the wire, TLS included.
	wire *tunnel.CountingConn
	// outboxPending and outboxDropped are from the last heartbeat.
	outboxPending, outboxDropped uint64
	// outboxKinds are the per-kind counters of the last heartbeat.
	outboxKinds []OutboxKindStats
	// payloadKinds are the kinds negotiated in hello/welcome; empty for
	// an agent older than payload kinds.
	payloadKinds []string
}

// OutboxKindStats are an agent's outbox counters for one payload kind, as
// its last heartbeat said.
type OutboxKindStats struct {
	Kind         string `json:"kind"`
	Pending      uint64 `json:"pending"`
	Bytes        uint64 `json:"bytes,omitempty"`
	Dropped      uint64 `json:"dropped,omitempty"`
	DeadLettered uint64 `json:"deadLettered,omitempty"`
}

// SessionInfo describes a connected agent.
type SessionInfo struct {
	Cluster       string    `json:"cluster"`
	RemoteAddr    string    `json:"remoteAddr"`
	Since         time.Time `json:"since"`
	LastHeartbeat time.Time `json:"lastHeartbeat"`
	AgentVersion  string    `json:"agentVersion"`
	Hostname      string    `json:"hostname"`
	Revision      uint64    `json:"revision"`
	BytesIn       uint64    `json:"bytesIn"`
	BytesOut      uint64    `json:"bytesOut"`
	// OutboxPending and OutboxDropped are the agent's outbox counters from
	// its last heartbeat: reports waiting, and reports dropped because the
	// outbox was full while offline.
	OutboxPending uint64 `json:"outboxPending"`
	OutboxDropped uint64 `json:"outboxDropped"`
	// OutboxKinds are the same per payload kind, with dead-lettered
	// entries; empty from agents older than payload kinds.
	OutboxKinds []OutboxKindStats `json:"outboxKinds,omitempty"`
	// PayloadKinds are the payload kinds negotiated with the agent.
	PayloadKinds []string `json:"payloadKinds,omitempty"`
}

// New returns a Gateway; call Serve to accept connections.
func New(cfg Config) (*Gateway, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Tunnel.Logger == nil {
		cfg.Tunnel.Logger = cfg.Logger
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Features = slices.Clone(cfg.Features) // sent in every Welcome; the caller's slice may change
	g := &Gateway{
		cfg:      cfg,
		log:      cfg.Logger,
		sessions: map[string]*agentSession{},
		conns:    map[*tunnel.Session]*connState{},
		gen:      map[string]uint64{},
		seen:     map[string]fleet.Contact{},
	}
	g.admission = newAdmission(cfg)
	g.tls = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cfg.Certificate},
		// Enrolment happens before the agent has a certificate; every other
		// call is refused without one by the interceptors.
		ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs:  cfg.ClientCAs,
		// Certificates are checked against the hub's clock.
		Time: cfg.Now,
	}
	tickets := newTicketStore(maxTickets, 24*time.Hour, cfg.Now)
	g.tls.WrapSession, g.tls.UnwrapSession = tickets.wrap, tickets.unwrap
	opts := append(tunnel.ServerOptions(cfg.Tunnel),
		grpc.ChainUnaryInterceptor(g.unaryAuth),
		grpc.ChainStreamInterceptor(g.streamAuth),
	)
	g.grpc = grpc.NewServer(opts...)
	fleetv1.RegisterEnrollmentServer(g.grpc, &enrollment{g: g})
	fleetv1.RegisterFleetServer(g.grpc, &fleetService{g: g})
	var err error
	if g.tunnel, err = tunnel.NewServer(cfg.Tunnel, g.grpc); err != nil {
		return nil, err
	}
	ecfg := enrolTunnelConfig(cfg.Tunnel)
	g.enrolGRPC = grpc.NewServer(append(tunnel.ServerOptions(ecfg),
		grpc.ChainUnaryInterceptor(g.unaryAuth),
		grpc.ChainStreamInterceptor(g.streamAuth),
	)...)
	fleetv1.RegisterEnrollmentServer(g.enrolGRPC, &enrollment{g: g})
	// Registered so that a call without a certificate is refused by the
	// interceptors with a reason, not Unimplemented.
	fleetv1.RegisterFleetServer(g.enrolGRPC, &fleetService{g: g})
	if g.enrolTunnel, err = tunnel.NewServer(ecfg, g.enrolGRPC); err != nil {
		return nil, err
	}
	return g, nil
}

// Limits of a session without a client certificate. It may only enrol: one
// gRPC transport, a spare stream for a reconnecting ClientConn, two calls
// at once, and messages of at most 64 KiB (a join token, a CSR of at most
// 16 KiB and a version). gRPC refuses a larger message from its length
// prefix, before reading it. Such a session holds at most
// MaxStreams × StreamWindowSize (512 KiB) in yamux and 64 KiB per HTTP/2
// window.
const (
	enrolMaxStreams    = 2
	enrolMaxMsgSize    = 64 << 10
	enrolMaxCalls      = 2
	enrolWindow        = 64 << 10
	enrolMaxHeaderList = 16 << 10
)

func enrolTunnelConfig(c tunnel.Config) tunnel.Config {
	c.MaxTransports = 1
	c.MaxStreams = enrolMaxStreams
	c.AcceptBacklog = enrolMaxStreams
	c.StreamWindowSize = 256 << 10 // yamux's minimum
	c.MaxRecvMsgSize = enrolMaxMsgSize
	c.MaxSendMsgSize = enrolMaxMsgSize
	c.MaxConcurrentStreams = enrolMaxCalls
	c.MaxHeaderListSize = enrolMaxHeaderList
	c.InitialWindowSize = enrolWindow
	c.InitialConnWindowSize = enrolWindow
	c.ReadBufferSize = 0
	return c
}

// acceptRetryMin and acceptRetryMax bound the wait after a temporary
// accept error (out of descriptors): short, since agents are waiting.
const acceptRetryMin, acceptRetryMax = 5 * time.Millisecond, time.Second

// Serve accepts agent connections on ln until ctx is done, then closes every
// session and waits for them.
func (g *Gateway) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	fctx, stopFlush := context.WithCancel(context.WithoutCancel(ctx))
	var flusher sync.WaitGroup
	flusher.Go(func() { g.flushSeen(fctx) })
	defer flusher.Wait()
	defer stopFlush()
	defer g.closeAll()
	retry := backoff.New(acceptRetryMin, acceptRetryMax)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if temporaryAcceptError(err) {
				// Out of file descriptors (a flood, or a low ulimit) and
				// the like pass: keep serving the agents already here.
				delay := retry.Next()
				g.log.Warn("accepting agent connections failed; retrying", "addr", ln.Addr().String(), "err", err, "delay", delay)
				if !backoff.Sleep(ctx, delay) {
					return nil
				}
				continue
			}
			return fmt.Errorf("gateway: accept on %s: %w", ln.Addr(), err)
		}
		retry.Reset()
		release, err := g.admission.admit(conn.RemoteAddr())
		if err != nil {
			g.refusals.note(g.log, g.cfg.Now(), conn.RemoteAddr().String(), err)
			refuse(conn, err)
			continue
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.handle(ctx, conn, release)
		}()
	}
}

func (g *Gateway) handle(ctx context.Context, conn net.Conn, release func()) {
	remote := conn.RemoteAddr().String()
	// Count below TLS so the numbers are what crosses the wire.
	raw := tunnel.NewCountingConn(conn)
	tc := tls.Server(raw, g.tls)
	hctx, cancel := context.WithTimeout(ctx, g.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(hctx)
	cancel()
	if err != nil {
		g.log.Info("agent TLS handshake failed", "remote", remote, "err", err)
		raw.Close()
		release()
		return
	}
	// The state exists before the session serves, so the first call is
	// counted (it used to be registered after, and an early call was not).
	cs := &connState{wire: raw, release: release}
	srv := g.enrolTunnel
	var leaf *x509.Certificate
	if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
		srv, leaf = g.tunnel, certs[0]
		// The certificate was checked once, at the handshake: the session
		// must not outlive it. And the hub's end of the tunnel sends no
		// pings, so an agent gone silent, its TCP connection still open,
		// is dropped by the same timer. Made before the session serves.
		cs.start = time.Now()
		cs.expires = leaf.NotAfter.Sub(g.cfg.Now())
		notAfter := leaf.NotAfter
		cs.watch = time.AfterFunc(time.Duration(math.MaxInt64), func() { g.watch(cs, remote, notAfter) })
		cs.watch.Reset(min(g.cfg.SetupTimeout, cs.expires))
	}
	sess, err := srv.ServeConnWith(ctx, tc, tunnel.SessionOptions{OnEnd: g.sessionEnded, Data: cs})
	if err != nil {
		if cs.watch != nil {
			cs.watch.Stop()
		}
		g.log.Info("agent tunnel setup failed", "remote", remote, "err", err)
		tc.Close()
		release()
		return
	}
	// From here on the session's own goroutines carry it: no goroutine per
	// agent waits for it to end (that cost ~4 KB per connected agent).
	g.mu.Lock()
	cs.sess = sess
	if leaf == nil {
		cs.setup = time.AfterFunc(g.cfg.SetupTimeout, func() {
			g.log.Info("closing agent connection that made no accepted call", "remote", remote, "after", g.cfg.SetupTimeout)
			sess.Close()
		})
	}
	closing := g.closing
	if !closing {
		g.conns[sess] = cs
	}
	g.mu.Unlock()
	select {
	case <-sess.Done():
		closing = true // ended before it was registered: sessionEnded may have missed it
	default:
	}
	if closing {
		g.sessionEnded(sess)
	}
}

// sessionEnded forgets a session and releases it; called by the tunnel when
// the session stops serving.
func (g *Gateway) sessionEnded(sess *tunnel.Session) {
	g.mu.Lock()
	delete(g.conns, sess)
	cs := connOf(sess)
	if cs != nil {
		if cs.setup != nil {
			cs.setup.Stop()
		}
		if cs.watch != nil {
			cs.watch.Stop()
		}
	}
	g.mu.Unlock()
	sess.Close()
	if cs != nil {
		cs.release()
	}
}

func (g *Gateway) closeAll() {
	g.mu.Lock()
	g.closing = true
	conns := make([]*tunnel.Session, 0, len(g.conns))
	for s := range g.conns {
		conns = append(conns, s)
	}
	g.mu.Unlock()
	for _, s := range conns {
		s.Close()
	}
	g.wg.Wait()
	g.grpc.Stop()
	g.enrolGRPC.Stop()
}

// noteSeen records a contact with cluster's agent, written by flushSeen.
func (g *Gateway) noteSeen(cluster string, info fleet.AgentInfo) {
	g.seenMu.Lock()
	defer g.seenMu.Unlock()
	c := g.seen[cluster]
	if info.Version != "" {
		c.Info.Version = info.Version
	}
	if info.Hostname != "" {
		c.Info.Hostname = info.Hostname
	}
	if info.Address != "" {
		c.Info.Address = info.Address
	}
	if info.APIServer != "" {
		c.Info.APIServer = info.APIServer
	}
	c.At = g.cfg.Now()
	g.seen[cluster] = c
}

// flushSeen writes recorded contacts every SeenFlush, and once more when
// ctx ends (after every session closed).
func (g *Gateway) flushSeen(ctx context.Context) {
	t := time.NewTicker(g.cfg.SeenFlush)
	defer t.Stop()
	for {
		done := false
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		g.seenMu.Lock()
		batch := g.seen
		g.seen = map[string]fleet.Contact{}
		g.seenMu.Unlock()
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := g.cfg.Registry.SeenMany(wctx, batch); err != nil {
			g.log.Warn("record agent contacts", "err", err)
		}
		cancel()
		if done {
			return
		}
	}
}

// Sessions lists connected agents, sorted by cluster.
func (g *Gateway) Sessions() []SessionInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]SessionInfo, 0, len(g.sessions))
	for _, s := range g.sessions {
		out = append(out, s.info())
	}
	slices.SortFunc(out, func(a, b SessionInfo) int { return strings.Compare(a.Cluster, b.Cluster) })
	return out
}

// Session returns the connected agent of cluster.
func (g *Gateway) Session(cluster string) (SessionInfo, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, ok := g.sessions[cluster]
	if !ok {
		return SessionInfo{}, false
	}
	return s.info(), true
}

func (s *agentSession) info() SessionInfo {
	si := SessionInfo{
		Cluster: s.cluster, RemoteAddr: s.remote, Since: s.since, LastHeartbeat: s.lastBeat,
		AgentVersion: s.version, Hostname: s.hostname, Revision: s.revision,
		OutboxPending: s.outboxPending, OutboxDropped: s.outboxDropped,
		OutboxKinds: slices.Clone(s.outboxKinds), PayloadKinds: slices.Clone(s.payloadKinds),
	}
	if s.wire != nil {
		si.BytesIn, si.BytesOut = s.wire.BytesIn(), s.wire.BytesOut()
	}
	return si
}

// Disconnect ends every connection of cluster: used when a cluster is
// deleted or re-enrolled, so its agent must reconnect and be refused (or
// use its new certificate). Calls authorised before it and not yet
// registered are refused; when it returns, no store write made for those
// connections is in flight, and none will be made, so what the caller
// deletes next stays deleted.
func (g *Gateway) Disconnect(cluster string) {
	g.mu.Lock()
	g.gen[cluster]++
	var victims []*connState
	for _, cs := range g.conns {
		if cs.cluster == cluster {
			victims = append(victims, cs)
		}
	}
	if s := g.sessions[cluster]; s != nil {
		delete(g.sessions, cluster)
		if cs := connOf(s.sess); cs != nil && cs.cluster == "" {
			victims = append(victims, cs)
		}
	}
	g.mu.Unlock()
	for _, cs := range victims {
		cs.revoked.Store(true)
		cs.sess.Close()
	}
	for _, cs := range victims {
		// Wait for writes that passed the check before revoked was set:
		// a barrier, not a critical section.
		cs.writes.Lock()
		//lint:ignore SA2001 the lock is taken only to wait for its holders
		cs.writes.Unlock()
	}
	if len(victims) > 0 {
		g.log.Info("closed the connections of a revoked cluster", "cluster", cluster, "connections", len(victims))
	}
}

// storeWrite runs write, a store write for the caller of ctx, unless its
// connection was revoked; Disconnect waits for one in flight.
func (g *Gateway) storeWrite(ctx context.Context, write func() error) error {
	id := identityFrom(ctx)
	cs := (*connState)(nil)
	if id.sess != nil {
		cs = connOf(id.sess)
	}
	if cs == nil {
		return write()
	}
	cs.writes.RLock()
	defer cs.writes.RUnlock()
	if cs.revoked.Load() {
		return status.Errorf(codes.PermissionDenied, "cluster %q was revoked", id.cluster)
	}
	return write()
}

// Diagnose calls the agent of cluster over the hub→agent direction of its
// tunnel.
func (g *Gateway) Diagnose(ctx context.Context, cluster string) (*fleetv1.DiagnoseResponse, error) {
	g.mu.Lock()
	s, ok := g.sessions[cluster]
	g.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("diagnose cluster %q: not connected", cluster)
	}
	cc, err := s.sess.ClientConn()
	if err != nil {
		return nil, fmt.Errorf("diagnose cluster %q: %w", cluster, err)
	}
	resp, err := fleetv1.NewAgentClient(cc).Diagnose(ctx, &fleetv1.DiagnoseRequest{})
	if err != nil {
		return nil, fmt.Errorf("diagnose cluster %q: %w", cluster, err)
	}
	return resp, nil
}

// register makes s the session of its cluster, closing an older one: an
// agent that reconnects before the hub noticed its old link died wins.
func (g *Gateway) register(s *agentSession) {
	g.mu.Lock()
	if cs := connOf(s.sess); cs != nil {
		s.wire = cs.wire
	}
	old := g.sessions[s.cluster]
	g.sessions[s.cluster] = s
	g.mu.Unlock()
	if old != nil && old.sess != s.sess {
		g.log.Info("agent reconnected; closing its previous session", "cluster", s.cluster, "old_remote", old.remote)
		old.sess.Close()
	}
}

func (g *Gateway) unregister(s *agentSession) {
	g.mu.Lock()
	if g.sessions[s.cluster] == s {
		delete(g.sessions, s.cluster)
	}
	g.mu.Unlock()
}

// identity is the authorised caller of an agent→hub call.
type identity struct {
	cluster string
	serial  string
	sess    *tunnel.Session
	remote  string
}

type identityKey struct{}

const enrollMethod = "/tether.fleet.v1.Enrollment/Enroll"

func (g *Gateway) authorize(ctx context.Context, method string) (context.Context, error) {
	ai, ok := tunnel.FromContext(ctx)
	if !ok || ai.Session == nil {
		return nil, status.Error(codes.Unauthenticated, "call did not arrive through an agent tunnel")
	}
	id := identity{sess: ai.Session, remote: ai.Session.RemoteAddr().String()}
	if method == enrollMethod {
		// Not marked active: a failed enrolment must not keep the session,
		// and a successful one has no use for it afterwards.
		return context.WithValue(ctx, identityKey{}, id), nil
	}
	if ai.TLS == nil || len(ai.TLS.PeerCertificates) == 0 {
		return nil, status.Errorf(codes.Unauthenticated, "%s needs a client certificate: enrol with a join token first", method)
	}
	cert := ai.TLS.PeerCertificates[0]
	cluster, err := clusterOf(cert)
	if err != nil {
		return nil, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	id.cluster = cluster
	id.serial = cert.SerialNumber.Text(16)
	g.mu.Lock()
	gen := g.gen[cluster]
	g.mu.Unlock()
	if _, err := g.cfg.Registry.Authorize(ctx, cluster, id.serial); err != nil {
		if errors.Is(err, fleet.ErrRevoked) {
			return nil, status.Error(codes.PermissionDenied, err.Error())
		}
		return nil, status.Errorf(codes.Unavailable, "authorize: %v", err)
	}
	cs := connOf(ai.Session)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gen[cluster] != gen || (cs != nil && cs.revoked.Load()) {
		// Disconnect ran while this call was being authorised.
		return nil, status.Errorf(codes.PermissionDenied, "cluster %q was revoked while the call was authorised", cluster)
	}
	if cs != nil {
		cs.cluster = cluster
		cs.active.Store(true)
		g.heard(cs)
	}
	return context.WithValue(ctx, identityKey{}, id), nil
}

func (g *Gateway) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := g.authorize(ctx, info.FullMethod)
	if err != nil {
		g.log.Info("agent call refused", "method", info.FullMethod, "err", err)
		return nil, err
	}
	return h(ctx, req)
}

type authStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s authStream) Context() context.Context { return s.ctx }

func (g *Gateway) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := g.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		g.log.Info("agent call refused", "method", info.FullMethod, "err", err)
		return err
	}
	return h(srv, authStream{ServerStream: ss, ctx: ctx})
}

func identityFrom(ctx context.Context) identity {
	id, _ := ctx.Value(identityKey{}).(identity)
	return id
}
