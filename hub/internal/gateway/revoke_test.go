package gateway_test

import (
	"context"
	"crypto/x509"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestDeleteClosesEveryConnectionOfTheCluster: Disconnect closed only the
// session registered by Sync; another connection with the same certificate
// (one that had made only a Renew or FetchChart call) stayed open.
func TestDeleteClosesEveryConnectionOfTheCluster(t *testing.T) {
	h := newHub(t)
	tc := mustEnroll(t, h, "edge-1")
	_, syncCC := h.dial(t, tc)
	if _, _, err := hello(t, syncCC, "edge-1"); err != nil {
		t.Fatal(err)
	}
	other, otherCC := h.dial(t, tc)
	// An authorised call that is not Sync.
	_, err := fleetv1.NewFleetClient(otherCC).Renew(context.Background(), &fleetv1.RenewRequest{CsrDer: []byte{1}})
	wantCode(t, err, codes.InvalidArgument, "certificate request")
	if err := h.fleet.Delete(context.Background(), "edge-1"); err != nil {
		t.Fatal(err)
	}
	h.gw.Disconnect("edge-1")
	select {
	case <-other.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("a second connection of the deleted cluster stayed open")
	}
}

// TestReenrolmentClosesOldCertificateSessions: re-enrolling a cluster
// revoked its old certificate in the store, but the connection using it
// went on being served.
func TestReenrolmentClosesOldCertificateSessions(t *testing.T) {
	h := newHub(t)
	old := mustEnroll(t, h, "edge-1")
	sess, cc := h.dial(t, old)
	if _, _, err := hello(t, cc, "edge-1"); err != nil {
		t.Fatal(err)
	}
	mustEnroll(t, h, "edge-1")
	select {
	case <-sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the old certificate's session survived a re-enrolment")
	}
}

// TestSessionClosedWhenCertificateExpires: the certificate was checked only
// at the TLS handshake, so a session outlived it.
func TestSessionClosedWhenCertificateExpires(t *testing.T) {
	h := newHub(t, func(c *gateway.Config) { c.CertTTL = time.Minute })
	tc := mustEnroll(t, h, "edge-1")
	leaf, err := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	// Just before expiry by the hub's clock: the handshake passes.
	h.clock.Add(leaf.NotAfter.Add(-2 * time.Second).Sub(h.clock.Now()))
	sess, cc := h.dial(t, tc)
	if _, _, err := hello(t, cc, "edge-1"); err != nil {
		t.Fatalf("sync before expiry: %v", err)
	}
	select {
	case <-sess.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("session outlived its certificate")
	}
}

// blockingSink holds the first SaveReport until release is closed, and
// stores reports in memory; Delete forgets a cluster's report.
type blockingSink struct {
	mu      sync.Mutex
	reports map[string]*fleetv1.StatusReport
	entered chan struct{}
	release chan struct{}
	written chan struct{} // closed when the first report is stored
	once    sync.Once
}

func (s *blockingSink) SaveReport(_ context.Context, cluster string, rep *fleetv1.StatusReport) error {
	first := false
	s.once.Do(func() { first = true })
	if first {
		close(s.entered)
		<-s.release
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports[cluster] = rep
	if first {
		close(s.written)
	}
	return nil
}

func (s *blockingSink) Delete(cluster string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.reports, cluster)
}

func (s *blockingSink) has(cluster string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reports[cluster] != nil
}

// TestDisconnectFencesInFlightReport: a status report that had passed
// authorisation was written after Disconnect returned, so the report the
// API deleted right after came back. Disconnect now waits for writes in
// flight and refuses later ones.
func TestDisconnectFencesInFlightReport(t *testing.T) {
	sink := &blockingSink{reports: map[string]*fleetv1.StatusReport{}, entered: make(chan struct{}), release: make(chan struct{}), written: make(chan struct{})}
	h := newHub(t, func(c *gateway.Config) { c.Status = sink })
	tc := mustEnroll(t, h, "edge-1")
	_, cc := h.dial(t, tc)
	stream, _, err := hello(t, cc, "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Status{Status: &fleetv1.StatusReport{Seq: 1}}}); err != nil {
		t.Fatal(err)
	}
	<-sink.entered
	deleted := make(chan struct{})
	go func() {
		// As the API's cluster delete does: store, Disconnect, reports.
		if err := h.fleet.Delete(context.Background(), "edge-1"); err != nil {
			t.Error(err)
		}
		h.gw.Disconnect("edge-1")
		sink.Delete("edge-1")
		close(deleted)
	}()
	// Let the write finish once Disconnect has done what it does before
	// waiting (forgetting the session), or has returned.
	waitFor(t, "Disconnect to start", func() bool {
		select {
		case <-deleted:
			return true
		default:
		}
		_, ok := h.gw.Session("edge-1")
		return !ok
	})
	close(sink.release)
	<-sink.written
	<-deleted
	if sink.has("edge-1") {
		t.Fatal("the status report of the deleted cluster came back after Disconnect")
	}
}

// TestOverlongHelloRefused: Hello hostname and agent version had no
// length limit; the hub stored and listed whatever came.
func TestOverlongHelloRefused(t *testing.T) {
	h := newHub(t)
	tc := mustEnroll(t, h, "edge-1")
	for _, tt := range []struct {
		name              string
		hostname, version string
		want              string
	}{
		{"hostname", strings.Repeat("h", 254), "test", "hostname is 254 bytes, at most 253"},
		{"version", "host", strings.Repeat("v", 65), "agent version is 65 bytes, at most 64"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, cc := h.dial(t, tc)
			stream, err := fleetv1.NewFleetClient(cc).Sync(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			_ = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: "edge-1", Hostname: tt.hostname, AgentVersion: tt.version}}})
			_, err = stream.Recv()
			wantCode(t, err, codes.InvalidArgument, tt.want)
			if _, ok := h.gw.Session("edge-1"); ok {
				t.Fatal("an overlong hello registered a session")
			}
		})
	}
	// At the bounds it is accepted.
	_, cc := h.dial(t, tc)
	stream, err := fleetv1.NewFleetClient(cc).Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: "edge-1", Hostname: strings.Repeat("h", 253), AgentVersion: strings.Repeat("v", 64)}}})
	if msg, err := stream.Recv(); err != nil || msg.GetWelcome() == nil {
		t.Fatalf("hello at the bounds: %v, %v", msg, err)
	}
}
