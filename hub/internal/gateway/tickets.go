package gateway

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"sync"
	"time"
)

// ticketStore keeps TLS session state on the hub and hands agents a
// 16-byte ticket that names it. Go's default tickets carry the whole
// session state, client certificate included (~1.5 KB each way on every
// reconnect); with stateful tickets a no-change reconnect stays small.
// The state lives in memory: after a hub restart agents do one full
// handshake.
type ticketStore struct {
	mu      sync.Mutex
	max     int
	ttl     time.Duration
	now     func() time.Time
	entries map[string]ticketEntry
	order   []string // insertion order, for eviction
}

type ticketEntry struct {
	state   []byte
	created time.Time
}

func newTicketStore(max int, ttl time.Duration, now func() time.Time) *ticketStore {
	return &ticketStore{max: max, ttl: ttl, now: now, entries: map[string]ticketEntry{}}
}

// wrap stores ss and returns its ticket.
func (t *ticketStore) wrap(_ tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	b, err := ss.Bytes()
	if err != nil {
		return nil, err
	}
	// Bytes returns its builder's buffer, grown by doubling: a copy of the
	// exact size keeps about half as much per agent.
	b = bytes.Clone(b)
	id := make([]byte, 16)
	if _, err := rand.Read(id); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.order) >= t.max {
		delete(t.entries, t.order[0])
		t.order = t.order[1:]
	}
	t.entries[string(id)] = ticketEntry{state: b, created: t.now()}
	t.order = append(t.order, string(id))
	return id, nil
}

// unwrap returns the state a ticket names; nil (a full handshake) when it
// is unknown or expired. A ticket is used once: the agent gets a new one
// after every handshake.
func (t *ticketStore) unwrap(id []byte, _ tls.ConnectionState) (*tls.SessionState, error) {
	t.mu.Lock()
	e, ok := t.entries[string(id)]
	if ok {
		delete(t.entries, string(id))
	}
	t.mu.Unlock()
	if !ok || t.now().Sub(e.created) > t.ttl {
		return nil, nil
	}
	ss, err := tls.ParseSessionState(e.state)
	if err != nil {
		return nil, nil
	}
	return ss, nil
}
