package link

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// eventsKind is a payload kind newer than every hub of these tests knows
// of unless it says so: it has no legacy form.
var eventsKind = payloadKind{outbox: cache.OutboxKind{Name: "events", Priority: 10, MaxEntries: 100}}

func withEvents() cache.Options {
	o := cacheOptions()
	o.OutboxKinds = append(o.OutboxKinds, eventsKind.outbox)
	return o
}

// TestNewAgentWithTodaysHub: against a hub that predates payload kinds
// (its Welcome names none, it knows only StatusReport and ends the stream
// on anything else) the agent sends status the old way and holds every
// other kind in the outbox: not sent, not lost, not dead-lettered.
func TestNewAgentWithTodaysHub(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	var got storedReports
	hub := startSyncHub(t, ca, todaysHubSync(got.add))
	ob := openOutbox(t, withEvents())
	for _, e := range []struct {
		kind string
		data []byte
	}{{"events", []byte("m0")}, {KindStatus, statusPayload(t, 1)}, {"events", []byte("m1")}, {KindStatus, statusPayload(t, 2)}} {
		if err := ob.Enqueue(e.kind, e.data); err != nil {
			t.Fatal(err)
		}
	}
	l := runLink(t, ca, hub.addr, ob, eventsKind)
	waitUntil(t, "status to drain", 20*time.Second, func() bool {
		st, err := ob.OutboxStats()
		return err == nil && st.Kinds[KindStatus].Pending == 0
	})
	st, _ := ob.OutboxStats()
	if m := st.Kinds["events"]; m.Pending != 2 || m.DeadLettered != 0 || st.DeadLettered != 0 {
		t.Fatalf("outbox = %+v; want both events held", st)
	}
	if got.n() != 2 || hub.syncCalls() != 1 || l.Status().State != StateConnected {
		t.Fatalf("hub stored %d reports over %d streams, link %s; want 2 over 1, connected", got.n(), hub.syncCalls(), l.Status().State)
	}
}

// newHub is the Sync handler of a hub that accepts kinds (of those the
// agent offers) as Payload messages, acknowledges each by seq, and refuses
// payloads whose data is "refuse me".
type newHub struct {
	kinds []string

	mu       sync.Mutex
	hello    *fleetv1.Hello
	received []string
	legacy   int
}

func (h *newHub) sync(s fleetv1.Fleet_SyncServer) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.hello = first.GetHello()
	h.mu.Unlock()
	var accepted []string
	for _, k := range first.GetHello().GetPayloadKinds() {
		if slices.Contains(h.kinds, k) {
			accepted = append(accepted, k)
		}
	}
	if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Welcome{Welcome: &fleetv1.Welcome{
		ServerTime: timestamppb.Now(), HeartbeatSeconds: 30, PayloadKinds: accepted,
	}}}); err != nil {
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
			h.mu.Lock()
			h.legacy++
			h.mu.Unlock()
			if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_StatusAck{StatusAck: &fleetv1.StatusAck{Seq: m.Status.GetSeq()}}}); err != nil {
				return err
			}
		case *fleetv1.AgentMessage_Payload:
			p := m.Payload
			ack := &fleetv1.PayloadAck{Seq: p.GetSeq()}
			if string(p.GetData()) == "refuse me" {
				ack.Refused, ack.Reason = true, "bad batch"
			} else {
				h.mu.Lock()
				h.received = append(h.received, p.GetKind())
				h.mu.Unlock()
			}
			if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_PayloadAck{PayloadAck: ack}}); err != nil {
				return err
			}
		default:
			return status.Errorf(codes.InvalidArgument, "unknown message %T", m)
		}
	}
}

func (h *newHub) got() (hello *fleetv1.Hello, received []string, legacy int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hello, slices.Clone(h.received), h.legacy
}

// TestNewAgentWithNewHub: the agent offers its kinds in Hello; the hub
// accepts status and events; everything travels as Payload, in priority
// order, is removed on its ack, and a refused payload is dead-lettered.
func TestNewAgentWithNewHub(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	h := &newHub{kinds: []string{KindStatus, "events"}}
	hub := startSyncHub(t, ca, h.sync)
	ob := openOutbox(t, withEvents())
	for _, e := range []struct {
		kind string
		data []byte
	}{{"events", []byte("m0")}, {"events", []byte("refuse me")}, {KindStatus, statusPayload(t, 1)}} {
		if err := ob.Enqueue(e.kind, e.data); err != nil {
			t.Fatal(err)
		}
	}
	runLink(t, ca, hub.addr, ob, eventsKind)
	waitUntil(t, "the outbox to drain", 20*time.Second, func() bool {
		st, err := ob.OutboxStats()
		return err == nil && st.Pending == 0
	})
	hello, received, legacy := h.got()
	if !slices.Equal(hello.GetPayloadKinds(), []string{KindStatus, "events"}) {
		t.Errorf("hello offered %v", hello.GetPayloadKinds())
	}
	if !slices.Equal(received, []string{KindStatus, "events"}) || legacy != 0 {
		t.Errorf("hub received %v as payloads and %d legacy reports; want status then events, none legacy", received, legacy)
	}
	if st, _ := ob.OutboxStats(); st.Kinds["events"].DeadLettered != 1 || st.DeadLettered != 1 {
		t.Errorf("outbox = %+v; want the refused events dead-lettered", st)
	}
}

// TestLinkStopsWithUnackedOutbox: when the agent stopped while a batch
// waited for the hub's acknowledgement, the drain went back to the outbox
// (the entries were still there) and waited again, at once, forever: Run
// never returned and the agent could not shut down.
func TestLinkStopsWithUnackedOutbox(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	received := make(chan struct{}, 1)
	hub := startSyncHub(t, ca, func(s fleetv1.Fleet_SyncServer) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_Welcome{Welcome: &fleetv1.Welcome{ServerTime: timestamppb.Now(), HeartbeatSeconds: 30}}}); err != nil {
			return err
		}
		for {
			m, err := s.Recv()
			if err != nil {
				return err
			}
			if m.GetStatus() != nil { // stored, never acknowledged
				select {
				case received <- struct{}{}:
				default:
				}
			}
		}
	})
	ob := openOutbox(t, cacheOptions())
	if err := ob.Enqueue(KindStatus, statusPayload(t, 1)); err != nil {
		t.Fatal(err)
	}
	l := newTestLink(t, ca, hub.addr, ob)
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	select {
	case <-received:
	case <-time.After(20 * time.Second):
		t.Fatal("the hub never received the status report")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after its context was cancelled with a batch awaiting acknowledgement")
	}
	if st, _ := ob.OutboxStats(); st.Pending != 1 {
		t.Fatalf("outbox = %+v; the unacknowledged report must stay", st)
	}
}
