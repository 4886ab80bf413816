package link

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// TestRenewedCertificateSaveFailureIsRetried: the first save of a renewed
// certificate fails. The renewal must not count as done (renewAt used to
// move first, so the save was never retried and a restart after the old
// certificate expired locked the agent out): the next attempt saves it,
// and the cache then holds the renewed certificate.
func TestRenewedCertificateSaveFailureIsRetried(t *testing.T) {
	clk := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	ca := newTestCA(t, clk.Now().Add(-time.Hour), clk.Now().Add(365*24*time.Hour))
	// Issued 25 days ago for 30 days: past its renewal time.
	old := ca.identity(t, clk.Now().Add(-25*24*time.Hour), clk.Now().Add(5*24*time.Hour))
	mc := &memCache{id: &old}
	cfg := DefaultConfig()
	cfg.Cache, cfg.Now = mc, clk.Now
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.loadIdentity(); err != nil {
		t.Fatal(err)
	}
	client := &renewClient{t: t, ca: ca, now: clk.Now}
	mc.failSaves = 1
	if err := l.maybeRenew(context.Background(), client); err == nil {
		t.Fatal("renewal with a failed save reported success")
	}
	if got, _ := mc.Identity(); !bytes.Equal(got.CertPEM, old.CertPEM) {
		t.Fatal("cache changed by a failed save")
	}
	if err := l.maybeRenew(context.Background(), client); err != nil {
		t.Fatalf("retry: %v", err)
	}
	got, _ := mc.Identity()
	if bytes.Equal(got.CertPEM, old.CertPEM) || mc.saves != 1 {
		t.Fatalf("renewed certificate not saved after the retry (saves %d)", mc.saves)
	}
	l.mu.Lock()
	inUse := l.id
	l.mu.Unlock()
	if !bytes.Equal(inUse.CertPEM, got.CertPEM) || !got.NotAfter.After(old.NotAfter) {
		t.Fatal("link does not use the saved renewed certificate")
	}
	// Renewed and saved: nothing more to do until the next renewal time.
	calls := client.calls
	if err := l.maybeRenew(context.Background(), client); err != nil || client.calls != calls {
		t.Fatalf("renewed again at once: %v, calls %d -> %d", err, calls, client.calls)
	}
}
