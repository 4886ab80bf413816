package tunnel

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// Benchmarks compare gRPC through the tunnel with plain gRPC, both over TLS
// 1.3 on loopback TCP with the same certificates (ServerTLSConfig and
// ClientTLSConfig) and the same payloads:
//
//	go test -run '^$' -bench . -benchmem -benchtime 2s -count 2 ./protocol/tunnel/
//
// tunnel is the hub on DefaultConfig and the agent on DefaultAgentConfig,
// as in production; plain is grpc.NewServer/NewClient with
// credentials.NewTLS and gRPC's defaults. The two targets of a shape (call
// kind and size) run back to back (-count repeats each in a row), and which
// goes first alternates from shape to shape, so that a shared machine's
// drift and the garbage one target leaves weigh on both: compare the two
// within one run.

var benchSizes = []int{1 << 10, 64 << 10}

type benchTarget struct {
	name  string
	fleet func(b *testing.B) fleetv1.FleetClient
}

// benchRuns counts the calls of benchTargets per benchmark function (one
// per shape), to alternate the order of the targets.
var benchRuns = map[string]int{}

func benchTargets(b *testing.B) []benchTarget {
	targets := []benchTarget{
		{"tunnel", func(b *testing.B) fleetv1.FleetClient {
			hub, agent := DefaultConfig(), DefaultAgentConfig()
			return fleetClient(b, newPair(b, "tls", pairOpts{hubCfg: &hub, agentCfg: &agent}).agent)
		}},
		{"plain", plainFleet},
	}
	if benchRuns[b.Name()]%2 == 1 {
		slices.Reverse(targets)
	}
	benchRuns[b.Name()]++
	return targets
}

// plainFleet serves the test Fleet service with plain gRPC over TLS.
func plainFleet(b *testing.B) fleetv1.FleetClient {
	b.Helper()
	p := getPKI(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(p.serverTLS())))
	fleetv1.RegisterFleetServer(srv, &hubService{})
	served := make(chan struct{})
	go func() { defer close(served); srv.Serve(ln) }()
	b.Cleanup(func() { srv.Stop(); <-served })
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(p.clientTLS())))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	return fleetv1.NewFleetClient(cc)
}

// The plain server has no tunnel AuthInfo; let its handlers through.
func init() { allowPlain = true }

func BenchmarkUnary(b *testing.B) {
	for _, size := range benchSizes {
		for _, tgt := range benchTargets(b) {
			b.Run(fmt.Sprintf("%s/%dKiB", tgt.name, size>>10), func(b *testing.B) {
				c := tgt.fleet(b)
				ctx := context.Background()
				req := &fleetv1.RenewRequest{CsrDer: make([]byte, size)}
				if _, err := c.Renew(ctx, req); err != nil { // warm up the transport
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := c.Renew(ctx, req); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func BenchmarkStream(b *testing.B) {
	for _, size := range benchSizes {
		for _, tgt := range benchTargets(b) {
			b.Run(fmt.Sprintf("%s/%dKiB", tgt.name, size>>10), func(b *testing.B) {
				c := tgt.fleet(b)
				ctx := context.Background()
				if _, err := c.Renew(ctx, &fleetv1.RenewRequest{}); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				stream, err := c.FetchChart(ctx, &fleetv1.FetchChartRequest{Digest: fmt.Sprintf("chunk=%d,count=%d", size, b.N)})
				if err != nil {
					b.Fatal(err)
				}
				var n int
				for {
					_, err := stream.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n != b.N {
					b.Fatalf("got %d chunks, want %d", n, b.N)
				}
			})
		}
	}
}

// BenchmarkInterleaved measures the tunnel/plain throughput ratio in a
// way a busy machine disturbs less: both targets are set up once, then run
// in turns, 2×interleavedRounds slices of a -benchtime's share each, the
// first of each pair alternating; each round gives one ratio, and the
// median is reported (with the smallest, and each target's median MB/s).
// Load that comes and goes lands on both targets of a round alike.
func BenchmarkInterleaved(b *testing.B) {
	total := 2 * time.Second
	if f := flag.Lookup("test.benchtime"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil {
			total = d
		}
	}
	slice := total / (2 * interleavedRounds)
	for _, kind := range []string{"unary", "stream"} {
		for _, size := range benchSizes {
			b.Run(fmt.Sprintf("%s/%dKiB", kind, size>>10), func(b *testing.B) {
				hub, agent := DefaultConfig(), DefaultAgentConfig()
				tunnel := fleetClient(b, newPair(b, "tls", pairOpts{hubCfg: &hub, agentCfg: &agent}).agent)
				plain := plainFleet(b)
				// run returns MB/s and the process's CPU time (user+sys)
				// per MB moved: CPU per byte barely depends on the load of a
				// shared machine, where throughput does.
				run := func(c fleetv1.FleetClient, d time.Duration) (float64, float64) {
					cpu0 := processCPU(b)
					var mbs, mb float64
					if kind == "unary" {
						mbs, mb = unaryFor(b, c, size, d)
					} else {
						mbs, mb = streamFor(b, c, size, d)
					}
					return mbs, (processCPU(b) - cpu0).Seconds() / mb
				}
				run(tunnel, slice/4) // warm up both transports
				run(plain, slice/4)
				b.ResetTimer()
				var ratios, tMBs, pMBs, cpuRatios []float64
				for range b.N {
					for i := range interleavedRounds {
						var t, p, tc, pc float64
						if i%2 == 0 {
							t, tc = run(tunnel, slice)
							p, pc = run(plain, slice)
						} else {
							p, pc = run(plain, slice)
							t, tc = run(tunnel, slice)
						}
						ratios, tMBs, pMBs = append(ratios, t/p), append(tMBs, t), append(pMBs, p)
						cpuRatios = append(cpuRatios, tc/pc)
					}
				}
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(median(ratios), "tunnel/plain")
				b.ReportMetric(slices.Min(ratios), "min-tunnel/plain")
				b.ReportMetric(median(tMBs), "tunnel-MB/s")
				b.ReportMetric(median(pMBs), "plain-MB/s")
				// Tunnel CPU per byte over plain's: 1.25 or less means the
				// tunnel keeps 0.8× plain's throughput when CPU is what limits.
				b.ReportMetric(median(cpuRatios), "cpu-tunnel/plain")
			})
		}
	}
}

const interleavedRounds = 10

// processCPU is the user+sys CPU time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// unaryFor calls Renew with size bytes for about d and returns MB/s and
// the MB moved.
func unaryFor(b *testing.B, c fleetv1.FleetClient, size int, d time.Duration) (float64, float64) {
	ctx := context.Background()
	req := &fleetv1.RenewRequest{CsrDer: make([]byte, size)}
	start := time.Now()
	var n int
	for time.Since(start) < d {
		if _, err := c.Renew(ctx, req); err != nil {
			b.Fatal(err)
		}
		n += size
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, float64(n) / 1e6
}

// streamFor streams chunks of size bytes, 4 MiB per FetchChart call, for
// about d and returns MB/s and the MB moved.
func streamFor(b *testing.B, c fleetv1.FleetClient, size int, d time.Duration) (float64, float64) {
	ctx := context.Background()
	start := time.Now()
	var n int
	for time.Since(start) < d {
		stream, err := c.FetchChart(ctx, &fleetv1.FetchChartRequest{Digest: fmt.Sprintf("chunk=%d,count=%d", size, (4<<20)/size)})
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n += size
		}
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, float64(n) / 1e6
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// TestIdleWireBytes measures what an idle tunnel costs on the wire (TLS
// records included). The only traffic on an idle tunnel is yamux
// keepalive: each end pings every KeepAliveInterval and the other answers.
// Rather than wait minutes, the test turns the timer off, drives the same
// pings by hand, and multiplies the exact cost of one round by the rounds
// per minute at the default interval.
func TestIdleWireBytes(t *testing.T) {
	checkLeaks(t)
	cfg := DefaultConfig()
	cfg.KeepAliveInterval = time.Hour
	p := newPair(t, "tls", pairOpts{hubCfg: &cfg, agentCfg: &cfg})
	// An open Sync stream and both gRPC transports, as in production.
	ctx := callCtx(t)
	sync, err := fleetClient(t, p.agent).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := sync.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: testCluster}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sync.Recv(); err != nil {
		t.Fatal(err)
	}
	if _, err := agentClient(t, p.hub).Diagnose(ctx, &fleetv1.DiagnoseRequest{}); err != nil {
		t.Fatal(err)
	}
	wire := func() uint64 { return p.wireHub.BytesIn() + p.wireHub.BytesOut() }
	// Let stray acks (HTTP/2 window updates, BDP pings) settle.
	waitFor(t, 5*time.Second, "wire to go quiet", func() bool {
		before := wire()
		if _, err := p.hub.mux.Ping(); err != nil {
			t.Fatal(err)
		}
		return wire()-before <= 2*(12+22)
	})
	const rounds = 20
	before := wire()
	for range rounds {
		if _, err := p.hub.mux.Ping(); err != nil {
			t.Fatal(err)
		}
		if _, err := p.agent.mux.Ping(); err != nil {
			t.Fatal(err)
		}
	}
	perRound := float64(wire()-before) / rounds
	perMinute := perRound * float64(time.Minute) / float64(DefaultConfig().KeepAliveInterval)
	t.Logf("idle tunnel: %.0f wire bytes per keepalive round (ping+pong each way), %.0f B/min at KeepAliveInterval=%v",
		perRound, perMinute, DefaultConfig().KeepAliveInterval)
	if perMinute > 1024 {
		t.Errorf("idle tunnel costs %.0f B/min, want under 1 KiB", perMinute)
	}
}

// TestReconnectWireBytes measures the wire bytes of a reconnect whose sync
// finds nothing new: TLS 1.3 handshake with client certificate, then the
// tunnel and gRPC transport setup plus one Hello/Welcome exchange.
func TestReconnectWireBytes(t *testing.T) {
	checkLeaks(t)
	hub, agent := DefaultConfig(), DefaultAgentConfig()
	p := newPair(t, "tls", pairOpts{hubCfg: &hub, agentCfg: &agent})
	handshake := p.wireHub.BytesIn() + p.wireHub.BytesOut()
	ctx := callCtx(t)
	sync, err := fleetClient(t, p.agent).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := &fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{
		Cluster: testCluster, AgentVersion: "v0.1.0", HaveRevision: 42, Hostname: "edge-paris-1-node-a",
	}}}
	if err := sync.Send(hello); err != nil {
		t.Fatal(err)
	}
	if _, err := sync.Recv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "hub to count the exchange", func() bool {
		return p.wireAgent.BytesIn() == p.wireHub.BytesOut() && p.wireAgent.BytesOut() == p.wireHub.BytesIn()
	})
	total := p.wireHub.BytesIn() + p.wireHub.BytesOut()
	t.Logf("reconnect, no change: TLS handshake %d B, tunnel+gRPC setup+Hello/Welcome %d B, total %d B (agent→hub %d, hub→agent %d)",
		handshake, total-handshake, total, p.wireHub.BytesIn(), p.wireHub.BytesOut())
}
