package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// logTailLines is how much of each component's log a failed test prints.
const logTailLines = 40

// Start launches a cluster for the test and fails it at once if that does
// not work. The cluster lives in a folder under t.TempDir(); it is stopped
// by t.Cleanup, after printing the tail of each component's log when the
// test failed.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	if opts.Name == "" {
		opts.Name = sanitize(t.Name())
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := t.Context()
	c, err := Launch(ctx, opts)
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("cluster %s failed test; component logs in %s:\n%s", c.Name, c.Dir, c.LogTails(logTailLines))
		}
		if err := c.Stop(); err != nil {
			t.Errorf("stop cluster %s: %v", c.Name, err)
		}
	})
	return c
}

// testWriter sends slog output to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p[:len(p)-min(len(p), 1)])) // drop slog's newline
	return len(p), nil
}

// Shared is one cluster serving every test of a package: started on the
// first Get (a cluster costs more than most tests' work), stopped by Stop
// from the package's TestMain after m.Run. Tests use their own namespaces.
//
//	var shared = cluster.Shared{Options: cluster.Options{Name: "apply", NodeCount: 2}}
//	func TestMain(m *testing.M) { code := m.Run(); shared.Stop(); os.Exit(code) }
type Shared struct {
	Options Options

	once sync.Once
	c    *Cluster
	err  error
}

// Get returns the cluster, launching it on first use; a launch that
// failed fails every test that asks, with the harness's message.
func (s *Shared) Get(t testing.TB) *Cluster {
	t.Helper()
	s.once.Do(func() {
		opts := s.Options
		if opts.Logger == nil {
			opts.Logger = slog.New(slog.DiscardHandler)
		}
		s.c, s.err = Launch(context.Background(), opts)
	})
	if s.err != nil {
		t.Fatalf("start cluster: %v", s.err)
	}
	return s.c
}

// Stop stops the cluster if it was started, reporting a failure on
// stderr (TestMain has no test to fail).
func (s *Shared) Stop() {
	if s.c == nil {
		return
	}
	if err := s.c.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop cluster %s: %v\n", s.c.Name, err)
	}
}
