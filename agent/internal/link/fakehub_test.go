package link

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// syncHub is a linktest hub whose Sync handler is sync.
type syncHub struct {
	*linktest.Hub
	addr string
}

func (h *syncHub) syncCalls() int { return h.SyncCalls() }

// startSyncHub runs a hub whose certificate is signed by ca (the real
// protocol: TLS 1.3, yamux, gRPC; see linktest).
func startSyncHub(t *testing.T, ca *testCA, handler func(fleetv1.Fleet_SyncServer) error) *syncHub {
	t.Helper()
	h := linktest.Start(t, linktest.Config{CA: ca.CA, Sync: func(_ *linktest.Hub, s fleetv1.Fleet_SyncServer) error { return handler(s) }})
	return &syncHub{Hub: h, addr: h.Addr}
}

// todaysHubSync is the Sync handler of a hub that predates payload kinds:
// its Welcome names none, it acknowledges each StatusReport with a
// StatusAck of its seq, ignores heartbeats and acks, and ends the stream
// on any message it does not know (as the gateway's receive loop does).
func todaysHubSync(stored func(*fleetv1.StatusReport)) func(fleetv1.Fleet_SyncServer) error {
	return func(s fleetv1.Fleet_SyncServer) error {
		if err := answerHello(s, &fleetv1.Welcome{}); err != nil {
			return err
		}
		for {
			m, err := s.Recv()
			if err != nil {
				return err
			}
			switch m := m.GetMsg().(type) {
			case *fleetv1.AgentMessage_Heartbeat, *fleetv1.AgentMessage_Ack:
			case *fleetv1.AgentMessage_Status:
				stored(m.Status)
				if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_StatusAck{StatusAck: &fleetv1.StatusAck{Seq: m.Status.GetSeq()}}}); err != nil {
					return err
				}
			default:
				return status.Errorf(codes.InvalidArgument, "sync: unknown message %T", m)
			}
		}
	}
}

// answerHello reads the agent's hello and answers it with w, its
// cluster, clock and a 30 s heartbeat filled in.
func answerHello(s fleetv1.Fleet_SyncServer, w *fleetv1.Welcome) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "first message must be hello")
	}
	w.Cluster, w.ServerTime, w.HeartbeatSeconds = first.GetHello().GetCluster(), timestamppb.Now(), 30
	return s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Welcome{Welcome: w}})
}

// waitDrained waits until ob holds nothing.
func waitDrained(t *testing.T, ob *cache.Cache) {
	t.Helper()
	waitUntil(t, "the outbox to drain", 20*time.Second, func() bool {
		st, err := ob.OutboxStats()
		return err == nil && st.Pending == 0
	})
}

// newTestLink returns a link for an identity signed by ca, to hub addr,
// with outbox ob and the extra payload kinds.
func newTestLink(t *testing.T, ca *testCA, addr string, ob Outbox, extra ...payloadKind) *Link {
	t.Helper()
	now := time.Now()
	id := ca.identity(t, now.Add(-time.Hour), now.Add(24*time.Hour))
	id.HubAddrs = []string{addr}
	cfg := DefaultConfig()
	cfg.Cache, cfg.Outbox, cfg.Hubs = &memCache{id: &id}, ob, []string{addr}
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.kinds = append(l.kinds, extra...)
	return l
}

// runLink runs newTestLink until the test ends.
func runLink(t *testing.T, ca *testCA, addr string, ob Outbox, extra ...payloadKind) *Link {
	t.Helper()
	l := newTestLink(t, ca, addr, ob, extra...)
	startLink(t, l)
	return l
}

// startLink runs l until the test ends.
func startLink(t *testing.T, l *Link) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("link Run: %v", err)
		}
		l.Close()
	})
}

// openOutbox opens a real cache file for the outbox.
func openOutbox(t *testing.T, opts cache.Options) *cache.Cache {
	t.Helper()
	c, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	linktest.WaitUntil(t, what, within, cond)
}

// cacheOptions are the outbox options of link tests.
func cacheOptions() cache.Options { return cache.Options{NoSync: true, OutboxKinds: OutboxKinds()} }
