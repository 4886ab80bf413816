package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock advances one second per reading.
func fakeClock() func() time.Time {
	now := t0
	return func() time.Time { now = now.Add(time.Second); return now }
}

// openAt opens path and registers a cleanup that closes the cache and
// checks the file with bbolt's checker and the outbox counters.
func openAt(t testing.TB, path string, opts Options) *Cache {
	t.Helper()
	c, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		checkFile(t, path)
	})
	return c
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
		ob := bucket(tx, bucketOutbox)
		err := ob.ForEachBucket(func(name []byte) error {
			var count, total uint64
			err := ob.Bucket(name).ForEach(func(k, v []byte) error {
				e, err := decodeEntry(string(name), k, v)
				count++
				total += uint64(len(e.Payload))
				return err
			})
			ctr := bucket(tx, bucketOutboxKinds).Bucket(name)
			if ctr == nil {
				t.Errorf("outbox kind %q has entries and no counters", name)
			} else if c, b := readUint(ctr, keyCount), readUint(ctr, keyBytes); c != count || b != total {
				t.Errorf("outbox kind %q: counters say %d entries/%d bytes, bucket holds %d/%d", name, c, b, count, total)
			}
			return err
		})
		return err
	})
	if err != nil {
		t.Errorf("consistency check %s: %v", path, err)
	}
}

func newCache(t testing.TB, opts Options) (*Cache, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.db")
	if opts.Now == nil {
		opts.Now = fakeClock()
	}
	return openAt(t, path, opts), path
}

func wantErr(t testing.TB, err, target error, contains string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
	if !strings.Contains(err.Error(), contains) {
		t.Fatalf("error %q does not contain %q", err, contains)
	}
}

func testIdentity() Identity {
	return Identity{
		Cluster:  "acme/edge-1",
		KeyPEM:   []byte("-----BEGIN PRIVATE KEY-----\n..."),
		CertPEM:  []byte("-----BEGIN CERTIFICATE-----\ncert"),
		CAPEM:    []byte("-----BEGIN CERTIFICATE-----\nca"),
		HubAddrs: []string{"hub-a:7443", "hub-b:7443"},
		NotAfter: t0.Add(24 * time.Hour),
	}
}

func sameIdentity(a, b Identity) bool {
	return a.Cluster == b.Cluster && bytes.Equal(a.KeyPEM, b.KeyPEM) && bytes.Equal(a.CertPEM, b.CertPEM) &&
		bytes.Equal(a.CAPEM, b.CAPEM) && strings.Join(a.HubAddrs, ",") == strings.Join(b.HubAddrs, ",") && a.NotAfter.Equal(b.NotAfter)
}

func TestIdentity(t *testing.T) {
	c, path := newCache(t, Options{})
	_, err := c.Identity()
	wantErr(t, err, ErrNoIdentity, "cache: read identity")

	bad := []struct {
		name string
		mut  func(*Identity)
	}{
		{"no cluster", func(i *Identity) { i.Cluster = "" }},
		{"no key", func(i *Identity) { i.KeyPEM = nil }},
		{"no cert", func(i *Identity) { i.CertPEM = nil }},
		{"no CA", func(i *Identity) { i.CAPEM = nil }},
	}
	for _, tt := range bad {
		id := testIdentity()
		tt.mut(&id)
		wantErr(t, c.SaveIdentity(id), ErrInvalid, "cache: save identity")
	}
	if _, err := c.Identity(); !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("invalid SaveIdentity stored something: %v", err)
	}

	want := testIdentity()
	if err := c.SaveIdentity(want); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openAt(t, path, Options{})
	got, err := c.Identity()
	if err != nil {
		t.Fatal(err)
	}
	if !sameIdentity(got, want) {
		t.Fatalf("identity after reopen = %+v, want %+v", got, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("cache file mode %o, want 600 (it holds the private key)", fi.Mode().Perm())
	}
}

func TestLinkState(t *testing.T) {
	c, path := newCache(t, Options{})
	_, err := c.LinkState()
	wantErr(t, err, ErrNotFound, "cache: read link state")
	wantErr(t, c.SaveLinkState(LinkState{State: "Up"}), ErrInvalid, `state "Up" is not one of`)
	// A refused agent's state must persist: `tether-agent status` shows it
	// while the agent is not running.
	if err := c.SaveLinkState(LinkState{State: LinkRefused, LastError: "cluster deleted"}); err != nil {
		t.Fatalf("save Refused: %v", err)
	}
	if got, err := c.LinkState(); err != nil || got.State != LinkRefused {
		t.Fatalf("LinkState after saving Refused = %+v, %v", got, err)
	}

	want := LinkState{State: LinkOffline, Hub: "hub-a:7443", Since: t0, LastContact: t0.Add(-time.Minute), LastError: "dial tcp: connection refused", ConnectedCount: 3}
	if err := c.SaveLinkState(want); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openAt(t, path, Options{})
	got, err := c.LinkState()
	if err != nil {
		t.Fatal(err)
	}
	if got.State != want.State || got.Hub != want.Hub || !got.Since.Equal(want.Since) || !got.LastContact.Equal(want.LastContact) ||
		got.LastError != want.LastError || got.ConnectedCount != want.ConnectedCount {
		t.Fatalf("link state = %+v, want %+v", got, want)
	}
}

func TestDesired(t *testing.T) {
	c, path := newCache(t, Options{KeepDesired: 3})
	_, _, err := c.LatestDesired()
	wantErr(t, err, ErrNotFound, "cache: read latest desired")
	wantErr(t, c.SaveDesired(0, []byte("x")), ErrInvalid, "revision must be positive")

	for rev := uint64(1); rev <= 5; rev++ {
		if err := c.SaveDesired(rev, []byte("rev"+strconv.FormatUint(rev, 10))); err != nil {
			t.Fatalf("SaveDesired(%d): %v", rev, err)
		}
	}
	wantErr(t, c.SaveDesired(4, []byte("old")), ErrStaleRevision, "cache: save desired revision 4: stale revision: newest stored is 5")
	if err := c.SaveDesired(5, []byte("rev5b")); err != nil {
		t.Fatalf("re-saving the newest revision: %v", err)
	}
	c.Close()
	c = openAt(t, path, Options{KeepDesired: 3})

	rev, payload, err := c.LatestDesired()
	if err != nil || rev != 5 || string(payload) != "rev5b" {
		t.Fatalf("LatestDesired = %d %q %v", rev, payload, err)
	}
	for rev := uint64(1); rev <= 5; rev++ {
		p, err := c.Desired(rev)
		if rev <= 2 {
			wantErr(t, err, ErrNotFound, "cache: read desired revision "+strconv.FormatUint(rev, 10))
			continue
		}
		if err != nil {
			t.Fatalf("Desired(%d): %v", rev, err)
		}
		if rev < 5 && string(p) != "rev"+strconv.FormatUint(rev, 10) {
			t.Fatalf("Desired(%d) = %q", rev, p)
		}
	}
	// A jump forward keeps the window at the newest three.
	if err := c.SaveDesired(100, []byte("rev100")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Desired(3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revision 3 kept after the window moved: %v", err)
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func TestCharts(t *testing.T) {
	c, _ := newCache(t, Options{})
	chart := []byte("a .tgz archive")
	d := digestOf(chart)
	other := digestOf([]byte("something else"))

	wantErr(t, c.PutChart(other, chart), ErrDigestMismatch, "cache: put chart "+other+": 14 bytes hash to "+d)
	if ok, err := c.HasChart(other); err != nil || ok {
		t.Fatalf("mismatched chart stored: %v %v", ok, err)
	}
	for _, bad := range []string{"", "sha256:", "md5:" + d[7:], "sha256:" + strings.ToUpper(d[7:]), d + "00", d[:len(d)-1] + "g"} {
		wantErr(t, c.PutChart(bad, chart), ErrInvalid, "cache: put chart")
		_, err := c.Chart(bad)
		wantErr(t, err, ErrInvalid, "cache: read chart")
		_, err = c.HasChart(bad)
		wantErr(t, err, ErrInvalid, "cache: has chart")
	}
	if ok, err := c.HasChart(d); err != nil || ok {
		t.Fatalf("HasChart before put = %v %v", ok, err)
	}
	_, err := c.Chart(d)
	wantErr(t, err, ErrNotFound, "cache: read chart "+d)

	for range 2 { // idempotent
		if err := c.PutChart(d, chart); err != nil {
			t.Fatal(err)
		}
	}
	got, err := c.Chart(d)
	if err != nil || !bytes.Equal(got, chart) {
		t.Fatalf("Chart = %q, %v", got, err)
	}
	if ok, err := c.HasChart(d); err != nil || !ok {
		t.Fatalf("HasChart after put = %v %v", ok, err)
	}
	if err := c.PutChart(digestOf(nil), nil); err != nil {
		t.Fatalf("empty chart: %v", err)
	}
}

func mustEnqueue(t testing.TB, c *Cache, kind, payload string) {
	t.Helper()
	if err := c.Enqueue(kind, []byte(payload)); err != nil {
		t.Fatalf("Enqueue(%s, %s): %v", kind, payload, err)
	}
}

func peekAll(t testing.TB, c *Cache) []OutboxEntry {
	t.Helper()
	es, err := c.Peek(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

func payloads(es []OutboxEntry) string {
	var out []string
	for _, e := range es {
		out = append(out, string(e.Payload))
	}
	return strings.Join(out, " ")
}

func stats(t testing.TB, c *Cache) OutboxStats {
	t.Helper()
	st, err := c.OutboxStats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestOutboxOrderAndAck(t *testing.T) {
	c, path := newCache(t, Options{})
	if es := peekAll(t, c); len(es) != 0 {
		t.Fatalf("new outbox has %d entries", len(es))
	}
	for i := range 5 {
		mustEnqueue(t, c, "status", "s"+strconv.Itoa(i))
	}
	es, err := c.Peek(2)
	if err != nil {
		t.Fatal(err)
	}
	if payloads(es) != "s0 s1" || es[0].Seq != 1 || es[1].Seq != 2 || es[0].Kind != "status" {
		t.Fatalf("Peek(2) = %+v", es)
	}
	if !es[0].At.Equal(t0.Add(time.Second)) || !es[1].At.Equal(t0.Add(2*time.Second)) {
		t.Fatalf("timestamps %v %v do not come from the injected clock", es[0].At, es[1].At)
	}
	// Acks name sequence numbers: acking 2 leaves 1.
	if err := c.Ack(es[1].Seq); err != nil {
		t.Fatal(err)
	}
	if got := payloads(peekAll(t, c)); got != "s0 s2 s3 s4" {
		t.Fatalf("after Ack(2): %q", got)
	}
	if err := c.Ack(es[0].Seq, es[1].Seq); err != nil { // 2 already acked: skipped
		t.Fatal(err)
	}
	wantErr(t, c.Ack(3, 99), ErrInvalid, "cache: ack [3 99]: invalid: sequence 99 was never issued (highest is 5)")
	if st := stats(t, c); st.Pending != 3 || st.Bytes != 3*2 || st.Kinds["status"].Pending != 3 {
		t.Fatalf("stats after ack = %+v (a refused Ack must change nothing)", st)
	}
	_, err = c.Peek(0)
	wantErr(t, err, ErrInvalid, "cache: peek")

	// Oldest first across a restart, and sequence numbers never restart.
	c.Close()
	c = openAt(t, path, Options{Now: fakeClock()})
	mustEnqueue(t, c, "event", "e0")
	es = peekAll(t, c)
	if payloads(es) != "e0 s2 s3 s4" || es[0].Seq != 6 {
		t.Fatalf("after reopen: %q, first seq %d", payloads(es), es[0].Seq)
	}
	if err := c.Ack(6); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openAt(t, path, Options{Now: fakeClock()})
	mustEnqueue(t, c, "event", "e1")
	if es := peekAll(t, c); es[0].Kind != "event" || es[0].Seq != 7 {
		t.Fatalf("after draining and reopening, next event = %+v; want seq 7", es)
	}
}

// TestFullQuotaOfOneKindLeavesOthersFlowing: the outbox used to be one
// FIFO with global bounds, so a flood of one kind (metrics during a long
// outage) pushed status reports out. Each kind now has its own quota: a
// full one evicts only its own oldest entries, and another kind keeps
// being queued and drained.
func TestFullQuotaOfOneKindLeavesOthersFlowing(t *testing.T) {
	kinds := []OutboxKind{
		{Name: "status", Priority: 100, MaxEntries: 3},
		{Name: "metrics", Priority: 10, MaxEntries: 4, MaxBytes: 1 << 20},
	}
	c, path := newCache(t, Options{OutboxKinds: kinds})
	mustEnqueue(t, c, "status", "s0")
	for i := range 50 {
		mustEnqueue(t, c, "metrics", "m"+strconv.Itoa(i))
	}
	mustEnqueue(t, c, "status", "s1")
	if got := payloads(peekAll(t, c)); got != "s0 s1 m46 m47 m48 m49" {
		t.Fatalf("outbox = %q; want both status reports and the newest four metrics", got)
	}
	st := stats(t, c)
	if st.Kinds["status"].Dropped != 0 || st.Kinds["metrics"].Dropped != 46 || st.Dropped != 46 {
		t.Fatalf("stats = %+v", st)
	}
	// Status has its own quota too.
	for i := 2; i < 6; i++ {
		mustEnqueue(t, c, "status", "s"+strconv.Itoa(i))
	}
	if got := payloads(peekAll(t, c)); got != "s3 s4 s5 m46 m47 m48 m49" {
		t.Fatalf("outbox = %q", got)
	}
	if st := stats(t, c); st.Kinds["status"].Dropped != 3 || st.Kinds["metrics"].Dropped != 46 || st.Dropped != 49 {
		t.Fatalf("stats = %+v", st)
	}
	c.Close()
	c = openAt(t, path, Options{OutboxKinds: kinds})
	if st := stats(t, c); st.Kinds["status"].Dropped != 3 || st.Kinds["metrics"].Dropped != 46 {
		t.Fatalf("drop counters not persisted: %+v", st)
	}
}

func TestOutboxBounds(t *testing.T) {
	t.Run("bytes", func(t *testing.T) {
		// Each payload is 9 bytes; 30 bytes hold 3.
		c, _ := newCache(t, Options{OutboxKinds: []OutboxKind{{Name: "m", MaxBytes: 30}}})
		for i := range 5 {
			mustEnqueue(t, c, "m", "payload-"+strconv.Itoa(i))
		}
		if got := payloads(peekAll(t, c)); got != "payload-2 payload-3 payload-4" {
			t.Fatalf("outbox = %q", got)
		}
		// A big record pushes out as many old ones as it needs.
		mustEnqueue(t, c, "m", strings.Repeat("x", 21))
		if st := stats(t, c); st.Pending != 2 || st.Bytes != 30 || st.Dropped != 4 || st.Kinds["m"].Dropped != 4 {
			t.Fatalf("stats = %+v", st)
		}
		wantErr(t, c.Enqueue("m", make([]byte, 31)), ErrTooLarge, "cache: enqueue m: record too large: 31 bytes, the m quota holds at most 30")
		if st := stats(t, c); st.Pending != 2 || st.Dropped != 4 {
			t.Fatalf("a rejected record changed the outbox: %+v", st)
		}
	})
	t.Run("unregistered kinds get the defaults", func(t *testing.T) {
		c, _ := newCache(t, Options{OutboxMaxEntries: 2})
		for _, p := range []string{"a0", "a1", "a2"} {
			mustEnqueue(t, c, "a", p)
		}
		mustEnqueue(t, c, "b", "b0")
		if got := payloads(peekAll(t, c)); got != "a1 a2 b0" {
			t.Fatalf("outbox = %q", got)
		}
	})
	t.Run("invalid kind", func(t *testing.T) {
		c, _ := newCache(t, Options{})
		wantErr(t, c.Enqueue("", nil), ErrInvalid, "cache: enqueue")
		wantErr(t, c.Enqueue(strings.Repeat("k", MaxKindLen+1), nil), ErrInvalid, "kind must be 1-255 bytes, got 256")
	})
}

// TestDrainOrder: higher priority first, oldest first within a kind, and
// a backlog of one kind leaves every other kind a share of each batch.
func TestDrainOrder(t *testing.T) {
	c, _ := newCache(t, Options{OutboxKinds: []OutboxKind{
		{Name: "status", Priority: 100}, {Name: "events", Priority: 50}, {Name: "metrics", Priority: 10},
	}})
	for i := range 40 {
		mustEnqueue(t, c, "metrics", "m"+strconv.Itoa(i))
	}
	mustEnqueue(t, c, "events", "e0")
	for i := range 40 {
		mustEnqueue(t, c, "status", "s"+strconv.Itoa(i))
	}
	es, err := c.Batch(16, nil)
	if err != nil {
		t.Fatal(err)
	}
	// share = 16/8 = 2: metrics gets 2, events its only 1, status the rest.
	want := "s0 s1 s2 s3 s4 s5 s6 s7 s8 s9 s10 s11 s12 e0 m0 m1"
	if got := payloads(es); got != want {
		t.Fatalf("Batch(16) = %q\nwant        %q", got, want)
	}
	// A kind the hub does not take is held, not returned.
	es, err = c.Batch(4, func(kind string) bool { return kind != "status" })
	if err != nil {
		t.Fatal(err)
	}
	if got := payloads(es); got != "e0 m0 m1 m2" {
		t.Fatalf("Batch without status = %q", got)
	}
}

// TestDeadLetter: an entry that cannot be sent is removed and counted
// under its kind; the counter survives a reopen.
func TestDeadLetter(t *testing.T) {
	c, path := newCache(t, Options{})
	mustEnqueue(t, c, "status", "s0")
	mustEnqueue(t, c, "status", "not a report")
	mustEnqueue(t, c, "future", "f0")
	for _, seq := range []uint64{2, 3} {
		if _, err := c.DeadLetter(seq); err != nil {
			t.Fatal(err)
		}
	}
	if kind, err := c.DeadLetter(3); err != nil || kind != "" {
		t.Fatalf("DeadLetter of a removed entry = %q, %v; want a no-op", kind, err)
	}
	_, err := c.DeadLetter(9)
	wantErr(t, err, ErrInvalid, "never issued")
	c.Close()
	c = openAt(t, path, Options{})
	st := stats(t, c)
	if st.Pending != 1 || st.DeadLettered != 2 || st.Kinds["status"].DeadLettered != 1 || st.Kinds["future"].DeadLettered != 1 || st.Kinds["future"].Pending != 0 {
		t.Fatalf("stats = %+v", st)
	}
	if got := payloads(peekAll(t, c)); got != "s0" {
		t.Fatalf("outbox = %q", got)
	}
}

func TestLocked(t *testing.T) {
	c, path := newCache(t, Options{})
	if err := c.SaveIdentity(testIdentity()); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Options{LockTimeout: 50 * time.Millisecond})
	wantErr(t, err, ErrLocked, "cache: open "+path+": locked by another process (is tether-agent running?)")
	_, err = OpenReadOnly(path)
	wantErr(t, err, ErrLocked, "is tether-agent running?")
	// The running handle is unaffected.
	if _, err := c.Identity(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenReadOnly(t *testing.T) {
	c, path := newCache(t, Options{})
	if err := c.SaveIdentity(testIdentity()); err != nil {
		t.Fatal(err)
	}
	mustEnqueue(t, c, "status", "s0")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	r1, err := OpenReadOnly(path)
	if err != nil {
		t.Fatalf("OpenReadOnly: %v", err)
	}
	defer r1.Close()
	r2, err := OpenReadOnly(path) // readers share the lock
	if err != nil {
		t.Fatalf("second OpenReadOnly: %v", err)
	}
	defer r2.Close()
	id, err := r1.Identity()
	if err != nil || !sameIdentity(id, testIdentity()) {
		t.Fatalf("Identity = %+v, %v", id, err)
	}
	if st := stats(t, r2); st.Pending != 1 {
		t.Fatalf("stats = %+v", st)
	}
	wantErr(t, r1.SaveLinkState(LinkState{State: LinkOffline}), ErrReadOnly, "cache: save link state")
	wantErr(t, r1.Enqueue("status", nil), ErrReadOnly, "cache: enqueue status")

	_, err = OpenReadOnly(filepath.Join(t.TempDir(), "missing.db"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenReadOnly of a missing file = %v, want not-exist", err)
	}
}

func setSchema(t *testing.T, path string, v uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bolt.Tx) error { return putUint(bucket(tx, bucketMeta), keySchema, v) }); err != nil {
		t.Fatal(err)
	}
}

func TestSchema(t *testing.T) {
	c, path := newCache(t, Options{})
	c.Close()

	setSchema(t, path, SchemaVersion+1)
	_, err := Open(path, Options{})
	wantErr(t, err, ErrSchemaTooNew, "schema version 4, this binary supports up to 3")
	_, err = OpenReadOnly(path)
	wantErr(t, err, ErrSchemaTooNew, "read-only")

	setSchema(t, path, 0)
	if _, err := OpenReadOnly(path); err == nil || !strings.Contains(err.Error(), "start tether-agent once to upgrade it") {
		t.Fatalf("OpenReadOnly of an old schema = %v", err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "no upgrade path from schema version 0") {
		t.Fatalf("Open of an unknown old schema = %v", err)
	}
	setSchema(t, path, SchemaVersion)
}

func TestNotACacheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte(bucketOutbox)); return err }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "not a tether-agent cache") {
		t.Fatalf("Open = %v", err)
	}
	if _, err := OpenReadOnly(path); err == nil || !strings.Contains(err.Error(), "not a tether-agent cache") {
		t.Fatalf("OpenReadOnly = %v", err)
	}
}

func TestClosed(t *testing.T) {
	c, _ := newCache(t, Options{})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err := c.Identity()
	wantErr(t, err, ErrClosed, "cache: read identity")
	wantErr(t, c.Enqueue("status", nil), ErrClosed, "cache: enqueue status")
	_, err = c.Peek(1)
	wantErr(t, err, ErrClosed, "cache: peek")
}

func TestOptionsValidate(t *testing.T) {
	for _, o := range []Options{{LockTimeout: -1}, {KeepDesired: -1}, {OutboxMaxEntries: -1}, {OutboxMaxBytes: -1}, {OutboxKinds: []OutboxKind{{Name: "a"}, {Name: "a"}}}, {OutboxKinds: []OutboxKind{{Name: ""}}}, {OutboxKinds: []OutboxKind{{Name: "a", MaxBytes: -1}}}} {
		if _, err := Open(filepath.Join(t.TempDir(), "x.db"), o); err == nil {
			t.Errorf("Open(%+v): want error", o)
		}
	}
}

func benchCache(b *testing.B) *Cache {
	c, _ := newCache(b, Options{})
	return c
}

func benchPayload() []byte { return bytes.Repeat([]byte("m"), 512) }

func BenchmarkEnqueue(b *testing.B) {
	c := benchCache(b)
	benchPayload := benchPayload()
	b.ReportAllocs()
	b.SetBytes(int64(len(benchPayload)))
	for b.Loop() {
		if err := c.Enqueue("metrics", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnqueueFull(b *testing.B) {
	c, _ := newCache(b, Options{OutboxMaxEntries: 1000})
	benchPayload := benchPayload()
	for range 1000 {
		if err := c.Enqueue("metrics", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() { // every Enqueue also drops the oldest entry
		if err := c.Enqueue("metrics", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeek100(b *testing.B) {
	c := benchCache(b)
	benchPayload := benchPayload()
	for range 1000 {
		if err := c.Enqueue("metrics", benchPayload); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if es, err := c.Peek(100); err != nil || len(es) != 100 {
			b.Fatalf("Peek = %d, %v", len(es), err)
		}
	}
}

// BenchmarkAck100 runs without fsync: its untimed setup enqueues 100
// entries per iteration, which would otherwise dominate the run time.
func BenchmarkAck100(b *testing.B) {
	c, _ := newCache(b, Options{NoSync: true})
	benchPayload := benchPayload()
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		for range 100 {
			if err := c.Enqueue("metrics", benchPayload); err != nil {
				b.Fatal(err)
			}
		}
		es, err := c.Peek(100)
		if err != nil {
			b.Fatal(err)
		}
		seqs := make([]uint64, len(es))
		for i, e := range es {
			seqs[i] = e.Seq
		}
		b.StartTimer()
		if err := c.Ack(seqs...); err != nil {
			b.Fatal(err)
		}
	}
}

func TestConcurrentEnqueue(t *testing.T) {
	c, _ := newCache(t, Options{NoSync: true, Now: time.Now})
	const workers, each = 4, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				if err := c.Enqueue("w"+strconv.Itoa(w), []byte(strconv.Itoa(i))); err != nil {
					t.Errorf("Enqueue: %v", err)
				}
			}
		})
	}
	wg.Wait()
	es := peekAll(t, c)
	if len(es) != workers*each {
		t.Fatalf("%d entries, want %d", len(es), workers*each)
	}
	next := map[string]int{}
	seen := map[uint64]bool{}
	for _, e := range es {
		if e.Seq == 0 || e.Seq > workers*each || seen[e.Seq] {
			t.Fatalf("entry %s/%s has seq %d: want each of 1..%d once", e.Kind, e.Payload, e.Seq, workers*each)
		}
		seen[e.Seq] = true
		if n, _ := strconv.Atoi(string(e.Payload)); n != next[e.Kind] {
			t.Fatalf("%s: entry %d out of order (want %d)", e.Kind, n, next[e.Kind])
		}
		next[e.Kind]++
	}
}
