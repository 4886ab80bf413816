// Package storetest is the contract suite every store.Store backend must
// pass. A backend's test calls Run with a Factory that opens real storage
// (a bbolt file in t.TempDir, a real etcd), and RunBenchmarks for numbers.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// Factory opens stores for the suite.
type Factory struct {
	// Open returns a new, empty store and registers its cleanup.
	Open func(t testing.TB) store.Store
	// Reopen closes s and opens the same storage again. Nil skips the
	// persistence tests (for an in-memory backend).
	Reopen func(t testing.TB, s store.Store) store.Store
}

// eventTimeout bounds every wait for a watch event.
const eventTimeout = 10 * time.Second

// Run runs the contract suite against f.
func Run(t *testing.T, f Factory) {
	tests := []struct {
		name string
		fn   func(*testing.T, Factory)
	}{
		{"CreateGet", testCreateGet},
		{"InvalidKeys", testInvalidKeys},
		{"Update", testUpdate},
		{"Delete", testDelete},
		{"List", testList},
		{"ValueIsolation", testValueIsolation},
		{"Txn", testTxn},
		{"ConcurrentUpdates", testConcurrentUpdates},
		{"ConcurrentCreates", testConcurrentCreates},
		{"WatchOrder", testWatchOrder},
		{"WatchConcurrentWriters", testWatchConcurrentWriters},
		{"WatchReplay", testWatchReplay},
		{"WatchTxn", testWatchTxn},
		{"WatchCancel", testWatchCancel},
		{"ContextCancelled", testContextCancelled},
		{"Closed", testClosed},
		{"Reopen", testReopen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, f) })
	}
}

func obj(kind, ns, name, value string) store.Object {
	return store.Object{Kind: kind, Namespace: ns, Name: name, Value: []byte(value)}
}

func mustCreate(t testing.TB, s store.Store, o store.Object) store.Object {
	t.Helper()
	got, err := s.Create(context.Background(), o)
	if err != nil {
		t.Fatalf("Create %s %s/%s: %v", o.Kind, o.Namespace, o.Name, err)
	}
	return got
}

func mustRevision(t testing.TB, s store.Store) uint64 {
	t.Helper()
	rev, err := s.Revision(context.Background())
	if err != nil {
		t.Fatalf("Revision: %v", err)
	}
	return rev
}

func wantErr(t testing.TB, err, target error, contains string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
	if contains != "" && !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q does not contain %q", err, contains)
	}
}

func sameObject(t testing.TB, got, want store.Object) {
	t.Helper()
	if got.Kind != want.Kind || got.Namespace != want.Namespace || got.Name != want.Name ||
		!bytes.Equal(got.Value, want.Value) || got.ResourceVersion != want.ResourceVersion || got.CreateRevision != want.CreateRevision {
		t.Fatalf("object = %s, want %s", fmtObj(got), fmtObj(want))
	}
}

func fmtObj(o store.Object) string {
	return fmt.Sprintf("{%s %s/%s %q rv=%d create=%d}", o.Kind, o.Namespace, o.Name, o.Value, o.ResourceVersion, o.CreateRevision)
}

func testCreateGet(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	rev0 := mustRevision(t, s)

	created := mustCreate(t, s, obj("Cluster", "acme", "edge-1", `{"a":1}`))
	if created.ResourceVersion != rev0+1 || created.CreateRevision != rev0+1 {
		t.Fatalf("created revisions %d/%d, want %d", created.ResourceVersion, created.CreateRevision, rev0+1)
	}
	if rev := mustRevision(t, s); rev != rev0+1 {
		t.Fatalf("Revision after create = %d, want %d", rev, rev0+1)
	}
	got, err := s.Get(ctx, "Cluster", "acme", "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	sameObject(t, got, created)

	clusterScoped := mustCreate(t, s, obj("Cluster", "", "edge-1", `{}`))
	if got, err := s.Get(ctx, "Cluster", "", "edge-1"); err != nil {
		t.Fatal(err)
	} else {
		sameObject(t, got, clusterScoped)
	}

	_, err = s.Create(ctx, obj("Cluster", "acme", "edge-1", `{}`))
	wantErr(t, err, store.ErrAlreadyExists, "store: create Cluster acme/edge-1")

	_, err = s.Get(ctx, "Cluster", "acme", "nope")
	wantErr(t, err, store.ErrNotFound, "store: get Cluster acme/nope")
	_, err = s.Get(ctx, "Other", "acme", "edge-1")
	wantErr(t, err, store.ErrNotFound, "")

	withRV := obj("Cluster", "acme", "edge-2", `{}`)
	withRV.ResourceVersion = 3
	_, err = s.Create(ctx, withRV)
	wantErr(t, err, store.ErrInvalid, "")
	if rev := mustRevision(t, s); rev != rev0+2 {
		t.Fatalf("failed writes moved the revision to %d, want %d", rev, rev0+2)
	}
}

func testInvalidKeys(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	mustCreate(t, s, obj("Cluster", "acme", "ok", "v"))
	rev0 := mustRevision(t, s)
	tests := []struct{ name, kind, ns, n string }{
		{"empty kind", "", "acme", "x"},
		{"kind starts with digit", "1Cluster", "acme", "x"},
		{"kind with dash", "Cluster-x", "acme", "x"},
		{"kind with slash", "a/b", "acme", "x"},
		{"empty name", "Cluster", "acme", ""},
		{"slash in name", "Cluster", "acme", "a/b"},
		{"NUL in name", "Cluster", "acme", "a\x00b"},
		{"newline in name", "Cluster", "acme", "a\nb"},
		{"dot name", "Cluster", "acme", "."},
		{"dotdot namespace", "Cluster", "..", "x"},
		{"slash in namespace", "Cluster", "a/b", "x"},
		{"NUL in namespace", "Cluster", "a\x00", "x"},
		{"invalid UTF-8", "Cluster", "acme", "\xff"},
		{"name too long", "Cluster", "acme", strings.Repeat("x", store.MaxNameLen+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Create(ctx, obj(tt.kind, tt.ns, tt.n, "v"))
			wantErr(t, err, store.ErrInvalid, "store: create")
			_, err = s.Get(ctx, tt.kind, tt.ns, tt.n)
			wantErr(t, err, store.ErrInvalid, "store: get")
			_, err = s.Update(ctx, obj(tt.kind, tt.ns, tt.n, "v"))
			wantErr(t, err, store.ErrInvalid, "store: update")
			err = s.Delete(ctx, tt.kind, tt.ns, tt.n, 0)
			wantErr(t, err, store.ErrInvalid, "store: delete")
		})
	}
	_, err := s.List(ctx, "", "")
	wantErr(t, err, store.ErrInvalid, "store: list")
	_, err = s.List(ctx, "Cluster", "a/b")
	wantErr(t, err, store.ErrInvalid, "store: list")
	_, err = s.Watch(ctx, "bad kind", 0)
	wantErr(t, err, store.ErrInvalid, "store: watch")
	if rev := mustRevision(t, s); rev != rev0 {
		t.Fatalf("invalid writes moved the revision from %d to %d", rev0, rev)
	}
	objs, err := s.List(ctx, "Cluster", "")
	if err != nil || len(objs) != 1 {
		t.Fatalf("List after invalid writes = %d objects, %v; want 1", len(objs), err)
	}
}

func testUpdate(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	c := mustCreate(t, s, obj("Cluster", "acme", "edge-1", "v1"))

	tests := []struct {
		name    string
		rv      func(cur store.Object) uint64
		target  error
		message string
	}{
		{"matching RV", func(cur store.Object) uint64 { return cur.ResourceVersion }, nil, ""},
		{"unconditional", func(store.Object) uint64 { return 0 }, nil, ""},
		{"stale RV", func(cur store.Object) uint64 { return cur.ResourceVersion - 1 }, store.ErrConflict, "store: update Cluster acme/edge-1: resourceVersion"},
		{"future RV", func(cur store.Object) uint64 { return cur.ResourceVersion + 100 }, store.ErrConflict, " != "},
	}
	cur := c
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev0 := mustRevision(t, s)
			in := obj("Cluster", "acme", "edge-1", "v"+strconv.Itoa(i+2))
			in.ResourceVersion = tt.rv(cur)
			got, err := s.Update(ctx, in)
			if tt.target != nil {
				wantErr(t, err, tt.target, tt.message)
				want := fmt.Sprintf("resourceVersion %d != %d: conflict", in.ResourceVersion, cur.ResourceVersion)
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
				again, err := s.Get(ctx, "Cluster", "acme", "edge-1")
				if err != nil {
					t.Fatal(err)
				}
				sameObject(t, again, cur)
				return
			}
			if err != nil {
				t.Fatalf("Update: %v", err)
			}
			if got.ResourceVersion != rev0+1 || got.CreateRevision != c.CreateRevision || !bytes.Equal(got.Value, in.Value) {
				t.Fatalf("Update returned %s (rev before %d, create %d)", fmtObj(got), rev0, c.CreateRevision)
			}
			again, err := s.Get(ctx, "Cluster", "acme", "edge-1")
			if err != nil {
				t.Fatal(err)
			}
			sameObject(t, again, got)
			cur = got
		})
	}
	_, err := s.Update(ctx, obj("Cluster", "acme", "missing", "v"))
	wantErr(t, err, store.ErrNotFound, "store: update Cluster acme/missing")
}

func testDelete(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	c := mustCreate(t, s, obj("Cluster", "acme", "edge-1", "v1"))

	wantErr(t, s.Delete(ctx, "Cluster", "acme", "missing", 0), store.ErrNotFound, "store: delete Cluster acme/missing")
	wantErr(t, s.Delete(ctx, "Cluster", "acme", "edge-1", c.ResourceVersion+5), store.ErrConflict,
		fmt.Sprintf("store: delete Cluster acme/edge-1: resourceVersion %d != %d", c.ResourceVersion+5, c.ResourceVersion))
	if _, err := s.Get(ctx, "Cluster", "acme", "edge-1"); err != nil {
		t.Fatalf("conflicting delete removed the object: %v", err)
	}
	rev0 := mustRevision(t, s)
	if err := s.Delete(ctx, "Cluster", "acme", "edge-1", c.ResourceVersion); err != nil {
		t.Fatalf("Delete with matching RV: %v", err)
	}
	if rev := mustRevision(t, s); rev != rev0+1 {
		t.Fatalf("Revision after delete = %d, want %d", rev, rev0+1)
	}
	_, err := s.Get(ctx, "Cluster", "acme", "edge-1")
	wantErr(t, err, store.ErrNotFound, "")
	wantErr(t, s.Delete(ctx, "Cluster", "acme", "edge-1", 0), store.ErrNotFound, "")

	again := mustCreate(t, s, obj("Cluster", "acme", "edge-1", "v2"))
	if again.CreateRevision <= c.CreateRevision {
		t.Fatalf("re-created object has CreateRevision %d, not after %d", again.CreateRevision, c.CreateRevision)
	}
	if err := s.Delete(ctx, "Cluster", "acme", "edge-1", 0); err != nil {
		t.Fatalf("unconditional Delete: %v", err)
	}
}

func testList(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	// Created out of order, with namespaces that are prefixes of each other.
	for _, k := range []struct{ ns, name string }{
		{"ab", "z"}, {"a", "y"}, {"a", "b"}, {"", "global"}, {"b", "a"}, {"a", "a-1"}, {"ab", "a"},
	} {
		mustCreate(t, s, obj("Cluster", k.ns, k.name, k.ns+"/"+k.name))
	}
	mustCreate(t, s, obj("Credential", "a", "secret", "x"))
	mustCreate(t, s, obj("Clusters", "a", "other", "x")) // kind that extends another kind's name

	keys := func(objs []store.Object) string {
		var out []string
		for _, o := range objs {
			if o.Kind != "Cluster" {
				t.Errorf("List(Cluster) returned kind %q", o.Kind)
			}
			if string(o.Value) != o.Namespace+"/"+o.Name || o.ResourceVersion == 0 {
				t.Errorf("List returned %s", fmtObj(o))
			}
			out = append(out, o.Namespace+"/"+o.Name)
		}
		return strings.Join(out, " ")
	}
	tests := []struct{ ns, want string }{
		{"", "/global a/a-1 a/b a/y ab/a ab/z b/a"},
		{"a", "a/a-1 a/b a/y"},
		{"ab", "ab/a ab/z"},
		{"zzz", ""},
	}
	for _, tt := range tests {
		objs, err := s.List(ctx, "Cluster", tt.ns)
		if err != nil {
			t.Fatalf("List(Cluster, %q): %v", tt.ns, err)
		}
		if got := keys(objs); got != tt.want {
			t.Errorf("List(Cluster, %q) = %q, want %q", tt.ns, got, tt.want)
		}
	}
	objs, err := s.List(ctx, "NoSuchKind", "")
	if err != nil || len(objs) != 0 {
		t.Fatalf("List of an unknown kind = %v, %v", objs, err)
	}
}

func testValueIsolation(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	in := obj("Cluster", "acme", "edge-1", "original")
	created := mustCreate(t, s, in)
	in.Value[0] = 'X'
	created.Value[1] = 'X'
	got, err := s.Get(ctx, "Cluster", "acme", "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value) != "original" {
		t.Fatalf("stored value changed through a caller's slice: %q", got.Value)
	}
	got.Value[2] = 'X'
	again, _ := s.Get(ctx, "Cluster", "acme", "edge-1")
	if string(again.Value) != "original" {
		t.Fatalf("stored value changed through Get's slice: %q", again.Value)
	}
}

func testTxn(t *testing.T, f Factory) {
	ctx := context.Background()
	t.Run("commit", func(t *testing.T) {
		s := f.Open(t)
		a := mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
		rev0 := mustRevision(t, s)
		var seen uint64
		err := s.Txn(ctx, func(tx store.Tx) error {
			if tx.Revision() != rev0 {
				return fmt.Errorf("tx.Revision before writes = %d, want %d", tx.Revision(), rev0)
			}
			cur, err := tx.Get("Cluster", "acme", "a")
			if err != nil {
				return err
			}
			cur.Value = []byte("2")
			if _, err := tx.Update(cur); err != nil {
				return err
			}
			b, err := tx.Create(obj("Cluster", "acme", "b", "new"))
			if err != nil {
				return err
			}
			// The transaction sees its own writes.
			got, err := tx.Get("Cluster", "acme", "b")
			if err != nil || !bytes.Equal(got.Value, b.Value) {
				return fmt.Errorf("get inside txn after create = %v, %v", got, err)
			}
			list, err := tx.List("Cluster", "acme")
			if err != nil || len(list) != 2 || string(list[0].Value) != "2" {
				return fmt.Errorf("list inside txn = %v, %v", list, err)
			}
			seen = tx.Revision()
			return nil
		})
		if err != nil {
			t.Fatalf("Txn: %v", err)
		}
		if rev := mustRevision(t, s); rev != rev0+1 || seen != rev0+1 {
			t.Fatalf("after a two-write Txn: Revision %d, tx.Revision %d; want both %d", rev, seen, rev0+1)
		}
		objs, _ := s.List(ctx, "Cluster", "acme")
		for _, o := range objs {
			if o.ResourceVersion != rev0+1 {
				t.Errorf("%s: ResourceVersion %d, want the txn revision %d", o.Name, o.ResourceVersion, rev0+1)
			}
		}
		if objs[0].CreateRevision != a.CreateRevision {
			t.Errorf("update in txn changed CreateRevision")
		}
	})
	t.Run("rollback on error", func(t *testing.T) {
		s := f.Open(t)
		mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
		rev0 := mustRevision(t, s)
		boom := errors.New("boom")
		err := s.Txn(ctx, func(tx store.Tx) error {
			if _, err := tx.Create(obj("Cluster", "acme", "b", "x")); err != nil {
				return err
			}
			if err := tx.Delete("Cluster", "acme", "a", 0); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Txn error = %v, want fn's error", err)
		}
		if rev := mustRevision(t, s); rev != rev0 {
			t.Fatalf("rolled-back txn moved revision %d -> %d", rev0, rev)
		}
		if _, err := s.Get(ctx, "Cluster", "acme", "a"); err != nil {
			t.Fatalf("rolled-back delete is visible: %v", err)
		}
		if _, err := s.Get(ctx, "Cluster", "acme", "b"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("rolled-back create is visible: %v", err)
		}
	})
	t.Run("conflict inside txn", func(t *testing.T) {
		s := f.Open(t)
		a := mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
		err := s.Txn(ctx, func(tx store.Tx) error {
			stale := a
			stale.ResourceVersion++
			_, err := tx.Update(stale)
			return err
		})
		wantErr(t, err, store.ErrConflict, "store: update Cluster acme/a")
	})
	t.Run("read-only txn keeps revision", func(t *testing.T) {
		s := f.Open(t)
		mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
		rev0 := mustRevision(t, s)
		var listed []store.Object
		var at uint64
		if err := s.Txn(ctx, func(tx store.Tx) error {
			var err error
			listed, err = tx.List("Cluster", "")
			at = tx.Revision()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(listed) != 1 || at != rev0 || mustRevision(t, s) != rev0 {
			t.Fatalf("read-only txn: %d objects at %d, revision now %d, want 1 at %d", len(listed), at, mustRevision(t, s), rev0)
		}
	})
	t.Run("cancelled during fn", func(t *testing.T) {
		s := f.Open(t)
		rev0 := mustRevision(t, s)
		cctx, cancel := context.WithCancel(ctx)
		err := s.Txn(cctx, func(tx store.Tx) error {
			_, err := tx.Create(obj("Cluster", "acme", "a", "1"))
			cancel()
			return err
		})
		wantErr(t, err, context.Canceled, "")
		if rev := mustRevision(t, s); rev != rev0 {
			t.Fatalf("cancelled txn committed: revision %d -> %d", rev0, rev)
		}
	})
}

// casIncrement adds one to the integer stored at key, retrying on conflict.
func casIncrement(ctx context.Context, s store.Store, ns, name string) (conflicts int, err error) {
	for {
		cur, err := s.Get(ctx, "Counter", ns, name)
		if err != nil {
			return conflicts, err
		}
		n, err := strconv.Atoi(string(cur.Value))
		if err != nil {
			return conflicts, err
		}
		cur.Value = []byte(strconv.Itoa(n + 1))
		_, err = s.Update(ctx, cur)
		if errors.Is(err, store.ErrConflict) {
			conflicts++
			continue
		}
		return conflicts, err
	}
}

func testConcurrentUpdates(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	mustCreate(t, s, obj("Counter", "ns", "c", "0"))
	const workers, perWorker = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			for range perWorker {
				if _, err := casIncrement(ctx, s, "ns", "c"); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("increment: %v", err)
	}
	got, err := s.Get(ctx, "Counter", "ns", "c")
	if err != nil {
		t.Fatal(err)
	}
	if string(got.Value) != strconv.Itoa(workers*perWorker) {
		t.Fatalf("counter = %s after %d CAS increments: lost updates", got.Value, workers*perWorker)
	}
}

func testConcurrentCreates(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	const workers = 8
	var wg sync.WaitGroup
	wins := make(chan int, workers)
	for i := range workers {
		wg.Go(func() {
			// Everyone races for "shared"; each also creates its own key.
			if _, err := s.Create(ctx, obj("Lock", "", "shared", strconv.Itoa(i))); err == nil {
				wins <- i
			} else if !errors.Is(err, store.ErrAlreadyExists) {
				t.Errorf("Create shared: %v", err)
			}
			if _, err := s.Create(ctx, obj("Lock", "", "own-"+strconv.Itoa(i), "x")); err != nil {
				t.Errorf("Create own: %v", err)
			}
		})
	}
	wg.Wait()
	close(wins)
	if n := len(wins); n != 1 {
		t.Fatalf("%d creators of the same key succeeded, want 1", n)
	}
	objs, err := s.List(ctx, "Lock", "")
	if err != nil || len(objs) != workers+1 {
		t.Fatalf("List = %d objects, %v; want %d", len(objs), err, workers+1)
	}
	revs := map[uint64]bool{}
	for _, o := range objs {
		if revs[o.ResourceVersion] {
			t.Fatalf("two single writes share revision %d", o.ResourceVersion)
		}
		revs[o.ResourceVersion] = true
	}
}

func nextEvent(t testing.TB, ch <-chan store.Event) store.Event {
	t.Helper()
	select {
	case e, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed, want an event")
		}
		return e
	case <-time.After(eventTimeout):
		t.Fatalf("no watch event within %s", eventTimeout)
	}
	return store.Event{}
}

func wantEvent(t testing.TB, e store.Event, typ store.EventType, name string, rev uint64, value string) {
	t.Helper()
	if e.Type != typ || e.Object.Name != name || e.Revision != rev || e.Object.ResourceVersion != rev || string(e.Object.Value) != value {
		t.Fatalf("event = %v %s rev %d, want %v %s rev %d value %q", e.Type, fmtObj(e.Object), e.Revision, typ, name, rev, value)
	}
}

func testWatchOrder(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clusters, err := s.Watch(ctx, "Cluster", 0)
	if err != nil {
		t.Fatal(err)
	}
	all, err := s.Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	a := mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
	other := mustCreate(t, s, obj("Credential", "acme", "cred", "c"))
	a.Value = []byte("2")
	a2, err := s.Update(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "Cluster", "acme", "a", 0); err != nil {
		t.Fatal(err)
	}
	delRev := mustRevision(t, s)

	e := nextEvent(t, clusters)
	wantEvent(t, e, store.EventPut, "a", a.ResourceVersion, "1")
	if e.Object.CreateRevision != e.Revision {
		t.Errorf("create event CreateRevision %d != Revision %d", e.Object.CreateRevision, e.Revision)
	}
	wantEvent(t, nextEvent(t, clusters), store.EventPut, "a", a2.ResourceVersion, "2")
	e = nextEvent(t, clusters)
	wantEvent(t, e, store.EventDelete, "a", delRev, "2")
	if e.Object.CreateRevision != a.CreateRevision {
		t.Errorf("delete event CreateRevision %d, want %d", e.Object.CreateRevision, a.CreateRevision)
	}

	wantEvent(t, nextEvent(t, all), store.EventPut, "a", a.ResourceVersion, "1")
	e = nextEvent(t, all)
	wantEvent(t, e, store.EventPut, "cred", other.ResourceVersion, "c")
	if e.Object.Kind != "Credential" {
		t.Errorf("event kind %q", e.Object.Kind)
	}
	wantEvent(t, nextEvent(t, all), store.EventPut, "a", a2.ResourceVersion, "2")
	wantEvent(t, nextEvent(t, all), store.EventDelete, "a", delRev, "2")
}

func testWatchConcurrentWriters(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mustCreate(t, s, obj("Counter", "ns", "c", "0"))
	ch, err := s.Watch(ctx, "Counter", 0)
	if err != nil {
		t.Fatal(err)
	}
	const workers, perWorker = 4, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if _, err := casIncrement(ctx, s, "ns", "c"); err != nil {
					t.Errorf("increment: %v", err)
				}
				if _, err := s.Create(ctx, obj("Counter", "ns", fmt.Sprintf("w%d-%d", w, i), "0")); err != nil {
					t.Errorf("create: %v", err)
				}
			}
		})
	}
	var last uint64
	lastValue := 0
	for range 2 * workers * perWorker {
		e := nextEvent(t, ch)
		if e.Type != store.EventPut {
			t.Fatalf("unexpected event %v: %v", e.Type, e.Err)
		}
		if e.Revision <= last {
			t.Fatalf("event revision %d after %d: out of order", e.Revision, last)
		}
		last = e.Revision
		if e.Object.Name == "c" {
			n, _ := strconv.Atoi(string(e.Object.Value))
			if n != lastValue+1 {
				t.Fatalf("counter event %d after %d: missed or reordered", n, lastValue)
			}
			lastValue = n
		}
	}
	wg.Wait()
	if last != mustRevision(t, s) {
		t.Fatalf("last event revision %d, store revision %d", last, mustRevision(t, s))
	}
}

func testWatchReplay(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	mustCreate(t, s, obj("Cluster", "acme", "before", "0"))
	rev0 := mustRevision(t, s)
	var revs []uint64
	for i := range 3 {
		o := mustCreate(t, s, obj("Cluster", "acme", "n"+strconv.Itoa(i), strconv.Itoa(i)))
		mustCreate(t, s, obj("Other", "acme", "n"+strconv.Itoa(i), "other"))
		revs = append(revs, o.ResourceVersion)
	}
	for skip := range 3 {
		from := rev0
		if skip > 0 {
			from = revs[skip-1]
		}
		wctx, cancel := context.WithCancel(ctx)
		ch, err := s.Watch(wctx, "Cluster", from)
		if err != nil {
			t.Fatalf("Watch from %d: %v", from, err)
		}
		for i := skip; i < 3; i++ {
			wantEvent(t, nextEvent(t, ch), store.EventPut, "n"+strconv.Itoa(i), revs[i], strconv.Itoa(i))
		}
		cancel()
	}

	// Replay then live events, without a gap or duplicate.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Watch(wctx, "Cluster", revs[1])
	if err != nil {
		t.Fatal(err)
	}
	live := mustCreate(t, s, obj("Cluster", "acme", "live", "l"))
	wantEvent(t, nextEvent(t, ch), store.EventPut, "n2", revs[2], "2")
	wantEvent(t, nextEvent(t, ch), store.EventPut, "live", live.ResourceVersion, "l")

	// Watching from the current revision replays nothing.
	now, err := s.Watch(wctx, "Cluster", mustRevision(t, s))
	if err != nil {
		t.Fatal(err)
	}
	next := mustCreate(t, s, obj("Cluster", "acme", "after", "a"))
	wantEvent(t, nextEvent(t, now), store.EventPut, "after", next.ResourceVersion, "a")
}

func testWatchTxn(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a := mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
	ch, err := s.Watch(ctx, "Cluster", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Txn(ctx, func(tx store.Tx) error {
		if _, err := tx.Create(obj("Cluster", "acme", "b", "2")); err != nil {
			return err
		}
		return tx.Delete("Cluster", "acme", "a", a.ResourceVersion)
	}); err != nil {
		t.Fatal(err)
	}
	// A rolled-back txn produces no events.
	_ = s.Txn(ctx, func(tx store.Tx) error {
		_, _ = tx.Create(obj("Cluster", "acme", "ghost", "x"))
		return errors.New("abort")
	})
	rev := mustRevision(t, s)
	wantEvent(t, nextEvent(t, ch), store.EventPut, "b", rev, "2")
	wantEvent(t, nextEvent(t, ch), store.EventDelete, "a", rev, "1")
	c := mustCreate(t, s, obj("Cluster", "acme", "c", "3"))
	wantEvent(t, nextEvent(t, ch), store.EventPut, "c", c.ResourceVersion, "3")
}

func testWatchCancel(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := s.Watch(ctx, "Cluster", 0)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.After(eventTimeout)
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				// Writes after the watch ended must not block or panic.
				mustCreate(t, s, obj("Cluster", "acme", "after-cancel", "x"))
				return
			}
			if e.Type == store.EventError {
				t.Fatalf("cancelled watch got error event: %v", e.Err)
			}
		case <-deadline:
			t.Fatal("watch channel not closed after cancel")
		}
	}
}

func testContextCancelled(t *testing.T, f Factory) {
	s := f.Open(t)
	mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	rev0 := mustRevision(t, s)
	ops := map[string]func() error{
		"Get":      func() error { _, err := s.Get(ctx, "Cluster", "acme", "a"); return err },
		"List":     func() error { _, err := s.List(ctx, "Cluster", ""); return err },
		"Create":   func() error { _, err := s.Create(ctx, obj("Cluster", "acme", "b", "1")); return err },
		"Update":   func() error { _, err := s.Update(ctx, obj("Cluster", "acme", "a", "2")); return err },
		"Delete":   func() error { return s.Delete(ctx, "Cluster", "acme", "a", 0) },
		"Txn":      func() error { return s.Txn(ctx, func(store.Tx) error { return nil }) },
		"Watch":    func() error { _, err := s.Watch(ctx, "Cluster", 0); return err },
		"Revision": func() error { _, err := s.Revision(ctx); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, context.Canceled) {
			t.Errorf("%s with cancelled context: %v, want context.Canceled", name, err)
		}
	}
	if rev := mustRevision(t, s); rev != rev0 {
		t.Fatalf("cancelled writes moved the revision %d -> %d", rev0, rev)
	}
}

func testClosed(t *testing.T, f Factory) {
	s := f.Open(t)
	ctx := context.Background()
	mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
	ch, err := s.Watch(ctx, "Cluster", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The watch ends; an error event, if sent, says the store closed.
	deadline := time.After(eventTimeout)
	for open := true; open; {
		select {
		case e, ok := <-ch:
			open = ok
			if ok && (e.Type != store.EventError || !errors.Is(e.Err, store.ErrClosed)) {
				t.Fatalf("event after Close: %v %v", e.Type, e.Err)
			}
		case <-deadline:
			t.Fatal("watch channel not closed by Close")
		}
	}
	ops := map[string]func() error{
		"Get":      func() error { _, err := s.Get(ctx, "Cluster", "acme", "a"); return err },
		"List":     func() error { _, err := s.List(ctx, "Cluster", ""); return err },
		"Create":   func() error { _, err := s.Create(ctx, obj("Cluster", "acme", "b", "1")); return err },
		"Update":   func() error { _, err := s.Update(ctx, obj("Cluster", "acme", "a", "2")); return err },
		"Delete":   func() error { return s.Delete(ctx, "Cluster", "acme", "a", 0) },
		"Txn":      func() error { return s.Txn(ctx, func(store.Tx) error { return nil }) },
		"Watch":    func() error { _, err := s.Watch(ctx, "Cluster", 0); return err },
		"Revision": func() error { _, err := s.Revision(ctx); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func testReopen(t *testing.T, f Factory) {
	if f.Reopen == nil {
		t.Skip("backend has no persistence")
	}
	s := f.Open(t)
	ctx := context.Background()
	a := mustCreate(t, s, obj("Cluster", "acme", "a", "1"))
	b := mustCreate(t, s, obj("Cluster", "", "b", "2"))
	a.Value = []byte("1b")
	a, err := s.Update(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	gone := mustCreate(t, s, obj("Cluster", "acme", "gone", "x"))
	if err := s.Delete(ctx, "Cluster", "acme", gone.Name, 0); err != nil {
		t.Fatal(err)
	}
	rev := mustRevision(t, s)

	s = f.Reopen(t, s)
	if got := mustRevision(t, s); got != rev {
		t.Fatalf("revision after reopen = %d, want %d", got, rev)
	}
	for _, want := range []store.Object{a, b} {
		got, err := s.Get(ctx, want.Kind, want.Namespace, want.Name)
		if err != nil {
			t.Fatal(err)
		}
		sameObject(t, got, want)
	}
	if _, err := s.Get(ctx, "Cluster", "acme", "gone"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted object after reopen: %v", err)
	}
	// Revisions keep growing, and CAS works across the restart.
	a.Value = []byte("1c")
	a2, err := s.Update(ctx, a)
	if err != nil {
		t.Fatalf("CAS update with pre-restart RV: %v", err)
	}
	if a2.ResourceVersion != rev+1 {
		t.Fatalf("first write after reopen got revision %d, want %d", a2.ResourceVersion, rev+1)
	}
	// Watching from the current revision works after a restart.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Watch(wctx, "Cluster", a2.ResourceVersion)
	if err != nil {
		t.Fatalf("Watch from current revision after reopen: %v", err)
	}
	c := mustCreate(t, s, obj("Cluster", "acme", "c", "3"))
	wantEvent(t, nextEvent(t, ch), store.EventPut, "c", c.ResourceVersion, "3")
}

// RunBenchmarks measures the basic operations on stores from f. Report
// them with -benchmem.
func RunBenchmarks(b *testing.B, f Factory) {
	ctx := context.Background()
	value := bytes.Repeat([]byte(`{"spec":{"k":"v"}}`), 28) // ~500 bytes, a small object
	b.Run("Create", func(b *testing.B) {
		s := f.Open(b)
		b.ReportAllocs()
		b.SetBytes(int64(len(value)))
		i := 0
		for b.Loop() {
			if _, err := s.Create(ctx, store.Object{Kind: "Cluster", Namespace: "acme", Name: "c" + strconv.Itoa(i), Value: value}); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Get", func(b *testing.B) {
		s := f.Open(b)
		const n = 1000
		for i := range n {
			mustCreate(b, s, store.Object{Kind: "Cluster", Namespace: "acme", Name: "c" + strconv.Itoa(i), Value: value})
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.Get(ctx, "Cluster", "acme", "c"+strconv.Itoa(i%n)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("Update", func(b *testing.B) {
		s := f.Open(b)
		o := mustCreate(b, s, store.Object{Kind: "Cluster", Namespace: "acme", Name: "c", Value: value})
		b.ReportAllocs()
		b.SetBytes(int64(len(value)))
		for b.Loop() {
			var err error
			if o, err = s.Update(ctx, o); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("List100", func(b *testing.B) {
		s := f.Open(b)
		for i := range 100 {
			mustCreate(b, s, store.Object{Kind: "Cluster", Namespace: "acme", Name: "c" + strconv.Itoa(i), Value: value})
			mustCreate(b, s, store.Object{Kind: "Cluster", Namespace: "other", Name: "c" + strconv.Itoa(i), Value: value})
		}
		b.ReportAllocs()
		for b.Loop() {
			objs, err := s.List(ctx, "Cluster", "acme")
			if err != nil || len(objs) != 100 {
				b.Fatalf("List = %d, %v", len(objs), err)
			}
		}
	})
}
