package localapi

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
)

func TestStatusOverSocket(t *testing.T) {
	dir := t.TempDir()
	// A stale socket file left by a process that died is replaced.
	stale, err := net.Listen("unix", SocketPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(SocketPath(dir)); err != nil {
		t.Fatalf("stale socket file not left behind: %v", err)
	}

	s, err := Listen(dir, func() any { return map[string]string{"state": "Connected"} }, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	if fi, err := os.Stat(SocketPath(dir)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode: %v, %v; want 0600", fi.Mode(), err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	var got map[string]string
	if err := Get(context.Background(), dir, &got); err != nil || got["state"] != "Connected" {
		t.Fatalf("Get = %v, %v", got, err)
	}
	// A second agent on the same data dir is refused while one runs.
	if _, err := Listen(dir, func() any { return nil }, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "another tether-agent") {
		t.Fatalf("second Listen = %v; want it refused", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := Get(context.Background(), dir, &got); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Get after stop = %v; want ErrNotRunning", err)
	}
}
