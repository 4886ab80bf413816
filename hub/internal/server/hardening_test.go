package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/fleet"
)

func testConfig(dataDir string) Config {
	cfg := DefaultConfig()
	cfg.DataDir = dataDir
	cfg.AgentAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Out = &bytes.Buffer{}
	return cfg
}

// runHub serves h until the returned stop is called (or the test ends).
func runHub(t *testing.T, h *Hub) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// adminClient returns a console API client from the hub's admin config.
func adminClient(t *testing.T, dataDir string) *api.Client {
	t.Helper()
	cfg, err := api.LoadClientConfig(AdminConfigPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestFailedAdminConfigWriteDoesNotLockAdminOut: the admin user used to be
// committed before admin.yaml was written, so a failed write left an admin
// whose token nobody had, for good. Now the write comes first: it fails,
// nothing is committed, and the next start writes it.
func TestFailedAdminConfigWriteDoesNotLockAdminOut(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	adminPath := AdminConfigPath(dataDir)
	// A non-empty directory where admin.yaml goes: the rename onto it
	// fails (even for root, unlike a read-only directory).
	if err := os.MkdirAll(filepath.Join(adminPath, "blocker"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), testConfig(dataDir))
	if err == nil || !strings.Contains(err.Error(), "admin.yaml") {
		t.Fatalf("first start with an unwritable admin.yaml: err = %v; want a failure naming admin.yaml", err)
	}

	// Recovery: the operator clears the obstacle and starts again.
	if err := os.RemoveAll(adminPath); err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	cfg := testConfig(dataDir)
	cfg.Out = out
	h, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("second start: %v", err)
	}
	runHub(t, h)
	if !strings.Contains(out.String(), "export TETHER_CONFIG=") {
		t.Errorf("second start did not print the admin config's export line:\n%s", out)
	}
	c := adminClient(t, dataDir)
	if _, err := c.CreateUser(context.Background(), "ops", api.RoleViewer); err != nil {
		t.Fatalf("admin token from the retried admin.yaml: %v", err)
	}
}

// TestResetAdminRefusesWhileHubRuns: --reset-admin works on a stopped
// hub's data dir only.
func TestResetAdminRefusesWhileHubRuns(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	h, err := New(context.Background(), testConfig(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	stop := runHub(t, h)
	before, err := os.ReadFile(AdminConfigPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	_, err = ResetAdmin(context.Background(), testConfig(dataDir))
	if err == nil || !strings.Contains(err.Error(), "a hub is running") || !strings.Contains(err.Error(), dataDir) {
		t.Fatalf("reset with the hub running: %v; want a refusal saying a hub is running on %s", err, dataDir)
	}
	after, _ := os.ReadFile(AdminConfigPath(dataDir))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused reset changed admin.yaml")
	}
	if _, err := adminClient(t, dataDir).Clusters(context.Background()); err != nil {
		t.Fatalf("admin token after a refused reset: %v", err)
	}
	stop()
}

// TestResetAdminIssuesNewTokenOnStoppedHub: the old admin token stops
// working, the new admin.yaml works, and the message names the file.
func TestResetAdminIssuesNewTokenOnStoppedHub(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	h, err := New(context.Background(), testConfig(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	stop := runHub(t, h)
	old, err := api.LoadClientConfig(AdminConfigPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	// The operator lost the file.
	if err := os.Remove(AdminConfigPath(dataDir)); err != nil {
		t.Fatal(err)
	}
	out := &bytes.Buffer{}
	cfg := testConfig(dataDir)
	cfg.Out = out
	path, err := ResetAdmin(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(AdminConfigPath(dataDir))
	if path != abs || !strings.Contains(out.String(), "export TETHER_CONFIG="+abs) {
		t.Fatalf("reset returned %q and printed:\n%s\nwant %s and its export line", path, out, abs)
	}

	h, err = New(context.Background(), testConfig(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	runHub(t, h)
	if _, err := adminClient(t, dataDir).Clusters(context.Background()); err != nil {
		t.Fatalf("new admin token: %v", err)
	}
	old.Server = "https://" + h.APIAddr()
	oc, err := api.NewClient(old)
	if err != nil {
		t.Fatal(err)
	}
	var se *api.StatusError
	if _, err := oc.Clusters(context.Background()); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("old admin token after reset: %v; want 401", err)
	}
}

// TestMissingCAWithEnrolledClustersRefusesToStart: a lost pki directory
// used to be replaced silently by a new CA, which none of the enrolled
// agents trusts. Now the hub refuses and says what to do; --new-ca makes a
// new CA on purpose.
func TestMissingCAWithEnrolledClustersRefusesToStart(t *testing.T) {
	ctx := context.Background()
	dataDir := filepath.Join(t.TempDir(), "data")
	h, err := New(ctx, testConfig(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := h.Fleet().CreateToken(ctx, fleet.TokenRequest{Cluster: "edge-1", TTL: time.Hour, Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	sign := func(string) (fleet.Issued, error) {
		return fleet.Issued{Serial: "01", NotAfter: time.Now().Add(time.Hour)}, nil
	}
	if _, _, err := h.Fleet().Enroll(ctx, tok.Token, fleet.AgentInfo{}, sign); err != nil {
		t.Fatal(err)
	}
	oldFP := h.CAFingerprint()
	runHub(t, h)()

	pkiDir := filepath.Join(dataDir, "pki")
	if err := os.RemoveAll(pkiDir); err != nil {
		t.Fatal(err)
	}
	_, err = New(ctx, testConfig(dataDir))
	for _, want := range []string{"CA is missing", pkiDir, "1 clusters (1 enrolled)", "Restore ca.crt and ca.key", "--new-ca"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("start without the CA: err = %v; want it to contain %q", err, want)
		}
	}
	if _, err := os.Stat(pkiDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused start created %s (%v)", pkiDir, err)
	}

	cfg := testConfig(dataDir)
	cfg.NewCA = true
	h, err = New(ctx, cfg)
	if err != nil {
		t.Fatalf("start with --new-ca: %v", err)
	}
	if h.CAFingerprint() == oldFP {
		t.Fatal("--new-ca kept the old CA fingerprint")
	}
	runHub(t, h)()

	// --new-ca with a CA present is refused: it never replaces one.
	_, err = New(ctx, cfg)
	if err == nil || !strings.Contains(err.Error(), "a CA already exists") {
		t.Fatalf("--new-ca with a CA present: %v; want a refusal", err)
	}
}

// TestFirstStartWithoutClustersCreatesCA: no fleet, no refusal.
func TestFirstStartWithoutClustersCreatesCA(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	h, err := New(context.Background(), testConfig(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	runHub(t, h)()
	if err := os.RemoveAll(filepath.Join(dataDir, "pki")); err != nil {
		t.Fatal(err)
	}
	h, err = New(context.Background(), testConfig(dataDir))
	if err != nil {
		t.Fatalf("restart with no clusters and no CA: %v", err)
	}
	runHub(t, h)()
}

// TestConsoleCutsOffSlowAndIdleClients: the console HTTP server had no read
// or idle timeout, so a client trickling its body, or a keep-alive
// connection left idle, held a connection forever (headers were bounded
// only by a fixed 10s). With short injected limits each is closed.
func TestConsoleCutsOffSlowAndIdleClients(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := testConfig(dataDir)
	cfg.Console = ConsoleLimits{
		ReadHeaderTimeout: 300 * time.Millisecond,
		ReadTimeout:       600 * time.Millisecond,
		WriteTimeout:      600 * time.Millisecond,
		IdleTimeout:       300 * time.Millisecond,
	}
	h, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	runHub(t, h)
	admin, err := api.LoadClientConfig(AdminConfigPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := admin.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg.NextProtos = []string{"http/1.1"}
	tlsCfg.ServerName = "127.0.0.1"

	tests := []struct {
		name string
		// first is sent at once; then trickle is sent a byte at a time,
		// forever (until the server closes the connection).
		first, trickle string
	}{
		{"headers sent slowly", "GET /v1/version HTTP/1.1\r\nHost: hub\r\n", strings.Repeat("X-Slow: aaaaaaaa\r\n", 1000)},
		{"body sent slowly", "POST /v1/users HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer " + admin.Token + "\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", strings.Repeat(" ", 100000)},
		{"idle keep-alive", "GET /v1/version HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer " + admin.Token + "\r\n\r\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", h.APIAddr(), tlsCfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, tt.first); err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				tick := time.NewTicker(20 * time.Millisecond)
				defer tick.Stop()
				for i := 0; i < len(tt.trickle); i++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if _, err := conn.Write([]byte{tt.trickle[i]}); err != nil {
						return
					}
				}
			})
			defer wg.Wait()
			defer close(stop)
			// Read until the server closes the connection; a response (the
			// idle case's, or a 408) may come first. The deadline only
			// keeps a broken server from hanging the test.
			if err := conn.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			_, err = io.Copy(io.Discard, conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server kept the connection open: %v", err)
			}
		})
	}
}

// TestConsoleRefusesOversizedRequests: bodies over the limit get 413 and
// headers over MaxHeaderBytes get 431, before any handler reads them.
func TestConsoleRefusesOversizedRequests(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	cfg := testConfig(dataDir)
	cfg.Console.MaxBodyBytes = 4 << 10
	cfg.Console.MaxHeaderBytes = 8 << 10
	h, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	runHub(t, h)
	admin, err := api.LoadClientConfig(AdminConfigPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := admin.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	t.Cleanup(hc.CloseIdleConnections)
	do := func(req *http.Request) (int, string) {
		t.Helper()
		req.Header.Set("Authorization", "Bearer "+admin.Token)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	big := strings.Repeat("a", 8<<10)
	req, _ := http.NewRequest("POST", admin.Server+"/v1/apply", strings.NewReader("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: big}\ndata: {k: "+big+"}\n"))
	if code, body := do(req); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "larger than the limit of 4096 bytes") {
		t.Fatalf("apply over the body limit = %d %s; want 413 naming the limit", code, body)
	}
	req, _ = http.NewRequest("POST", admin.Server+"/v1/users", strings.NewReader(`{"name":"`+big+`","role":"viewer"}`))
	if code, body := do(req); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("create user over the body limit = %d %s; want 413", code, body)
	}
	req, _ = http.NewRequest("GET", admin.Server+"/v1/version", nil)
	req.Header.Set("X-Big", strings.Repeat("h", 64<<10))
	if code, _ := do(req); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("headers over MaxHeaderBytes = %d; want 431", code)
	}
	// Nothing was stored.
	req, _ = http.NewRequest("GET", admin.Server+"/v1/objects/ConfigMap", nil)
	if code, body := do(req); code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("configmaps after refused requests = %d %s", code, body)
	}
}

// TestRevokedAdminIsNotRecreatedOnRestart: "first start" means the store
// never had an admin, not "there is no user admin now": a revoked admin
// stays revoked across restarts.
func TestRevokedAdminIsNotRecreatedOnRestart(t *testing.T) {
	ctx := context.Background()
	dataDir := filepath.Join(t.TempDir(), "data")
	h, err := New(ctx, testConfig(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	stop := runHub(t, h)
	admin := adminClient(t, dataDir)
	bob, err := admin.CreateUser(ctx, "bob", api.RoleAdmin)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeUser(ctx, api.AdminUser, false); err != nil {
		t.Fatalf("revoke admin while bob is admin too: %v", err)
	}
	stop()

	out := &bytes.Buffer{}
	cfg := testConfig(dataDir)
	cfg.Out = out
	if h, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	runHub(t, h)
	if strings.Contains(out.String(), "initialised") {
		t.Fatalf("restart re-initialised the admin:\n%s", out)
	}
	var se *api.StatusError
	if _, err := adminClient(t, dataDir).Clusters(ctx); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Fatalf("revoked admin's token after restart: %v; want 401", err)
	}
	bc, err := api.LoadClientConfig(AdminConfigPath(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	bc.Token = bob.Token
	c, err := api.NewClient(bc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Clusters(ctx); err != nil {
		t.Fatalf("bob after restart: %v", err)
	}
}
