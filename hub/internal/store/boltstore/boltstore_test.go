package boltstore

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/storetest"
)

// openAt opens path and registers a cleanup that closes the store and
// checks the file's consistency with bbolt's own checker.
func openAt(t testing.TB, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkFile(t, path)
	})
	return s
}

func checkFile(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Errorf("consistency check: open %s: %v", path, err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("consistency check %s: %v", path, err)
		}
		return nil
	})
	if err != nil {
		t.Errorf("consistency check %s: %v", path, err)
	}
}

func factory(opts Options) storetest.Factory {
	return storetest.Factory{
		Open: func(t testing.TB) store.Store {
			return openAt(t, filepath.Join(t.TempDir(), "hub.db"), opts)
		},
		Reopen: func(t testing.TB, old store.Store) store.Store {
			path := old.(*Store).Path()
			if err := old.Close(); err != nil {
				t.Fatalf("Close before reopen: %v", err)
			}
			return openAt(t, path, opts)
		},
	}
}

func TestContract(t *testing.T) {
	storetest.Run(t, factory(Options{}))
}

func BenchmarkStore(b *testing.B) {
	storetest.RunBenchmarks(b, factory(Options{}))
}

func BenchmarkStoreNoSync(b *testing.B) {
	storetest.RunBenchmarks(b, factory(Options{NoSync: true}))
}

func TestLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	openAt(t, path, Options{})
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "is another tether hub running?") {
		t.Fatalf("error %q should name the file and the likely cause", err)
	}
}

func TestSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := openAt(t, path, Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	setSchema := func(v uint64) {
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Update(func(tx *bolt.Tx) error { return putUint(bucket(tx, bucketMeta), keySchema, v) }); err != nil {
			t.Fatal(err)
		}
	}
	setSchema(SchemaVersion + 1)
	_, err := Open(path, Options{})
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), "schema version 2, this binary supports up to 1") {
		t.Fatalf("Open of a newer schema = %v, want ErrSchemaTooNew", err)
	}
	setSchema(0)
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "no upgrade path from schema version 0") {
		t.Fatalf("Open of an unknown old schema = %v", err)
	}
	setSchema(SchemaVersion)
	s2, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("Open after restoring schema: %v", err)
	}
	s2.Close()
}

func TestNotAStoreFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte(bucketObjects)); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "not a tether store file") {
		t.Fatalf("Open = %v", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{LockTimeout: -1}, {WatchBuffer: -1}, {HistorySize: -1}} {
		if _, err := Open(filepath.Join(t.TempDir(), "x.db"), o); err == nil {
			t.Errorf("Open(%+v): want error", o)
		}
	}
}

func TestWatchExpiresSlowConsumer(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "hub.db"), Options{WatchBuffer: 4, NoSync: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := s.Watch(ctx, "Cluster", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if _, err := s.Create(ctx, store.Object{Kind: "Cluster", Namespace: "a", Name: strconv.Itoa(i)}); err != nil {
			t.Fatalf("Create %d (writers must not block on a slow watcher): %v", i, err)
		}
	}
	var got []store.Event
	for e := range slow {
		got = append(got, e)
	}
	if len(got) != 5 {
		t.Fatalf("slow watcher got %d events, want 4 then the error", len(got))
	}
	last := got[len(got)-1]
	if last.Type != store.EventError || !errors.Is(last.Err, store.ErrWatchExpired) {
		t.Fatalf("last event = %v %v, want ErrWatchExpired", last.Type, last.Err)
	}
	for i, e := range got[:4] {
		if e.Type != store.EventPut || e.Object.Name != strconv.Itoa(i) {
			t.Fatalf("event %d = %v %s", i, e.Type, e.Object.Name)
		}
	}
}

func TestWatchCompacted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.db")
	s := openAt(t, path, Options{HistorySize: 3, NoSync: true})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := range 5 {
		if _, err := s.Create(ctx, store.Object{Kind: "Cluster", Name: strconv.Itoa(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// Revisions 1..5; history holds 3..5, so from 2 works and from 1 does not.
	if _, err := s.Watch(ctx, "Cluster", 1); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch from 1 = %v, want ErrCompacted", err)
	}
	ch, err := s.Watch(ctx, "Cluster", 2)
	if err != nil {
		t.Fatalf("Watch from 2: %v", err)
	}
	for want := uint64(3); want <= 5; want++ {
		if e := <-ch; e.Revision != want {
			t.Fatalf("replayed revision %d, want %d", e.Revision, want)
		}
	}
	// History is in memory: after a restart only the current revision can
	// be watched from.
	s.Close()
	s2 := openAt(t, path, Options{HistorySize: 3})
	if _, err := s2.Watch(ctx, "Cluster", 4); !errors.Is(err, store.ErrCompacted) {
		t.Fatalf("Watch from before restart = %v, want ErrCompacted", err)
	}
	if _, err := s2.Watch(ctx, "Cluster", 5); err != nil {
		t.Fatalf("Watch from current revision after restart: %v", err)
	}
}

func TestTxAfterReturn(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "hub.db"), Options{NoSync: true})
	var leaked store.Tx
	if err := s.Txn(context.Background(), func(tx store.Tx) error { leaked = tx; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := leaked.Get("Cluster", "a", "b"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Get on a finished tx = %v, want ErrInvalid", err)
	}
	if _, err := leaked.Create(store.Object{Kind: "Cluster", Name: "x"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Create on a finished tx = %v, want ErrInvalid", err)
	}
}

func TestMain(m *testing.M) {
	// Watches must not leave goroutines behind after cancel or Close.
	goleak.VerifyTestMain(m)
}
