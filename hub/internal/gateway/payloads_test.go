package gateway_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// recordingSink stores status reports and payloads of one kind in memory.
type recordingSink struct {
	mu       sync.Mutex
	reports  []uint64 // seqs
	payloads []string
}

func (s *recordingSink) SaveReport(_ context.Context, _ string, rep *fleetv1.StatusReport) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports = append(s.reports, rep.GetSeq())
	return nil
}

func (s *recordingSink) ReceivePayload(_ context.Context, _ string, seq uint64, data []byte) error {
	if string(data) == "bad batch" {
		return fmt.Errorf("%w: metrics batch %d does not decode", gateway.ErrPayloadRefused, seq)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.payloads = append(s.payloads, string(data))
	return nil
}

func (s *recordingSink) got() ([]uint64, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reports), slices.Clone(s.payloads)
}

func statusBytes(t *testing.T, rev uint64) []byte {
	t.Helper()
	b, err := proto.Marshal(&fleetv1.StatusReport{Revision: rev})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTodaysAgentWithNewHub: an agent that predates payload kinds offers
// none in its Hello and sends StatusReport messages; the hub names no
// kinds in its Welcome and answers each report with a StatusAck, as before.
func TestTodaysAgentWithNewHub(t *testing.T) {
	sink := &recordingSink{}
	h := newHub(t, func(c *gateway.Config) {
		c.Status = sink
		c.Payloads = map[string]gateway.PayloadReceiver{"metrics": sink}
	})
	_, cc := h.dial(t, mustEnroll(t, h, "edge-1"))
	stream, msg, err := hello(t, cc, "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if w := msg.GetWelcome(); w == nil || len(w.GetPayloadKinds()) != 0 {
		t.Fatalf("welcome = %v; want one naming no payload kinds", msg)
	}
	for seq := uint64(1); seq <= 2; seq++ {
		if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Status{Status: &fleetv1.StatusReport{Seq: seq}}}); err != nil {
			t.Fatal(err)
		}
		m, err := stream.Recv()
		if err != nil || m.GetStatusAck().GetSeq() != seq {
			t.Fatalf("answer to report %d = %v, %v; want a StatusAck", seq, m, err)
		}
	}
	// A heartbeat without per-kind counters still reports the totals.
	if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: &fleetv1.Heartbeat{OutboxPending: 3, OutboxDropped: 4}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "heartbeat counters", func() bool {
		si, ok := h.gw.Session("edge-1")
		return ok && si.OutboxPending == 3 && si.OutboxDropped == 4 && len(si.OutboxKinds) == 0
	})
	if reports, _ := sink.got(); !slices.Equal(reports, []uint64{1, 2}) {
		t.Fatalf("stored reports %v", reports)
	}
}

// TestHubAcksMixedBatchBySeq: a new agent offers status, metrics and a
// kind the hub does not know; the hub accepts the first two. A batch of
// status, metrics, a corrupt status and a refused metrics batch is
// answered payload by payload, by seq: stored or refused, so the agent can
// remove every entry.
func TestHubAcksMixedBatchBySeq(t *testing.T) {
	sink := &recordingSink{}
	h := newHub(t, func(c *gateway.Config) {
		c.Status = sink
		c.Payloads = map[string]gateway.PayloadReceiver{"metrics": sink}
	})
	_, cc := h.dial(t, mustEnroll(t, h, "edge-1"))
	stream, err := fleetv1.NewFleetClient(cc).Sync(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{
		Cluster: "edge-1", AgentVersion: "test", PayloadKinds: []string{"status", "metrics", "logs"},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := stream.Recv()
	if err != nil || !slices.Equal(msg.GetWelcome().GetPayloadKinds(), []string{"status", "metrics"}) {
		t.Fatalf("welcome = %v, %v; want payload kinds [status metrics]", msg, err)
	}
	batch := []*fleetv1.Payload{
		{Seq: 10, Kind: "status", Data: statusBytes(t, 7)},
		{Seq: 11, Kind: "metrics", Data: []byte("m0")},
		{Seq: 12, Kind: "status", Data: []byte("\xff\xff not a status report")},
		{Seq: 13, Kind: "metrics", Data: []byte("bad batch")},
		{Seq: 14, Kind: "logs", Data: []byte("not negotiated")},
	}
	for _, p := range batch {
		if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Payload{Payload: p}}); err != nil {
			t.Fatal(err)
		}
	}
	var stored, refused []uint64
	for range batch {
		m, err := stream.Recv()
		a := m.GetPayloadAck()
		if err != nil || a == nil {
			t.Fatalf("answer = %v, %v; want a PayloadAck", m, err)
		}
		if a.GetRefused() {
			refused = append(refused, a.GetSeq())
		} else {
			stored = append(stored, a.GetSeq())
		}
	}
	if !slices.Equal(stored, []uint64{10, 11}) || !slices.Equal(refused, []uint64{12, 13, 14}) {
		t.Fatalf("stored %v, refused %v; want [10 11], [12 13 14]", stored, refused)
	}
	reports, payloads := sink.got()
	if !slices.Equal(reports, []uint64{10}) || !slices.Equal(payloads, []string{"m0"}) {
		t.Fatalf("stored reports %v, payloads %v", reports, payloads)
	}
	err = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: &fleetv1.Heartbeat{
		OutboxPending: 2, OutboxKinds: []*fleetv1.OutboxKindStats{{Kind: "metrics", Pending: 2, Dropped: 5, DeadLettered: 1}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "per-kind counters", func() bool {
		si, ok := h.gw.Session("edge-1")
		return ok && len(si.OutboxKinds) == 1 && si.OutboxKinds[0].Dropped == 5 && si.OutboxKinds[0].DeadLettered == 1 &&
			slices.Equal(si.PayloadKinds, []string{"status", "metrics"})
	})
}

// TestHelloPayloadKindsBounded: payload kinds in a hello are untrusted
// input; too many, or a malformed one, end the stream.
func TestHelloPayloadKindsBounded(t *testing.T) {
	h := newHub(t)
	_, cc := h.dial(t, mustEnroll(t, h, "edge-1"))
	for _, kinds := range [][]string{make([]string, fleetv1.MaxPayloadKinds+1), {"Status"}, {"a\x00b"}} {
		for i := range kinds {
			if kinds[i] == "" {
				kinds[i] = fmt.Sprintf("k%d", i)
			}
		}
		stream, err := fleetv1.NewFleetClient(cc).Sync(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: "edge-1", AgentVersion: "test", PayloadKinds: kinds}}}); err != nil {
			t.Fatal(err)
		}
		_, err = stream.Recv()
		wantCode(t, err, codes.InvalidArgument, "payload kind")
	}
}
