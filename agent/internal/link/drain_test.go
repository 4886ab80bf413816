package link

import (
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func statusPayload(t *testing.T, rev uint64) []byte {
	t.Helper()
	b, err := proto.Marshal(&fleetv1.StatusReport{Revision: rev, Services: []*fleetv1.ServiceStatus{{Name: "web", Namespace: "apps", State: "Deployed"}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type storedReports struct {
	mu   sync.Mutex
	revs []uint64
}

func (s *storedReports) add(r *fleetv1.StatusReport) {
	s.mu.Lock()
	s.revs = append(s.revs, r.GetRevision())
	s.mu.Unlock()
}

func (s *storedReports) n() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.revs)
}

// TestDrainNotWedgedByUnsendableLastEntry: the drain skipped an entry of
// an unknown kind, or one that did not unmarshal, and then waited for the
// hub to acknowledge that entry's sequence number. As the last entry of
// its batch the hub never acknowledged it; after the ack timeout the link
// reconnected and did the same again, forever, and the outbox never
// drained. Now an entry that cannot be sent is dead-lettered and removed,
// and the drain waits only for what it sent.
func TestDrainNotWedgedByUnsendableLastEntry(t *testing.T) {
	for _, tc := range []struct {
		name, kind string
		payload    []byte
	}{
		{"unknown kind", "from-a-newer-agent", []byte("opaque")},
		{"corrupt status", KindStatus, []byte("\xff\xff not a status report")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
			var got storedReports
			hub := startSyncHub(t, ca, todaysHubSync(got.add))
			ob := openOutbox(t, cacheOptions())
			for rev := range uint64(2) {
				if err := ob.Enqueue(KindStatus, statusPayload(t, rev+1)); err != nil {
					t.Fatal(err)
				}
			}
			if err := ob.Enqueue(tc.kind, tc.payload); err != nil {
				t.Fatal(err)
			}
			runLink(t, ca, hub.addr, ob)
			waitUntil(t, "the outbox to drain", 20*time.Second, func() bool {
				st, err := ob.OutboxStats()
				return err == nil && st.Pending == 0
			})
			if got.n() != 2 || hub.syncCalls() != 1 {
				t.Fatalf("hub stored %d reports over %d sync streams; want 2 over 1", got.n(), hub.syncCalls())
			}
			if st, _ := ob.OutboxStats(); st.DeadLettered != 1 || st.Kinds[tc.kind].DeadLettered != 1 {
				t.Fatalf("outbox stats = %+v; want the entry dead-lettered under %q", st, tc.kind)
			}
		})
	}
}
