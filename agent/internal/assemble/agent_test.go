package assemble

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkLeaks fails t if goroutines started during the test outlive it; it
// must be registered before anything else the test cleans up.
func checkLeaks(t *testing.T) {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
}

// testConfig is a link-only agent (no cluster, no Helm) for hub h.
func testConfig(dataDir string, h *linktest.Hub, token string) Config {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.NoCluster = dataDir, true
	cfg.Link.Hubs, cfg.Link.Token = []string{h.Addr}, token
	cfg.Link.MinBackoff, cfg.Link.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	return cfg
}

// startAgent builds an agent with New and runs it; the returned stop
// cancels Run, checks it returned nil, and closes the agent.
func startAgent(t *testing.T, cfg Config) (a *Agent, stop func()) {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	stopped := false
	stop = func() {
		t.Helper()
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run after its context was cancelled: %v; want nil", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("Run did not return after its context was cancelled")
		}
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	t.Cleanup(stop)
	return a, stop
}

// seedStatus puts a status report in the outbox of the bbolt file in dir,
// as a reconciler would have before the agent stopped.
func seedStatus(t *testing.T, dir string, rev uint64) {
	t.Helper()
	c, err := cache.Open(filepath.Join(dir, DBFile), cache.Options{OutboxKinds: link.OutboxKinds()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := proto.Marshal(&fleetv1.StatusReport{Revision: rev, Services: []*fleetv1.ServiceStatus{{Name: "web", Namespace: "apps", State: "Deployed"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Enqueue(link.KindStatus, rep); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAgentEnrolsConnectsReportsAndCloses runs the assembled agent as
// `tether-agent run --no-cluster` does, against a hub speaking the real
// protocol: it enrols with the join token, connects, drains the status
// report waiting in its outbox, and on stop returns from Run, leaves no
// goroutine behind and closes the bbolt file (it can be opened again). A
// second start needs no token: the identity was kept.
func TestAgentEnrolsConnectsReportsAndCloses(t *testing.T) {
	checkLeaks(t)
	hub := linktest.Start(t, linktest.Config{})
	dir := t.TempDir()
	seedStatus(t, dir, 3)

	a, stop := startAgent(t, testConfig(dir, hub, hub.Token))
	hub.Wait(t, "the status report", 20*time.Second, func() bool { return len(hub.Reports()) == 1 })
	linktest.WaitUntil(t, "the outbox to drain", 20*time.Second, func() bool {
		st := a.Status()
		return st.Link.State == link.StateConnected && st.Outbox.Pending == 0
	})
	if st := a.Status(); st.Link.Cluster != linktest.Cluster || !st.Running {
		t.Fatalf("agent status %+v; want running as cluster %s", st, linktest.Cluster)
	}
	if got := hub.Reports()[0]; got.GetRevision() != 3 || len(got.GetServices()) != 1 {
		t.Fatalf("hub stored %v; want the seeded report of revision 3", got)
	}
	stop()
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := a.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v; want ErrClosed", err)
	}

	// The file was closed: it opens again at once, with the identity.
	c, err := cache.Open(filepath.Join(dir, DBFile), cache.Options{OutboxKinds: link.OutboxKinds(), LockTimeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("reopen the bbolt file after Close: %v", err)
	}
	id, err := c.Identity()
	if err != nil || id.Cluster != linktest.Cluster {
		t.Fatalf("identity after restart: %+v, %v", id, err)
	}
	if st, err := c.OutboxStats(); err != nil || st.Pending != 0 {
		t.Fatalf("outbox after stop: %+v, %v; want empty", st, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart without a token: the stored identity connects.
	_, stop2 := startAgent(t, testConfig(dir, hub, ""))
	hub.Wait(t, "a second sync stream", 20*time.Second, func() bool { return hub.SyncCalls() == 2 })
	if n := hub.Enrolls(); n != 1 {
		t.Fatalf("hub enrolled %d times; want 1 (the restart must reuse the identity)", n)
	}
	stop2()
}

// TestAgentCloseStopsRun: Close while Run runs makes Run return nil, and
// leaves no goroutine behind.
func TestAgentCloseStopsRun(t *testing.T) {
	checkLeaks(t)
	hub := linktest.Start(t, linktest.Config{})
	a, err := New(testConfig(t.TempDir(), hub, hub.Token))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(context.Background()) }()
	hub.Wait(t, "the agent to connect", 20*time.Second, func() bool { return hub.SyncCalls() == 1 })
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after Close: %v; want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after Close")
	}
}

// TestConfigValidate: a Config without a data dir, or with parts the
// assembly owns already set, is refused before anything is opened.
func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"no data dir", func(c *Config) { c.DataDir = "" }},
		{"cache set", func(c *Config) { c.Link.Cache = nopCache{} }},
		{"negative drift interval", func(c *Config) { c.DriftInterval = -time.Second }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.DataDir, cfg.NoCluster = filepath.Join(dir, "agent"), true
			tc.edit(&cfg)
			if _, err := New(cfg); err == nil {
				t.Fatal("New accepted the config")
			}
			if _, err := cache.OpenReadOnly(filepath.Join(dir, "agent", DBFile)); err == nil {
				t.Fatal("a refused config created the bbolt file")
			}
		})
	}
}

type nopCache struct{}

func (nopCache) Identity() (cache.Identity, error)   { return cache.Identity{}, cache.ErrNoIdentity }
func (nopCache) SaveIdentity(cache.Identity) error   { return nil }
func (nopCache) SaveLinkState(cache.LinkState) error { return nil }
