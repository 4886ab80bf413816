package link

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func hubChain(t *testing.T, ca *testCA, nb, na time.Time) tls.ConnectionState {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(ca.sign(t, &key.PublicKey, true, nb, na))
	if err != nil {
		t.Fatal(err)
	}
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, ca.Cert}}
}

// TestHubCertVerifiedDespiteAgentClockLag: an agent whose clock lags the
// hub by two hours used to fail every handshake with a freshly issued hub
// certificate (NotBefore = hub now - 5 min), and gave up enrolment as if
// the hub were an impostor. Within MaxClockSkew the chain is accepted;
// beyond it the error is ErrClockSkew, which is retried, not permanent.
func TestHubCertVerifiedDespiteAgentClockLag(t *testing.T) {
	hubNow := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ca := newTestCA(t, hubNow.Add(-5*time.Minute), hubNow.Add(365*24*time.Hour))
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cs := hubChain(t, ca, hubNow.Add(-5*time.Minute), hubNow.Add(90*24*time.Hour))
	log := slog.New(slog.DiscardHandler)

	if err := verifyChain(cs, pool, hubNow.Add(-2*time.Hour), log); err != nil {
		t.Fatalf("agent 2h behind: %v", err)
	}
	err := verifyChain(cs, pool, hubNow.Add(-30*24*time.Hour), log)
	if !errors.Is(err, ErrClockSkew) || errors.Is(err, ErrPinMismatch) || permanent(err) {
		t.Fatalf("agent 30 days behind: %v; want a retried ErrClockSkew", err)
	}
	// A foreign CA is still refused, at any clock.
	other := newTestCA(t, hubNow.Add(-time.Hour), hubNow.Add(time.Hour))
	foreign := hubChain(t, other, hubNow.Add(-5*time.Minute), hubNow.Add(time.Hour))
	if err := verifyChain(foreign, pool, hubNow, log); !errors.Is(err, ErrPinMismatch) || !permanent(err) {
		t.Fatalf("foreign chain: %v; want a permanent ErrPinMismatch", err)
	}
}

// TestWelcomeServerTimeCorrectsVerificationClock: the skew measured from
// Welcome.server_time is applied when checking hub certificate times.
func TestWelcomeServerTimeCorrectsVerificationClock(t *testing.T) {
	clk := &fakeClock{now: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	cfg := DefaultConfig()
	cfg.Cache, cfg.Now = &memCache{}, clk.Now
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hubNow := clk.Now().Add(3 * time.Hour)
	l.noteServerTime(welcomeAt(hubNow), "hub")
	if got := l.hubNow(); !got.Equal(hubNow) {
		t.Fatalf("hubNow = %v; want %v", got, hubNow)
	}
	l.noteServerTime(welcomeAt(clk.Now().Add(40*24*time.Hour)), "hub")
	if got := l.hubNow(); !got.Equal(clk.Now()) {
		t.Fatalf("skew beyond the bound was applied: %v", got)
	}
}

// TestExpiredCertificateSaysReEnrolWithNewToken: an expired agent
// certificate showed as Offline with a TLS error. The link must say that a
// new token is needed, and how to get one.
func TestExpiredCertificateSaysReEnrolWithNewToken(t *testing.T) {
	clk := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	ca := newTestCA(t, clk.Now().Add(-60*24*time.Hour), clk.Now().Add(365*24*time.Hour))
	id := ca.identity(t, clk.Now().Add(-40*24*time.Hour), clk.Now().Add(-10*24*time.Hour))
	mc := &memCache{id: &id}
	cfg := DefaultConfig()
	cfg.Cache, cfg.Now = mc, clk.Now
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	want := "certificate expired at " + id.NotAfter.UTC().Format(time.RFC3339) + "; re-enrol with a new token: tether token create --cluster edge-1"
	waitUntil(t, "link Refused saying "+want, 10*time.Second, func() bool {
		st := l.Status()
		return st.State == StateRefused && strings.Contains(st.LastError, want)
	})
	if ls := mc.linkState(); !strings.Contains(ls.LastError, want) {
		t.Fatalf("persisted link state %+v lacks %q", ls, want)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
