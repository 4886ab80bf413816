package cache

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openFixture copies a gzipped fixture file to a temporary path (so the
// upgrade never changes the fixture) and returns that path.
func openFixture(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "agent.db")
	out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestUpgradeFromSchema1 opens a file written by the schema-1 code
// (testdata/state-v1.db.gz, written at commit 26bf2fa): everything it held
// is still there, no release is recorded as owned (labels on the cluster
// prove nothing), and the newest desired revision is noted for adoption.
func TestUpgradeFromSchema1(t *testing.T) {
	path := openFixture(t, "state-v1.db.gz")
	if _, err := OpenReadOnly(path); err == nil {
		t.Fatal("OpenReadOnly of a schema-1 file: want an error asking for an upgrade")
	}
	c := openAt(t, path, Options{})
	if _, err := os.Stat(BackupPath(path, 1)); err != nil {
		t.Errorf("no backup of the schema-1 file before its upgrade: %v", err)
	}
	if id, err := c.Identity(); err != nil || !sameIdentity(id, testIdentity()) {
		t.Errorf("identity after upgrade = %+v, %v", id, err)
	}
	if ls, err := c.LinkState(); err != nil || ls.State != LinkOffline || ls.ConnectedCount != 3 {
		t.Errorf("link state after upgrade = %+v, %v", ls, err)
	}
	if revs, err := c.DesiredRevisions(); err != nil || !slices.Equal(revs, []uint64{6, 7}) {
		t.Errorf("desired revisions = %v, %v; want [6 7]", revs, err)
	}
	for _, ch := range []string{"chart archive v1 fixture", "chart archive of an old revision"} {
		if ok, err := c.HasChart(digestOf([]byte(ch))); err != nil || !ok {
			t.Errorf("chart %q after upgrade: %v, %v", ch, ok, err)
		}
	}
	if es := peekAll(t, c); len(es) != 1 || es[0].Kind != "status" {
		t.Errorf("outbox entries after upgrade from schema 1 = %+v", es)
	}
	if st, err := c.OutboxStats(); err != nil || st.Pending != 1 {
		t.Errorf("outbox after upgrade = %+v, %v", st, err)
	}
	if recs, err := c.ReleaseRecords(); err != nil || len(recs) != 0 {
		t.Errorf("release records after upgrade = %+v, %v; want none", recs, err)
	}
	rev, pending, err := c.PendingAdoption()
	if err != nil || !pending || rev != 7 {
		t.Fatalf("PendingAdoption = %d, %v, %v; want 7, true", rev, pending, err)
	}
	if err := c.EndAdoption(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	c = openAt(t, path, Options{})
	if _, pending, err := c.PendingAdoption(); err != nil || pending {
		t.Errorf("PendingAdoption after EndAdoption and reopen = %v, %v", pending, err)
	}
	// A new file has nothing to adopt.
	fresh, _ := newCache(t, Options{})
	if _, pending, err := fresh.PendingAdoption(); err != nil || pending {
		t.Errorf("PendingAdoption of a new file = %v, %v", pending, err)
	}
}

func TestReleaseRecords(t *testing.T) {
	c, _ := newCache(t, Options{})
	if _, err := c.ReleaseRecord("applications-web", "nginx-web"); err == nil {
		t.Fatal("ReleaseRecord of an unknown release: want ErrNotFound")
	} else {
		wantErr(t, err, ErrNotFound, "applications-web/nginx-web")
	}
	r := ReleaseRecord{Namespace: "applications-web", Name: "nginx-web", Installed: t0, Updated: t0,
		Revisions: []ReleaseRevision{{Revision: 1, Digest: "sha256:a", Written: t0}, {Revision: 2, Digest: "sha256:b", Chart: "sha256:c", Written: t0}}}
	if err := c.SaveReleaseRecord(r); err != nil {
		t.Fatal(err)
	}
	if err := c.SaveReleaseRecord(ReleaseRecord{Namespace: "b", Name: "x"}); err != nil {
		t.Fatal(err)
	}
	got, err := c.ReleaseRecord("applications-web", "nginx-web")
	if err != nil || len(got.Revisions) != 2 || got.Revisions[1].Chart != "sha256:c" || !got.Installed.Equal(t0) {
		t.Fatalf("ReleaseRecord = %+v, %v", got, err)
	}
	if v, ok := got.Revision(2); !ok || v.Digest != "sha256:b" {
		t.Errorf("Revision(2) = %+v, %v", v, ok)
	}
	if _, ok := got.Revision(3); ok {
		t.Error("Revision(3) found")
	}
	all, err := c.ReleaseRecords()
	if err != nil || len(all) != 2 || all[0].Name != "nginx-web" || all[1].Namespace != "b" {
		t.Fatalf("ReleaseRecords = %+v, %v", all, err)
	}
	for _, bad := range []ReleaseRecord{
		{Namespace: "", Name: "x"},
		{Namespace: "a/b", Name: "x"},
		{Namespace: "a", Name: "x", Revisions: []ReleaseRevision{{Revision: 2, Digest: "d"}, {Revision: 1, Digest: "d"}}},
		{Namespace: "a", Name: "x", Revisions: []ReleaseRevision{{Revision: 1}}},
	} {
		wantErr(t, c.SaveReleaseRecord(bad), ErrInvalid, "save release record")
	}
	if all, _ := c.ReleaseRecords(); len(all) != 2 {
		t.Errorf("bad input changed the records: %+v", all)
	}
	if err := c.DeleteReleaseRecord("b", "x"); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteReleaseRecord("b", "x"); err != nil {
		t.Errorf("second delete: %v", err)
	}
	if all, _ := c.ReleaseRecords(); len(all) != 1 {
		t.Errorf("after delete: %+v", all)
	}
}

func TestCollectCharts(t *testing.T) {
	c, _ := newCache(t, Options{})
	var ds []string
	for _, s := range []string{"a", "b", "c", "d"} {
		d := digestOf([]byte(s))
		if err := c.PutChart(d, []byte(s)); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	// d is referenced by the install record only.
	if err := c.SaveReleaseRecord(ReleaseRecord{Namespace: "n", Name: "r", Revisions: []ReleaseRevision{{Revision: 1, Digest: "x", Chart: ds[3]}}}); err != nil {
		t.Fatal(err)
	}
	removed, err := c.CollectCharts([]string{ds[0], ds[2]})
	if err != nil || !slices.Equal(removed, []string{ds[1]}) {
		t.Fatalf("CollectCharts = %v, %v; want [%s]", removed, err, ds[1])
	}
	for i, want := range []bool{true, false, true, true} {
		if ok, err := c.HasChart(ds[i]); err != nil || ok != want {
			t.Errorf("HasChart(%s) = %v, %v; want %v", []string{"a", "b", "c", "d"}[i], ok, err, want)
		}
	}
	if removed, err := c.CollectCharts([]string{ds[0], ds[2]}); err != nil || len(removed) != 0 {
		t.Errorf("second CollectCharts = %v, %v", removed, err)
	}
}

// TestUpgradeFromSchema2 opens a file written by the schema-2 code
// (testdata/state-v2.db.gz, written at commit e4dcb63: six entries queued
// into an outbox of four, so two status reports were dropped; pending
// status seq 3, an "event" seq 4, an unreadable status seq 5, status seq
// 6). The file is copied to agent.db.bak-v2 first; the outbox moves to one
// bucket per kind with its order, sequence numbers and drop counters.
func TestUpgradeFromSchema2(t *testing.T) {
	path := openFixture(t, "state-v2.db.gz")
	if _, err := OpenReadOnly(path); err == nil {
		t.Fatal("OpenReadOnly of a schema-2 file: want an error asking for an upgrade")
	}
	c := openAt(t, path, Options{OutboxKinds: []OutboxKind{{Name: "status", Priority: 100}}})
	checkV2Backup(t, BackupPath(path, 2))
	if fi, err := os.Stat(BackupPath(path, 2)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode = %v, %v; want 0600 (it holds the private key)", fi.Mode(), err)
	}
	if id, err := c.Identity(); err != nil || !sameIdentity(id, testIdentity()) {
		t.Errorf("identity after upgrade = %+v, %v", id, err)
	}
	if ls, err := c.LinkState(); err != nil || ls.ConnectedCount != 5 {
		t.Errorf("link state after upgrade = %+v, %v", ls, err)
	}
	if revs, err := c.DesiredRevisions(); err != nil || !slices.Equal(revs, []uint64{8, 9}) {
		t.Errorf("desired revisions = %v, %v; want [8 9]", revs, err)
	}
	if ok, err := c.HasChart(digestOf([]byte("chart archive v2 fixture"))); err != nil || !ok {
		t.Errorf("chart after upgrade: %v, %v", ok, err)
	}
	if recs, err := c.ReleaseRecords(); err != nil || len(recs) != 1 || recs[0].Name != "nginx-web" {
		t.Errorf("release records after upgrade = %+v, %v", recs, err)
	} else if rv, ok := recs[0].Latest(); !ok || rv.Digest == "" || rv.Status != "" || rv.Hash != "" || rv.ManifestGzip != nil {
		// Written before records held Helm's status and manifest: those
		// are empty, which the read side takes as "ask Helm".
		t.Errorf("latest revision of a record from before the read-side fields = %+v, %v", rv, ok)
	} else if _, err := rv.Manifest(); !errors.Is(err, ErrNotFound) {
		t.Errorf("Manifest of an old record: %v, want ErrNotFound", err)
	}
	if _, pending, err := c.PendingAdoption(); err != nil || pending {
		t.Errorf("PendingAdoption after an upgrade from schema 2 = %v, %v; want none", pending, err)
	}
	es := peekAll(t, c)
	var got []string
	for _, e := range es {
		got = append(got, e.Kind+"/"+strconv.FormatUint(e.Seq, 10))
	}
	if want := []string{"status/3", "status/5", "status/6", "event/4"}; !slices.Equal(got, want) {
		t.Fatalf("outbox after upgrade = %v; want %v", got, want)
	}
	if string(es[1].Payload) != "\xff\xff not a status report" || !es[0].At.Equal(t0.Add(3*time.Second)) {
		t.Errorf("entry payload or time changed: %q at %v", es[1].Payload, es[0].At)
	}
	st := stats(t, c)
	if st.Pending != 4 || st.Dropped != 2 || st.Kinds["status"].Dropped != 2 || st.Kinds["status"].Pending != 3 || st.Kinds["event"].Pending != 1 {
		t.Fatalf("outbox stats after upgrade = %+v", st)
	}
	// Sequence numbers go on from the old file's.
	mustEnqueue(t, c, "status", "new")
	if err := c.Ack(3, 7); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Reopening does not upgrade or back up again.
	if err := os.Remove(BackupPath(path, 2)); err != nil {
		t.Fatal(err)
	}
	c = openAt(t, path, Options{})
	if _, err := os.Stat(BackupPath(path, 2)); !os.IsNotExist(err) {
		t.Errorf("reopening a schema-3 file made a backup: %v", err)
	}
	if st := stats(t, c); st.Pending != 3 || st.Dropped != 2 {
		t.Errorf("after reopen: %+v", st)
	}
}

// checkV2Backup checks that bak is the schema-2 file as it was.
func checkV2Backup(t *testing.T, bak string) {
	t.Helper()
	db, err := bolt.Open(bak, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatalf("open backup: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		var n int
		err := tx.Bucket([]byte(bucketOutbox)).ForEach(func(k, v []byte) error {
			if v == nil || len(k) != 8 {
				t.Errorf("backup outbox holds %x: not a schema-2 entry", k)
			}
			n++
			return nil
		})
		if v := readUint(tx.Bucket([]byte(bucketMeta)), keySchema); v != 2 || n != 4 || tx.Bucket([]byte(bucketOutboxDropsV2)) == nil {
			t.Errorf("backup: schema %d, %d outbox entries; want the schema-2 file with 4", v, n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestUpgradeDamagedSchema2Entry: an outbox entry too short to name its
// kind is dead-lettered by the upgrade instead of failing it.
func TestUpgradeDamagedSchema2Entry(t *testing.T) {
	path := openFixture(t, "state-v2.db.gz")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte(bucketOutbox)).Put(u64(4), []byte{1, 2, 3}) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := openAt(t, path, Options{})
	st := stats(t, c)
	if st.Pending != 3 || st.Kinds[DamagedKind].DeadLettered != 1 || st.Kinds["event"].Pending != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

// TestReleaseRevisionReadSideFields: what Helm stored (status, hash,
// chart, times, the manifest compressed) survives the file; the manifest
// is bounded on the way in and on the way out.
func TestReleaseRevisionReadSideFields(t *testing.T) {
	c, _ := newCache(t, Options{})
	manifest := "---\n# Source: web/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\n" + strings.Repeat("data: {}\n", 1000)
	rv := ReleaseRevision{Revision: 3, Digest: "sha256:d", Written: t0, Status: "deployed", Description: "Upgrade complete",
		Hash: "h1", ChartName: "web", ChartVersion: "1.2.3", Deployed: t0.Add(time.Second)}
	if err := rv.SetManifest(manifest); err != nil {
		t.Fatal(err)
	}
	if len(rv.ManifestGzip) == 0 || len(rv.ManifestGzip) >= len(manifest)/4 {
		t.Errorf("compressed manifest is %d bytes for %d: not compressed", len(rv.ManifestGzip), len(manifest))
	}
	if err := c.SaveReleaseRecord(ReleaseRecord{Namespace: "ns", Name: "web", Revisions: []ReleaseRevision{{Revision: 2, Digest: "sha256:c"}, rv}}); err != nil {
		t.Fatal(err)
	}
	rec, err := c.ReleaseRecord("ns", "web")
	if err != nil {
		t.Fatal(err)
	}
	got, ok := rec.Latest()
	if !ok || got.Revision != 3 || got.Status != "deployed" || got.Description != "Upgrade complete" || got.Hash != "h1" ||
		got.ChartName != "web" || got.ChartVersion != "1.2.3" || !got.Deployed.Equal(t0.Add(time.Second)) {
		t.Fatalf("Latest = %+v, %v", got, ok)
	}
	if m, err := got.Manifest(); err != nil || m != manifest {
		t.Fatalf("Manifest = %.80q, %v", m, err)
	}
	if _, err := rec.Revisions[0].Manifest(); !errors.Is(err, ErrNotFound) {
		t.Errorf("Manifest of a revision without one: %v, want ErrNotFound", err)
	}
	if _, ok := (ReleaseRecord{}).Latest(); ok {
		t.Error("Latest of a record without revisions: found one")
	}

	t.Run("too large is not recorded", func(t *testing.T) {
		big := ReleaseRevision{Revision: 1, ManifestGzip: []byte("old")}
		err := big.SetManifest(strings.Repeat("x", MaxManifestInflated+1))
		if !errors.Is(err, ErrTooLarge) || big.ManifestGzip != nil {
			t.Errorf("SetManifest over the bound: %v, kept %d bytes; want ErrTooLarge and none", err, len(big.ManifestGzip))
		}
		wantErr(t, c.SaveReleaseRecord(ReleaseRecord{Namespace: "ns", Name: "big",
			Revisions: []ReleaseRevision{{Revision: 1, Digest: "sha256:x", ManifestGzip: make([]byte, MaxManifestBytes+1)}}}), ErrInvalid, "manifest of")
	})
	t.Run("a gzip bomb is refused", func(t *testing.T) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zeros := make([]byte, 1<<20)
		for range MaxManifestInflated/len(zeros) + 1 {
			zw.Write(zeros)
		}
		zw.Close()
		bomb := ReleaseRevision{Revision: 1, ManifestGzip: buf.Bytes()}
		if _, err := bomb.Manifest(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Manifest of %d compressed bytes inflating past the bound: %v, want ErrInvalid", buf.Len(), err)
		}
	})
	t.Run("not gzip", func(t *testing.T) {
		if _, err := (ReleaseRevision{ManifestGzip: []byte("kind: ConfigMap")}).Manifest(); !errors.Is(err, ErrInvalid) {
			t.Errorf("Manifest of plain bytes: %v, want ErrInvalid", err)
		}
	})
}

// FuzzReleaseRevisionManifest: any recorded bytes (the file may be
// damaged) decode to a bounded manifest or an error, never a panic; what
// SetManifest records reads back the same.
func FuzzReleaseRevisionManifest(f *testing.F) {
	var rv ReleaseRevision
	if err := rv.SetManifest("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"); err != nil {
		f.Fatal(err)
	}
	f.Add(rv.ManifestGzip, "kind: Secret")
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}, "")
	f.Add([]byte("plain"), "---\n")
	f.Fuzz(func(t *testing.T, gz []byte, manifest string) {
		m, err := ReleaseRevision{ManifestGzip: gz}.Manifest()
		if err == nil && len(m) > MaxManifestInflated {
			t.Fatalf("decoded %d bytes, over the bound", len(m))
		}
		var v ReleaseRevision
		if err := v.SetManifest(manifest); err != nil {
			t.Fatal(err)
		}
		if got, err := v.Manifest(); err != nil || got != manifest {
			t.Fatalf("round trip: %q, %v; want %q", got, err, manifest)
		}
	})
}
