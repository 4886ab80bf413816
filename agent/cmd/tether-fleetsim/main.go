// Command tether-fleetsim is the fleet-scale simulator: many real agent
// links (enrolment, TLS + yamux + gRPC, heartbeats, the status outbox) in
// one process against a real hub, without Helm or a cluster. Each
// simulated agent reports its services Deployed (or Failed, for a seeded
// share of agents) after --deploy-delay, and an outage schedule takes
// agents dark and back. Identities live in memory and, between runs, in
// one JSON file. It is a simulator (package agent/internal/fleetsim), not
// an agent.
//
// A join token enrols one cluster name, so enrol mode takes one token per
// simulated agent (--tokens, one per line): agents sharing a token would
// all become the same cluster and replace each other's sessions.
//
//	tether-fleetsim --mode enroll --hub 127.0.0.1:7070 --tokens tokens.txt --identities ids.json
//	tether-fleetsim --mode run --hub 127.0.0.1:7070 --identities ids.json \
//	    --deploy-delay 200ms --fail-rate 0.05 --fail-chart-version 2.0.0 \
//	    --seed 7 --offline 0.1@30s+2m --control-addr 127.0.0.1:7099
//
// --offline FRACTION@AT+FOR (repeatable): AT after start, FRACTION of the
// agents (the same ones for the same --seed) lose their link for FOR.
// --control-addr serves a loopback control API (GET /v1/agents; POST
// /v1/offline, /v1/online, /v1/failure) for tests; see fleetsim.Handler.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tetherfleet/tether/agent/internal/fleetsim"
)

// outageFlags collects repeated --offline values.
type outageFlags []fleetsim.Outage

func (o *outageFlags) String() string { return fmt.Sprint(*o) }
func (o *outageFlags) Set(s string) error {
	v, err := fleetsim.ParseOutage(s)
	if err != nil {
		return err
	}
	*o = append(*o, v)
	return nil
}

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
		delay    = flag.Duration("deploy-delay", 100*time.Millisecond, "run mode: how long a simulated apply takes before the service is reported")
		failRate = flag.Float64("fail-rate", 0, "run mode: share of agents (chosen by --seed) whose applies fail")
		failVer  = flag.String("fail-chart-version", "", "run mode: only services of this chart version fail (empty: any)")
		seed     = flag.Uint64("seed", 1, "run mode: chooses the failing and the offline agents")
		cacheDir = flag.String("cache-dir", "", "run mode: give each agent a real agent cache file (bbolt, fsync off) in this directory; default: memory only")
		control  = flag.String("control-addr", "", "run mode: serve the control API on this loopback HOST:PORT (tests)")
		outages  outageFlags
	)
	flag.Var(&outages, "offline", "run mode: FRACTION@AT+FOR, e.g. 0.1@30s+2m: that share of agents goes dark AT after start for FOR (repeatable)")
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
		cfg := fleetsim.DefaultConfig()
		cfg.Hub, cfg.Parallel, cfg.Logger = *hub, *parallel, log
		cfg.DeployDelay, cfg.FailRate, cfg.FailChartVersion, cfg.Seed, cfg.Outages = *delay, *failRate, *failVer, *seed, outages
		cfg.CacheDir = *cacheDir
		return runFleet(ctx, cfg, *ids, *control)
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

// enroll redeems each token with a real link and writes the identities.
func enroll(ctx context.Context, log *slog.Logger, hub string, tokens []string, parallel int, out string) error {
	start := time.Now()
	ids, err := fleetsim.Enroll(ctx, log, hub, tokens, parallel)
	if err != nil {
		return err
	}
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, b, 0o600); err != nil {
		return err
	}
	fmt.Printf("enrolled %d agents in %s\n", len(ids), time.Since(start).Round(time.Millisecond))
	return nil
}

// runFleet runs one simulated agent per identity until ctx is done.
func runFleet(ctx context.Context, cfg fleetsim.Config, in, control string) error {
	b, err := os.ReadFile(in)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &cfg.Identities); err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if len(cfg.Identities) == 0 {
		return fmt.Errorf("%s: no identities", in)
	}
	if err := raiseFileLimit(len(cfg.Identities)); err != nil {
		return err
	}
	f, err := fleetsim.New(cfg)
	if err != nil {
		return err
	}
	var srv *http.Server
	if control != "" {
		ln, err := net.Listen("tcp", control)
		if err != nil {
			return fmt.Errorf("--control-addr: %w", err)
		}
		srv = &http.Server{Handler: f.Handler(), ReadHeaderTimeout: 10 * time.Second}
		var wg sync.WaitGroup
		wg.Go(func() { _ = srv.Serve(ln) })
		defer wg.Wait()
		defer srv.Close()
		fmt.Printf("control API on http://%s\n", ln.Addr())
	}
	start := time.Now()
	fmt.Printf("started %d agents\n", len(cfg.Identities))
	return f.Run(ctx, func() {
		fmt.Printf("connected %d agents in %s\n", len(cfg.Identities), time.Since(start).Round(time.Millisecond))
	})
}
