package boltstore

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// copyFixture unpacks a gzipped fixture to a temporary path, so opening it
// never changes the checked-in file, and returns that path.
func copyFixture(t *testing.T, name string) string {
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
	path := filepath.Join(t.TempDir(), "hub.db")
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

// TestOpenFrozenSchema1File opens a hub store written by the schema-1 code
// (testdata/hub-v1.db.gz, written at commit e4dcb63: three creates, an
// update of acme/edge-2, a delete of acme/edge-1): objects, their
// revisions and the store revision read back as written, and new writes
// continue the revision sequence.
func TestOpenFrozenSchema1File(t *testing.T) {
	ctx := context.Background()
	s := openAt(t, copyFixture(t, "hub-v1.db.gz"), Options{})
	if rev, err := s.Revision(ctx); err != nil || rev != 5 {
		t.Fatalf("Revision = %d, %v; want 5", rev, err)
	}
	o, err := s.Get(ctx, "ClusterDeployment", "acme", "edge-2")
	if err != nil || o.CreateRevision != 2 || o.ResourceVersion != 4 || string(o.Value) != `{"spec":{"template":"adopted","serviceSpec":{"priority":100}}}` {
		t.Fatalf("acme/edge-2 = %+v, %v", o, err)
	}
	if _, err := s.Get(ctx, "ClusterDeployment", "acme", "edge-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted acme/edge-1: %v; want ErrNotFound", err)
	}
	reps, err := s.List(ctx, "ServiceReport", "")
	if err != nil || len(reps) != 1 || reps[0].Name != "acme.edge-1" || reps[0].CreateRevision != 3 {
		t.Fatalf("ServiceReport list = %+v, %v", reps, err)
	}
	created, err := s.Create(ctx, store.Object{Kind: "ClusterDeployment", Namespace: "acme", Name: "edge-3", Value: []byte(`{}`)})
	if err != nil || created.ResourceVersion != 6 {
		t.Fatalf("Create after open = %+v, %v; want revision 6", created, err)
	}
}
