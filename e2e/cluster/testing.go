package cluster

import (
	"log/slog"
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
