package cluster

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A component that ignores SIGTERM and has a child of its own is still
// gone, child included, once stop returns.
func TestStopKillsStubbornProcessGroup(t *testing.T) {
	dir := t.TempDir()
	p, err := startProcess(slog.New(slog.DiscardHandler), dir, "stubborn", "/bin/sh",
		[]string{"-c", `trap "" TERM; sleep 300 & echo started; wait`}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = waitFor(t.Context(), "child started", p, 10*time.Millisecond, func(ctx context.Context) (bool, error) {
		b, _ := os.ReadFile(filepath.Join(dir, "stubborn.log"))
		return strings.Contains(string(b), "started"), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	p.stop(100 * time.Millisecond)
	if groupAlive(p.PID) {
		t.Fatalf("process group %d survives stop", p.PID)
	}
	p.stop(time.Second) // second stop is a no-op
}

func TestTailFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\nd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		n    int
		want string
	}{{2, "c\nd"}, {10, "a\nb\nc\nd"}} {
		if got := tailFile(path, tc.n); got != tc.want {
			t.Errorf("tailFile(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestPortAllocatorNeverRepeats(t *testing.T) {
	a := &portAllocator{used: map[int]bool{}}
	seen := map[int]bool{}
	for range 20 {
		ps, err := a.free(3)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			if seen[p] {
				t.Fatalf("port %d handed out twice", p)
			}
			seen[p] = true
		}
	}
}
