package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// checkLeaks fails t if goroutines started during the test outlive it. It
// must be registered before anything else the test cleans up.
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// connKinds are the transports every tunnel test runs over, like yamux's
// testConnTypes.
var connKinds = []string{"pipe", "tcp", "tls"}

// testPKI is a CA with one hub and one agent certificate, made once.
type testPKI struct {
	pool             *x509.CertPool
	hubCert, agentCA tls.Certificate
}

var (
	pkiOnce sync.Once
	pki     testPKI
	pkiErr  error
)

const testCluster = "edge-paris-1"

func getPKI(t testing.TB) testPKI {
	t.Helper()
	pkiOnce.Do(func() { pki, pkiErr = makePKI() })
	if pkiErr != nil {
		t.Fatalf("make test PKI: %v", pkiErr)
	}
	return pki
}

func makePKI() (testPKI, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return testPKI{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tether test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return testPKI{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return testPKI{}, err
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{cn}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, err
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
	}
	p := testPKI{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	if p.hubCert, err = leaf(2, "hub.test", x509.ExtKeyUsageServerAuth); err != nil {
		return testPKI{}, err
	}
	if p.agentCA, err = leaf(3, testCluster, x509.ExtKeyUsageClientAuth); err != nil {
		return testPKI{}, err
	}
	return p, nil
}

func (p testPKI) serverTLS() *tls.Config { return ServerTLSConfig(p.hubCert, p.pool) }
func (p testPKI) clientTLS() *tls.Config {
	return ClientTLSConfig("hub.test", p.pool, &p.agentCA)
}

// connPair returns the hub and agent ends of one connection of the given
// kind; TLS connections have completed their handshake. wireHub and
// wireAgent count the bytes below TLS (for "pipe" and "tcp" they are the
// same conns as returned).
type conns struct {
	hub, agent         net.Conn
	wireHub, wireAgent *CountingConn
}

func connPair(t testing.TB, kind string) conns {
	t.Helper()
	var a, b net.Conn
	switch kind {
	case "pipe":
		a, b = net.Pipe()
	case "tcp", "tls":
		a, b = tcpPair(t)
	default:
		t.Fatalf("unknown conn kind %q", kind)
	}
	c := conns{wireHub: NewCountingConn(a), wireAgent: NewCountingConn(b)}
	c.hub, c.agent = c.wireHub, c.wireAgent
	if kind == "tls" {
		p := getPKI(t)
		hub := tls.Server(c.wireHub, p.serverTLS())
		agent := tls.Client(c.wireAgent, p.clientTLS())
		errc := make(chan error, 1)
		go func() { errc <- hub.Handshake() }()
		if err := agent.Handshake(); err != nil {
			hub.Close()
			<-errc
			t.Fatalf("agent TLS handshake: %v", err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("hub TLS handshake: %v", err)
		}
		c.hub, c.agent = hub, agent
	}
	t.Cleanup(func() { c.hub.Close(); c.agent.Close() })
	return c
}

func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	agent, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial %s: %v", ln.Addr(), err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("accept on %s: %v", ln.Addr(), r.err)
	}
	return r.c, agent
}

// hubService is a test Fleet service: Renew echoes the CSR, FetchChart
// streams "chunk=N,count=M" as M chunks of N bytes, Sync answers Hello with
// Welcome and Ack with DesiredState.
type hubService struct {
	fleetv1.UnimplementedFleetServer
	mu   sync.Mutex
	last AuthInfo
}

// allowPlain lets hubService serve calls without a tunnel (benchmarks).
var allowPlain bool

func (h *hubService) record(ctx context.Context) error {
	ai, ok := FromContext(ctx)
	if !ok {
		if allowPlain {
			return nil
		}
		return status.Error(codes.Unauthenticated, "no tunnel AuthInfo in context")
	}
	h.mu.Lock()
	h.last = ai
	h.mu.Unlock()
	return nil
}

func (h *hubService) lastAuth() AuthInfo {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

func (h *hubService) Renew(ctx context.Context, req *fleetv1.RenewRequest) (*fleetv1.RenewResponse, error) {
	if err := h.record(ctx); err != nil {
		return nil, err
	}
	return &fleetv1.RenewResponse{CertificateDer: req.GetCsrDer()}, nil
}

func (h *hubService) FetchChart(req *fleetv1.FetchChartRequest, stream grpc.ServerStreamingServer[fleetv1.ChartChunk]) error {
	if err := h.record(stream.Context()); err != nil {
		return err
	}
	var size, count int
	if _, err := fmt.Sscanf(req.GetDigest(), "chunk=%d,count=%d", &size, &count); err != nil {
		return status.Errorf(codes.InvalidArgument, "digest %q: %v", req.GetDigest(), err)
	}
	chunk := &fleetv1.ChartChunk{Data: make([]byte, size), TotalSize: uint64(size * count)}
	for range count {
		if err := stream.Send(chunk); err != nil {
			return err
		}
	}
	return nil
}

func (h *hubService) Sync(stream grpc.BidiStreamingServer[fleetv1.AgentMessage, fleetv1.HubMessage]) error {
	if err := h.record(stream.Context()); err != nil {
		return err
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var out *fleetv1.HubMessage
		switch m := msg.Msg.(type) {
		case *fleetv1.AgentMessage_Hello:
			out = &fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Welcome{Welcome: &fleetv1.Welcome{
				Cluster: m.Hello.GetCluster(), ServerTime: timestamppb.Now(), HeartbeatSeconds: 30,
			}}}
		case *fleetv1.AgentMessage_Ack:
			out = &fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Desired{Desired: &fleetv1.DesiredState{
				Revision: m.Ack.GetRevision() + 1,
			}}}
		default:
			continue
		}
		if err := stream.Send(out); err != nil {
			return err
		}
	}
}

// agentService is a test Agent service; Diagnose reports the peer's
// certificate common name as the cluster, to show the agent sees the hub.
type agentService struct {
	fleetv1.UnimplementedAgentServer
	mu   sync.Mutex
	last AuthInfo
}

func (a *agentService) Diagnose(ctx context.Context, _ *fleetv1.DiagnoseRequest) (*fleetv1.DiagnoseResponse, error) {
	ai, ok := FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no tunnel AuthInfo in context")
	}
	a.mu.Lock()
	a.last = ai
	a.mu.Unlock()
	return &fleetv1.DiagnoseResponse{AgentVersion: "test", Cluster: testCluster, Now: timestamppb.Now(), LinkState: "up"}, nil
}

func (a *agentService) lastAuth() AuthInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// pair is a hub and an agent joined by a tunnel.
type pair struct {
	conns
	hub, agent         *Session
	hubGRPC, agentGRPC *grpc.Server
	hubSvc             *hubService
	agentSvc           *agentService
}

type pairOpts struct {
	hubCfg, agentCfg *Config
	noAgentServer    bool
}

func newPair(t testing.TB, kind string, o pairOpts) *pair {
	t.Helper()
	hubCfg, agentCfg := testConfig(), testConfig()
	if o.hubCfg != nil {
		hubCfg = *o.hubCfg
	}
	if o.agentCfg != nil {
		agentCfg = *o.agentCfg
	}
	p := &pair{conns: connPair(t, kind), hubSvc: &hubService{}, agentSvc: &agentService{}}
	p.hubGRPC = grpc.NewServer(ServerOptions(hubCfg)...)
	fleetv1.RegisterFleetServer(p.hubGRPC, p.hubSvc)
	t.Cleanup(p.hubGRPC.Stop)
	if !o.noAgentServer {
		p.agentGRPC = grpc.NewServer(ServerOptions(agentCfg)...)
		fleetv1.RegisterAgentServer(p.agentGRPC, p.agentSvc)
		t.Cleanup(p.agentGRPC.Stop)
	}
	srv, err := NewServer(hubCfg, p.hubGRPC)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx := context.Background()
	if p.hub, err = srv.ServeConn(ctx, p.conns.hub); err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	t.Cleanup(func() { p.hub.Close() })
	if p.agent, err = Dial(ctx, p.conns.agent, agentCfg, p.agentGRPC); err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { p.agent.Close() })
	return p
}

// testConfig is DefaultConfig with keepalive left at its default: tests
// that need a fast keepalive set it themselves.
func testConfig() Config { return DefaultConfig() }

func fleetClient(t testing.TB, s *Session) fleetv1.FleetClient {
	t.Helper()
	cc, err := s.ClientConn()
	if err != nil {
		t.Fatalf("ClientConn: %v", err)
	}
	return fleetv1.NewFleetClient(cc)
}

func agentClient(t testing.TB, s *Session) fleetv1.AgentClient {
	t.Helper()
	cc, err := s.ClientConn()
	if err != nil {
		t.Fatalf("ClientConn: %v", err)
	}
	return fleetv1.NewAgentClient(cc)
}

func callCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// waitDone waits for s to end, failing t after timeout.
func waitDone(t testing.TB, s *Session, timeout time.Duration) {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(timeout):
		t.Fatalf("session with %s still up after %v", s.RemoteAddr(), timeout)
	}
}

// waitFor polls cond until it holds, failing t after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

func errContains(err error, sub string) bool {
	return err != nil && strings.Contains(err.Error(), sub)
}

func tlsServer(c net.Conn, p testPKI) *tls.Conn { return tls.Server(c, p.serverTLS()) }
func tlsClient(c net.Conn, p testPKI) *tls.Conn { return tls.Client(c, p.clientTLS()) }
