package cache

import (
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
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
