// Package linktest runs a small hub for agent tests that speaks the real
// protocol: TLS 1.3, a yamux session, gRPC both ways. It enrols agents
// with a join token pinned to its CA, renews their certificates, serves
// charts by digest and runs a Sync handler (by default one that accepts
// status payloads, acknowledges each by seq and sends a desired state set
// by the test). The model is tailscale's tstest/integration/testcontrol:
// a fake of the server small enough to read, so the client's retry,
// refusal and rotation paths get fast unit tests.
package linktest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/jointoken"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// CA signs the certificates of a test hub and its agents.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// NewCA returns a CA valid over [notBefore, notAfter].
func NewCA(t testing.TB, notBefore, notAfter time.Time) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, Key: key}
}

var serials struct {
	sync.Mutex
	n int64
}

// Sign issues a certificate for pub valid over [notBefore, notAfter]: a
// hub (server) certificate, or a client one for cluster "edge-1".
func (ca *CA) Sign(t testing.TB, pub any, server bool, notBefore, notAfter time.Time) []byte {
	t.Helper()
	der, err := ca.sign(pub, server, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (ca *CA) sign(pub any, server bool, notBefore, notAfter time.Time) ([]byte, error) {
	serials.Lock()
	serials.n++
	n := serials.n + 1
	serials.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: Cluster},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{{Scheme: "tether", Host: "cluster", Path: "/" + Cluster}},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.URIs = nil
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
}

// Cluster is the cluster every agent of a test hub is enrolled as.
const Cluster = "edge-1"

// Config configures a Hub.
type Config struct {
	// CA signs the hub's and the agents' certificates; nil makes one.
	CA *CA
	// Sync handles each Sync stream; nil is the hub's own handler
	// (Hub.DefaultSync).
	Sync func(*Hub, fleetv1.Fleet_SyncServer) error
	// Charts are the archives the hub serves, by digest ("sha256:...").
	Charts map[string][]byte
	// CertLife is the lifetime of the certificates it issues; 0 is 24h.
	CertLife time.Duration
	// Now is the hub's clock; nil is time.Now.
	Now func() time.Time
	// AcceptKinds are payload kinds besides status that DefaultSync
	// accepts (when offered) and stores as they come (see Payloads).
	AcceptKinds []string
	// Features are the wire features its Welcome names
	// (fleetv1.FeatureMetricSymbols, ...); nil names none, as an older hub.
	Features []string
}

// Payload is one payload DefaultSync received, in arrival order.
type Payload struct {
	Seq  uint64
	Kind string
	Data []byte
}

// Hub is a running test hub.
type Hub struct {
	fleetv1.UnimplementedFleetServer
	fleetv1.UnimplementedEnrollmentServer

	// Addr is the hub's agent address (HOST:PORT on loopback).
	Addr string
	// Token is a join token pinned to the hub's CA; Enroll accepts it.
	Token string
	// CA is the hub's CA.
	CA *CA

	cfg Config

	mu       sync.Mutex
	conns    []net.Conn
	syncs    int
	enrolls  int
	renewals int
	hellos   []*fleetv1.Hello
	reports  []*fleetv1.StatusReport
	acked    []uint64
	desired  *fleetv1.DesiredState
	payloads []Payload
	down     bool
	changed  chan struct{}
}

// Start runs a hub until the test ends.
func Start(t testing.TB, cfg Config) *Hub {
	t.Helper()
	if cfg.CA == nil {
		cfg.CA = NewCA(t, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
	}
	if cfg.CertLife <= 0 {
		cfg.CertLife = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sync == nil {
		cfg.Sync = (*Hub).DefaultSync
	}
	tok, err := jointoken.New(sha256.Sum256(cfg.CA.Cert.Raw), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := cfg.Now()
	der := cfg.CA.Sign(t, &key.PublicKey, true, now.Add(-5*time.Minute), now.Add(time.Hour))
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der, cfg.CA.Cert.Raw}, PrivateKey: key}},
		// Enrolling agents have no certificate yet.
		ClientAuth: tls.RequestClientCert,
	}
	tcfg := tunnel.DefaultConfig()
	gs := grpc.NewServer(tunnel.ServerOptions(tcfg)...)
	h := &Hub{Token: tok.String(), CA: cfg.CA, cfg: cfg, changed: make(chan struct{})}
	fleetv1.RegisterFleetServer(gs, h)
	fleetv1.RegisterEnrollmentServer(gs, h)
	ts, err := tunnel.NewServer(tcfg, gs)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.Addr = ln.Addr().String()
	var sessions []*tunnel.Session
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.mu.Lock()
			down := h.down
			if !down {
				h.conns = append(h.conns, c)
			}
			h.mu.Unlock()
			if down {
				c.Close()
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := ts.ServeConn(ctx, tls.Server(c, tc))
			cancel()
			if err != nil {
				t.Logf("test hub: serve connection: %v", err)
				continue
			}
			sessions = append(sessions, s)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		gs.Stop()
		for _, s := range sessions {
			s.Close()
		}
		h.DropConnections()
	})
	return h
}

// DropConnections closes every agent connection, as a hub that crashed or
// a network that broke would; the listener stays open.
func (h *Hub) DropConnections() {
	h.mu.Lock()
	conns := h.conns
	h.conns = nil
	h.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// SetDown takes the hub off the network (true: every connection is closed
// and new ones are closed at once, as an outage would) or back on.
func (h *Hub) SetDown(down bool) {
	h.mu.Lock()
	h.down = down
	h.mu.Unlock()
	if down {
		h.DropConnections()
	}
}

// Payloads are the payloads received (status and AcceptKinds), in order.
func (h *Hub) Payloads() []Payload {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.payloads)
}

func (h *Hub) note(f func()) {
	h.mu.Lock()
	f()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
}

// Wait waits until cond holds (it is checked after every change the hub
// sees: a stream, hello, report, ack, enrolment or renewal) or the
// deadline passes.
func (h *Hub) Wait(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		h.mu.Lock()
		changed := h.changed
		h.mu.Unlock()
		if cond() {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("test hub: timed out after %s waiting for %s", within, what)
		}
	}
}

// SyncCalls is the number of Sync streams opened.
func (h *Hub) SyncCalls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.syncs
}

// Enrolls is the number of successful enrolments.
func (h *Hub) Enrolls() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.enrolls
}

// Renewals is the number of certificates renewed.
func (h *Hub) Renewals() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.renewals
}

// Hellos are the Hello messages received, in order.
func (h *Hub) Hellos() []*fleetv1.Hello {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.hellos)
}

// Reports are the status reports stored, in order.
func (h *Hub) Reports() []*fleetv1.StatusReport {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.reports)
}

// Acked are the desired revisions the agents acknowledged, in order.
func (h *Hub) Acked() []uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.acked)
}

// SetDesired is the desired state DefaultSync sends to an agent whose
// hello has an older revision (a delta, as the hub would compute it).
func (h *Hub) SetDesired(ds *fleetv1.DesiredState) { h.note(func() { h.desired = ds }) }

// Sync counts the stream and runs Config.Sync.
func (h *Hub) Sync(s fleetv1.Fleet_SyncServer) error {
	h.note(func() { h.syncs++ })
	return h.cfg.Sync(h, s)
}

// Welcome is the hub's answer to hello: its clock, a 30 s heartbeat, and
// of the offered payload kinds the status one and AcceptKinds, and
// Config.Features.
func (h *Hub) Welcome(hello *fleetv1.Hello) *fleetv1.Welcome {
	w := &fleetv1.Welcome{Cluster: hello.GetCluster(), ServerTime: timestamppb.New(h.cfg.Now()), HeartbeatSeconds: 30, Features: slices.Clone(h.cfg.Features)}
	for _, k := range append([]string{fleetv1.PayloadKindStatus}, h.cfg.AcceptKinds...) {
		if slices.Contains(hello.GetPayloadKinds(), k) {
			w.PayloadKinds = append(w.PayloadKinds, k)
		}
	}
	return w
}

// DefaultSync answers hello with Welcome, sends the desired state set with
// SetDesired if it is newer than the hello's revision, stores status
// payloads (new and legacy form) acknowledging each by seq, and records
// desired-state acks.
func (h *Hub) DefaultSync(s fleetv1.Fleet_SyncServer) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "first message must be hello")
	}
	h.note(func() { h.hellos = append(h.hellos, hello) })
	if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Welcome{Welcome: h.Welcome(hello)}}); err != nil {
		return err
	}
	h.mu.Lock()
	ds := h.desired
	h.mu.Unlock()
	if ds != nil && ds.GetRevision() > hello.GetHaveRevision() {
		if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Desired{Desired: ds}}); err != nil {
			return err
		}
	}
	for {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		switch m := m.GetMsg().(type) {
		case *fleetv1.AgentMessage_Heartbeat:
		case *fleetv1.AgentMessage_Ack:
			h.note(func() { h.acked = append(h.acked, m.Ack.GetRevision()) })
		case *fleetv1.AgentMessage_Status:
			h.note(func() { h.reports = append(h.reports, m.Status) })
			if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_StatusAck{StatusAck: &fleetv1.StatusAck{Seq: m.Status.GetSeq()}}}); err != nil {
				return err
			}
		case *fleetv1.AgentMessage_Payload:
			ack := &fleetv1.PayloadAck{Seq: m.Payload.GetSeq()}
			rep := &fleetv1.StatusReport{}
			p := Payload{Seq: m.Payload.GetSeq(), Kind: m.Payload.GetKind(), Data: m.Payload.GetData()}
			switch {
			case slices.Contains(h.cfg.AcceptKinds, p.Kind):
				h.note(func() { h.payloads = append(h.payloads, p) })
			case p.Kind != fleetv1.PayloadKindStatus || proto.Unmarshal(p.Data, rep) != nil:
				ack.Refused, ack.Reason = true, "test hub stores status reports only"
			default:
				h.note(func() { h.reports = append(h.reports, rep); h.payloads = append(h.payloads, p) })
			}
			if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_PayloadAck{PayloadAck: ack}}); err != nil {
				return err
			}
		default:
			return status.Errorf(codes.InvalidArgument, "test hub: unknown message %T", m)
		}
	}
}

// Enroll accepts the hub's Token and signs the CSR.
func (h *Hub) Enroll(_ context.Context, req *fleetv1.EnrollRequest) (*fleetv1.EnrollResponse, error) {
	if req.GetToken() != h.Token {
		return nil, status.Error(codes.PermissionDenied, "test hub: unknown join token")
	}
	der, na, err := h.signCSR(req.GetCsrDer())
	if err != nil {
		return nil, err
	}
	h.note(func() { h.enrolls++ })
	return &fleetv1.EnrollResponse{Cluster: Cluster, CertificateDer: der, CaDer: h.CA.Cert.Raw, NotAfter: timestamppb.New(na)}, nil
}

// Renew signs the CSR of a connected agent.
func (h *Hub) Renew(_ context.Context, req *fleetv1.RenewRequest) (*fleetv1.RenewResponse, error) {
	der, na, err := h.signCSR(req.GetCsrDer())
	if err != nil {
		return nil, err
	}
	h.note(func() { h.renewals++ })
	return &fleetv1.RenewResponse{CertificateDer: der, NotAfter: timestamppb.New(na)}, nil
}

func (h *Hub) signCSR(csrDER []byte) ([]byte, time.Time, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, time.Time{}, status.Errorf(codes.InvalidArgument, "test hub: CSR: %v", err)
	}
	now := h.cfg.Now()
	na := now.Add(h.cfg.CertLife)
	der, err := h.CA.sign(csr.PublicKey, false, now.Add(-5*time.Minute), na)
	if err != nil {
		return nil, time.Time{}, status.Errorf(codes.Internal, "test hub: sign: %v", err)
	}
	return der, na, nil
}

// chartChunk is the size of the chunks FetchChart sends.
const chartChunk = 16 << 10

// FetchChart streams Config.Charts[digest] in chunks.
func (h *Hub) FetchChart(req *fleetv1.FetchChartRequest, s grpc.ServerStreamingServer[fleetv1.ChartChunk]) error {
	data, ok := h.cfg.Charts[req.GetDigest()]
	if !ok {
		return status.Errorf(codes.NotFound, "test hub: no chart %s", req.GetDigest())
	}
	for off := 0; off == 0 || off < len(data); off += chartChunk {
		end := min(off+chartChunk, len(data))
		if err := s.Send(&fleetv1.ChartChunk{Data: data[off:end], TotalSize: uint64(len(data))}); err != nil {
			return err
		}
	}
	return nil
}

// WaitUntil polls cond until it holds or the deadline passes, for what the
// hub does not see (the agent's own state).
func WaitUntil(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
