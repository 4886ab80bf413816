// Package cache is the agent's durable state: one bbolt file holding its
// identity, link state, desired state per revision, chart archives by
// digest, the record of the Helm releases it installed, and the outbox of
// records waiting to go to the hub. It is what lets the agent keep
// reconciling while the hub is unreachable.
//
// # File layout (schema version 3)
//
//	meta/
//	  "schema"   -> uint64 BE        schema version of this file (3)
//	  "adopt"    -> uint64 BE        only after an upgrade from schema 1: the
//	                                 desired revision whose releases may be
//	                                 adopted once (see Adoption); removed by
//	                                 EndAdoption
//	identity/
//	  "current"  -> JSON Identity    key, cert and CA PEM, hub addresses
//	link/
//	  "current"  -> JSON LinkState
//	desired/
//	  <rev uint64 BE> -> payload     opaque desired-state bytes; the newest
//	                                 Options.KeepDesired revisions are kept
//	charts/
//	  "sha256:<hex>" -> archive      content-addressed; verified on write;
//	                                 CollectCharts removes the unneeded
//	releases/                        (schema 2)
//	  "<namespace>/<name>" -> JSON ReleaseRecord   every revision of a Helm
//	                                 release this agent wrote, with a digest
//	                                 of its content; the only source of truth
//	                                 for what the agent owns. Since the read
//	                                 side left Helm, each revision also holds
//	                                 what Helm stored (status, hash, chart,
//	                                 the newest one's manifest gzipped): new
//	                                 JSON fields, absent from older records,
//	                                 so no schema change
//	outbox/                          (schema 3: one nested bucket per kind)
//	  <kind>/
//	    <seq uint64 BE> -> entry     at int64 BE unix ns | payload
//	outboxmeta/
//	  "nextseq"  -> uint64 BE        next sequence number, shared by every
//	                                 kind; never reused, so a late ack cannot
//	                                 remove a newer entry
//	outboxkinds/                     (schema 3)
//	  <kind>/                        counters of one kind, kept after its
//	                                 entries are gone
//	    "count"   -> uint64 BE       entries pending
//	    "bytes"   -> uint64 BE       sum of their payload bytes
//	    "dropped" -> uint64 BE       entries evicted because the kind's
//	                                 quota was full
//	    "dead"    -> uint64 BE       entries dead-lettered: removed because
//	                                 they could not be sent
//
// Schema 2 differed only in the outbox: outbox/<seq> -> at | kind length
// uint16 BE | kind | payload, one FIFO for every kind; outboxmeta also held
// "count", "bytes" (kind+payload) and "dropped"; outboxdrops/<kind> held
// drops per kind. Schema 1 had no releases bucket.
//
// Open upgrades an older file one version at a time in one transaction
// (see upgrade), after copying it to BackupPath (agent.db.bak-v2 for a
// schema-2 agent.db), and refuses a newer one with ErrSchemaTooNew.
// OpenReadOnly never writes, so it refuses files that need an upgrade.
//
// # Adoption
//
// Schema 1 had no release record: the agent took every Secret labelled
// owner=helm and tether.dev/managed-by=tether as its own, and anyone who can
// write a Secret can set those labels. The upgrade to schema 2 therefore
// records nothing as owned. It notes the newest desired revision of the
// file under meta/"adopt", and the agent adopts, once, only the releases
// that this desired state names and whose stored content matches what the
// agent would produce from it (see the apply package's Adopt); every other
// labelled release stays unowned and is never touched. EndAdoption clears
// the note so adoption never runs again.
//
// # Outbox
//
// The outbox holds typed payloads (status reports, later metric batches,
// events, logs) until the hub acknowledges them. Each kind is registered
// (Options.OutboxKinds) with a priority and its own bounds, count and
// bytes: when a kind's quota is full, Enqueue evicts that kind's oldest
// entries and counts them as dropped, so telemetry never pushes out status.
// Batch returns entries in drain order: higher priority first, oldest
// first within a kind, with a fair share for every kind. Ack removes
// entries by sequence number; DeadLetter removes one that cannot be sent
// and counts it, so no entry is retried forever.
//
// The file holds the agent's private key; it is created with mode 0600.
package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the file layout this package reads and writes.
const SchemaVersion = 3

// Errors returned by Cache; match them with errors.Is.
var (
	// ErrNoIdentity: the agent has not enrolled yet.
	ErrNoIdentity = errors.New("no identity (agent not enrolled)")
	// ErrNotFound: no such desired revision, chart or link state.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: bad input; nothing was changed.
	ErrInvalid = errors.New("invalid")
	// ErrDigestMismatch: chart bytes do not hash to the given digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrStaleRevision: a desired revision older than the newest one stored.
	ErrStaleRevision = errors.New("stale revision")
	// ErrTooLarge: an outbox record is larger than the whole outbox.
	ErrTooLarge = errors.New("record too large")
	// ErrLocked: another process holds the file (usually the running agent).
	ErrLocked = errors.New("locked by another process")
	// ErrSchemaTooNew: the file was written by a newer tether-agent.
	ErrSchemaTooNew = errors.New("schema version too new")
	// ErrReadOnly: a write on a cache opened with OpenReadOnly.
	ErrReadOnly = errors.New("cache opened read-only")
	// ErrClosed: the cache has been closed.
	ErrClosed = errors.New("cache closed")
)

// Bucket and key names; see the layout in the package comment.
const (
	bucketMeta        = "meta"
	bucketIdentity    = "identity"
	bucketLink        = "link"
	bucketDesired     = "desired"
	bucketCharts      = "charts"
	bucketOutbox      = "outbox"
	bucketOutboxMeta  = "outboxmeta"
	bucketOutboxKinds = "outboxkinds"
	bucketReleases    = "releases"
	// bucketOutboxDropsV2 is schema 2's per-kind drop counters, moved to
	// outboxkinds by the upgrade to schema 3.
	bucketOutboxDropsV2 = "outboxdrops"

	keySchema  = "schema"
	keyAdopt   = "adopt"
	keyCurrent = "current"
	keyNextSeq = "nextseq"
	keyCount   = "count"
	keyBytes   = "bytes"
	keyDropped = "dropped"

	keyDeadLettered = "dead"
)

func allBuckets() []string {
	return []string{bucketMeta, bucketIdentity, bucketLink, bucketDesired, bucketCharts, bucketOutbox, bucketOutboxMeta, bucketOutboxKinds, bucketReleases}
}

func bucket(tx *bolt.Tx, name string) *bolt.Bucket { return tx.Bucket([]byte(name)) }

// Link states.
const (
	LinkConnected  = "Connected"
	LinkOffline    = "Offline"
	LinkConnecting = "Connecting"
	LinkEnrolling  = "Enrolling"
	// LinkRefused: the hub refused the agent (cluster deleted or
	// re-enrolled, or enrolment refused).
	LinkRefused = "Refused"
)

// MaxKindLen bounds an outbox record's kind.
const MaxKindLen = 255

// Options configures Open. The zero value means defaults.
type Options struct {
	// LockTimeout bounds the wait for the file lock. Default 1s.
	LockTimeout time.Duration
	// KeepDesired is how many desired-state revisions to keep. Default 5.
	KeepDesired int
	// OutboxKinds registers the outbox's payload kinds with their
	// priority and bounds (see OutboxKind). A kind not registered drains
	// at priority 0 with the default bounds below.
	OutboxKinds []OutboxKind
	// OutboxMaxEntries bounds the pending entries of one kind whose
	// registration sets no MaxEntries. Default 100000.
	OutboxMaxEntries int
	// OutboxMaxBytes bounds the payload bytes of one kind whose
	// registration sets no MaxBytes. Default 64 MiB.
	OutboxMaxBytes int64
	// Now is the clock for outbox timestamps. Default time.Now.
	Now func() time.Time
	// NoSync skips fsync on commit. Unsafe: for tests and benchmarks only.
	NoSync bool
}

// DefaultOptions returns the defaults Open applies to zero fields.
func DefaultOptions() Options {
	return Options{
		LockTimeout:      time.Second,
		KeepDesired:      5,
		OutboxMaxEntries: 100_000,
		OutboxMaxBytes:   64 << 20,
		Now:              time.Now,
	}
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	switch {
	case o.LockTimeout < 0:
		return fmt.Errorf("cache: options: LockTimeout %s is negative", o.LockTimeout)
	case o.KeepDesired < 0:
		return fmt.Errorf("cache: options: KeepDesired %d is negative", o.KeepDesired)
	case o.OutboxMaxEntries < 0:
		return fmt.Errorf("cache: options: OutboxMaxEntries %d is negative", o.OutboxMaxEntries)
	case o.OutboxMaxBytes < 0:
		return fmt.Errorf("cache: options: OutboxMaxBytes %d is negative", o.OutboxMaxBytes)
	}
	seen := map[string]bool{}
	for _, k := range o.OutboxKinds {
		switch {
		case validKind(k.Name) != nil:
			return fmt.Errorf("cache: options: outbox kind %q: %w", k.Name, validKind(k.Name))
		case seen[k.Name]:
			return fmt.Errorf("cache: options: outbox kind %q registered twice", k.Name)
		case k.MaxEntries < 0 || k.MaxBytes < 0:
			return fmt.Errorf("cache: options: outbox kind %q: negative bounds %d entries, %d bytes", k.Name, k.MaxEntries, k.MaxBytes)
		}
		seen[k.Name] = true
	}
	return nil
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.LockTimeout == 0 {
		o.LockTimeout = d.LockTimeout
	}
	if o.KeepDesired == 0 {
		o.KeepDesired = d.KeepDesired
	}
	if o.OutboxMaxEntries == 0 {
		o.OutboxMaxEntries = d.OutboxMaxEntries
	}
	if o.OutboxMaxBytes == 0 {
		o.OutboxMaxBytes = d.OutboxMaxBytes
	}
	if o.Now == nil {
		o.Now = d.Now
	}
	return o
}

// Identity is what the agent got from enrolment.
type Identity struct {
	Cluster  string    `json:"cluster"`
	KeyPEM   []byte    `json:"keyPEM"`
	CertPEM  []byte    `json:"certPEM"`
	CAPEM    []byte    `json:"caPEM"`
	HubAddrs []string  `json:"hubAddrs,omitempty"`
	NotAfter time.Time `json:"notAfter"`
	// TokenID is the ID of the join token the identity was enrolled with;
	// a different --token makes the agent enrol again.
	TokenID string `json:"tokenId,omitempty"`
}

// LinkState is the agent's view of its connection to the hub, kept so
// `tether-agent status` can show it.
type LinkState struct {
	State          string    `json:"state"` // one of the Link* constants
	Hub            string    `json:"hub,omitempty"`
	Since          time.Time `json:"since"`
	LastContact    time.Time `json:"lastContact"`
	LastError      string    `json:"lastError,omitempty"`
	ConnectedCount uint64    `json:"connectedCount"`
}

// Cache is the agent's bbolt file. It is safe for concurrent use.
type Cache struct {
	db   *bolt.DB
	path string
	opts Options

	mu     sync.Mutex
	closed bool
	// inflight are the outbox entries Batch handed to the drain that are
	// not removed yet: EnqueueMerge never rewrites one (its ack would
	// remove what was merged into it unsent).
	inflight map[uint64]struct{}
	// handout serialises Batch (read and mark in flight) with
	// EnqueueMerge, so no entry is rewritten between being read for the
	// drain and being marked.
	handout sync.Mutex
}

// Open opens or creates the cache file at path, upgrading an older schema.
// If another process holds the file it fails with ErrLocked after
// Options.LockTimeout.
func Open(path string, opts Options) (*Cache, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	db, err := openDB(path, &bolt.Options{Timeout: opts.LockTimeout, NoSync: opts.NoSync, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, err
	}
	if err := backupBeforeUpgrade(db, path); err != nil {
		db.Close()
		return nil, fmt.Errorf("cache: open %s: %w", path, err)
	}
	if err := db.Update(initSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("cache: open %s: %w", path, err)
	}
	return &Cache{db: db, path: path, opts: opts}, nil
}

// BackupPath is where Open copies a file of schema version v before it
// upgrades it: "<path>.bak-v<v>", next to it, mode 0600.
func BackupPath(path string, v uint64) string { return fmt.Sprintf("%s.bak-v%d", path, v) }

// backupBeforeUpgrade copies the file to BackupPath (a consistent
// snapshot, synced) when its schema is older than SchemaVersion, so an
// upgrade that goes wrong, or a downgrade of the agent, can go back to it.
func backupBeforeUpgrade(db *bolt.DB, path string) error {
	return db.View(func(tx *bolt.Tx) error {
		meta := bucket(tx, bucketMeta)
		if meta == nil {
			return nil
		}
		v := readUint(meta, keySchema)
		if v == 0 || v >= SchemaVersion {
			return nil
		}
		bak := BackupPath(path, v)
		f, err := os.OpenFile(bak, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("back up schema-%d file before upgrading it: %w", v, err)
		}
		if _, err := tx.WriteTo(f); err != nil {
			f.Close()
			return fmt.Errorf("back up schema-%d file to %s: %w", v, bak, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return fmt.Errorf("back up schema-%d file to %s: %w", v, bak, err)
		}
		return f.Close()
	})
}

// OpenReadOnly opens an existing cache without writing to it, for
// `tether-agent status` while the agent is stopped. It shares the file
// lock with other readers, so it fails with ErrLocked while the agent runs.
func OpenReadOnly(path string) (*Cache, error) {
	opts := DefaultOptions()
	db, err := openDB(path, &bolt.Options{Timeout: opts.LockTimeout, ReadOnly: true})
	if err != nil {
		return nil, err
	}
	err = db.View(func(tx *bolt.Tx) error {
		meta := bucket(tx, bucketMeta)
		if meta == nil {
			return errors.New("not a tether-agent cache (no meta bucket)")
		}
		switch v := readUint(meta, keySchema); {
		case v > SchemaVersion:
			return fmt.Errorf("file has schema version %d, this binary supports up to %d: %w", v, SchemaVersion, ErrSchemaTooNew)
		case v < SchemaVersion:
			return fmt.Errorf("file has schema version %d and needs an upgrade to %d; start tether-agent once to upgrade it", v, SchemaVersion)
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("cache: open %s read-only: %w", path, err)
	}
	return &Cache{db: db, path: path, opts: opts}, nil
}

func openDB(path string, bo *bolt.Options) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, bo)
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("cache: open %s: %w (is tether-agent running?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("cache: open %s: %w", path, err)
	}
	return db, nil
}

func initSchema(tx *bolt.Tx) error {
	meta := bucket(tx, bucketMeta)
	if meta == nil {
		for _, name := range allBuckets()[1:] {
			if bucket(tx, name) != nil {
				return fmt.Errorf("bucket %q without meta bucket: not a tether-agent cache, or damaged", name)
			}
		}
		for _, name := range allBuckets() {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		return putUint(bucket(tx, bucketMeta), keySchema, SchemaVersion)
	}
	v := readUint(meta, keySchema)
	if v > SchemaVersion {
		return fmt.Errorf("file has schema version %d, this binary supports up to %d: %w (upgrade tether-agent)", v, SchemaVersion, ErrSchemaTooNew)
	}
	for ; v < SchemaVersion; v++ {
		if err := upgrade(tx, v); err != nil {
			return fmt.Errorf("upgrade schema %d to %d: %w", v, v+1, err)
		}
		if err := putUint(meta, keySchema, v+1); err != nil {
			return err
		}
	}
	return nil
}

// upgrade moves a file from schema version from to from+1. Add a case
// here with each new SchemaVersion.
func upgrade(tx *bolt.Tx, from uint64) error {
	switch from {
	case 1:
		// Schema 2 adds the release record. Nothing is owned yet; note
		// the desired revision whose releases may be adopted (see
		// Adoption in the package comment).
		if _, err := tx.CreateBucketIfNotExists([]byte(bucketReleases)); err != nil {
			return err
		}
		if k, _ := bucket(tx, bucketDesired).Cursor().Last(); k != nil {
			return putUint(bucket(tx, bucketMeta), keyAdopt, binary.BigEndian.Uint64(k))
		}
		return nil
	case 2:
		// Schema 3 keeps the outbox per kind, each with its own bounds
		// and counters.
		return upgradeOutbox2to3(tx)
	default:
		return fmt.Errorf("no upgrade path from schema version %d", from)
	}
}

// Path returns the file the cache was opened from.
func (c *Cache) Path() string { return c.path }

// Close flushes and closes the file. It is idempotent.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	if err := c.db.Close(); err != nil {
		return fmt.Errorf("cache: close %s: %w", c.path, err)
	}
	return nil
}

func (c *Cache) update(op string, fn func(tx *bolt.Tx) error) error {
	return c.wrap(op, c.db.Update(fn))
}

func (c *Cache) view(op string, fn func(tx *bolt.Tx) error) error {
	return c.wrap(op, c.db.View(fn))
}

// wrap adds "cache: <op>: " to errors that do not already carry it.
func (c *Cache) wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		return fmt.Errorf("cache: %s: %w", op, ErrClosed)
	case errors.Is(err, berrors.ErrDatabaseReadOnly):
		return fmt.Errorf("cache: %s: %w", op, ErrReadOnly)
	case strings.HasPrefix(err.Error(), "cache: "):
		return err
	}
	return fmt.Errorf("cache: %s: %w", op, err)
}

// SaveIdentity stores the agent's identity, replacing any previous one.
func (c *Cache) SaveIdentity(id Identity) error {
	const op = "save identity"
	switch {
	case id.Cluster == "":
		return fmt.Errorf("cache: %s: %w: cluster is empty", op, ErrInvalid)
	case len(id.KeyPEM) == 0 || len(id.CertPEM) == 0 || len(id.CAPEM) == 0:
		return fmt.Errorf("cache: %s for %q: %w: key, cert and CA PEM are all required", op, id.Cluster, ErrInvalid)
	}
	data, err := json.Marshal(id)
	if err != nil {
		return fmt.Errorf("cache: %s for %q: %w", op, id.Cluster, err)
	}
	return c.update(op, func(tx *bolt.Tx) error { return bucket(tx, bucketIdentity).Put([]byte(keyCurrent), data) })
}

// Identity returns the stored identity, or ErrNoIdentity.
func (c *Cache) Identity() (Identity, error) {
	var id Identity
	err := c.view("read identity", func(tx *bolt.Tx) error {
		data := bucket(tx, bucketIdentity).Get([]byte(keyCurrent))
		if data == nil {
			return fmt.Errorf("cache: read identity: %w", ErrNoIdentity)
		}
		return json.Unmarshal(data, &id)
	})
	return id, err
}

// SaveLinkState stores the link state, replacing the previous one.
func (c *Cache) SaveLinkState(s LinkState) error {
	const op = "save link state"
	switch s.State {
	case LinkConnected, LinkOffline, LinkConnecting, LinkEnrolling, LinkRefused:
	default:
		return fmt.Errorf("cache: %s: %w: state %q is not one of %s, %s, %s, %s, %s", op, ErrInvalid, s.State, LinkConnected, LinkOffline, LinkConnecting, LinkEnrolling, LinkRefused)
	}
	data, err := json.Marshal(s)
	if err != nil {
		return fmt.Errorf("cache: %s: %w", op, err)
	}
	return c.update(op, func(tx *bolt.Tx) error { return bucket(tx, bucketLink).Put([]byte(keyCurrent), data) })
}

// LinkState returns the stored link state, or ErrNotFound.
func (c *Cache) LinkState() (LinkState, error) {
	var s LinkState
	err := c.view("read link state", func(tx *bolt.Tx) error {
		data := bucket(tx, bucketLink).Get([]byte(keyCurrent))
		if data == nil {
			return fmt.Errorf("cache: read link state: %w", ErrNotFound)
		}
		return json.Unmarshal(data, &s)
	})
	return s, err
}

// SaveDesired stores the desired-state payload for rev and drops all but
// the newest Options.KeepDesired revisions. Saving the newest revision again
// replaces it; an older one fails with ErrStaleRevision.
func (c *Cache) SaveDesired(rev uint64, payload []byte) error {
	op := fmt.Sprintf("save desired revision %d", rev)
	if rev == 0 {
		return fmt.Errorf("cache: %s: %w: revision must be positive", op, ErrInvalid)
	}
	return c.update(op, func(tx *bolt.Tx) error {
		b := bucket(tx, bucketDesired)
		if k, _ := b.Cursor().Last(); k != nil {
			if latest := binary.BigEndian.Uint64(k); rev < latest {
				return fmt.Errorf("cache: %s: %w: newest stored is %d", op, ErrStaleRevision, latest)
			}
		}
		if err := b.Put(u64(rev), payload); err != nil {
			return err
		}
		// Keys are revisions in ascending order: delete from the front.
		n := 0
		cur := b.Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			n++
		}
		for ; n > c.opts.KeepDesired; n-- {
			k, _ := b.Cursor().First()
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReplaceDesired stores payload as the only desired revision, dropping
// every other one, also newer ones: the hub's history changed (a new hub,
// or one restored from a backup), so the revisions held are not
// comparable with rev.
func (c *Cache) ReplaceDesired(rev uint64, payload []byte) error {
	op := fmt.Sprintf("replace desired state with revision %d", rev)
	if rev == 0 {
		return fmt.Errorf("cache: %s: %w: revision must be positive", op, ErrInvalid)
	}
	return c.update(op, func(tx *bolt.Tx) error {
		b := bucket(tx, bucketDesired)
		var keys [][]byte
		cur := b.Cursor()
		for k, _ := cur.First(); k != nil; k, _ = cur.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return b.Put(u64(rev), payload)
	})
}

// LatestDesired returns the newest desired revision, or ErrNotFound.
func (c *Cache) LatestDesired() (rev uint64, payload []byte, err error) {
	err = c.view("read latest desired", func(tx *bolt.Tx) error {
		k, v := bucket(tx, bucketDesired).Cursor().Last()
		if k == nil {
			return fmt.Errorf("cache: read latest desired: %w", ErrNotFound)
		}
		rev, payload = binary.BigEndian.Uint64(k), bytes.Clone(v)
		return nil
	})
	return rev, payload, err
}

// Desired returns the payload of one desired revision, or ErrNotFound.
func (c *Cache) Desired(rev uint64) ([]byte, error) {
	var payload []byte
	op := fmt.Sprintf("read desired revision %d", rev)
	err := c.view(op, func(tx *bolt.Tx) error {
		v := bucket(tx, bucketDesired).Get(u64(rev))
		if v == nil {
			return fmt.Errorf("cache: %s: %w", op, ErrNotFound)
		}
		payload = bytes.Clone(v)
		return nil
	})
	return payload, err
}

// checkDigest validates the "sha256:<64 lower-case hex>" form.
func checkDigest(digest string) error {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexPart) != 2*sha256.Size {
		return fmt.Errorf("%w: digest %q: want sha256:<64 hex characters>", ErrInvalid, digest)
	}
	for i := 0; i < len(hexPart); i++ {
		if c := hexPart[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%w: digest %q: want lower-case hex", ErrInvalid, digest)
		}
	}
	return nil
}

// PutChart stores a chart archive under its digest ("sha256:<hex>") after
// checking that data hashes to it; on mismatch nothing is stored.
func (c *Cache) PutChart(digest string, data []byte) error {
	op := "put chart " + digest
	if err := checkDigest(digest); err != nil {
		return fmt.Errorf("cache: put chart: %w", err)
	}
	sum := sha256.Sum256(data)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
		return fmt.Errorf("cache: %s: %d bytes hash to %s: %w", op, len(data), got, ErrDigestMismatch)
	}
	return c.update(op, func(tx *bolt.Tx) error {
		b := bucket(tx, bucketCharts)
		if b.Get([]byte(digest)) != nil {
			return nil // content-addressed: already there
		}
		return b.Put([]byte(digest), data)
	})
}

// Chart returns a stored chart archive, or ErrNotFound.
func (c *Cache) Chart(digest string) ([]byte, error) {
	if err := checkDigest(digest); err != nil {
		return nil, fmt.Errorf("cache: read chart: %w", err)
	}
	var data []byte
	op := "read chart " + digest
	err := c.view(op, func(tx *bolt.Tx) error {
		v := bucket(tx, bucketCharts).Get([]byte(digest))
		if v == nil {
			return fmt.Errorf("cache: %s: %w", op, ErrNotFound)
		}
		data = bytes.Clone(v)
		return nil
	})
	return data, err
}

// HasChart reports whether a chart archive is stored.
func (c *Cache) HasChart(digest string) (bool, error) {
	if err := checkDigest(digest); err != nil {
		return false, fmt.Errorf("cache: has chart: %w", err)
	}
	var ok bool
	err := c.view("has chart "+digest, func(tx *bolt.Tx) error {
		ok = bucket(tx, bucketCharts).Get([]byte(digest)) != nil
		return nil
	})
	return ok, err
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func decodeUint(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func readUint(b *bolt.Bucket, key string) uint64 { return decodeUint(b.Get([]byte(key))) }

func putUint(b *bolt.Bucket, key string, v uint64) error { return b.Put([]byte(key), u64(v)) }
