// Package boltstore implements store.Store on a single bbolt file: the
// hub's default backend, with no external dependencies.
//
// # File layout (schema version 1)
//
//	meta/                      bucket
//	  "schema"   -> uint64 BE  schema version of this file (1)
//	  "revision" -> uint64 BE  store revision of the last committed write
//	objects/                   bucket
//	  <kind>/                  nested bucket per kind, created on first write
//	    <namespace> 0x00 <name> -> record
//
//	record = createRevision uint64 BE | resourceVersion uint64 BE | value
//
// Cluster-scoped objects have an empty namespace, so their keys start with
// 0x00. Namespaces and names never contain 0x00 (store.ValidateKey), so key
// order is namespace order, then name order, which is List's order.
//
// Opening a file with an older schema upgrades it in one transaction, one
// version at a time (see upgrade); a newer schema is refused with
// ErrSchemaTooNew, so an old binary never rewrites a file it does not
// understand.
//
// # Watches
//
// Watches are in-process: after a write commits, its events are appended
// to an in-memory history (Options.HistorySize events) and handed to every
// matching watcher. Writers never block on watchers: each watcher has a
// bounded channel (Options.WatchBuffer events beyond its replay); a watcher
// whose channel is full gets a final EventError wrapping
// store.ErrWatchExpired and its channel is closed, and the consumer lists
// again. History is not persisted: after Open, Watch can replay only
// changes made since Open, and older fromRevisions get store.ErrCompacted.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// SchemaVersion is the file layout this package reads and writes.
const SchemaVersion = 1

// Errors specific to the bbolt backend; match them with errors.Is.
var (
	// ErrLocked: another process (or handle) has the file open.
	ErrLocked = errors.New("locked by another process")
	// ErrSchemaTooNew: the file was written by a newer version of tether.
	ErrSchemaTooNew = errors.New("schema version too new")
)

// Bucket and key names; see the layout in the package comment.
const (
	bucketMeta    = "meta"
	bucketObjects = "objects"
	keySchema     = "schema"
	keyRevision   = "revision"
)

func bucket(tx *bolt.Tx, name string) *bolt.Bucket { return tx.Bucket([]byte(name)) }

const recordHeader = 16

// Options configures Open. The zero value means defaults.
type Options struct {
	// LockTimeout bounds the wait for the file lock; another holder makes
	// Open fail with ErrLocked instead of hanging. Default 2s.
	LockTimeout time.Duration
	// WatchBuffer is how many undelivered events a watcher may have before
	// it is expired. Default 1024.
	WatchBuffer int
	// HistorySize is how many recent events Watch can replay. Default 4096.
	HistorySize int
	// NoSync skips fsync on commit. Unsafe: for tests and benchmarks only.
	NoSync bool
}

// DefaultOptions returns the defaults Open applies to zero fields.
func DefaultOptions() Options {
	return Options{LockTimeout: 2 * time.Second, WatchBuffer: 1024, HistorySize: 4096}
}

// Validate reports options that cannot work.
func (o Options) Validate() error {
	switch {
	case o.LockTimeout < 0:
		return fmt.Errorf("boltstore: options: LockTimeout %s is negative", o.LockTimeout)
	case o.WatchBuffer < 0:
		return fmt.Errorf("boltstore: options: WatchBuffer %d is negative", o.WatchBuffer)
	case o.HistorySize < 0:
		return fmt.Errorf("boltstore: options: HistorySize %d is negative", o.HistorySize)
	}
	return nil
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.LockTimeout == 0 {
		o.LockTimeout = d.LockTimeout
	}
	if o.WatchBuffer == 0 {
		o.WatchBuffer = d.WatchBuffer
	}
	if o.HistorySize == 0 {
		o.HistorySize = d.HistorySize
	}
	return o
}

// Store is a store.Store backed by one bbolt file.
type Store struct {
	db   *bolt.DB
	path string
	opts Options

	// writeMu serialises write transactions with publishing their events,
	// so watchers see events in revision order. bbolt serialises writers
	// anyway, so it costs no concurrency.
	writeMu sync.Mutex

	mu        sync.Mutex // guards the fields below
	closed    bool
	rev       uint64        // revision of the last published write
	history   []store.Event // ring buffer, oldest at histHead
	histHead  int
	histLen   int
	histStart uint64 // every event with Revision > histStart is in history
	watchers  map[*watcher]struct{}
}

var _ store.Store = (*Store)(nil)

type watcher struct {
	kind  string
	from  uint64
	ch    chan store.Event
	limit int         // max queued events; one more slot is kept for the final error
	stop  func() bool // unregisters the context.AfterFunc
}

// Open opens or creates the store file at path.
func Open(path string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.LockTimeout,
		NoSync:       opts.NoSync,
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("boltstore: open %s: %w after %s (is another tether hub running?)", path, ErrLocked, opts.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	var rev uint64
	err = db.Update(func(tx *bolt.Tx) error {
		if err := initSchema(tx); err != nil {
			return err
		}
		rev = readUint(bucket(tx, bucketMeta), keyRevision)
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	return &Store{
		db:        db,
		path:      path,
		opts:      opts,
		rev:       rev,
		histStart: rev,
		history:   make([]store.Event, opts.HistorySize),
		watchers:  map[*watcher]struct{}{},
	}, nil
}

// initSchema creates a fresh layout, upgrades an older one, or refuses a
// newer one.
func initSchema(tx *bolt.Tx) error {
	meta := bucket(tx, bucketMeta)
	if meta == nil {
		if bucket(tx, bucketObjects) != nil {
			return errors.New("objects bucket without meta bucket: not a tether store file, or damaged")
		}
		meta, err := tx.CreateBucket([]byte(bucketMeta))
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket([]byte(bucketObjects)); err != nil {
			return err
		}
		if err := putUint(meta, keySchema, SchemaVersion); err != nil {
			return err
		}
		return putUint(meta, keyRevision, 0)
	}
	v := readUint(meta, keySchema)
	if v > SchemaVersion {
		return fmt.Errorf("file has schema version %d, this binary supports up to %d: %w (upgrade tether)", v, SchemaVersion, ErrSchemaTooNew)
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
	default:
		return fmt.Errorf("no upgrade path from schema version %d", from)
	}
}

// Path returns the file the store was opened from.
func (s *Store) Path() string { return s.path }

// Close ends all watches with an EventError wrapping store.ErrClosed, waits
// for in-flight writes and closes the file. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for w := range s.watchers {
		s.endWatchLocked(w, fmt.Errorf("store: watch: %w", store.ErrClosed))
	}
	s.mu.Unlock()

	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("boltstore: close %s: %w", s.path, err)
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// begin checks that an operation may start; the caller wraps the error.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.isClosed() {
		return store.ErrClosed
	}
	return nil
}

// readErr wraps an error from a read that failed outside the transaction
// body (errors from inside are already wrapped).
func readErr(err error, op, kind, ns, name string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, berrors.ErrDatabaseNotOpen):
		err = store.ErrClosed
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalid):
		return err
	}
	if name == "" {
		return fmt.Errorf("store: %s %s: %w", op, kind, err)
	}
	return fmt.Errorf("store: %s %s %s: %w", op, kind, store.KeyString(ns, name), err)
}

func mapErr(op string, err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("store: %s: %w", op, store.ErrClosed)
	}
	return err
}

// Get implements store.Store.
func (s *Store) Get(ctx context.Context, kind, namespace, name string) (store.Object, error) {
	if err := s.begin(ctx); err != nil {
		return store.Object{}, readErr(err, "get", kind, namespace, name)
	}
	var obj store.Object
	err := s.db.View(func(btx *bolt.Tx) error {
		var err error
		obj, err = (&tx{btx: btx}).Get(kind, namespace, name)
		return err
	})
	if err != nil {
		return store.Object{}, readErr(err, "get", kind, namespace, name)
	}
	return obj, nil
}

// List implements store.Store.
func (s *Store) List(ctx context.Context, kind, namespace string) ([]store.Object, error) {
	if err := s.begin(ctx); err != nil {
		return nil, readErr(err, "list", kind, "", "")
	}
	var objs []store.Object
	err := s.db.View(func(btx *bolt.Tx) error {
		var err error
		objs, err = (&tx{btx: btx}).List(kind, namespace)
		return err
	})
	if err != nil {
		return nil, readErr(err, "list", kind, "", "")
	}
	return objs, nil
}

// Create implements store.Store.
func (s *Store) Create(ctx context.Context, obj store.Object) (store.Object, error) {
	var out store.Object
	err := s.txn(ctx, "create "+obj.Kind+" "+store.KeyString(obj.Namespace, obj.Name), func(t *tx) error {
		var err error
		out, err = t.Create(obj)
		return err
	})
	return out, err
}

// Update implements store.Store.
func (s *Store) Update(ctx context.Context, obj store.Object) (store.Object, error) {
	var out store.Object
	err := s.txn(ctx, "update "+obj.Kind+" "+store.KeyString(obj.Namespace, obj.Name), func(t *tx) error {
		var err error
		out, err = t.Update(obj)
		return err
	})
	return out, err
}

// Delete implements store.Store.
func (s *Store) Delete(ctx context.Context, kind, namespace, name string, expectRV uint64) error {
	return s.txn(ctx, "delete "+kind+" "+store.KeyString(namespace, name), func(t *tx) error {
		return t.Delete(kind, namespace, name, expectRV)
	})
}

// Txn implements store.Store.
func (s *Store) Txn(ctx context.Context, fn func(store.Tx) error) error {
	return s.txn(ctx, "txn", func(t *tx) error { return fn(t) })
}

func (s *Store) txn(ctx context.Context, op string, fn func(*tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %s: %w", op, err)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.isClosed() {
		return fmt.Errorf("store: %s: %w", op, store.ErrClosed)
	}
	var t *tx
	err := s.db.Update(func(btx *bolt.Tx) error {
		t = &tx{btx: btx, writable: true, baseRev: readUint(bucket(btx, bucketMeta), keyRevision)}
		defer func() { t.done = true }()
		if err := fn(t); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("store: %s: rolled back: %w", op, err)
		}
		if !t.wrote {
			return nil
		}
		return putUint(bucket(btx, bucketMeta), keyRevision, t.baseRev+1)
	})
	if err != nil {
		return mapErr(op, err)
	}
	if t.wrote {
		s.publish(t.baseRev+1, t.events)
	}
	return nil
}

// Revision implements store.Store.
func (s *Store) Revision(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store: revision: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, fmt.Errorf("store: revision: %w", store.ErrClosed)
	}
	return s.rev, nil
}

// Watch implements store.Store.
func (s *Store) Watch(ctx context.Context, kind string, fromRevision uint64) (<-chan store.Event, error) {
	what := kind
	if what == "" {
		what = "all kinds"
	}
	if kind != "" {
		if err := store.ValidateKind(kind); err != nil {
			return nil, fmt.Errorf("store: watch %s: %w", what, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("store: watch %s: %w", what, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("store: watch %s: %w", what, store.ErrClosed)
	}
	if fromRevision == 0 {
		fromRevision = s.rev
	}
	if fromRevision < s.histStart {
		return nil, fmt.Errorf("store: watch %s from revision %d: history starts after revision %d: %w", what, fromRevision, s.histStart, store.ErrCompacted)
	}
	var replay []store.Event
	for i := range s.histLen {
		e := s.history[(s.histHead+i)%len(s.history)]
		if e.Revision > fromRevision && (kind == "" || e.Object.Kind == kind) {
			replay = append(replay, e)
		}
	}
	w := &watcher{kind: kind, from: fromRevision}
	w.limit = len(replay) + s.opts.WatchBuffer
	w.ch = make(chan store.Event, w.limit+1)
	for _, e := range replay {
		w.ch <- e
	}
	s.watchers[w] = struct{}{}
	w.stop = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.endWatchLocked(w, nil)
	})
	return w.ch, nil
}

// endWatchLocked removes w, sends a final error event if err is set, and
// closes its channel. The reserved slot guarantees the send never blocks.
func (s *Store) endWatchLocked(w *watcher, err error) {
	if _, ok := s.watchers[w]; !ok {
		return
	}
	delete(s.watchers, w)
	w.stop()
	if err != nil {
		w.ch <- store.Event{Type: store.EventError, Err: err}
	}
	close(w.ch)
}

// publish records a committed transaction's events and fans them out.
func (s *Store) publish(rev uint64, events []store.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rev = rev
	for _, e := range events {
		s.remember(e)
	}
	for w := range s.watchers {
		for _, e := range events {
			if e.Revision <= w.from || (w.kind != "" && e.Object.Kind != w.kind) {
				continue
			}
			if len(w.ch) >= w.limit {
				what := w.kind
				if what == "" {
					what = "all kinds"
				}
				s.endWatchLocked(w, fmt.Errorf("store: watch %s: consumer fell %d events behind at revision %d: %w", what, w.limit, rev, store.ErrWatchExpired))
				break
			}
			w.ch <- e
		}
	}
}

func (s *Store) remember(e store.Event) {
	n := len(s.history)
	if n == 0 {
		s.histStart = e.Revision
		return
	}
	if s.histLen == n {
		s.histStart = max(s.histStart, s.history[s.histHead].Revision)
		s.history[s.histHead] = e
		s.histHead = (s.histHead + 1) % n
		return
	}
	s.history[(s.histHead+s.histLen)%n] = e
	s.histLen++
}

// tx implements store.Tx on a bbolt transaction.
type tx struct {
	btx      *bolt.Tx
	writable bool
	done     bool
	baseRev  uint64
	wrote    bool
	events   []store.Event
}

func (t *tx) check(op, kind, ns, name string) error {
	if t.done {
		return fmt.Errorf("store: %s %s %s: %w: transaction already finished", op, kind, store.KeyString(ns, name), store.ErrInvalid)
	}
	if err := store.ValidateKey(kind, ns, name); err != nil {
		return fmt.Errorf("store: %s %s %s: %w", op, kind, store.KeyString(ns, name), err)
	}
	return nil
}

func objectKey(ns, name string) []byte {
	k := make([]byte, 0, len(ns)+1+len(name))
	k = append(k, ns...)
	k = append(k, 0)
	return append(k, name...)
}

func decode(kind string, key, rec []byte) (store.Object, error) {
	if len(rec) < recordHeader {
		return store.Object{}, fmt.Errorf("store: %s %q: record of %d bytes is shorter than its header", kind, key, len(rec))
	}
	i := bytes.IndexByte(key, 0)
	if i < 0 {
		return store.Object{}, fmt.Errorf("store: %s %q: key has no namespace separator", kind, key)
	}
	return store.Object{
		Kind:            kind,
		Namespace:       string(key[:i]),
		Name:            string(key[i+1:]),
		CreateRevision:  binary.BigEndian.Uint64(rec[0:8]),
		ResourceVersion: binary.BigEndian.Uint64(rec[8:16]),
		Value:           bytes.Clone(rec[recordHeader:]),
	}, nil
}

func encode(obj store.Object) []byte {
	rec := make([]byte, recordHeader, recordHeader+len(obj.Value))
	binary.BigEndian.PutUint64(rec[0:8], obj.CreateRevision)
	binary.BigEndian.PutUint64(rec[8:16], obj.ResourceVersion)
	return append(rec, obj.Value...)
}

func (t *tx) kindBucket(kind string, create bool) (*bolt.Bucket, error) {
	objs := bucket(t.btx, bucketObjects)
	if objs == nil {
		return nil, errors.New("store: objects bucket missing")
	}
	if b := objs.Bucket([]byte(kind)); b != nil || !create {
		return b, nil
	}
	return objs.CreateBucket([]byte(kind))
}

func (t *tx) get(kind, ns, name string) (store.Object, bool, error) {
	b, err := t.kindBucket(kind, false)
	if err != nil || b == nil {
		return store.Object{}, false, err
	}
	key := objectKey(ns, name)
	rec := b.Get(key)
	if rec == nil {
		return store.Object{}, false, nil
	}
	obj, err := decode(kind, key, rec)
	return obj, err == nil, err
}

func (t *tx) Get(kind, ns, name string) (store.Object, error) {
	if err := t.check("get", kind, ns, name); err != nil {
		return store.Object{}, err
	}
	obj, ok, err := t.get(kind, ns, name)
	if err != nil {
		return store.Object{}, err
	}
	if !ok {
		return store.Object{}, fmt.Errorf("store: get %s %s: %w", kind, store.KeyString(ns, name), store.ErrNotFound)
	}
	return obj, nil
}

func (t *tx) List(kind, ns string) ([]store.Object, error) {
	if t.done {
		return nil, fmt.Errorf("store: list %s: %w: transaction already finished", kind, store.ErrInvalid)
	}
	if err := store.ValidateKind(kind); err != nil {
		return nil, fmt.Errorf("store: list %s: %w", kind, err)
	}
	if err := store.ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("store: list %s in %q: %w", kind, ns, err)
	}
	b, err := t.kindBucket(kind, false)
	if err != nil || b == nil {
		return []store.Object{}, err
	}
	out := []store.Object{}
	c := b.Cursor()
	var k, v []byte
	var prefix []byte
	if ns == "" {
		k, v = c.First()
	} else {
		prefix = objectKey(ns, "")
		k, v = c.Seek(prefix)
	}
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		obj, err := decode(kind, k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, obj)
	}
	return out, nil
}

func (t *tx) Create(obj store.Object) (store.Object, error) {
	op, key := "create", store.KeyString(obj.Namespace, obj.Name)
	if err := t.check(op, obj.Kind, obj.Namespace, obj.Name); err != nil {
		return store.Object{}, err
	}
	if obj.ResourceVersion != 0 || obj.CreateRevision != 0 {
		return store.Object{}, fmt.Errorf("store: create %s %s: %w: resourceVersion %d and createRevision %d must be 0", obj.Kind, key, store.ErrInvalid, obj.ResourceVersion, obj.CreateRevision)
	}
	_, exists, err := t.get(obj.Kind, obj.Namespace, obj.Name)
	if err != nil {
		return store.Object{}, err
	}
	if exists {
		return store.Object{}, fmt.Errorf("store: create %s %s: %w", obj.Kind, key, store.ErrAlreadyExists)
	}
	rev := t.baseRev + 1
	obj.CreateRevision, obj.ResourceVersion = rev, rev
	return t.put(op, obj, store.EventPut)
}

func (t *tx) Update(obj store.Object) (store.Object, error) {
	op, key := "update", store.KeyString(obj.Namespace, obj.Name)
	if err := t.check(op, obj.Kind, obj.Namespace, obj.Name); err != nil {
		return store.Object{}, err
	}
	cur, ok, err := t.get(obj.Kind, obj.Namespace, obj.Name)
	if err != nil {
		return store.Object{}, err
	}
	if !ok {
		return store.Object{}, fmt.Errorf("store: update %s %s: %w", obj.Kind, key, store.ErrNotFound)
	}
	if obj.ResourceVersion != 0 && obj.ResourceVersion != cur.ResourceVersion {
		return store.Object{}, fmt.Errorf("store: update %s %s: resourceVersion %d != %d: %w", obj.Kind, key, obj.ResourceVersion, cur.ResourceVersion, store.ErrConflict)
	}
	obj.CreateRevision, obj.ResourceVersion = cur.CreateRevision, t.baseRev+1
	return t.put(op, obj, store.EventPut)
}

func (t *tx) put(op string, obj store.Object, typ store.EventType) (store.Object, error) {
	b, err := t.kindBucket(obj.Kind, true)
	if err != nil {
		return store.Object{}, fmt.Errorf("store: %s %s %s: %w", op, obj.Kind, store.KeyString(obj.Namespace, obj.Name), err)
	}
	if err := b.Put(objectKey(obj.Namespace, obj.Name), encode(obj)); err != nil {
		return store.Object{}, fmt.Errorf("store: %s %s %s: %w", op, obj.Kind, store.KeyString(obj.Namespace, obj.Name), err)
	}
	t.wrote = true
	ev := obj
	ev.Value = bytes.Clone(obj.Value) // shared by watchers; keep the caller's slice out of it
	t.events = append(t.events, store.Event{Type: typ, Object: ev, Revision: obj.ResourceVersion})
	obj.Value = bytes.Clone(obj.Value)
	return obj, nil
}

func (t *tx) Delete(kind, ns, name string, expectRV uint64) error {
	key := store.KeyString(ns, name)
	if err := t.check("delete", kind, ns, name); err != nil {
		return err
	}
	cur, ok, err := t.get(kind, ns, name)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("store: delete %s %s: %w", kind, key, store.ErrNotFound)
	}
	if expectRV != 0 && expectRV != cur.ResourceVersion {
		return fmt.Errorf("store: delete %s %s: resourceVersion %d != %d: %w", kind, key, expectRV, cur.ResourceVersion, store.ErrConflict)
	}
	b, err := t.kindBucket(kind, false)
	if err != nil {
		return err
	}
	if err := b.Delete(objectKey(ns, name)); err != nil {
		return fmt.Errorf("store: delete %s %s: %w", kind, key, err)
	}
	t.wrote = true
	cur.ResourceVersion = t.baseRev + 1
	t.events = append(t.events, store.Event{Type: store.EventDelete, Object: cur, Revision: cur.ResourceVersion})
	return nil
}

func (t *tx) Revision() uint64 {
	if t.wrote {
		return t.baseRev + 1
	}
	if t.writable {
		return t.baseRev
	}
	return readUint(bucket(t.btx, bucketMeta), keyRevision)
}

func readUint(b *bolt.Bucket, key string) uint64 {
	if b == nil {
		return 0
	}
	v := b.Get([]byte(key))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, key string, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return b.Put([]byte(key), buf[:])
}
