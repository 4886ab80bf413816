package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/pki"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

type testHub struct {
	addr  string
	ca    *pki.CA
	fleet *fleet.Registry
	gw    *gateway.Gateway
	clock *clock
}

// newHub runs a gateway with a real CA, a real bbolt store and the fleet
// registry on a loopback port.
func newHub(t *testing.T, opts ...func(*gateway.Config)) *testHub {
	t.Helper()
	return newHubWith(t, nil, opts...)
}

// newHubWith is newHub serving on wrap(listener) when wrap is not nil.
func newHubWith(t *testing.T, wrap func(net.Listener) net.Listener, opts ...func(*gateway.Config)) *testHub {
	t.Helper()
	dir := t.TempDir()
	clk := &clock{now: time.Now()}
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := fleet.New(fleet.Config{Store: st, Now: clk.Now, CAFingerprint: ca.FingerprintSum()})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.ServerCert([]string{"127.0.0.1"}, time.Hour, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Registry, cfg.Signer, cfg.Certificate, cfg.ClientCAs = reg, ca, serving, ca.Pool()
	cfg.Now = clk.Now
	for _, o := range opts {
		o(&cfg)
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Serve: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return &testHub{addr: addr, ca: ca, fleet: reg, gw: gw, clock: clk}
}

func (h *testHub) token(t *testing.T, cluster string, ttl time.Duration, uses int) string {
	t.Helper()
	info, err := h.fleet.CreateToken(context.Background(), fleet.TokenRequest{Cluster: cluster, TTL: ttl, Uses: uses})
	if err != nil {
		t.Fatal(err)
	}
	return info.Token
}

// dial opens a tunnel to the hub the way an agent does, with tc.
func (h *testHub) dial(t *testing.T, tc *tls.Config) (*tunnel.Session, *grpc.ClientConn) {
	t.Helper()
	raw, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, tc)
	sess, err := tunnel.Dial(context.Background(), conn, tunnel.DefaultConfig(), nil)
	if err != nil {
		t.Fatalf("tunnel dial: %v", err)
	}
	t.Cleanup(func() { sess.Close() })
	cc, err := sess.ClientConn()
	if err != nil {
		t.Fatal(err)
	}
	return sess, cc
}

func (h *testHub) anonTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: h.ca.Pool(), ServerName: "127.0.0.1"}
}

func csr(t *testing.T) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// enroll redeems token and returns a TLS config carrying the new identity.
func (h *testHub) enroll(t *testing.T, token string) (*tls.Config, error) {
	t.Helper()
	key, der := csr(t)
	_, cc := h.dial(t, h.anonTLS())
	resp, err := fleetv1.NewEnrollmentClient(cc).Enroll(context.Background(), &fleetv1.EnrollRequest{Token: token, CsrDer: der, AgentVersion: "test"})
	if err != nil {
		return nil, err
	}
	tc := h.anonTLS()
	tc.Certificates = []tls.Certificate{{Certificate: [][]byte{resp.GetCertificateDer()}, PrivateKey: key}}
	return tc, nil
}

func mustEnroll(t *testing.T, h *testHub, cluster string) *tls.Config {
	t.Helper()
	tc, err := h.enroll(t, h.token(t, cluster, time.Hour, 1))
	if err != nil {
		t.Fatalf("enroll %s: %v", cluster, err)
	}
	return tc
}

// hello opens a Sync stream and says hello as cluster; it returns the first
// answer or the error.
func hello(t *testing.T, cc *grpc.ClientConn, cluster string) (fleetv1.Fleet_SyncClient, *fleetv1.HubMessage, error) {
	t.Helper()
	stream, err := fleetv1.NewFleetClient(cc).Sync(context.Background())
	if err != nil {
		return nil, nil, err
	}
	if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: cluster, AgentVersion: "test"}}}); err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	msg, err := stream.Recv()
	return stream, msg, err
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(err.Error(), substr) {
		t.Fatalf("error = %v; want code %s containing %q", err, code, substr)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestEnrollThenSync(t *testing.T) {
	h := newHub(t)
	tc := mustEnroll(t, h, "edge-1")
	_, cc := h.dial(t, tc)
	stream, msg, err := hello(t, cc, "edge-1")
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if w := msg.GetWelcome(); w.GetCluster() != "edge-1" || w.GetHeartbeatSeconds() == 0 {
		t.Fatalf("first message = %v; want a welcome for edge-1", msg)
	}
	waitFor(t, "session listed", func() bool { _, ok := h.gw.Session("edge-1"); return ok })
	// Contacts are written in batches: wait for the connect to be stored.
	waitFor(t, "contact stored", func() bool {
		c, err := h.fleet.Get(context.Background(), "edge-1")
		return err == nil && !c.LastSeen.IsZero()
	})
	c, err := h.fleet.Get(context.Background(), "edge-1")
	if err != nil || c.Enrolled.IsZero() || c.AgentVersion != "test" || len(c.CertSerials) != 1 {
		t.Fatalf("stored cluster = %+v, %v", c, err)
	}
	// A heartbeat is accepted and the stream stays up.
	if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: &fleetv1.Heartbeat{}}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after CloseSend: %v; want EOF", err)
	}
	waitFor(t, "session gone", func() bool { _, ok := h.gw.Session("edge-1"); return !ok })
}

func TestEnrollRefusals(t *testing.T) {
	h := newHub(t)
	used := h.token(t, "used", time.Hour, 1)
	if _, err := h.enroll(t, used); err != nil {
		t.Fatal(err)
	}
	expired := h.token(t, "expired", time.Minute, 1)
	h.clock.Add(2 * time.Minute)
	valid := h.token(t, "valid", time.Hour, 1)
	// Same ID and CA, another well-formed secret.
	parts := strings.Split(valid, ".")
	parts[2] = strings.Repeat("a", len(parts[2]))
	wrongSecret := strings.Join(parts, ".")
	tests := []struct {
		name, token string
		code        codes.Code
		msg         string
	}{
		{"garbage", "not-a-token", codes.PermissionDenied, "join token is not valid"},
		{"empty", "", codes.PermissionDenied, "join token is not valid"},
		{"used up", used, codes.PermissionDenied, "no uses left"},
		{"expired", expired, codes.PermissionDenied, "expired"},
		{"wrong secret", wrongSecret, codes.PermissionDenied, "join token is not valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := h.enroll(t, tt.token)
			wantCode(t, err, tt.code, tt.msg)
		})
	}
	// Nothing was spent or enrolled by the refusals.
	if _, err := h.enroll(t, valid); err != nil {
		t.Fatalf("valid token after refusals: %v", err)
	}
	c, err := h.fleet.Get(context.Background(), "expired")
	if err != nil || !c.Enrolled.IsZero() {
		t.Fatalf("expired-token cluster = %+v, %v; want stored and not enrolled", c, err)
	}
}

func TestCallsNeedACertificate(t *testing.T) {
	h := newHub(t)
	_, cc := h.dial(t, h.anonTLS())
	_, _, err := hello(t, cc, "edge-1")
	wantCode(t, err, codes.Unauthenticated, "client certificate")
	_, err = fleetv1.NewFleetClient(cc).Renew(context.Background(), &fleetv1.RenewRequest{CsrDer: []byte{1}})
	wantCode(t, err, codes.Unauthenticated, "client certificate")
}

func TestForeignCACertificateRefused(t *testing.T) {
	h := newHub(t)
	mustEnroll(t, h, "edge-1")
	// An attacker's own CA issues a cert that claims cluster edge-1.
	other, err := pki.LoadOrCreateCA(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, der := csr(t)
	certDER, _, err := other.SignAgentCSR(der, "edge-1", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	tc := h.anonTLS()
	tc.Certificates = []tls.Certificate{{Certificate: [][]byte{certDER}, PrivateKey: key}}
	raw, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, tc)
	defer conn.Close()
	// In TLS 1.3 the client learns of the refusal on its first read.
	_ = conn.Handshake()
	_, err = conn.Read(make([]byte, 1))
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("read after handshake with foreign-CA cert: %v; want a TLS certificate alert", err)
	}
	if _, ok := h.gw.Session("edge-1"); ok {
		t.Fatal("foreign-CA certificate got a session")
	}
}

func TestRevokedClusterRefused(t *testing.T) {
	h := newHub(t)
	tc := mustEnroll(t, h, "edge-1")
	_, cc := h.dial(t, tc)
	stream, _, err := hello(t, cc, "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.fleet.Delete(context.Background(), "edge-1"); err != nil {
		t.Fatal(err)
	}
	h.gw.Disconnect("edge-1")
	if _, err := stream.Recv(); err == nil {
		t.Fatal("stream survived Disconnect")
	}
	_, cc2 := h.dial(t, tc)
	_, _, err = hello(t, cc2, "edge-1")
	wantCode(t, err, codes.PermissionDenied, `cluster "edge-1" was deleted`)

	// Re-created under the same name with a new token: the old cert stays
	// revoked, the new enrolment works.
	tc2 := mustEnroll(t, h, "edge-1")
	_, cc3 := h.dial(t, tc)
	_, _, err = hello(t, cc3, "edge-1")
	wantCode(t, err, codes.PermissionDenied, "replaced by a newer enrolment")
	_, cc4 := h.dial(t, tc2)
	if _, _, err := hello(t, cc4, "edge-1"); err != nil {
		t.Fatalf("new enrolment: %v", err)
	}
}

func TestAgentCannotActAsAnotherCluster(t *testing.T) {
	h := newHub(t)
	tc := mustEnroll(t, h, "edge-a")
	mustEnroll(t, h, "edge-b")
	_, cc := h.dial(t, tc)
	_, _, err := hello(t, cc, "edge-b")
	wantCode(t, err, codes.PermissionDenied, `certificate is for cluster "edge-a", not "edge-b"`)
	if _, ok := h.gw.Session("edge-b"); ok {
		t.Fatal("edge-a's agent registered as edge-b")
	}
}

func TestMalformedAndOversizedInput(t *testing.T) {
	h := newHub(t)
	good := mustEnroll(t, h, "edge-1")

	t.Run("oversized message", func(t *testing.T) {
		sess, cc := h.dial(t, h.anonTLS())
		big := make([]byte, 5<<20)
		_, err := fleetv1.NewEnrollmentClient(cc).Enroll(context.Background(), &fleetv1.EnrollRequest{Token: "x", CsrDer: big})
		wantCode(t, err, codes.ResourceExhausted, "larger than max")
		// The same session still serves calls.
		_, err = fleetv1.NewEnrollmentClient(cc).Enroll(context.Background(), &fleetv1.EnrollRequest{Token: "x", CsrDer: []byte{1}})
		wantCode(t, err, codes.PermissionDenied, "not valid")
		select {
		case <-sess.Done():
			t.Fatal("session closed by an oversized message")
		default:
		}
	})
	t.Run("bad CSR", func(t *testing.T) {
		_, cc := h.dial(t, h.anonTLS())
		_, err := fleetv1.NewEnrollmentClient(cc).Enroll(context.Background(), &fleetv1.EnrollRequest{Token: h.token(t, "bad-csr", time.Hour, 1), CsrDer: []byte("garbage")})
		wantCode(t, err, codes.InvalidArgument, "certificate request")
	})
	t.Run("first sync message not hello", func(t *testing.T) {
		_, cc := h.dial(t, good)
		stream, err := fleetv1.NewFleetClient(cc).Sync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: &fleetv1.Heartbeat{}}})
		_, err = stream.Recv()
		wantCode(t, err, codes.InvalidArgument, "first message must be hello")
	})
	t.Run("garbage bytes instead of TLS", func(t *testing.T) {
		conn, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("hub did not close a non-TLS connection cleanly: %v", err)
		}
	})
	t.Run("garbage bytes inside TLS", func(t *testing.T) {
		conn, err := tls.Dial("tcp", h.addr, good)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := conn.Write([]byte("\x7fthis is not yamux")); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("hub did not close a TLS connection carrying garbage: %v", err)
		}
	})
	// After all of that the hub still serves a good agent.
	_, cc := h.dial(t, good)
	if _, _, err := hello(t, cc, "edge-1"); err != nil {
		t.Fatalf("good agent after bad input: %v", err)
	}
}

func TestIdleConnectionClosed(t *testing.T) {
	h := newHub(t, func(c *gateway.Config) { c.SetupTimeout = 200 * time.Millisecond })
	sess, _ := h.dial(t, h.anonTLS())
	select {
	case <-sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("hub kept a connection that made no call")
	}
}

func TestRenewKeepsPreviousCertificateValid(t *testing.T) {
	h := newHub(t)
	first := mustEnroll(t, h, "edge-1")
	renew := func(tc *tls.Config) *tls.Config {
		t.Helper()
		_, cc := h.dial(t, tc)
		key, der := csr(t)
		resp, err := fleetv1.NewFleetClient(cc).Renew(context.Background(), &fleetv1.RenewRequest{CsrDer: der})
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		out := h.anonTLS()
		out.Certificates = []tls.Certificate{{Certificate: [][]byte{resp.GetCertificateDer()}, PrivateKey: key}}
		return out
	}
	second := renew(first)
	third := renew(second)
	for _, tc := range []*tls.Config{second, third} {
		_, cc := h.dial(t, tc)
		if _, _, err := hello(t, cc, "edge-1"); err != nil {
			t.Fatalf("renewed cert refused: %v", err)
		}
	}
	_, cc := h.dial(t, first)
	_, _, err := hello(t, cc, "edge-1")
	wantCode(t, err, codes.PermissionDenied, "replaced")
}

func TestReconnectResumesTLSWithSmallTicket(t *testing.T) {
	h := newHub(t)
	tc := mustEnroll(t, h, "edge-1")
	tc.ClientSessionCache = tls.NewLRUClientSessionCache(1)
	tc.CurvePreferences = []tls.CurveID{tls.X25519}
	connect := func() (resumed bool, wire uint64) {
		raw, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		counted := tunnel.NewCountingConn(raw)
		conn := tls.Client(counted, tc)
		sess, err := tunnel.Dial(context.Background(), conn, tunnel.DefaultConfig(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer sess.Close()
		cc, err := sess.ClientConn()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := hello(t, cc, "edge-1"); err != nil {
			t.Fatal(err)
		}
		return conn.ConnectionState().DidResume, counted.BytesIn() + counted.BytesOut()
	}
	r1, full := connect()
	r2, resumed := connect()
	t.Logf("connect + hello/welcome on the wire: full handshake %d B, resumed %d B", full, resumed)
	if r1 || !r2 {
		t.Fatalf("DidResume = %v then %v; want a full handshake then a resumed one", r1, r2)
	}
	if resumed >= full {
		t.Fatalf("resumed connect used %d B, full %d B; resumption should save the certificates", resumed, full)
	}
}
