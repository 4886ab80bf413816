package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// recorder runs the real file system and records each durable step.
type recorder struct {
	osFS
	ops       []string
	renameErr error
}

type recFile struct {
	*os.File
	r *recorder
}

func (f recFile) Sync() error { f.r.ops = append(f.r.ops, "fsync file"); return f.File.Sync() }

func (r *recorder) CreateTemp(dir, pattern string) (file, error) {
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	return recFile{f, r}, nil
}

func (r *recorder) Rename(from, to string) error {
	r.ops = append(r.ops, "rename")
	if r.renameErr != nil {
		return r.renameErr
	}
	return r.osFS.Rename(from, to)
}

func (r *recorder) SyncDir(dir string) error {
	r.ops = append(r.ops, "fsync dir "+filepath.Base(dir))
	return r.osFS.SyncDir(dir)
}

// TestAtomicWriteSyncsFileThenRenamesThenSyncsDirectory: the hub's atomic
// writes used to fsync the file but not its directory, so a power loss
// after the rename could lose the new name (and with it, for example, the
// admin console config).
func TestAtomicWriteSyncsFileThenRenamesThenSyncsDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.key")
	r := &recorder{}
	if err := write(r, path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	want := []string{"fsync file", "rename", "fsync dir pki"}
	if !slices.Equal(r.ops, want) {
		t.Fatalf("steps = %q; want %q", r.ops, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v; want 0600", fi.Mode().Perm())
	}
	if b, _ := os.ReadFile(path); string(b) != "new" {
		t.Errorf("content = %q", b)
	}
}

func TestAtomicWriteFailureLeavesOldContentAndNoTempFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "admin.yaml")
	if err := WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &recorder{renameErr: errors.New("injected rename failure")}
	err := write(r, path, []byte("new"), 0o600)
	if err == nil || !strings.Contains(err.Error(), "injected rename failure") || !strings.Contains(err.Error(), path) {
		t.Fatalf("write = %v; want the injected failure naming %s", err, path)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("after a failed write, content = %q; want old", b)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q; want only admin.yaml", names)
	}
}

func TestAtomicWriteIntoMissingDirectoryFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "f")
	if err := WriteFile(path, []byte("x"), 0o600); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("WriteFile into a missing directory = %v; want an error naming %s", err, path)
	}
}
