package link

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	"github.com/tetherfleet/tether/protocol/backoff"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// Tests of the loops (auto.go) and of one-shots over a whole session,
// against linktest's hub.

func newCA(t *testing.T) *testCA {
	return newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour))
}

// TestReconnectsAfterHubDropsConnection: when the hub's side of the
// connection goes away the link notices, backs off and connects again,
// counting both connects.
func TestReconnectsAfterHubDropsConnection(t *testing.T) {
	ca := newCA(t)
	hub := linktest.Start(t, linktest.Config{CA: ca.CA})
	l := runLink(t, ca, hub.Addr, nil)
	hub.Wait(t, "the first sync stream", 20*time.Second, func() bool { return hub.SyncCalls() == 1 })
	waitUntil(t, "connected", 20*time.Second, func() bool { return l.Status().State == StateConnected })
	hub.DropConnections()
	hub.Wait(t, "a second sync stream", 20*time.Second, func() bool { return hub.SyncCalls() == 2 })
	waitUntil(t, "connected again", 20*time.Second, func() bool {
		st := l.Status()
		return st.State == StateConnected && st.Connects == 2
	})
	if st := l.Status(); st.LastError != "" {
		t.Fatalf("connected again with last error %q; want it cleared", st.LastError)
	}
}

// TestRefusedByHubBacksOffToCap: a hub that refuses the agent
// (PermissionDenied: cluster deleted) puts the link in Refused, persisted
// for `tether-agent status`, and the next attempt waits the capped
// backoff; the link keeps trying.
func TestRefusedByHubBacksOffToCap(t *testing.T) {
	ca := newCA(t)
	hub := linktest.Start(t, linktest.Config{CA: ca.CA, Sync: func(*linktest.Hub, fleetv1.Fleet_SyncServer) error {
		return status.Error(codes.PermissionDenied, "cluster edge-1 was deleted")
	}})
	l := newTestLink(t, ca, hub.Addr, nil)
	mc := l.cfg.Cache.(*memCache)
	startLink(t, l)
	hub.Wait(t, "a retry after the refusal", 20*time.Second, func() bool { return hub.SyncCalls() >= 2 })
	waitUntil(t, "refused", 20*time.Second, func() bool {
		st := l.Status()
		return st.State == StateRefused && strings.Contains(st.LastError, "was deleted") && mc.linkState().State == StateRefused
	})

	bo := backoff.New(10*time.Millisecond, time.Minute)
	bo.Rand = func() float64 { return 0 } // the shortest jitter: half the wait
	state, wait := retryAfter(status.Error(codes.PermissionDenied, "deleted"), bo)
	if state != StateRefused || wait != 30*time.Second {
		t.Fatalf("after a refusal: state %s, wait %s; want refused and the cap (1m) at the shortest jitter (30s)", state, wait)
	}
}

// TestRotationWithSkewedClock: the agent's clock is three hours behind
// the hub's. Its certificate is past its renewal time; over a real
// session the link renews it, saves it and connects with it next time.
func TestRotationWithSkewedClock(t *testing.T) {
	ca := newCA(t)
	hub := linktest.Start(t, linktest.Config{CA: ca.CA, CertLife: 30 * 24 * time.Hour})
	hubNow := time.Now()
	agentNow := func() time.Time { return time.Now().Add(-3 * time.Hour) }
	old := ca.identity(t, hubNow.Add(-25*24*time.Hour), hubNow.Add(5*24*time.Hour))
	mc, l := startSkewedLink(t, hub, old, agentNow)
	hub.Wait(t, "a renewal", 20*time.Second, func() bool { return hub.Renewals() == 1 })
	waitUntil(t, "the renewed certificate saved", 20*time.Second, func() bool {
		id, _ := mc.Identity()
		return !bytes.Equal(id.CertPEM, old.CertPEM)
	})
	renewed, _ := mc.Identity()
	if !renewed.NotAfter.After(old.NotAfter.Add(20 * 24 * time.Hour)) {
		t.Fatalf("renewed certificate expires %s; want about 30 days from the hub's now", renewed.NotAfter)
	}
	if got := l.Status().CertExpires; got.Sub(renewed.NotAfter).Abs() >= time.Second { // x509 keeps whole seconds
		t.Fatalf("link shows expiry %s; want the renewed %s", got, renewed.NotAfter)
	}
	hub.DropConnections()
	hub.Wait(t, "a reconnect with the renewed certificate", 20*time.Second, func() bool { return hub.SyncCalls() == 2 })
	if n := hub.Renewals(); n != 1 {
		t.Fatalf("renewed %d times; want once", n)
	}
}

// TestCertificateExpiresWhileOffline: the hub is unreachable while the
// agent's certificate expires. The link stops trying with it and says
// Refused, and that a new token is needed, instead of Offline.
func TestCertificateExpiresWhileOffline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: every dial fails
	clk := &fakeClock{now: time.Now()}
	ca := newCA(t)
	id := ca.identity(t, clk.Now().Add(-time.Hour), clk.Now().Add(time.Hour))
	id.HubAddrs = []string{addr}
	mc := &memCache{id: &id}
	cfg := DefaultConfig()
	cfg.Cache, cfg.Hubs, cfg.Now = mc, []string{addr}, clk.Now
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	startLink(t, l)
	waitUntil(t, "offline with a dial error", 20*time.Second, func() bool {
		st := l.Status()
		return st.State == StateOffline && strings.Contains(st.LastError, "dial hub")
	})
	clk.Set(id.NotAfter.Add(time.Minute))
	waitUntil(t, "refused as expired", 20*time.Second, func() bool {
		st := l.Status()
		return st.State == StateRefused && strings.Contains(st.LastError, ErrCertExpired.Error()) && strings.Contains(st.LastError, "tether token create --cluster edge-1")
	})
	if ls := mc.linkState(); ls.State != StateRefused {
		t.Fatalf("persisted link state %+v; want refused", ls)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestChartFetchOverTunnel: a chart larger than one chunk arrives whole
// over the session; an archive that does not match its digest and a
// digest the hub does not have are errors naming the digest.
func TestChartFetchOverTunnel(t *testing.T) {
	chart := make([]byte, 100<<10)
	if _, err := rand.Read(chart); err != nil {
		t.Fatal(err)
	}
	good, forged, missing := digestOf(chart), digestOf([]byte("the real one")), digestOf([]byte("absent"))
	ca := newCA(t)
	hub := linktest.Start(t, linktest.Config{CA: ca.CA, Charts: map[string][]byte{good: chart, forged: []byte("something else")}})
	l := runLink(t, ca, hub.Addr, nil)
	var got []byte
	waitUntil(t, "the chart over a live session", 20*time.Second, func() bool {
		var err error
		got, err = l.FetchChart(context.Background(), good)
		if err != nil && !errors.Is(err, ErrOffline) {
			t.Fatalf("FetchChart %s: %v", good, err)
		}
		return err == nil
	})
	if !bytes.Equal(got, chart) {
		t.Fatalf("fetched %d bytes that differ from the %d-byte chart", len(got), len(chart))
	}
	if _, err := l.FetchChart(context.Background(), forged); err == nil || !strings.Contains(err.Error(), "received archive has digest") {
		t.Fatalf("FetchChart of a forged archive: %v; want a digest mismatch", err)
	}
	if _, err := l.FetchChart(context.Background(), missing); status.Code(errors.Unwrap(err)) != codes.NotFound || !strings.Contains(err.Error(), missing) {
		t.Fatalf("FetchChart of a missing chart: %v; want NotFound naming the digest", err)
	}
}

// memHandler is a Handler holding the desired state in memory.
type memHandler struct {
	mu    sync.Mutex
	rev   uint64
	epoch string
}

func (h *memHandler) Revision() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev
}

func (h *memHandler) Epoch() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.epoch
}

func (h *memHandler) Desired(_ context.Context, ds *fleetv1.DesiredState) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rev, h.epoch = ds.GetRevision(), ds.GetEpoch()
	return nil
}

// TestResumeSendsHaveRevision: hello carries the revision and epoch the
// agent holds, so the hub sends only what is newer; the agent stores the
// new revision before it acknowledges it, and the next hello says so (the
// hub then sends nothing).
func TestResumeSendsHaveRevision(t *testing.T) {
	ca := newCA(t)
	hub := linktest.Start(t, linktest.Config{CA: ca.CA})
	hub.SetDesired(&fleetv1.DesiredState{Revision: 8, Epoch: "e1"})
	h := &memHandler{rev: 7, epoch: "e1"}
	l := newTestLink(t, ca, hub.Addr, nil)
	l.SetHandler(h)
	startLink(t, l)
	hub.Wait(t, "revision 8 acknowledged", 20*time.Second, func() bool { return len(hub.Acked()) == 1 })
	if got := hub.Acked(); got[0] != 8 || h.Revision() != 8 {
		t.Fatalf("acked %v with the handler at %d; want 8 stored then acked", got, h.Revision())
	}
	hub.DropConnections()
	hub.Wait(t, "a second hello", 20*time.Second, func() bool { return len(hub.Hellos()) == 2 })
	hellos := hub.Hellos()
	if first, second := hellos[0], hellos[1]; first.GetHaveRevision() != 7 || second.GetHaveRevision() != 8 || second.GetHaveEpoch() != "e1" {
		t.Fatalf("hellos had revisions %d then %d (epoch %q); want 7 then 8 of e1", first.GetHaveRevision(), second.GetHaveRevision(), second.GetHaveEpoch())
	}
	waitUntil(t, "connected again", 20*time.Second, func() bool { return l.Status().Connects == 2 })
	if got := hub.Acked(); len(got) != 1 {
		t.Fatalf("acks %v after resuming at the hub's revision; want no resend", got)
	}
	if st := l.Status(); st.Revision != 8 {
		t.Fatalf("link status revision %d; want 8", st.Revision)
	}
}

// TestRenewalDueByTheHubsClock: renewal time is a point on the
// certificate's timeline, which the hub's clock keeps. An agent whose
// clock lags by 20 hours (within the skew bound) holding a 3-day
// certificate already past its renewal point by the hub's clock must
// renew now, not 20 hours late; with short certificate lifetimes that
// delay is the difference between a renewal and a lock-out.
func TestRenewalDueByTheHubsClock(t *testing.T) {
	ca := newCA(t)
	hub := linktest.Start(t, linktest.Config{CA: ca.CA, CertLife: 3 * 24 * time.Hour})
	hubNow := time.Now()
	agentNow := func() time.Time { return time.Now().Add(-20 * time.Hour) }
	// 3 days of life, 2.5 of them gone by the hub's clock: the renewal
	// point (60-73 % of the life) passed 7-17 hours ago, hub time; by the
	// agent's lagging clock it is still 3-13 hours ahead.
	old := ca.identity(t, hubNow.Add(-60*time.Hour), hubNow.Add(12*time.Hour))
	startSkewedLink(t, hub, old, agentNow)
	hub.Wait(t, "a renewal although the agent's clock says it is early", 20*time.Second, func() bool { return hub.Renewals() == 1 })
}

// startSkewedLink runs a link to hub with identity id and clock now, and
// returns its cache.
func startSkewedLink(t *testing.T, hub *linktest.Hub, id cache.Identity, now func() time.Time) (*memCache, *Link) {
	t.Helper()
	id.HubAddrs = []string{hub.Addr}
	mc := &memCache{id: &id}
	cfg := DefaultConfig()
	cfg.Cache, cfg.Hubs, cfg.Now = mc, []string{hub.Addr}, now
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	startLink(t, l)
	return mc, l
}
