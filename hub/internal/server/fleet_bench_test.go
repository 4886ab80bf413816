package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/protocol/tunnel"
)

// Knobs for BenchmarkFleetConnect; pass them after -args.
var (
	fleetSizes     = flag.String("fleet.sizes", "1000,5000", "BenchmarkFleetConnect: comma-separated fleet sizes, one sub-benchmark each")
	fleetHeartbeat = flag.Duration("fleet.heartbeat", 5*time.Second, "BenchmarkFleetConnect: agent heartbeat while measuring CPU")
	fleetWindow    = flag.Duration("fleet.window", 30*time.Second, "BenchmarkFleetConnect: CPU measurement window once all agents are connected")
	fleetParallel  = flag.Int("fleet.parallel", 32, "BenchmarkFleetConnect: agents the simulator connects at once")
	fleetTunnel    = flag.String("fleet.tunnel", "", "BenchmarkFleetConnect: hub tunnel.Config tweaks, e.g. keepalive=60s,writebuf=0,window=65536,connwindow=65536,idle=1m")
	fleetProfiles  = flag.String("fleet.profiles", "", "BenchmarkFleetConnect: directory for the hub's heap and goroutine profiles once all agents are connected")
	fleetMemRate   = flag.Int("fleet.memprofilerate", 0, "BenchmarkFleetConnect: runtime.MemProfileRate while running (e.g. 1024 for a heap profile exact to a few hundred bytes per agent; slows the connect); 0 keeps the default")
)

// defaultHeartbeat is the hub's default agent heartbeat, which the CPU
// figure is scaled to.
const defaultHeartbeat = 30 * time.Second

// BenchmarkFleetConnect connects N real agents (TLS + yamux + gRPC over
// loopback, run by tether-fleetsim in a separate process) to one hub in
// this process and reports what they cost the hub:
//
//	s-to-connect            simulator start until Sessions() lists all N
//	connect-cpu-ms/agent    hub CPU while connecting, per agent (less
//	                        sensitive to a busy machine than s-to-connect)
//	heap-B/agent            HeapInuse+StackInuse growth after two GCs
//	rss-KiB/agent           VmRSS growth (baseline taken after FreeOSMemory)
//	goroutines/agent        runtime.NumGoroutine growth
//	cpu-ms/s/1k-agents@HB   hub CPU (utime+stime) per second per 1000 agents
//	                        with heartbeat HB, over -fleet.window
//	cpu-ms/s/1k-agents@30s  the same scaled to the default 30 s heartbeat
//	                        (heartbeat-proportional; yamux keepalives are
//	                        scaled down too, so it is a lower bound)
//
// Run it with -benchtime 1x:
//
//	go test -run '^$' -bench BenchmarkFleetConnect -benchtime 1x -timeout 60m ./hub/internal/server/
func BenchmarkFleetConnect(b *testing.B) {
	sizes, err := parseSizes(*fleetSizes)
	if err != nil {
		b.Fatal(err)
	}
	tweak, err := parseTunnelTweaks(*fleetTunnel)
	if err != nil {
		b.Fatal(err)
	}
	raiseFileLimit(b, slices.Max(sizes))
	if *fleetMemRate > 0 {
		runtime.MemProfileRate = *fleetMemRate
	}
	sim := buildFleetsim(b)
	for _, n := range sizes {
		b.Run(fmt.Sprintf("agents=%d", n), func(b *testing.B) {
			b.StopTimer()
			var sum fleetResult
			for range b.N {
				sum.add(runFleet(b, sim, n, tweak))
			}
			sum.report(b, float64(b.N))
		})
	}
}

type fleetResult struct {
	connect     time.Duration
	connectCPU  float64 // hub CPU ms per agent while connecting
	heapPerAg   float64 // bytes
	rssPerAg    float64 // KiB
	gorPerAg    float64
	cpuPerSec1k float64 // ms per second per 1000 agents at *fleetHeartbeat
}

func (r *fleetResult) add(o fleetResult) {
	r.connect += o.connect
	r.connectCPU += o.connectCPU
	r.heapPerAg += o.heapPerAg
	r.rssPerAg += o.rssPerAg
	r.gorPerAg += o.gorPerAg
	r.cpuPerSec1k += o.cpuPerSec1k
}

func (r *fleetResult) report(b *testing.B, n float64) {
	b.ReportMetric(0, "ns/op") // the timed part is s-to-connect; ns/op repeats it
	b.ReportMetric(r.connect.Seconds()/n, "s-to-connect")
	b.ReportMetric(r.connectCPU/n, "connect-cpu-ms/agent")
	b.ReportMetric(r.heapPerAg/n, "heap-B/agent")
	b.ReportMetric(r.rssPerAg/n, "rss-KiB/agent")
	b.ReportMetric(r.gorPerAg/n, "goroutines/agent")
	cpu := r.cpuPerSec1k / n
	b.ReportMetric(cpu, "cpu-ms/s/1k-agents@"+fmtDur(*fleetHeartbeat))
	b.ReportMetric(cpu*float64(*fleetHeartbeat)/float64(defaultHeartbeat), "cpu-ms/s/1k-agents@"+fmtDur(defaultHeartbeat))
}

// runFleet runs one iteration: fresh hub, untimed enrolment, timed
// connection of all n agents, then the measurements.
func runFleet(b *testing.B, sim string, n int, tweak func(*tunnel.Config)) fleetResult {
	b.Helper()
	dir := b.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := New(ctx, Config{
		DataDir:   filepath.Join(dir, "hub"),
		AgentAddr: "127.0.0.1:0",
		APIAddr:   "127.0.0.1:0",
		Heartbeat: *fleetHeartbeat,
		Out:       io.Discard,
		// Every simulated agent connects from 127.0.0.1.
		MaxAgentConns:        n + 1024,
		MaxAgentConnsPerAddr: n + 1024,
		AgentConnRate:        1e6,
		AgentConnBurst:       n + 1024,
	})
	if err != nil {
		b.Fatal(err)
	}
	if tweak != nil {
		if err := h.replaceGateway(tweak); err != nil {
			b.Fatal(err)
		}
	}
	runErr := make(chan error, 1)
	go func() { runErr <- h.Run(ctx) }()
	stopHub := func() {
		cancel()
		select {
		case err := <-runErr:
			if err != nil {
				b.Errorf("hub Run: %v", err)
			}
		case <-time.After(2 * time.Minute):
			b.Errorf("hub did not stop within 2m of cancel")
		}
	}
	defer func() {
		if ctx.Err() == nil {
			stopHub()
		}
	}()
	idleGoroutines := waitGoroutinesStable(b, "hub start")

	// Enrolment, untimed: one token (so one cluster) per agent.
	tokens := filepath.Join(dir, "tokens.txt")
	writeTokens(b, ctx, h.Fleet(), n, tokens)
	ids := filepath.Join(dir, "identities.json")
	enrollStart := time.Now()
	if out, err := exec.Command(sim, "--mode", "enroll", "--hub", h.AgentAddr(), "--tokens", tokens,
		"--identities", ids, "--parallel", strconv.Itoa(*fleetParallel)).CombinedOutput(); err != nil {
		b.Fatalf("tether-fleetsim enroll: %v\n%s", err, out)
	}
	b.Logf("agents=%d: enrolled in %s; load average %s", n, time.Since(enrollStart).Round(time.Millisecond), loadAvg())
	// The enrolment connections are gone when the hub's goroutines have
	// settled again, near their idle count.
	if left := waitGoroutinesStable(b, "enrolment connections to close") - idleGoroutines; left > 32 {
		b.Fatalf("%d more goroutines than before enrolment: enrolment connections left open?", left)
	}
	if got := len(h.Gateway().Sessions()); got != 0 {
		b.Fatalf("%d sessions before the simulator runs", got)
	}

	debug.FreeOSMemory()
	before := sample()

	// Timed: start all agents, wait until the hub lists every one.
	var simOut bytes.Buffer
	cmd := exec.Command(sim, "--mode", "run", "--hub", h.AgentAddr(), "--identities", ids,
		"--parallel", strconv.Itoa(*fleetParallel))
	cmd.Stdout, cmd.Stderr = &simOut, &simOut
	simDone := make(chan error, 1)
	cpuStart := cpuTime(b)
	b.StartTimer()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go func() { simDone <- cmd.Wait() }()
	stopSim := func() {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			b.Errorf("SIGTERM tether-fleetsim: %v", err)
		}
		select {
		case err := <-simDone:
			if err != nil {
				b.Errorf("tether-fleetsim run: %v\n%s", err, simOut.Bytes())
			}
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-simDone
			b.Errorf("tether-fleetsim did not stop within 1m of SIGTERM; killed")
		}
	}
	simStopped := false
	defer func() {
		if !simStopped {
			stopSim()
		}
	}()
	deadline := max(2*time.Minute, time.Duration(n)*40*time.Millisecond)
	connected := 0
	tick := time.NewTicker(100 * time.Millisecond)
	timeout := time.NewTimer(deadline)
	for connected < n {
		select {
		case <-tick.C:
			connected = len(h.Gateway().Sessions())
		case err := <-simDone:
			simStopped = true
			b.Fatalf("tether-fleetsim exited early (%v) with %d of %d agents connected:\n%s", err, connected, n, simOut.Bytes())
		case <-timeout.C:
			b.Fatalf("only %d of %d agents connected after %s", connected, n, deadline)
		}
	}
	tick.Stop()
	timeout.Stop()
	elapsed := time.Since(start)
	b.StopTimer()
	connectCPU := cpuTime(b) - cpuStart

	after := sample()
	if *fleetProfiles != "" {
		writeProfiles(b, *fleetProfiles, n)
	}

	// Steady heartbeats: hub CPU over the window, nothing else polling.
	ru0 := cpuTime(b)
	w := time.NewTimer(*fleetWindow)
	select {
	case <-w.C:
	case err := <-simDone:
		simStopped = true
		b.Fatalf("tether-fleetsim exited during the CPU window (%v):\n%s", err, simOut.Bytes())
	}
	cpu := cpuTime(b) - ru0
	steady := sample()
	if got := len(h.Gateway().Sessions()); got != n {
		b.Errorf("%d of %d agents still connected after the CPU window", got, n)
	}

	simStopped = true
	stopSim()
	stopHub()
	if ps := cmd.ProcessState; ps != nil {
		b.Logf("agents=%d: tether-fleetsim used %s CPU in all; load average at the end: %s", n,
			(ps.UserTime() + ps.SystemTime()).Round(time.Millisecond), loadAvg())
	}

	fn := float64(n)
	r := fleetResult{
		connect:     elapsed,
		connectCPU:  float64(connectCPU.Microseconds()) / 1000 / fn,
		heapPerAg:   float64(int64(after.heap)-int64(before.heap)) / fn,
		rssPerAg:    float64(after.rssKiB-before.rssKiB) / fn,
		gorPerAg:    float64(after.goroutines-before.goroutines) / fn,
		cpuPerSec1k: float64(cpu.Milliseconds()) / fleetWindow.Seconds() / (fn / 1000),
	}
	b.Logf("agents=%d: connected in %s using %s hub CPU; hub heap+stack %.1f -> %.1f MiB (stacks %.1f -> %.1f MiB), RSS %.1f -> %.1f MiB, goroutines %d -> %d",
		n, elapsed.Round(time.Millisecond), connectCPU.Round(time.Millisecond), mib(before.heap), mib(after.heap),
		mib(before.stack), mib(after.stack), float64(before.rssKiB)/1024, float64(after.rssKiB)/1024,
		before.goroutines, after.goroutines)
	b.Logf("agents=%d: steady heartbeats: hub CPU %s in %s; after it heap+stack %.1f MiB (stacks %.1f MiB, %.0f B/agent), RSS %.1f MiB (%.1f KiB/agent)",
		n, cpu.Round(time.Millisecond), *fleetWindow, mib(steady.heap), mib(steady.stack),
		float64(int64(steady.heap)-int64(before.heap))/fn, float64(steady.rssKiB)/1024, float64(steady.rssKiB-before.rssKiB)/fn)
	return r
}

type memSample struct {
	heap       uint64 // HeapInuse + StackInuse
	stack      uint64 // StackInuse
	rssKiB     int64
	goroutines int
}

// sample measures after two GCs: the second frees what sync.Pools (gRPC's
// shared write buffers among them) kept in their victim caches, as the
// periodic GCs of an idle hub would.
func sample() memSample {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heap: ms.HeapInuse + ms.StackInuse, stack: ms.StackInuse, rssKiB: vmRSS(), goroutines: runtime.NumGoroutine()}
}

// vmRSS is this process's resident set in KiB, from /proc/self/status.
func vmRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	return 0
}

// cpuTime is this process's user plus system CPU time.
func cpuTime(b *testing.B) time.Duration {
	b.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatalf("getrusage: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func writeTokens(b *testing.B, ctx context.Context, reg *fleet.Registry, n int, path string) {
	b.Helper()
	var buf bytes.Buffer
	for i := range n {
		ti, err := reg.CreateToken(ctx, fleet.TokenRequest{Cluster: fmt.Sprintf("sim-%05d", i+1), TTL: time.Hour, Uses: 1})
		if err != nil {
			b.Fatal(err)
		}
		buf.WriteString(ti.Token)
		buf.WriteByte('\n')
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
}

// waitGoroutinesStable polls until the goroutine count has not changed for
// a second, and returns it.
func waitGoroutinesStable(b *testing.B, what string) int {
	b.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	timeout := time.NewTimer(time.Minute)
	defer timeout.Stop()
	last, same := runtime.NumGoroutine(), 0
	for same < 20 {
		select {
		case <-tick.C:
		case <-timeout.C:
			b.Fatalf("goroutines did not settle within 1m (%s): %d now", what, runtime.NumGoroutine())
		}
		if n := runtime.NumGoroutine(); n == last {
			same++
		} else {
			last, same = n, 0
		}
	}
	return last
}

// raiseFileLimit lifts the soft open-file limit to the hard one: the hub
// holds one socket per agent.
func raiseFileLimit(b *testing.B, agents int) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("getrlimit: %v", err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			b.Fatalf("raise RLIMIT_NOFILE to %d: %v", lim.Max, err)
		}
	}
	if need := uint64(agents) + 512; lim.Cur < need {
		b.Fatalf("open-file limit %d is too low for %d agents: need about %d in the hub (and as many in tether-fleetsim); raise the hard limit (ulimit -Hn)", lim.Cur, agents, need)
	}
}

// buildFleetsim builds the simulator into a temporary directory.
func buildFleetsim(b *testing.B) string {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "tether-fleetsim")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/tetherfleet/tether/agent/cmd/tether-fleetsim").CombinedOutput()
	if err != nil {
		b.Fatalf("build tether-fleetsim: %v\n%s", err, out)
	}
	return bin
}

func writeProfiles(b *testing.B, dir string, n int) {
	b.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, p := range []struct {
		name  string
		debug int
	}{{"heap", 0}, {"goroutine", 1}} {
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("hub-%s-%d.pprof", p.name, n)))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup(p.name).WriteTo(f, p.debug); err != nil {
			b.Error(err)
		}
		f.Close()
	}
}

// replaceGateway swaps the hub's gateway for one whose tunnel config is
// changed by tweak, to measure variants without changing the hub's code.
// It mirrors the gateway part of New; only benchmarks use it.
func (h *Hub) replaceGateway(tweak func(*tunnel.Config)) error {
	serving, err := h.ca.ServerCert([]string{"localhost", "127.0.0.1", "::1"}, 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	gcfg := gateway.DefaultConfig()
	gcfg.Registry = h.fleet
	gcfg.Signer = h.ca
	gcfg.Certificate = serving
	gcfg.ClientCAs = h.ca.Pool()
	gcfg.Logger = h.log
	if h.cfg.Heartbeat > 0 {
		gcfg.Heartbeat = h.cfg.Heartbeat
	}
	h.cfg.admission(&gcfg)
	tweak(&gcfg.Tunnel)
	gw, err := gateway.New(gcfg)
	if err != nil {
		return err
	}
	h.gw = gw
	return nil
}

// parseTunnelTweaks parses -fleet.tunnel: key=value pairs that change the
// hub's tunnel.Config.
func parseTunnelTweaks(s string) (func(*tunnel.Config), error) {
	if s == "" {
		return nil, nil
	}
	var fns []func(*tunnel.Config)
	for kv := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return nil, fmt.Errorf("-fleet.tunnel %q: want key=value", kv)
		}
		var fn func(*tunnel.Config)
		switch k {
		case "keepalive", "idle":
			d, err := time.ParseDuration(v)
			if err != nil {
				return nil, fmt.Errorf("-fleet.tunnel %s: %w", k, err)
			}
			if k == "keepalive" {
				fn = func(c *tunnel.Config) { c.KeepAliveInterval = d }
			} else {
				fn = func(c *tunnel.Config) { c.ClientIdleTimeout = d }
			}
		case "readbuf", "writebuf", "window", "connwindow", "yamuxwindow", "maxtransports":
			i, err := strconv.Atoi(v)
			if err != nil {
				return nil, fmt.Errorf("-fleet.tunnel %s: %w", k, err)
			}
			fn = map[string]func(*tunnel.Config){
				"readbuf":       func(c *tunnel.Config) { c.ReadBufferSize = i },
				"writebuf":      func(c *tunnel.Config) { c.WriteBufferSize = i },
				"window":        func(c *tunnel.Config) { c.InitialWindowSize = int32(i) },
				"connwindow":    func(c *tunnel.Config) { c.InitialConnWindowSize = int32(i) },
				"yamuxwindow":   func(c *tunnel.Config) { c.StreamWindowSize = uint32(i) },
				"maxtransports": func(c *tunnel.Config) { c.MaxTransports = i },
			}[k]
		default:
			return nil, fmt.Errorf("-fleet.tunnel: unknown key %q", k)
		}
		fns = append(fns, fn)
	}
	return func(c *tunnel.Config) {
		for _, fn := range fns {
			fn(c)
		}
	}, nil
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-fleet.sizes %q: want positive integers", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// loadAvg is the first three fields of /proc/loadavg: the machine is shared.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func mib(v uint64) float64 { return float64(v) / (1 << 20) }

// fmtDur is d without zero trailing units: 5s, 30s, 1m, 1m30s.
func fmtDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
