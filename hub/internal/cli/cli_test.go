package cli

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/server"
)

// testHub is a real hub (bbolt store, CA, HTTPS console API) in a temp dir.
type testHub struct {
	dataDir string
	admin   string // admin console config path
	stop    func() // stops the hub; idempotent
}

// startHub starts a hub in a new data dir and stops it when the test ends.
func startHub(t *testing.T) *testHub {
	t.Helper()
	return startHubAt(t, filepath.Join(t.TempDir(), "data"))
}

// startHubAt starts a hub on dataDir.
func startHubAt(t *testing.T, dataDir string) *testHub {
	t.Helper()
	return startHubWith(t, dataDir, func(*server.Config) {})
}

// startHubWith starts a hub on dataDir with its config changed by set.
func startHubWith(t *testing.T, dataDir string, set func(*server.Config)) *testHub {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = dataDir
	set(&cfg)
	cfg.AgentAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Out = &bytes.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	h, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return &testHub{dataDir: cfg.DataDir, admin: h.AdminConfig(), stop: stop}
}

// run runs the tether CLI and returns its exit code, stdout and stderr.
func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

// mustRun runs the CLI and fails the test unless it exits 0.
func mustRun(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	code, out, errs := run(t, stdin, args...)
	if code != 0 {
		t.Fatalf("tether %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// userConfig creates a console user with role and writes its config file,
// pointing at the same hub as the admin config.
func (h *testHub) userConfig(t *testing.T, name, role string) string {
	t.Helper()
	tok := strings.TrimSpace(mustRun(t, "", "--config", h.admin, "user", "create", name, "--role", role))
	adm, err := api.LoadClientConfig(h.admin)
	if err != nil {
		t.Fatal(err)
	}
	adm.Token = tok
	path := filepath.Join(t.TempDir(), name+".yaml")
	if err := api.WriteClientConfig(path, adm); err != nil {
		t.Fatal(err)
	}
	return path
}
