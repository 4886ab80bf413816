package link

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestDrainWindowSlides: the drain keeps at most drainBatch entries
// unanswered, and sends more as soon as half of them are answered rather
// than after all of them, so the hub is never left without work while the
// agent commits acks. Every entry is sent once and the outbox empties.
func TestDrainWindowSlides(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	var (
		mu         sync.Mutex
		got        []uint64 // payload seqs in arrival order
		acked      int
		maxPending int
		allow      = 0 // acks the hub may send
		auto       bool
		changed    = make(chan struct{}, 1)
	)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	hub := linktest.Start(t, linktest.Config{CA: ca.CA, Sync: func(_ *linktest.Hub, s fleetv1.Fleet_SyncServer) error {
		if err := answerHello(s, &fleetv1.Welcome{PayloadKinds: []string{fleetv1.PayloadKindStatus, KindMetrics}, Features: symbolsFeature}); err != nil {
			return err
		}
		// Acks go out from here, as the test allows them.
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case <-done:
					return
				case <-changed:
				}
				for {
					mu.Lock()
					if acked >= len(got) || (!auto && acked >= allow) {
						mu.Unlock()
						break
					}
					seq := got[acked]
					acked++
					mu.Unlock()
					if err := s.Send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_PayloadAck{PayloadAck: &fleetv1.PayloadAck{Seq: seq}}}); err != nil {
						return
					}
				}
			}
		}()
		for {
			m, err := s.Recv()
			if err != nil {
				return err
			}
			if p := m.GetPayload(); p != nil {
				mu.Lock()
				got = append(got, p.GetSeq())
				maxPending = max(maxPending, len(got)-acked)
				mu.Unlock()
				poke()
			}
		}
	}})
	ob := openOutbox(t, cacheOptions())
	const backlog = 100
	for i := range backlog {
		if err := ob.Enqueue(KindMetrics, bytes.Repeat([]byte{byte(i)}, 512)); err != nil {
			t.Fatal(err)
		}
	}
	l := newTestLink(t, ca, hub.Addr, ob)
	l.cfg.Telemetry = true
	startLink(t, l)
	received := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }

	linktest.WaitUntil(t, "a full window", 20*time.Second, func() bool { return received() == drainBatch })
	// Half the window answered: the next half goes out before the rest is.
	mu.Lock()
	allow = drainBatch / 2
	mu.Unlock()
	poke()
	linktest.WaitUntil(t, "entries sent after half the window was answered", 20*time.Second, func() bool { return received() == drainBatch+drainBatch/2 })
	mu.Lock()
	if acked != drainBatch/2 {
		t.Fatalf("%d entries answered when the next ones went out; want %d", acked, drainBatch/2)
	}
	auto = true
	mu.Unlock()
	poke()
	waitDrained(t, ob)
	mu.Lock()
	defer mu.Unlock()
	seen := map[uint64]bool{}
	for _, s := range got {
		if seen[s] {
			t.Errorf("entry %d sent twice", s)
		}
		seen[s] = true
	}
	if len(got) != backlog || maxPending > drainBatch {
		t.Fatalf("%d entries sent for %d queued, at most %d unanswered; want each once and at most %d", len(got), backlog, maxPending, drainBatch)
	}
}
