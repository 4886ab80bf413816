// Package localapi serves the running agent's status on a unix socket in
// its data directory, so `tether-agent status` can ask the live process
// while it holds the bbolt file's lock.
package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// SocketName is the socket's file name inside the data directory.
const SocketName = "agent.sock"

// SocketPath returns the socket path for a data directory.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, SocketName) }

// Server serves status snapshots.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds the socket (mode 0600), replacing a stale one left by a
// process that died.
func Listen(dataDir string, status func() any, log *slog.Logger) (*Server, error) {
	path := SocketPath(dataDir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("localapi: %s is in use: is another tether-agent running with this data dir?", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("localapi: remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("localapi: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("localapi: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(status())
	})
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}}
	return s, nil
}

// Run serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.srv.Shutdown(sctx)
	})
	defer stop()
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// ErrNotRunning: nothing answers on the socket.
var ErrNotRunning = errors.New("agent is not running")

// Get fetches the status from a running agent into v.
func Get(ctx context.Context, dataDir string, v any) error {
	path := SocketPath(dataDir)
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/status", nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%w (%s: %v)", ErrNotRunning, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("agent status: %s", resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
