package fleetsim

import (
	"sync"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
)

// memStore is one simulated agent's cache: identity, link state and a
// status outbox (link.Cache and link.Outbox), in memory by default:
// thousands of bbolt files would measure the disk, not the hub. With db
// set (Config.CacheDir) the identity, link state, desired state and
// outbox go to a real agent cache file as well, the outbox only there.
type memStore struct {
	db *cache.Cache

	mu sync.Mutex
	id *cache.Identity
	// Link state, as the link persists it.
	state       string
	connects    uint64
	connectedAt time.Time
	// Outbox: entries in seq order, one kind (status).
	next    uint64
	entries []cache.OutboxEntry
	dead    uint64
	// saved is closed at the first SaveIdentity.
	saved     chan struct{}
	savedOnce sync.Once
	now       func() time.Time
}

func newMemStore(id *cache.Identity, now func() time.Time) *memStore {
	return &memStore{id: id, saved: make(chan struct{}), now: now}
}

func (m *memStore) Identity() (cache.Identity, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.id == nil {
		return cache.Identity{}, cache.ErrNoIdentity
	}
	return *m.id, nil
}

func (m *memStore) SaveIdentity(id cache.Identity) error {
	if m.db != nil {
		if err := m.db.SaveIdentity(id); err != nil {
			return err
		}
	}
	m.mu.Lock()
	m.id = &id
	m.mu.Unlock()
	m.savedOnce.Do(func() { close(m.saved) })
	return nil
}

func (m *memStore) SaveLinkState(ls cache.LinkState) error {
	if m.db != nil {
		if err := m.db.SaveLinkState(ls); err != nil {
			return err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if ls.State == link.StateConnected && (m.state != link.StateConnected || ls.ConnectedCount != m.connects) {
		m.connectedAt = m.now()
	}
	m.state, m.connects = ls.State, ls.ConnectedCount
	return nil
}

// saveDesired keeps a desired state in the cache file, if there is one.
func (m *memStore) saveDesired(rev uint64, payload []byte) error {
	if m.db == nil {
		return nil
	}
	return m.db.SaveDesired(rev, payload)
}

// enqueue adds a status payload.
func (m *memStore) enqueue(kind string, payload []byte) error {
	if m.db != nil {
		return m.db.Enqueue(kind, payload)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	m.entries = append(m.entries, cache.OutboxEntry{Seq: m.next, Kind: kind, Payload: payload, At: m.now()})
	return nil
}

func (m *memStore) Batch(n int, sendable func(kind string) bool) ([]cache.OutboxEntry, error) {
	if m.db != nil {
		return m.db.Batch(n, sendable)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []cache.OutboxEntry
	for _, e := range m.entries {
		if len(out) == n {
			break
		}
		if sendable == nil || sendable(e.Kind) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *memStore) Ack(seqs ...uint64) error {
	if m.db != nil {
		return m.db.Ack(seqs...)
	}
	m.remove(seqs)
	return nil
}

func (m *memStore) DeadLetter(seq uint64) (string, error) {
	if m.db != nil {
		return m.db.DeadLetter(seq)
	}
	kind := m.remove([]uint64{seq})
	m.mu.Lock()
	m.dead++
	m.mu.Unlock()
	return kind, nil
}

func (m *memStore) remove(seqs []uint64) (kind string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	drop := map[uint64]bool{}
	for _, s := range seqs {
		drop[s] = true
	}
	kept := m.entries[:0]
	for _, e := range m.entries {
		if drop[e.Seq] {
			kind = e.Kind
			continue
		}
		kept = append(kept, e)
	}
	clear(m.entries[len(kept):])
	m.entries = kept
	return kind
}

func (m *memStore) OutboxStats() (cache.OutboxStats, error) {
	if m.db != nil {
		return m.db.OutboxStats()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	st := cache.OutboxStats{Pending: uint64(len(m.entries)), DeadLettered: m.dead, Kinds: map[string]cache.OutboxKindStats{}}
	for _, e := range m.entries {
		k := st.Kinds[e.Kind]
		k.Pending++
		k.Bytes += uint64(len(e.Payload))
		st.Kinds[e.Kind] = k
		st.Bytes += uint64(len(e.Payload))
	}
	return st, nil
}
