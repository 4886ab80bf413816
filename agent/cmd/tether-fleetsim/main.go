// Command tether-fleetsim runs many real agent links (TLS + yamux + gRPC,
// enrolment, heartbeats) in one process against a hub, without Helm or a
// cluster, to measure what a fleet costs the hub. Identities live in memory
// and, between runs, in one JSON file; this is the fleet-scale simulator,
// not an agent.
//
// A join token enrols one cluster name, so enrol mode takes one token per
// simulated agent (--tokens, one per line): agents sharing a token would
// all become the same cluster and replace each other's sessions.
//
//	tether-fleetsim --mode enroll --hub 127.0.0.1:7070 --tokens tokens.txt --identities ids.json
//	tether-fleetsim --mode run --hub 127.0.0.1:7070 --identities ids.json
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
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
		tokens   = flag.String("tokens", "", "file of join tokens, one per line, one per agent (enroll mode)")
		token    = flag.String("token", "", "one join token, for a single agent (enroll mode); use --tokens for more")
		agents   = flag.Int("agents", 0, "enrol only the first N tokens (0: all)")
		ids      = flag.String("identities", "fleetsim-identities.json", "file of enrolled identities")
		parallel = flag.Int("parallel", 32, "concurrent enrolments / connects while starting")
		mode     = flag.String("mode", "run", "enroll: enrol one agent per token and write --identities; run: connect them all until SIGTERM")
		verbose  = flag.Bool("v", false, "log link warnings (reconnects, refusals)")
	)
	flag.Parse()
	if *hub == "" {
		return errors.New("--hub is required")
	}
	if *parallel < 1 {
		return fmt.Errorf("--parallel %d: must be at least 1", *parallel)
	}
	level := slog.LevelError
	if *verbose {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	switch *mode {
	case "enroll":
		toks, err := readTokens(*tokens, *token, *agents)
		if err != nil {
			return err
		}
		if err := raiseFileLimit(*parallel); err != nil {
			return err
		}
		return enroll(ctx, log, *hub, toks, *parallel, *ids)
	case "run":
		return connect(ctx, log, *hub, *ids, *parallel)
	}
	return fmt.Errorf("--mode %q: want enroll or run", *mode)
}

// readTokens returns the join tokens to enrol with: the lines of file (or
// the single token), at most n of them when n > 0.
func readTokens(file, one string, n int) ([]string, error) {
	var toks []string
	switch {
	case file != "" && one != "":
		return nil, errors.New("--tokens and --token: give one of them")
	case one != "":
		toks = []string{one}
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("--tokens: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if t := strings.TrimSpace(sc.Text()); t != "" && !strings.HasPrefix(t, "#") {
				toks = append(toks, t)
			}
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("--tokens %s: %w", file, err)
		}
	default:
		return nil, errors.New("enroll mode needs --tokens FILE (one join token per agent)")
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("--tokens %s: no tokens in the file", file)
	}
	if n > 0 {
		if n > len(toks) {
			return nil, fmt.Errorf("--agents %d: only %d tokens given; each agent needs its own token", n, len(toks))
		}
		toks = toks[:n]
	}
	return toks, nil
}

// raiseFileLimit lifts the soft open-file limit to the hard one and fails
// if that is still too low for n connections (one socket per agent, plus
// headroom for the runtime and short-lived enrolment connections).
func raiseFileLimit(n int) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return fmt.Errorf("read RLIMIT_NOFILE: %w", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			return fmt.Errorf("raise RLIMIT_NOFILE to %d: %w", lim.Max, err)
		}
	}
	if need := uint64(n) + 256; lim.Cur < need {
		return fmt.Errorf("open-file limit %d is too low for %d agents: need about %d (raise the hard limit, e.g. ulimit -Hn)", lim.Cur, n, need)
	}
	return nil
}

// memCache is an in-memory link.Cache: a simulator shortcut, since
// thousands of bbolt files would measure the disk, not the hub.
type memCache struct {
	mu sync.Mutex
	id *cache.Identity
	// saved is closed at the first SaveIdentity, connected at the first
	// Connected state.
	saved, connected         chan struct{}
	savedOnce, connectedOnce sync.Once
}

func newMemCache(id *cache.Identity) *memCache {
	return &memCache{id: id, saved: make(chan struct{}), connected: make(chan struct{})}
}

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
	m.id = &id
	m.mu.Unlock()
	m.savedOnce.Do(func() { close(m.saved) })
	return nil
}

func (m *memCache) SaveLinkState(ls cache.LinkState) error {
	if ls.State == link.StateConnected {
		m.connectedOnce.Do(func() { close(m.connected) })
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

// enroll redeems each token with a real link and writes the identities.
// A link is stopped as soon as its identity is saved: connecting is the
// run mode's job.
func enroll(ctx context.Context, log *slog.Logger, hub string, tokens []string, parallel int, out string) error {
	n := len(tokens)
	ids := make([]cache.Identity, n)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr error
	var errOnce sync.Once
	fail := func(i int, err error) {
		failed.Add(1)
		errOnce.Do(func() { firstErr = fmt.Errorf("token %d: %w", i+1, err) })
	}
	start := time.Now()
loop:
	for i, tok := range tokens {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Go(func() {
			defer func() { <-sem }()
			c := newMemCache(nil)
			l, err := newLink(c, log, hub, tok)
			if err != nil {
				fail(i, err)
				return
			}
			defer l.Close()
			lctx, cancel := context.WithCancel(ctx)
			var inner sync.WaitGroup
			inner.Go(func() {
				select {
				case <-c.saved:
				case <-lctx.Done():
				}
				cancel()
			})
			err = l.Run(lctx)
			cancel()
			inner.Wait()
			id, ierr := c.Identity()
			if err == nil {
				err = ierr
			}
			if err != nil {
				fail(i, err)
				return
			}
			ids[i] = id
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("enrolment interrupted: %w", err)
	}
	if f := failed.Load(); f > 0 {
		return fmt.Errorf("%d of %d enrolments failed; first: %w", f, n, firstErr)
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, b, 0o600); err != nil {
		return err
	}
	fmt.Printf("enrolled %d agents in %s\n", n, time.Since(start).Round(time.Millisecond))
	return nil
}

// connect runs one link per identity until ctx is done.
func connect(ctx context.Context, log *slog.Logger, hub, in string, parallel int) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	var ids []cache.Identity
	if err := json.Unmarshal(b, &ids); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(ids) == 0 {
		return fmt.Errorf("%s: no identities", in)
	}
	if err := raiseFileLimit(len(ids)); err != nil {
		return err
	}
	type agent struct {
		l *link.Link
		c *memCache
	}
	links := make([]agent, len(ids))
	for i := range ids {
		c := newMemCache(&ids[i])
		l, err := newLink(c, log, hub, "")
		if err != nil {
			return fmt.Errorf("identity %d (cluster %q): %w", i, ids[i].Cluster, err)
		}
		links[i] = agent{l, c}
	}
	start := time.Now()
	var wg sync.WaitGroup
	defer wg.Wait()
	var connected atomic.Int64
	allUp := make(chan struct{})
	sem := make(chan struct{}, parallel)
loop:
	for i, a := range links {
		// Pace the start: at most parallel agents are connecting at once.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Go(func() {
			select {
			case <-a.c.connected:
				if connected.Add(1) == int64(len(links)) {
					close(allUp)
				}
			case <-ctx.Done():
			}
			<-sem
		})
		wg.Go(func() {
			defer a.l.Close()
			if err := a.l.Run(ctx); err != nil {
				log.Error("agent stopped", "cluster", ids[i].Cluster, "err", err)
			}
		})
	}
	fmt.Printf("started %d agents\n", len(ids))
	select {
	case <-allUp:
		fmt.Printf("connected %d agents in %s\n", len(ids), time.Since(start).Round(time.Millisecond))
	case <-ctx.Done():
	}
	<-ctx.Done()
	return nil
}
