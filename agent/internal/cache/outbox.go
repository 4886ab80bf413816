package cache

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// OutboxKind registers one kind of outbox payload: its drain priority and
// its own bounds. A kind's quota is its own: when it is full, Enqueue
// evicts that kind's oldest entries, never another kind's.
type OutboxKind struct {
	// Name is the kind ("status", "metrics", ...).
	Name string
	// Priority orders the drain: higher first. Every kind with entries
	// still gets a fair share of each batch (see Batch).
	Priority int
	// MaxEntries and MaxBytes bound the kind's pending entries and their
	// payload bytes. Zero means Options.OutboxMaxEntries / OutboxMaxBytes.
	MaxEntries int
	MaxBytes   int64
}

// DamagedKind is the kind under which entries too damaged to name their
// kind are counted as dead-lettered (by the upgrade from schema 2). It is
// not a valid payload kind, so it never collides with one.
const DamagedKind = "(damaged)"

// OutboxEntry is one queued record.
type OutboxEntry struct {
	Seq     uint64
	Kind    string
	Payload []byte
	At      time.Time
}

// OutboxKindStats are the outbox counters of one kind.
type OutboxKindStats struct {
	Pending uint64 `json:"pending"`
	// Bytes is the payload bytes of the pending entries.
	Bytes uint64 `json:"bytes"`
	// Dropped counts entries evicted because the kind's quota was full.
	Dropped uint64 `json:"dropped,omitempty"`
	// DeadLettered counts entries removed because they could not be sent.
	DeadLettered uint64 `json:"deadLettered,omitempty"`
}

// OutboxStats describes the outbox: totals, and the same per kind.
type OutboxStats struct {
	Pending      uint64
	Bytes        uint64
	Dropped      uint64
	DeadLettered uint64
	Kinds        map[string]OutboxKindStats
}

const entryHeader = 8 // at int64 BE unix ns

// kindBounds returns the registration of kind, or the defaults for a kind
// not registered.
func (c *Cache) kindBounds(kind string) OutboxKind {
	for _, k := range c.opts.OutboxKinds {
		if k.Name == kind {
			if k.MaxEntries == 0 {
				k.MaxEntries = c.opts.OutboxMaxEntries
			}
			if k.MaxBytes == 0 {
				k.MaxBytes = c.opts.OutboxMaxBytes
			}
			return k
		}
	}
	return OutboxKind{Name: kind, MaxEntries: c.opts.OutboxMaxEntries, MaxBytes: c.opts.OutboxMaxBytes}
}

func validKind(kind string) error {
	if kind == "" || len(kind) > MaxKindLen {
		return fmt.Errorf("%w: kind must be 1-%d bytes, got %d", ErrInvalid, MaxKindLen, len(kind))
	}
	return nil
}

// kindCounters is the outboxkinds/<kind> bucket, created when create is set.
func kindCounters(tx *bolt.Tx, kind string, create bool) (*bolt.Bucket, error) {
	kinds := bucket(tx, bucketOutboxKinds)
	if b := kinds.Bucket([]byte(kind)); b != nil || !create {
		return b, nil
	}
	return kinds.CreateBucket([]byte(kind))
}

func addUint(b *bolt.Bucket, key string, delta int64) error {
	return putUint(b, key, uint64(int64(readUint(b, key))+delta))
}

// Enqueue appends a record of kind to the outbox. If that would exceed
// the kind's bounds, the kind's oldest entries are evicted first and
// counted as dropped; other kinds are never touched. A record larger than
// the kind's MaxBytes on its own fails with ErrTooLarge and changes
// nothing.
func (c *Cache) Enqueue(kind string, payload []byte) error {
	return c.EnqueueMerge(kind, payload, nil)
}

// EnqueueMerge is Enqueue, but first offers the kind's newest pending
// entry to merge, unless the drain holds it (Batch returned it and it is
// not acknowledged yet): merge returns the entry's new payload, which
// replaces it in place (same sequence number, same time: drain and
// eviction order are kept), or false to append payload as a new entry.
// merge runs inside the write transaction; it must not use the cache.
// The kind's bounds hold for the merged entry as for a new one; the
// merged entry itself is never evicted.
func (c *Cache) EnqueueMerge(kind string, payload []byte, merge func(tail []byte) ([]byte, bool)) error {
	if err := validKind(kind); err != nil {
		return fmt.Errorf("cache: enqueue: %w", err)
	}
	op := "enqueue " + kind
	k := c.kindBounds(kind)
	size := uint64(len(payload))
	if size > uint64(k.MaxBytes) {
		return fmt.Errorf("cache: %s: %w: %d bytes, the %s quota holds at most %d", op, ErrTooLarge, size, kind, k.MaxBytes)
	}
	at := c.opts.Now()
	if merge != nil {
		c.handout.Lock()
		defer c.handout.Unlock()
	}
	var evicted []uint64
	defer func() { c.forgetInflight(evicted...) }()
	return c.update(op, func(tx *bolt.Tx) error {
		evicted = evicted[:0]
		entries, err := bucket(tx, bucketOutbox).CreateBucketIfNotExists([]byte(kind))
		if err != nil {
			return err
		}
		ctr, err := kindCounters(tx, kind, true)
		if err != nil {
			return err
		}
		count, total := readUint(ctr, keyCount), readUint(ctr, keyBytes)
		if merge != nil {
			if done, err := c.mergeTail(entries, ctr, k, count, total, merge, &evicted); done || err != nil {
				return err
			}
		}
		count, total, err = evictOldest(op, entries, ctr, count, total, func(count, total uint64) bool {
			return count > 0 && (count+1 > uint64(k.MaxEntries) || total+size > uint64(k.MaxBytes))
		}, &evicted)
		if err != nil {
			return err
		}
		meta := bucket(tx, bucketOutboxMeta)
		seq := max(readUint(meta, keyNextSeq), 1)
		if err := entries.Put(u64(seq), encodeEntry(payload, at)); err != nil {
			return err
		}
		if err := putUint(meta, keyNextSeq, seq+1); err != nil {
			return err
		}
		if err := putUint(ctr, keyCount, count+1); err != nil {
			return err
		}
		return putUint(ctr, keyBytes, total+size)
	})
}

// evictOldest deletes a kind's oldest entries while over(count, total)
// holds, counts them as dropped and notes their sequence numbers in
// evicted; it returns the count and payload bytes left.
func evictOldest(op string, entries, ctr *bolt.Bucket, count, total uint64, over func(count, total uint64) bool, evicted *[]uint64) (uint64, uint64, error) {
	var dropped uint64
	for over(count, total) {
		key, v := entries.Cursor().First()
		if key == nil {
			return 0, 0, fmt.Errorf("cache: %s: counters say %d entries, bucket is empty", op, count)
		}
		*evicted = append(*evicted, binary.BigEndian.Uint64(key))
		if err := entries.Delete(key); err != nil {
			return 0, 0, err
		}
		count--
		total -= uint64(max(len(v)-entryHeader, 0))
		dropped++
	}
	if dropped > 0 {
		if err := addUint(ctr, keyDropped, int64(dropped)); err != nil {
			return 0, 0, err
		}
	}
	return count, total, nil
}

// mergeTail offers the newest entry of a kind to merge (see
// EnqueueMerge) and, when merged, evicts older entries over the kind's
// bounds. It reports whether it merged.
func (c *Cache) mergeTail(entries, ctr *bolt.Bucket, k OutboxKind, count, total uint64, merge func([]byte) ([]byte, bool), evicted *[]uint64) (bool, error) {
	key, v := entries.Cursor().Last()
	if key == nil || len(v) < entryHeader || c.isInflight(binary.BigEndian.Uint64(key)) {
		return false, nil
	}
	tail := v[entryHeader:]
	merged, ok := merge(slices.Clone(tail))
	if !ok || uint64(len(merged)) > uint64(k.MaxBytes) {
		return false, nil
	}
	keep := slices.Clone(key)
	at := slices.Clone(v[:entryHeader])
	total = total - uint64(len(tail)) + uint64(len(merged))
	// The merged entry is the newest: with more than one entry the
	// oldest is another.
	count, total, err := evictOldest("merge", entries, ctr, count, total, func(count, total uint64) bool {
		return count > 1 && total > uint64(k.MaxBytes)
	}, evicted)
	if err != nil {
		return false, err
	}
	if err := entries.Put(keep, append(at, merged...)); err != nil {
		return false, err
	}
	if err := putUint(ctr, keyCount, count); err != nil {
		return false, err
	}
	return true, putUint(ctr, keyBytes, total)
}

// Peek returns up to n pending entries of every kind in drain order (see
// Batch) without removing them.
func (c *Cache) Peek(n int) ([]OutboxEntry, error) { return c.batch(n, nil) }

// Batch returns up to n pending entries of the kinds for which sendable
// returns true (every kind when it is nil), without removing them, in
// drain order: kinds by priority, higher first (then by name), each
// kind's entries oldest first. Every kind with entries gets a fair share
// of at least max(1, n/8) entries of the batch (as far as n allows, in
// priority order), so a large backlog of a high-priority kind never
// starves a low one; the rest of the batch is filled by priority.
func (c *Cache) Batch(n int, sendable func(kind string) bool) ([]OutboxEntry, error) {
	c.handout.Lock()
	defer c.handout.Unlock()
	out, err := c.batch(n, sendable)
	if err == nil && len(out) > 0 {
		c.mu.Lock()
		if c.inflight == nil {
			c.inflight = map[uint64]struct{}{}
		}
		for _, e := range out {
			c.inflight[e.Seq] = struct{}{}
		}
		c.mu.Unlock()
	}
	return out, err
}

func (c *Cache) isInflight(seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.inflight[seq]
	return ok
}

func (c *Cache) forgetInflight(seqs ...uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range seqs {
		delete(c.inflight, s)
	}
}

func (c *Cache) batch(n int, sendable func(kind string) bool) ([]OutboxEntry, error) {
	if n <= 0 {
		return nil, fmt.Errorf("cache: peek: %w: n must be positive, got %d", ErrInvalid, n)
	}
	type kindQueue struct {
		k       OutboxKind
		entries *bolt.Bucket
		take    int
		avail   int
	}
	var out []OutboxEntry
	err := c.view("peek", func(tx *bolt.Tx) error {
		var qs []*kindQueue
		err := bucket(tx, bucketOutbox).ForEachBucket(func(name []byte) error {
			kind := string(name)
			if sendable != nil && !sendable(kind) {
				return nil
			}
			ctr, _ := kindCounters(tx, kind, false)
			var avail uint64
			if ctr != nil {
				avail = readUint(ctr, keyCount)
			}
			if avail == 0 {
				return nil
			}
			qs = append(qs, &kindQueue{k: c.kindBounds(kind), entries: bucket(tx, bucketOutbox).Bucket(name), avail: int(min(avail, uint64(n)))})
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(qs, func(a, b *kindQueue) int {
			return cmp.Or(cmp.Compare(b.k.Priority, a.k.Priority), cmp.Compare(a.k.Name, b.k.Name))
		})
		budget := n
		share := max(1, n/8)
		for _, q := range qs {
			q.take = min(share, q.avail, budget)
			budget -= q.take
		}
		for _, q := range qs {
			more := min(q.avail-q.take, budget)
			q.take += more
			budget -= more
		}
		for _, q := range qs {
			cur := q.entries.Cursor()
			got := 0
			for k, v := cur.First(); k != nil && got < q.take; k, v = cur.Next() {
				e, err := decodeEntry(q.k.Name, k, v)
				if err != nil {
					return err
				}
				out = append(out, e)
				got++
			}
		}
		return nil
	})
	return out, err
}

// Ack removes the outbox entries with these sequence numbers: the hub
// stored them. A sequence number already removed is skipped; one never
// issued is an error and nothing is removed.
func (c *Cache) Ack(seqs ...uint64) error {
	_, err := c.remove(fmt.Sprintf("ack %v", seqs), seqs, false)
	return err
}

// DeadLetter removes the entry with sequence number seq because it cannot
// be sent (an unknown kind, a payload that does not decode, or one the hub
// refused for good) and counts it as dead-lettered under its kind, which
// it returns ("" if seq was already removed).
func (c *Cache) DeadLetter(seq uint64) (kind string, err error) {
	kinds, err := c.remove(fmt.Sprintf("dead-letter %d", seq), []uint64{seq}, true)
	if len(kinds) == 1 {
		kind = kinds[0]
	}
	return kind, err
}

func (c *Cache) remove(op string, seqs []uint64, dead bool) (removedKinds []string, err error) {
	err = c.update(op, func(tx *bolt.Tx) error {
		removedKinds = nil
		next := max(readUint(bucket(tx, bucketOutboxMeta), keyNextSeq), 1)
		for _, seq := range seqs {
			if seq == 0 || seq >= next {
				return fmt.Errorf("cache: %s: %w: sequence %d was never issued (highest is %d)", op, ErrInvalid, seq, next-1)
			}
		}
		ob := bucket(tx, bucketOutbox)
		for _, seq := range seqs {
			key := u64(seq)
			var kind string
			var size int
			err := ob.ForEachBucket(func(name []byte) error {
				if kind != "" {
					return nil
				}
				if v := ob.Bucket(name).Get(key); v != nil {
					kind, size = string(name), max(len(v)-entryHeader, 0)
				}
				return nil
			})
			if err != nil {
				return err
			}
			if kind == "" {
				continue
			}
			if err := ob.Bucket([]byte(kind)).Delete(key); err != nil {
				return err
			}
			ctr, err := kindCounters(tx, kind, true)
			if err != nil {
				return err
			}
			if err := addUint(ctr, keyCount, -1); err != nil {
				return err
			}
			if err := addUint(ctr, keyBytes, -int64(size)); err != nil {
				return err
			}
			if dead {
				if err := addUint(ctr, keyDeadLettered, 1); err != nil {
					return err
				}
			}
			removedKinds = append(removedKinds, kind)
		}
		return nil
	})
	if err == nil {
		c.forgetInflight(seqs...)
	}
	return removedKinds, err
}

// OutboxStats returns the outbox's size and counters, in total and per
// kind.
func (c *Cache) OutboxStats() (OutboxStats, error) {
	st := OutboxStats{Kinds: map[string]OutboxKindStats{}}
	err := c.view("outbox stats", func(tx *bolt.Tx) error {
		kinds := bucket(tx, bucketOutboxKinds)
		return kinds.ForEachBucket(func(name []byte) error {
			b := kinds.Bucket(name)
			ks := OutboxKindStats{Pending: readUint(b, keyCount), Bytes: readUint(b, keyBytes), Dropped: readUint(b, keyDropped), DeadLettered: readUint(b, keyDeadLettered)}
			st.Kinds[string(name)] = ks
			st.Pending += ks.Pending
			st.Bytes += ks.Bytes
			st.Dropped += ks.Dropped
			st.DeadLettered += ks.DeadLettered
			return nil
		})
	})
	return st, err
}

func encodeEntry(payload []byte, at time.Time) []byte {
	b := make([]byte, entryHeader, entryHeader+len(payload))
	binary.BigEndian.PutUint64(b[0:8], uint64(at.UnixNano()))
	return append(b, payload...)
}

func decodeEntry(kind string, k, v []byte) (OutboxEntry, error) {
	if len(k) != 8 || len(v) < entryHeader {
		return OutboxEntry{}, fmt.Errorf("cache: outbox entry %x of kind %q: damaged (%d-byte record)", k, kind, len(v))
	}
	return OutboxEntry{
		Seq:     binary.BigEndian.Uint64(k),
		At:      time.Unix(0, int64(binary.BigEndian.Uint64(v[0:8]))),
		Kind:    kind,
		Payload: bytes.Clone(v[entryHeader:]),
	}, nil
}

// upgradeOutbox2to3 moves schema-2 outbox entries (one FIFO, entry = at |
// kind length uint16 BE | kind | payload) into one bucket per kind, moves
// the drop counters to outboxkinds/<kind>, and removes the global
// counters. An entry too damaged to name its kind is dead-lettered under
// DamagedKind.
func upgradeOutbox2to3(tx *bolt.Tx) error {
	type old struct{ k, v []byte }
	var entries []old
	if ob := bucket(tx, bucketOutbox); ob != nil {
		err := ob.ForEach(func(k, v []byte) error {
			if v != nil {
				entries = append(entries, old{bytes.Clone(k), bytes.Clone(v)})
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := tx.DeleteBucket([]byte(bucketOutbox)); err != nil {
			return err
		}
	}
	ob, err := tx.CreateBucket([]byte(bucketOutbox))
	if err != nil {
		return err
	}
	if _, err := tx.CreateBucketIfNotExists([]byte(bucketOutboxKinds)); err != nil {
		return err
	}
	for _, e := range entries {
		kind, payload, at, ok := decodeEntryV2(e.k, e.v)
		ctr, err := kindCounters(tx, kind, true)
		if err != nil {
			return err
		}
		if !ok {
			if err := addUint(ctr, keyDeadLettered, 1); err != nil {
				return err
			}
			continue
		}
		kb, err := ob.CreateBucketIfNotExists([]byte(kind))
		if err != nil {
			return err
		}
		if err := kb.Put(e.k, append(bytes.Clone(at), payload...)); err != nil {
			return err
		}
		if err := addUint(ctr, keyCount, 1); err != nil {
			return err
		}
		if err := addUint(ctr, keyBytes, int64(len(payload))); err != nil {
			return err
		}
	}
	if drops := bucket(tx, bucketOutboxDropsV2); drops != nil {
		err := drops.ForEach(func(k, v []byte) error {
			ctr, err := kindCounters(tx, string(k), true)
			if err != nil {
				return err
			}
			return addUint(ctr, keyDropped, int64(decodeUint(v)))
		})
		if err != nil {
			return err
		}
		if err := tx.DeleteBucket([]byte(bucketOutboxDropsV2)); err != nil {
			return err
		}
	}
	meta := bucket(tx, bucketOutboxMeta)
	for _, k := range []string{keyCount, keyBytes, keyDropped} {
		if err := meta.Delete([]byte(k)); err != nil {
			return err
		}
	}
	return nil
}

// decodeEntryV2 splits a schema-2 entry; ok is false if it is damaged.
func decodeEntryV2(k, v []byte) (kind string, payload, at []byte, ok bool) {
	const header = 8 + 2
	if len(k) != 8 || len(v) < header {
		return DamagedKind, nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(v[8:10]))
	if n == 0 || len(v) < header+n {
		return DamagedKind, nil, nil, false
	}
	return string(v[header : header+n]), v[header+n:], v[0:8], true
}
