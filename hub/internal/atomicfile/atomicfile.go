// Package atomicfile writes a file so that readers and a crash see either
// its old content or its new content, never a mix, and so that the new
// content and its name survive a power loss once WriteFile returns. It is
// the one file-writing helper of the hub (CA files, console configs, chart
// blobs).
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// TempPrefix starts the name of every temporary file WriteFile creates next
// to its target; a crash may leave one behind, and owners of a directory
// may delete such files when nothing writes.
const TempPrefix = ".tmp-"

// WriteFile writes data to path with mode perm: into a temporary file in
// the same directory, fsynced, renamed over path, then the directory is
// fsynced so the rename itself is durable. On error path is unchanged and
// the temporary file is removed.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(osFS{}, path, data, perm)
}

// fileSystem is what write does to the disk; tests record the order.
type fileSystem interface {
	CreateTemp(dir, pattern string) (file, error)
	Rename(from, to string) error
	Remove(name string) error
	SyncDir(dir string) error
}

type file interface {
	Name() string
	Chmod(os.FileMode) error
	Write([]byte) (int, error)
	Sync() error
	Close() error
}

func write(fsys fileSystem, path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := fsys.CreateTemp(dir, TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	renamed := false
	defer func() {
		if !renamed {
			_ = fsys.Remove(tmp)
		}
	}()
	fail := func(step string, err error) error {
		f.Close()
		return fmt.Errorf("write %s: %s: %w", path, step, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail("chmod", err)
	}
	if _, err := f.Write(data); err != nil {
		return fail("write", err)
	}
	if err := f.Sync(); err != nil {
		return fail("fsync", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, err)
	}
	if err := fsys.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	renamed = true
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("write %s: fsync directory %s: %w", path, dir, err)
	}
	return nil
}

type osFS struct{}

func (osFS) CreateTemp(dir, pattern string) (file, error) { return os.CreateTemp(dir, pattern) }
func (osFS) Rename(from, to string) error                 { return os.Rename(from, to) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }

// SyncDir fsyncs a directory. File systems that cannot (EINVAL, ENOTSUP)
// are accepted: there is nothing more to do on them.
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}
