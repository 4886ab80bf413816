// Package link keeps an agent connected to its hub: enrolment with a join
// token, then one mutually authenticated TLS connection with a yamux
// session carrying gRPC both ways; heartbeats; certificate rotation; and
// reconnection forever with capped, jittered exponential backoff.
package link

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/protocol/backoff"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/jointoken"
	"github.com/tetherfleet/tether/protocol/tunnel"
	"github.com/tetherfleet/tether/protocol/version"
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

// ErrHubBusy: the hub refused the connection before TLS because of its
// admission limits; the agent backs off at least busyBackoffSteps.
var ErrHubBusy = errors.New("hub is refusing connections (busy)")

// busyBackoffSteps is where a busy refusal puts the backoff at least:
// MinBackoff × 2^4 (8 s by default), jittered, up to MaxBackoff.
const busyBackoffSteps = 4

// ErrCertExpired: the agent's certificate expired; only a new join token
// gets it back (the hub refuses an expired certificate).
var ErrCertExpired = errors.New("certificate expired")

// certExpired returns an ErrCertExpired error that says what to do when the
// agent's certificate has expired by the hub's clock.
func (l *Link) certExpired() error {
	now := l.hubNow()
	l.mu.Lock()
	notAfter, cluster := l.st.CertExpires, l.id.Cluster
	l.mu.Unlock()
	if notAfter.IsZero() || now.Before(notAfter) {
		return nil
	}
	return fmt.Errorf("%w at %s; re-enrol with a new token: tether token create --cluster %s, then run tether-agent with --token",
		ErrCertExpired, notAfter.UTC().Format(time.RFC3339), cluster)
}

// ErrNotEnrolled: no identity in the cache and no token to get one.
var ErrNotEnrolled = errors.New("agent is not enrolled: pass --token and --hub once")

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
}

// DefaultConfig returns production defaults; Cache must be set.
func DefaultConfig() Config {
	return Config{
		Tunnel:      tunnel.DefaultConfig(),
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
	l := &Link{cfg: cfg, log: cfg.Logger, outboxKick: make(chan struct{}, 1), tickets: tls.NewLRUClientSessionCache(4),
		kinds: payloadKinds(), ackTimeout: defaultAckTimeout}
	l.grpc = grpc.NewServer(tunnel.ServerOptions(cfg.Tunnel)...)
	fleetv1.RegisterAgentServer(l.grpc, &agentService{l: l})
	return l, nil
}

// hubNow is the agent's estimate of the hub's clock.
func (l *Link) hubNow() time.Time {
	l.mu.Lock()
	skew := l.skew
	l.mu.Unlock()
	return l.cfg.Now().Add(skew)
}

// noteServerTime measures the clock skew from a Welcome.
func (l *Link) noteServerTime(w *fleetv1.Welcome, hub string) {
	if w.GetServerTime() == nil {
		return
	}
	skew := w.GetServerTime().AsTime().Sub(l.cfg.Now())
	if skew.Abs() > MaxClockSkew {
		l.log.Error("agent clock is off the hub's by more than the bound; not correcting for it; fix the clock (NTP)", "hub", hub, "skew", skew.Round(time.Second), "bound", MaxClockSkew)
		skew = 0
	} else if skew.Abs() > time.Minute {
		l.log.Warn("agent clock is off the hub's; certificate times are checked at hub time", "hub", hub, "skew", skew.Round(time.Second))
	}
	l.mu.Lock()
	l.skew = skew
	l.mu.Unlock()
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

// Run enrols if needed, then keeps the agent connected until ctx is done.
// It returns an error only when it cannot go on: enrolment refused, or no
// identity and no token. A cancelled ctx returns nil.
func (l *Link) Run(ctx context.Context) error {
	if err := l.loadIdentity(); errors.Is(err, cache.ErrNoIdentity) {
		if l.cfg.Token == "" || len(l.cfg.Hubs) == 0 {
			return ErrNotEnrolled
		}
		if err := l.enroll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	} else if err != nil {
		return err
	} else if l.cfg.Token != "" {
		if err := l.reenroll(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	bo := backoff.New(l.cfg.MinBackoff, l.cfg.MaxBackoff)
	for {
		hub := l.nextHub()
		l.setState(StateConnecting, hub, nil)
		err := l.connect(ctx, hub, bo)
		if ctx.Err() != nil {
			l.setState(StateOffline, "", errors.New("agent stopped"))
			return nil
		}
		state, wait := retryAfter(err, bo)
		l.mu.Lock()
		l.st.NextAttempt = l.cfg.Now().Add(wait)
		l.mu.Unlock()
		l.setState(state, hub, err)
		l.log.Warn("hub link down; will retry", "hub", hub, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !backoff.Sleep(ctx, wait) {
			l.setState(StateOffline, "", errors.New("agent stopped"))
			return nil
		}
	}
}

// retryAfter is the link state and wait after a failed connection.
func retryAfter(err error, bo *backoff.Backoff) (string, time.Duration) {
	state := StateOffline
	switch {
	case status.Code(err) == codes.PermissionDenied, errors.Is(err, ErrCertExpired):
		state = StateRefused
		bo.ToCap() // retrying fast will not help
	case errors.Is(err, ErrHubBusy):
		// The hub is up but shedding load: do not come back at once.
		bo.Floor(busyBackoffSteps)
	}
	return state, bo.Next()
}

func (l *Link) nextHub() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	hubs := l.hubs()
	h := hubs[l.hubIndex%len(hubs)]
	l.hubIndex++
	return h
}

func (l *Link) hubs() []string {
	if len(l.cfg.Hubs) > 0 {
		return l.cfg.Hubs
	}
	return l.id.HubAddrs
}

func (l *Link) loadIdentity() error {
	id, err := l.cfg.Cache.Identity()
	if err != nil {
		return err
	}
	if len(l.cfg.Hubs) > 0 && !equalStrings(id.HubAddrs, l.cfg.Hubs) {
		id.HubAddrs = l.cfg.Hubs
		if err := l.cfg.Cache.SaveIdentity(id); err != nil {
			return err
		}
	}
	return l.useIdentity(id)
}

// parsedIdentity is an identity ready for TLS.
type parsedIdentity struct {
	cert tls.Certificate
	ca   *x509.Certificate
	leaf *x509.Certificate
}

func parseIdentity(id cache.Identity) (parsedIdentity, error) {
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return parsedIdentity{}, fmt.Errorf("link: stored identity of cluster %q: %w", id.Cluster, err)
	}
	ca, err := parseCertPEM(id.CAPEM)
	if err != nil {
		return parsedIdentity{}, fmt.Errorf("link: stored hub CA: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return parsedIdentity{}, fmt.Errorf("link: stored certificate: %w", err)
	}
	return parsedIdentity{cert: cert, ca: ca, leaf: leaf}, nil
}

func (l *Link) useIdentity(id cache.Identity) error {
	p, err := parseIdentity(id)
	if err != nil {
		return err
	}
	if len(id.HubAddrs) == 0 && len(l.cfg.Hubs) == 0 {
		return fmt.Errorf("link: cluster %q: no hub address stored or given (--hub)", id.Cluster)
	}
	leaf := p.leaf
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	// Renew at about 2/3 of the lifetime, jittered so a fleet enrolled
	// together does not renew together.
	renewAt := leaf.NotBefore.Add(time.Duration(float64(life) * (0.6 + 0.13*rand.Float64())))
	l.mu.Lock()
	l.id, l.cert, l.ca, l.renewAt = id, p.cert, p.ca, renewAt
	l.st.Cluster = id.Cluster
	l.st.CertExpires = leaf.NotAfter
	l.mu.Unlock()
	return nil
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// dialHub opens TCP + TLS + yamux to addr.
func (l *Link) dialHub(ctx context.Context, addr string, tc *tls.Config, srv *grpc.Server) (*tunnel.Session, error) {
	dctx, cancel := context.WithTimeout(ctx, l.cfg.DialTimeout)
	defer cancel()
	raw, err := l.cfg.Dial(dctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial hub %s: %w", addr, err)
	}
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(dctx); err != nil {
		raw.Close()
		if tunnel.IsBusyRefusal(err) {
			return nil, fmt.Errorf("hub %s: %w", addr, ErrHubBusy)
		}
		if errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrClockSkew) {
			return nil, fmt.Errorf("hub %s: %w", addr, err)
		}
		return nil, fmt.Errorf("hub %s did not complete a TLS handshake as a Tether hub: %w", addr, err)
	}
	sess, err := tunnel.Dial(ctx, conn, l.cfg.Tunnel, srv)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("hub %s: open tunnel: %w", addr, err)
	}
	return sess, nil
}

// enroll redeems the join token for an identity, retrying while the hub is
// unreachable; a refusal ends it.
func (l *Link) enroll(ctx context.Context) error {
	tok, err := jointoken.Parse(l.cfg.Token)
	if err != nil {
		return fmt.Errorf("enroll: --token: %w", err)
	}
	// One key for every attempt: if an answer is lost, the hub gives the
	// same key the same certificate again instead of a spent token.
	keyPEM, csr, err := newKey()
	if err != nil {
		return err
	}
	bo := backoff.New(l.cfg.MinBackoff, l.cfg.MaxBackoff)
	for {
		hub := l.nextHub()
		l.setState(StateEnrolling, hub, nil)
		err := l.enrollOnce(ctx, hub, tok, keyPEM, csr)
		if err == nil {
			return nil
		}
		if permanent(err) {
			l.setState(StateRefused, hub, err)
			return fmt.Errorf("enroll with hub %s: %w", hub, err)
		}
		_, wait := retryAfter(err, bo)
		l.setState(StateOffline, hub, err)
		l.log.Warn("enrolment failed; will retry", "hub", hub, "err", err, "retry_in", wait.Round(time.Millisecond))
		if !backoff.Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// reenroll redeems --token although an identity exists, when the token is
// not the one the identity came from, or the certificate expired. The
// stored identity is replaced only once the new one is saved. With a
// still valid identity one attempt is made and a refusal keeps it; with an
// expired one, enrolment retries like a first one.
func (l *Link) reenroll(ctx context.Context) error {
	tok, err := jointoken.Parse(l.cfg.Token)
	if err != nil {
		return fmt.Errorf("enroll: --token: %w", err)
	}
	l.mu.Lock()
	cur := l.id
	l.mu.Unlock()
	expired := l.certExpired() != nil
	if !expired && cur.TokenID == tok.ID {
		l.log.Info("already enrolled with this token; ignoring --token", "cluster", cur.Cluster)
		return nil
	}
	if len(l.cfg.Hubs) == 0 {
		l.cfg.Hubs = cur.HubAddrs
	}
	if expired {
		l.log.Warn("certificate expired; re-enrolling with --token", "cluster", cur.Cluster)
		return l.enroll(ctx)
	}
	keyPEM, csr, err := newKey()
	if err != nil {
		return err
	}
	hub := l.nextHub()
	if err := l.enrollOnce(ctx, hub, tok, keyPEM, csr); err != nil {
		l.log.Warn("re-enrolment with --token failed; keeping the current identity", "cluster", cur.Cluster, "hub", hub, "err", err)
		return nil
	}
	return nil
}

func permanent(err error) bool {
	if errors.Is(err, ErrClockSkew) {
		return false // fix the clock; the next attempt may succeed
	}
	if errors.Is(err, ErrPinMismatch) {
		return true
	}
	switch status.Code(err) {
	case codes.PermissionDenied, codes.InvalidArgument, codes.Unauthenticated:
		return true
	}
	return false
}

func (l *Link) enrollOnce(ctx context.Context, hub string, tok jointoken.Token, keyPEM, csr []byte) error {
	tc := enrollTLS(tok, l.hubNow, l.log)
	l.curves(tc)
	sess, err := l.dialHub(ctx, hub, tc, nil)
	if err != nil {
		return err
	}
	defer sess.Close()
	cc, err := sess.ClientConn()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := fleetv1.NewEnrollmentClient(cc).Enroll(cctx, &fleetv1.EnrollRequest{
		Token: l.cfg.Token, CsrDer: csr, AgentVersion: version.Get(),
	})
	if err != nil {
		return err
	}
	if !tok.MatchesCA(resp.GetCaDer()) {
		return fmt.Errorf("%w: enrolment answer carries a CA that is not the one in the join token", ErrPinMismatch)
	}
	id := cache.Identity{
		Cluster:  resp.GetCluster(),
		KeyPEM:   keyPEM,
		CertPEM:  certPEM(resp.GetCertificateDer()),
		CAPEM:    certPEM(resp.GetCaDer()),
		HubAddrs: l.cfg.Hubs,
		NotAfter: resp.GetNotAfter().AsTime(),
		TokenID:  tok.ID,
	}
	if _, err := parseIdentity(id); err != nil {
		return err
	}
	if err := l.cfg.Cache.SaveIdentity(id); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := l.useIdentity(id); err != nil {
		return err
	}
	l.log.Info("enrolled", "cluster", id.Cluster, "hub", hub, "cert_expires", id.NotAfter)
	return nil
}

func (l *Link) curves(tc *tls.Config) {
	if !l.cfg.PostQuantum {
		tc.CurvePreferences = []tls.CurveID{tls.X25519}
	}
}

// connect runs one connection until it fails or ctx is done.
func (l *Link) connect(ctx context.Context, hub string, bo *backoff.Backoff) error {
	if err := l.certExpired(); err != nil {
		return err
	}
	l.mu.Lock()
	tc := mutualTLS(l.cert, l.ca, l.hubNow, l.log)
	tc.ClientSessionCache = l.tickets
	l.curves(tc)
	cluster := l.id.Cluster
	l.mu.Unlock()
	sess, err := l.dialHub(ctx, hub, tc, l.grpc)
	if err != nil {
		return err
	}
	defer sess.Close()
	cc, err := sess.ClientConn()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := fleetv1.NewFleetClient(cc)
	stream, err := client.Sync(sctx)
	if err != nil {
		return err
	}
	var have uint64
	var haveEpoch string
	if l.cfg.Handler != nil {
		have = l.cfg.Handler.Revision()
		if e, ok := l.cfg.Handler.(EpochHandler); ok {
			haveEpoch = e.Epoch()
		}
	}
	err = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{
		Cluster: cluster, AgentVersion: version.Get(), HaveRevision: have, HaveEpoch: haveEpoch, Hostname: l.cfg.Hostname,
		ApiServer: l.cfg.APIServer, PayloadKinds: l.helloKinds(),
	}}})
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	w := first.GetWelcome()
	if w == nil {
		return fmt.Errorf("hub %s: first message is %T, want welcome", hub, first.GetMsg())
	}
	l.noteServerTime(w, hub)
	if e, ok := l.cfg.Handler.(EpochHandler); ok && w.GetEpoch() != "" && e.Epoch() != "" && e.Epoch() != w.GetEpoch() {
		l.log.Warn("hub's revision history (epoch) differs from the one the held desired state came from; expecting a full state", "hub", hub, "hub_epoch", w.GetEpoch(), "held_epoch", e.Epoch())
	}
	bo.Reset()
	l.mu.Lock()
	l.st.Connects++
	l.mu.Unlock()
	l.setState(StateConnected, hub, nil)
	neg := negotiate(l.kinds, w)
	l.log.Info("connected to hub", "hub", hub, "cluster", cluster, "revision", have, "payload_kinds", w.GetPayloadKinds())

	beat := time.Duration(w.GetHeartbeatSeconds()) * time.Second
	if beat <= 0 {
		beat = 30 * time.Second
	}
	out := &syncSender{stream: stream}
	l.mu.Lock()
	l.client = client
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.client = nil
		l.mu.Unlock()
	}()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	fail := func(err error) {
		if err != nil && sctx.Err() == nil {
			select {
			case errc <- err:
			default:
			}
			cancel()
		}
	}
	// The hub acknowledges each payload it was sent, at most drainBatch
	// in flight; room for more so a stray ack never blocks the receive loop.
	acks := make(chan payloadAck, 2*drainBatch)
	wg.Go(func() { fail(l.heartbeats(sctx, out, client, beat)) })
	if l.cfg.Outbox != nil {
		wg.Go(func() { fail(l.drain(sctx, out, acks, neg)) })
	}
	defer wg.Wait()
	defer cancel()
	for {
		msg, err := stream.Recv()
		if err != nil {
			select {
			case herr := <-errc:
				return herr
			default:
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("hub %s closed the sync stream", hub)
			}
			return err
		}
		l.mu.Lock()
		l.st.LastContact = l.cfg.Now()
		l.mu.Unlock()
		if a := ackOf(msg); a != nil {
			select {
			case acks <- *a:
			default:
				l.log.Warn("hub sent more acknowledgements than payloads in flight; ignoring one", "hub", hub, "seq", a.seq)
			}
			continue
		}
		if ds := msg.GetDesired(); ds != nil && l.cfg.Handler != nil {
			if err := l.cfg.Handler.Desired(sctx, ds); err != nil {
				return fmt.Errorf("store desired revision %d: %w", ds.GetRevision(), err)
			}
			if err := out.send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Ack{Ack: &fleetv1.Ack{Revision: ds.GetRevision()}}}); err != nil {
				return err
			}
		}
	}
}

// syncSender serialises Send: gRPC allows one sender at a time, and both
// the heartbeat loop and the receive loop send.
type syncSender struct {
	mu     sync.Mutex
	stream fleetv1.Fleet_SyncClient
}

func (s *syncSender) send(m *fleetv1.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

func (l *Link) heartbeats(ctx context.Context, out *syncSender, client fleetv1.FleetClient, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if err := l.maybeRenew(ctx, client); err != nil {
			l.log.Warn("certificate renewal failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		hb := &fleetv1.Heartbeat{Sent: timestamppb.New(l.cfg.Now())}
		if l.cfg.Outbox != nil {
			if st, err := l.cfg.Outbox.OutboxStats(); err == nil {
				hb.OutboxPending, hb.OutboxDropped, hb.OutboxKinds = st.Pending, st.Dropped, kindStats(st)
			}
		}
		err := out.send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: hb}})
		if err != nil {
			return fmt.Errorf("send heartbeat: %w", err)
		}
		l.mu.Lock()
		l.st.LastContact = l.cfg.Now()
		st := l.st
		l.mu.Unlock()
		l.persist(st)
	}
}

// maybeRenew rotates the certificate once it is past its renewal time. The
// new key is made here and never leaves the agent. The renewed identity is
// saved before it is used: if the save fails it is kept pending and only
// the save is retried (renewAt does not move), so a restart never finds
// the old certificate after the agent stopped renewing it.
func (l *Link) maybeRenew(ctx context.Context, client fleetv1.FleetClient) error {
	l.mu.Lock()
	due := !l.cfg.Now().Before(l.renewAt)
	id, pending := l.id, l.pendingID
	l.mu.Unlock()
	if pending != nil {
		return l.commitRenewed(*pending)
	}
	if !due {
		return nil
	}
	keyPEM, csr, err := newKey()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := client.Renew(rctx, &fleetv1.RenewRequest{CsrDer: csr})
	if err != nil {
		return err
	}
	id.KeyPEM = keyPEM
	id.CertPEM = certPEM(resp.GetCertificateDer())
	id.NotAfter = resp.GetNotAfter().AsTime()
	if _, err := parseIdentity(id); err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	return l.commitRenewed(id)
}

// commitRenewed saves a renewed identity, then uses it; on a failed save
// it stays pending for the next attempt.
func (l *Link) commitRenewed(id cache.Identity) error {
	if err := l.cfg.Cache.SaveIdentity(id); err != nil {
		l.mu.Lock()
		l.pendingID = &id
		l.mu.Unlock()
		return fmt.Errorf("save renewed identity (kept in memory; the save is retried): %w", err)
	}
	l.mu.Lock()
	l.pendingID = nil
	l.mu.Unlock()
	if err := l.useIdentity(id); err != nil {
		return err
	}
	l.log.Info("certificate renewed", "cluster", id.Cluster, "expires", id.NotAfter)
	return nil
}

// KickOutbox tells the link that new outbox entries are waiting.
func (l *Link) KickOutbox() {
	select {
	case l.outboxKick <- struct{}{}:
	default:
	}
}

// drainBatch bounds the payloads in flight before the hub acknowledges.
const drainBatch = fleetv1.MaxUnackedReports

// payloadAck is the hub's answer to one payload.
type payloadAck struct {
	seq     uint64
	refused bool
	reason  string
}

// ackOf returns the acknowledgement msg carries, or nil.
func ackOf(msg *fleetv1.HubMessage) *payloadAck {
	if a := msg.GetStatusAck(); a != nil {
		return &payloadAck{seq: a.GetSeq()}
	}
	if a := msg.GetPayloadAck(); a != nil {
		return &payloadAck{seq: a.GetSeq(), refused: a.GetRefused(), reason: a.GetReason()}
	}
	return nil
}

// kindStats are the outbox's per-kind counters for a heartbeat, bounded by
// fleetv1.MaxPayloadKinds (in name order).
func kindStats(st cache.OutboxStats) []*fleetv1.OutboxKindStats {
	names := make([]string, 0, len(st.Kinds))
	for name := range st.Kinds {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []*fleetv1.OutboxKindStats
	for _, name := range names[:min(len(names), fleetv1.MaxPayloadKinds)] {
		k := st.Kinds[name]
		out = append(out, &fleetv1.OutboxKindStats{Kind: name, Pending: k.Pending, Bytes: k.Bytes, Dropped: k.Dropped, DeadLettered: k.DeadLettered})
	}
	return out
}

// drain sends outbox entries in drain order (cache.Batch: priority, then
// oldest first) of the kinds the hub accepts, and removes each once the
// hub acknowledged it by sequence number. An entry that cannot be sent (a
// kind this agent does not know, a payload that does not decode) or that
// the hub refuses for good is dead-lettered: removed and counted, never
// waited for. A kind the hub does not accept stays in the outbox. Entries
// survive a broken link and an agent restart; a payload sent twice is
// harmless (the hub orders status reports by seq).
func (l *Link) drain(ctx context.Context, out *syncSender, acks <-chan payloadAck, neg negotiated) error {
	poll := time.NewTicker(5 * time.Second)
	defer poll.Stop()
	sendable := l.sendable(neg)
	for {
		entries, err := l.cfg.Outbox.Batch(drainBatch, sendable)
		if err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		inflight := map[uint64]bool{}
		for _, e := range entries {
			msg, err := l.encode(e, neg)
			if err != nil {
				l.deadLetter(e.Seq, e.Kind, err.Error())
				continue
			}
			if err := out.send(msg); err != nil {
				return fmt.Errorf("send outbox entry %d (%s): %w", e.Seq, e.Kind, err)
			}
			inflight[e.Seq] = true
		}
		if len(inflight) > 0 {
			if err := l.awaitAcks(ctx, acks, inflight); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if len(entries) > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-l.outboxKick:
		case <-poll.C:
		}
	}
}

// encode makes the message that carries e to this hub.
func (l *Link) encode(e cache.OutboxEntry, neg negotiated) (*fleetv1.AgentMessage, error) {
	k, ok := l.kind(e.Kind)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (written by another tether-agent version?)", e.Kind)
	}
	data := e.Payload
	if k.prepare != nil {
		var err error
		if data, err = k.prepare(l, e.Seq, data); err != nil {
			return nil, err
		}
	}
	if neg.legacy {
		return k.legacy(e.Seq, data)
	}
	return &fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Payload{Payload: &fleetv1.Payload{Seq: e.Seq, Kind: e.Kind, Data: data}}}, nil
}

func (l *Link) deadLetter(seq uint64, kind, reason string) {
	if _, err := l.cfg.Outbox.DeadLetter(seq); err != nil {
		l.log.Error("dead-letter outbox entry", "seq", seq, "kind", kind, "err", err)
		return
	}
	l.log.Warn("outbox entry cannot be sent; dead-lettered (removed and counted)", "seq", seq, "kind", kind, "reason", reason)
}

// defaultAckTimeout bounds the wait for the hub to acknowledge a batch.
const defaultAckTimeout = time.Minute

// awaitAcks waits until the hub answered every payload in inflight, and
// removes each from the outbox as its answer arrives.
func (l *Link) awaitAcks(ctx context.Context, acks <-chan payloadAck, inflight map[uint64]bool) error {
	t := time.NewTimer(l.ackTimeout)
	defer t.Stop()
	for len(inflight) > 0 {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			return fmt.Errorf("hub did not acknowledge %d outbox entries within %s", len(inflight), l.ackTimeout)
		case a := <-acks:
			if !inflight[a.seq] {
				l.log.Warn("hub acknowledged an outbox entry not in flight; ignoring", "seq", a.seq)
				continue
			}
			delete(inflight, a.seq)
			if a.refused {
				l.deadLetter(a.seq, "", "refused by the hub: "+a.reason)
				continue
			}
			if err := l.cfg.Outbox.Ack(a.seq); err != nil {
				return fmt.Errorf("ack outbox entry %d: %w", a.seq, err)
			}
		}
	}
	return nil
}

// ErrOffline: the call needs the hub and the link is down.
var ErrOffline = errors.New("hub is not connected")

// maxChartSize bounds a chart download.
const maxChartSize = 64 << 20

// FetchChart downloads a chart archive by digest over the live tunnel and
// checks the digest.
func (l *Link) FetchChart(ctx context.Context, digest string) ([]byte, error) {
	l.mu.Lock()
	client := l.client
	l.mu.Unlock()
	if client == nil {
		return nil, fmt.Errorf("fetch chart %s: %w", digest, ErrOffline)
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.ChartFetchTimeout)
	defer cancel()
	stream, err := client.FetchChart(ctx, &fleetv1.FetchChartRequest{Digest: digest})
	if err != nil {
		return nil, fmt.Errorf("fetch chart %s: %w", digest, err)
	}
	var buf []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("fetch chart %s: %w", digest, err)
		}
		if chunk.GetTotalSize() > maxChartSize || uint64(len(buf)+len(chunk.GetData())) > maxChartSize {
			return nil, fmt.Errorf("fetch chart %s: larger than %d bytes", digest, maxChartSize)
		}
		if buf == nil {
			buf = make([]byte, 0, chunk.GetTotalSize())
		}
		buf = append(buf, chunk.GetData()...)
	}
	sum := sha256.Sum256(buf)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
		return nil, fmt.Errorf("fetch chart %s: received archive has digest %s", digest, got)
	}
	return buf, nil
}

type agentService struct {
	fleetv1.UnimplementedAgentServer
	l *Link
}

func (a *agentService) Diagnose(context.Context, *fleetv1.DiagnoseRequest) (*fleetv1.DiagnoseResponse, error) {
	st := a.l.Status()
	return &fleetv1.DiagnoseResponse{
		AgentVersion: version.Get(), Cluster: st.Cluster, Now: timestamppb.New(a.l.cfg.Now()),
		HaveRevision: st.Revision, LinkState: st.State,
	}, nil
}

// Close stops the hub→agent gRPC server. Call after Run returned.
func (l *Link) Close() { l.grpc.Stop() }
