// Command tether-fleetsim runs many real agent links (TLS + yamux + gRPC,
// enrolment, heartbeats) in one process against a hub, without Helm or a
// cluster, to measure what a fleet costs the hub. Identities live in memory
// and, between runs, in one JSON file; this is the fleet-scale simulator,
// not an agent.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "tether-fleetsim:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		hub      = flag.String("hub", "", "hub agent address HOST:PORT (required)")
		token    = flag.String("token", "", "join token with at least --agents uses (enrol mode)")
		agents   = flag.Int("agents", 100, "number of agents")
		ids      = flag.String("identities", "fleetsim-identities.json", "file of enrolled identities")
		parallel = flag.Int("parallel", 32, "concurrent enrolments / connects while starting")
		mode     = flag.String("mode", "run", "enroll: enrol --agents and write --identities; run: connect them all until SIGTERM")
	)
	flag.Parse()
	if *hub == "" {
		return errors.New("--hub is required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch *mode {
	case "enroll":
		return enroll(ctx, log, *hub, *token, *agents, *parallel, *ids)
	case "run":
		return connect(ctx, log, *hub, *ids, *parallel)
	}
	return fmt.Errorf("--mode %q: want enroll or run", *mode)
}

// memCache is an in-memory link.Cache: a simulator shortcut, since
// thousands of bbolt files would measure the disk, not the hub.
type memCache struct {
	mu sync.Mutex
	id *cache.Identity
	// connected is closed at the first Connected state.
	connected chan struct{}
	once      sync.Once
}

func newMemCache(id *cache.Identity) *memCache { return &memCache{id: id, connected: make(chan struct{})} }

func (m *memCache) Identity() (cache.Identity, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.id == nil {
		return cache.Identity{}, cache.ErrNoIdentity
	}
	return *m.id, nil
}

func (m *memCache) SaveIdentity(id cache.Identity) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.id = &id
	return nil
}

func (m *memCache) SaveLinkState(ls cache.LinkState) error {
	if ls.State == link.StateConnected {
		m.once.Do(func() { close(m.connected) })
	}
	return nil
}

func newLink(c *memCache, log *slog.Logger, hub, token string) (*link.Link, error) {
	cfg := link.DefaultConfig()
	cfg.Cache = c
	cfg.Hubs = []string{hub}
	cfg.Token = token
	cfg.Logger = log
	cfg.MaxBackoff = 5 * time.Second
	return link.New(cfg)
}

func enroll(ctx context.Context, log *slog.Logger, hub, token string, n, parallel int, out string) error {
	ids := make([]cache.Identity, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			c := newMemCache(nil)
			l, err := newLink(c, log, hub, token)
			if err == nil {
				lctx, cancel := context.WithCancel(ctx)
				var inner sync.WaitGroup
				inner.Go(func() {
					select {
					case <-c.connected:
					case <-lctx.Done():
					}
					cancel()
				})
				err = l.Run(lctx)
				cancel()
				inner.Wait()
				l.Close()
			}
			id, ierr := c.Identity()
			if err == nil {
				err = ierr
			}
			if err != nil {
				failed.Add(1)
				errOnce.Do(func() { firstErr = err })
				return
			}
			ids[i] = id
		})
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d enrolments failed; first: %w", f, n, firstErr)
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	fmt.Printf("enrolled %d agents\n", n)
	return os.WriteFile(out, b, 0o600)
}

func connect(ctx context.Context, log *slog.Logger, hub, in string, parallel int) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var ids []cache.Identity
	if err := json.Unmarshal(b, &ids); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	sem := make(chan struct{}, parallel)
	for i := range ids {
		c := newMemCache(&ids[i])
		l, err := newLink(c, log, hub, "")
		if err != nil {
			return err
		}
		// Pace the start: at most parallel agents are connecting at once.
		sem <- struct{}{}
		wg.Go(func() {
			select {
			case <-c.connected:
			case <-ctx.Done():
			}
			<-sem
		})
		wg.Go(func() {
			defer l.Close()
			_ = l.Run(ctx)
		})
	}
	fmt.Printf("started %d agents\n", len(ids))
	<-ctx.Done()
	return nil
}
