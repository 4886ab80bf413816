//go:build linux

package telemetry_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/telemetry"
	"github.com/tetherfleet/tether/e2e/e2etest"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// Size of the outage BenchmarkBacklog simulates; the defaults are issue
// 12's: a day of 2,000 series every 15 s.
var (
	backlogSeries   = flag.Int("backlog.series", 2000, "BenchmarkBacklog: series per collection")
	backlogHours    = flag.Float64("backlog.hours", 24, "BenchmarkBacklog: length of the outage in hours")
	backlogInterval = flag.Duration("backlog.interval", 15*time.Second, "BenchmarkBacklog: collection interval")
	backlogPerBatch = flag.Int("backlog.per-batch", 1, "BenchmarkBacklog: collections per Emit (1: one batch per collection, as the collector does; more: an agent that coalesces its backlog)")
	backlogRate     = flag.Int64("backlog.drain-rate", 0, "BenchmarkBacklog: the link's metrics drain bound in bytes/s (0 unbounded; the agent's default is 262144)")
	backlogHubFlags = flag.String("backlog.hub-flags", "", "BenchmarkBacklog: more flags for `tether serve`, space-separated (e.g. --tsdb-series-cache -1)")
	backlogMerge    = flag.Bool("backlog.merge", true, "BenchmarkBacklog: merge collections into the newest pending outbox entry, as the agent does while nothing drains (false: one entry per collection, as a connected agent ships them)")
)

// plainOutbox hides the cache's EnqueueMerge from the Shipper: one outbox
// entry per collection, as while the link drains each one at once.
type plainOutbox struct{ telemetry.Outbox }

// backlogCluster is the cluster the benchmark's agent enrols as.
const backlogCluster = "edge-backlog"

// BenchmarkBacklog measures the backlog of an outage and its drain, end
// to end, against the raw TSDB append rate in the same run:
//
//  1. a real hub (`tether serve`, out-of-order window 48h) and a real
//     agent link (link.New, a real bbolt cache with the agent's outbox
//     kinds and default 512 MiB metrics quota, fsync on) that enrols;
//  2. the link stopped (the outage), the real Shipper fills the outbox
//     with -backlog.hours of -backlog.series kube-state-metrics-shaped
//     series, one Emit per collection with the timestamps of the past
//     hours; bbolt file size and outbox bytes are recorded;
//  3. a new link runs (the site is back) and the drain is timed until the
//     outbox is empty; the hub's CPU (utime+stime from /proc) over the
//     drain is read; at the hub, PromQL checks every series has exactly
//     one sample per collection and the values add up;
//  4. the same samples (same label sets with cluster, timestamps and
//     batch boundaries, one appender and commit per batch) go into a raw
//     Prometheus TSDB in a temp dir, fresh (in-order) and behind a newer
//     head (out of order, as at the hub, whose own series are at now).
//
// It reports both rates and end-to-end / raw, per wall second and per
// CPU second (the machine is shared).
//
//	go test -run '^$' -bench BenchmarkBacklog -benchtime 1x -timeout 60m -v ./agent/internal/telemetry/ \
//	  [-args -backlog.series 2000 -backlog.hours 24 -backlog.drain-rate 0]
func BenchmarkBacklog(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		backlog(b)
		b.StartTimer()
	}
}

func backlog(b *testing.B) {
	nSeries := *backlogSeries
	steps := int(time.Duration(*backlogHours*float64(time.Hour)) / *backlogInterval)
	if nSeries <= 0 || steps <= 0 {
		b.Fatalf("-backlog.series %d and -backlog.hours %v make no samples", nSeries, *backlogHours)
	}
	total := nSeries * steps
	perBatch := *backlogPerBatch
	if perBatch <= 0 || nSeries*perBatch > telemetryv1.MaxSamples {
		b.Fatalf("-backlog.per-batch %d: want 1..%d", perBatch, telemetryv1.MaxSamples/nSeries)
	}
	gen := newKSMSeries(nSeries)

	bins, err := e2etest.Build(false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bins.Remove)
	hub := bins.StartHub(b, append([]string{"--tsdb-out-of-order-window", "48h"}, strings.Fields(*backlogHubFlags)...)...)
	token := hub.Token(b, backlogCluster)

	dbPath := filepath.Join(b.TempDir(), "agent.db")
	ob, err := cache.Open(dbPath, cache.Options{OutboxKinds: link.OutboxKinds()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ob.Close() })
	newLink := func(token string) *link.Link {
		cfg := link.DefaultConfig()
		cfg.Cache, cfg.Outbox, cfg.Hubs, cfg.Token = ob, ob, []string{hub.AgentAddr}, token
		cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, time.Second
		cfg.Telemetry = true
		if *backlogRate > 0 {
			cfg.DrainRates = map[string]int64{link.KindMetrics: *backlogRate}
		}
		l, err := link.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		return l
	}
	run := func(l *link.Link) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := l.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				b.Errorf("link: %v", err)
			}
		})
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); wg.Wait(); l.Close() }) }
		b.Cleanup(stop)
		return stop
	}
	connected := func(l *link.Link) {
		e2etest.Eventually(b, "the link to connect", 2*time.Minute, func() (bool, string) {
			st := l.Status()
			return st.State == link.StateConnected, fmt.Sprintf("%+v", st)
		})
	}

	// 1. Enrol, then the outage.
	l := newLink(token)
	stop := run(l)
	connected(l)
	stop()

	// 2. Fill the outbox through the Shipper.
	var outbox telemetry.Outbox = ob
	if !*backlogMerge {
		outbox = plainOutbox{ob}
	}
	ship, err := telemetry.NewShipper(telemetry.ShipperConfig{
		Cluster: func() string {
			id, err := ob.Identity()
			if err != nil {
				return ""
			}
			return id.Cluster
		},
		Outbox: outbox,
	})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	t0 := now.Add(-time.Duration(steps) * *backlogInterval)
	ts := func(i int) int64 { return t0.Add(time.Duration(i+1) * *backlogInterval).UnixMilli() }
	cpu0, fill0 := selfCPU(b), time.Now()
	var wantSum float64
	for i := 0; i < steps; i += perBatch {
		batch := gen.batch(i, min(perBatch, steps-i), ts)
		for _, s := range batch.Series {
			for _, smp := range s.Samples {
				wantSum += smp.Value
			}
		}
		if err := ship.Emit(batch); err != nil {
			b.Fatalf("emit collection %d of %d: %v", i+1, steps, err)
		}
	}
	fillWall, fillCPU := time.Since(fill0), selfCPU(b)-cpu0
	st, err := ob.OutboxStats()
	if err != nil {
		b.Fatal(err)
	}
	m := st.Kinds[link.KindMetrics]
	fi, err := os.Stat(dbPath)
	if err != nil {
		b.Fatal(err)
	}
	fileBytes, diskBytes := fi.Size(), fi.Sys().(*syscall.Stat_t).Blocks*512
	b.Logf("outage of %v: %d collections of %d series (%d samples), %d per Emit, emitted in %v (%v CPU, %.2f ms CPU per collection)",
		time.Duration(steps)**backlogInterval, steps, nSeries, total, perBatch, fillWall.Round(time.Millisecond), fillCPU.Round(time.Millisecond),
		float64(fillCPU.Microseconds())/1000/float64(steps))
	b.Logf("outbox: %d entries, %d payload bytes (%.1f MiB, %.2f B/sample), dropped %d; bbolt file %d bytes (%.1f MiB, %.1f MiB allocated on disk)",
		m.Pending, m.Bytes, mib64(m.Bytes), float64(m.Bytes)/float64(total), m.Dropped, fileBytes, mib64(uint64(fileBytes)), mib64(uint64(diskBytes)))
	if m.Dropped != 0 {
		b.Fatalf("the default %d MiB metrics quota did not hold the backlog: %d entries pending, %d dropped",
			link.DefaultMetricsOutboxBytes>>20, m.Pending, m.Dropped)
	}

	// 3. The site is back: drain, timed.
	hubCPU0 := procCPU(b, hub.Proc.PID())
	cpu0, drain0 := selfCPU(b), time.Now()
	l = newLink("")
	stop = run(l)
	connected(l)
	connectedAfter := time.Since(drain0)
	poll := time.NewTicker(100 * time.Millisecond)
	deadline := time.Now().Add(time.Hour)
	for {
		st, err := ob.OutboxStats()
		if err != nil {
			b.Fatal(err)
		}
		if st.Kinds[link.KindMetrics].Pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the backlog did not drain within an hour: %+v", st.Kinds[link.KindMetrics])
		}
		<-poll.C
	}
	poll.Stop()
	drainWall := time.Since(drain0)
	agentCPU, hubCPU := selfCPU(b)-cpu0, procCPU(b, hub.Proc.PID())-hubCPU0
	stop()
	st, _ = ob.OutboxStats()
	if dl := st.Kinds[link.KindMetrics].DeadLettered; dl != 0 {
		b.Fatalf("%d metric batches were dead-lettered (refused by the hub)", dl)
	}
	// The rate is over the drain proper, from the connection to the
	// empty outbox (the connect is polled every 200 ms).
	e2eRate := float64(total) / (drainWall - connectedAfter).Seconds()
	b.Logf("drain: connected after %v, outbox empty after %v: %.0f samples/s, %.2f MiB/s of payload; hub CPU %v (%.0f samples/cpu-s), agent-side CPU %v; hub VmHWM %s",
		connectedAfter.Round(time.Millisecond), drainWall.Round(time.Millisecond), e2eRate, mib64(m.Bytes)/drainWall.Seconds(),
		hubCPU.Round(time.Millisecond), float64(total)/hubCPU.Seconds(), agentCPU.Round(time.Millisecond), procStatus(hub.Proc.PID(), "VmHWM"))
	b.Logf("at the default drain bound of 256 KiB/s the same backlog takes %v (payload bytes / rate)",
		(time.Duration(float64(m.Bytes) / (256 << 10) * float64(time.Second))).Round(time.Second))

	// Nothing lost, nothing twice, values intact: at the hub, per metric
	// name (count_over_time drops the name, and the label sets of two
	// names may be the same without it).
	window := int64(time.Duration(steps+240) * *backlogInterval / time.Second)
	var gotSeries, gotExact, gotSamples int
	var gotSum float64
	q0 := time.Now()
	for _, name := range gen.names() {
		sel := fmt.Sprintf(`%s{cluster=%q}[%ds]`, name, backlogCluster, window)
		for _, v := range promVector(b, bins, hub, "count_over_time("+sel+")") {
			gotSeries++
			gotSamples += int(v)
			if int(v) == steps {
				gotExact++
			}
		}
		for _, v := range promVector(b, bins, hub, "sum_over_time("+sel+")") {
			gotSum += v
		}
	}
	b.Logf("hub: %d series, %d with exactly %d samples, %d samples, value sum %v (want %v); %d queries over the backlog in %v",
		gotSeries, gotExact, steps, gotSamples, gotSum, wantSum, 2*len(gen.names()), time.Since(q0).Round(time.Millisecond))
	if gotSeries != nSeries || gotExact != nSeries || gotSamples != total {
		b.Fatalf("hub has %d series (%d with exactly %d samples) and %d samples; want %d series of %d samples, %d in all",
			gotSeries, gotExact, steps, gotSamples, nSeries, steps, total)
	}
	if math.Abs(gotSum-wantSum) > 1e-9*math.Abs(wantSum) {
		b.Fatalf("hub's sum of the values is %v; want %v", gotSum, wantSum)
	}

	// 4. The raw TSDB, same samples and batches.
	sets := gen.labelSets(backlogCluster)
	raw := func(name string, ahead, keepRefs bool) (rate, perCPU float64) {
		opts := tsdb.DefaultOptions()
		opts.OutOfOrderTimeWindow = (48 * time.Hour).Milliseconds()
		db, err := tsdb.Open(b.TempDir(), slog.New(slog.DiscardHandler), nil, opts, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer db.Close()
		if ahead {
			app := db.Appender(context.Background())
			if _, err := app.Append(0, labels.FromStrings("__name__", "tether_cluster_connected", "cluster", backlogCluster), now.UnixMilli(), 1); err != nil {
				b.Fatal(err)
			}
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		refs := make([]storage.SeriesRef, len(sets))
		cpu0, t0 := selfCPU(b), time.Now()
		for i := 0; i < steps; i += perBatch {
			app := db.Appender(context.Background())
			for s := range sets {
				var ref storage.SeriesRef
				if keepRefs {
					ref = refs[s]
				}
				for j := i; j < min(i+perBatch, steps); j++ {
					var err error
					if ref, err = app.Append(ref, sets[s], ts(j), gen.value(s, j)); err != nil {
						b.Fatalf("raw %s: append collection %d series %d: %v", name, j, s, err)
					}
				}
				refs[s] = ref
			}
			if err := app.Commit(); err != nil {
				b.Fatal(err)
			}
		}
		wall, cpu := time.Since(t0), selfCPU(b)-cpu0
		rate, perCPU = float64(total)/wall.Seconds(), float64(total)/cpu.Seconds()
		b.Logf("raw TSDB %s: %d samples in %v (%.0f samples/s), CPU %v (%.0f samples/cpu-s)", name, total, wall.Round(time.Millisecond), rate, cpu.Round(time.Millisecond), perCPU)
		return rate, perCPU
	}
	rawIn, rawInCPU := raw("in order (fresh head)", false, false)
	rawRefs, rawRefsCPU := raw("in order (fresh head), series refs kept between batches as Prometheus' scrape cache does", false, true)
	rawOOO, rawOOOCPU := raw("out of order (head at now, as at the hub)", true, false)
	e2eCPU := float64(total) / hubCPU.Seconds()
	b.Logf("end-to-end / raw: wall %.2fx (in order) %.2fx (in order, refs kept) %.2fx (out of order); hub CPU vs raw CPU %.2fx (in order) %.2fx (in order, refs kept) %.2fx (out of order)",
		e2eRate/rawIn, e2eRate/rawRefs, e2eRate/rawOOO, e2eCPU/rawInCPU, e2eCPU/rawRefsCPU, e2eCPU/rawOOOCPU)

	b.ReportMetric(float64(total), "samples")
	b.ReportMetric(float64(m.Bytes), "outbox-B")
	b.ReportMetric(float64(fileBytes), "bbolt-file-B")
	b.ReportMetric(drainWall.Seconds(), "drain-s")
	b.ReportMetric(e2eRate, "e2e-samples/s")
	b.ReportMetric(e2eCPU, "e2e-samples/hub-cpu-s")
	b.ReportMetric(rawIn, "raw-samples/s")
	b.ReportMetric(rawRefs, "raw-refs-samples/s")
	b.ReportMetric(rawOOO, "raw-ooo-samples/s")
	b.ReportMetric(e2eRate/rawIn, "ratio-wall")
	b.ReportMetric(e2eRate/rawRefs, "ratio-wall-refs")
	b.ReportMetric(e2eRate/rawOOO, "ratio-wall-ooo")
	b.ReportMetric(e2eCPU/rawInCPU, "ratio-cpu")
	b.ReportMetric(e2eCPU/rawRefsCPU, "ratio-cpu-refs")
	b.ReportMetric(e2eCPU/rawOOOCPU, "ratio-cpu-ooo")
}

// ksmSeries is a cluster's series of kube-state-metrics and kubelet
// shape: per pod, kube_pod_info, _owner, _status_phase (5 phases),
// _start_time, container requests and limits (cpu, memory), container
// status (running, waiting, terminated), restarts, and CPU and memory
// usage: 18 series, of which the two usage series change every
// collection, as in a real one.
type ksmSeries struct {
	labels [][]string // name, value pairs without cluster
	value  func(s, i int) float64
}

func newKSMSeries(n int) *ksmSeries {
	g := &ksmSeries{}
	type kind struct {
		lbl func(p int, pod []string) []string
		val func(p, i int) float64
	}
	one := func(int, int) float64 { return 1 }
	phase := func(ph string, v float64) kind {
		return kind{func(p int, pod []string) []string {
			return append(pod[:6:6], "__name__", "kube_pod_status_phase", "phase", ph)
		}, func(int, int) float64 { return v }}
	}
	ctr := func(name string, v float64) kind {
		return kind{func(p int, pod []string) []string { return append(pod[:8:8], "__name__", name) }, func(int, int) float64 { return v }}
	}
	res := func(name, resource, unit string, v func(p int) float64) kind {
		return kind{func(p int, pod []string) []string {
			return append(pod[:10:10], "__name__", name, "resource", resource, "unit", unit)
		}, func(p, _ int) float64 { return v(p) }}
	}
	kinds := []kind{
		{func(p int, pod []string) []string {
			return append(pod[:6:6], "__name__", "kube_pod_info", "host_ip", "10.0.0."+strconv.Itoa(p%8+1), "pod_ip", fmt.Sprintf("10.244.%d.%d", p%8, p%250+2),
				"node", pod[9], "created_by_kind", "ReplicaSet", "created_by_name", "app-"+strconv.Itoa(p/3)+"-7d9f8c6b5", "host_network", "false",
				"helm_release", "app-"+strconv.Itoa(p/3))
		}, one},
		{func(p int, pod []string) []string {
			return append(pod[:6:6], "__name__", "kube_pod_owner", "owner_kind", "ReplicaSet", "owner_name", "app-"+strconv.Itoa(p/3)+"-7d9f8c6b5", "owner_is_controller", "true")
		}, one},
		phase("Pending", 0), phase("Succeeded", 0), phase("Failed", 0), phase("Unknown", 0), phase("Running", 1),
		{func(p int, pod []string) []string { return append(pod[:6:6], "__name__", "kube_pod_start_time") },
			func(p, _ int) float64 { return float64(1764547200 + p*60) }},
		res("kube_pod_container_resource_requests", "cpu", "core", func(p int) float64 { return 0.1 * float64(p%4+1) }),
		res("kube_pod_container_resource_requests", "memory", "byte", func(p int) float64 { return float64(128<<20) * float64(p%3+1) }),
		res("kube_pod_container_resource_limits", "cpu", "core", func(p int) float64 { return 0.5 * float64(p%4+1) }),
		res("kube_pod_container_resource_limits", "memory", "byte", func(p int) float64 { return float64(256<<20) * float64(p%3+1) }),
		ctr("kube_pod_container_status_running", 1), ctr("kube_pod_container_status_waiting", 0), ctr("kube_pod_container_status_terminated", 0),
		{func(p int, pod []string) []string {
			return append(pod[:8:8], "__name__", "kube_pod_container_status_restarts_total")
		},
			func(p, _ int) float64 { return float64(p % 3) }},
		{func(p int, pod []string) []string {
			return append([]string{"__name__", "container_cpu_usage_seconds_total"}, append(pod[0:4:4], pod[6:10]...)...)
		}, func(p, i int) float64 { return float64(i)*0.15*float64(p%5+1) + float64((i*7919+p)%1000)/1e4 }},
		{func(p int, pod []string) []string {
			return append([]string{"__name__", "container_memory_working_set_bytes"}, append(pod[0:4:4], pod[6:10]...)...)
		}, func(p, i int) float64 { return float64(50e6 + p*4096 + (i*31+p)%256*4096) }},
	}
	vals := make([]func(int) float64, 0, n)
	for s := 0; len(g.labels) < n; s++ {
		p, k := s/len(kinds), kinds[s%len(kinds)]
		// namespace, pod, uid, container, node: pod[0:2], [2:4], [4:6], [6:8], [8:10]
		pod := []string{
			"namespace", "ns-" + strconv.Itoa(p%12),
			"pod", fmt.Sprintf("app-%d-7d9f8c6b5-%05x", p/3, p*7919%0xfffff),
			"uid", fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", p*2654435761%(1<<32), p%0xffff, p%0xfff, (p*7)%0xfff, p*40503),
			"container", "app",
			"node", "node-" + strconv.Itoa(p%8),
		}
		g.labels = append(g.labels, k.lbl(p, pod))
		val := k.val
		vals = append(vals, func(i int) float64 { return val(p, i) })
	}
	g.value = func(s, i int) float64 { return vals[s](i) }
	return g
}

// names are the metric names of the series, each once.
func (g *ksmSeries) names() []string {
	var out []string
	for _, kv := range g.labels {
		for j := 0; j < len(kv); j += 2 {
			if kv[j] == "__name__" && !slices.Contains(out, kv[j+1]) {
				out = append(out, kv[j+1])
			}
		}
	}
	return out
}

// batch is collections i..i+n-1 (collection j at ts(j), in ms): n samples
// of every series.
func (g *ksmSeries) batch(i, n int, ts func(int) int64) *telemetryv1.MetricBatch {
	b := &telemetryv1.MetricBatch{Series: make([]*telemetryv1.Series, len(g.labels))}
	for s, kv := range g.labels {
		ser := &telemetryv1.Series{Labels: make([]*telemetryv1.Label, 0, len(kv)/2+1), Samples: make([]*telemetryv1.Sample, n)}
		for j := range n {
			ser.Samples[j] = &telemetryv1.Sample{TimestampMs: ts(i + j), Value: g.value(s, i+j)}
		}
		for j := 0; j < len(kv); j += 2 {
			ser.Labels = append(ser.Labels, &telemetryv1.Label{Name: kv[j], Value: kv[j+1]})
		}
		b.Series[s] = ser
	}
	return b
}

// labelSets are the series' label sets as the hub stores them (with
// cluster), built once for the raw appends.
func (g *ksmSeries) labelSets(cluster string) []labels.Labels {
	out := make([]labels.Labels, len(g.labels))
	for s, kv := range g.labels {
		var sb labels.ScratchBuilder
		for j := 0; j < len(kv); j += 2 {
			sb.Add(kv[j], kv[j+1])
		}
		sb.Add(telemetryv1.ClusterLabel, cluster)
		sb.Sort()
		out[s] = sb.Labels()
	}
	return out
}

// promVector runs a PromQL expression at the hub (`tether query -o
// json`) and returns the values of its instant vector.
func promVector(b *testing.B, bins *e2etest.Bins, hub *e2etest.Hub, expr string) []float64 {
	b.Helper()
	var res struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Value [2]any `json:"value"`
		} `json:"result"`
	}
	bins.JSON(b, hub.Env, &res, "tether", "query", expr, "-o", "json")
	if res.ResultType != "vector" {
		b.Fatalf("query %s: result type %q, want vector", expr, res.ResultType)
	}
	out := make([]float64, len(res.Result))
	for i, r := range res.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			b.Fatalf("query %s: value %v: %v", expr, r.Value[1], err)
		}
		out[i] = v
	}
	return out
}

// selfCPU is this process' user+system CPU time.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is utime+stime of process pid (/proc/PID/stat, 100 ticks/s).
func procCPU(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which may hold spaces) in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// procStatus is one field of /proc/PID/status ("" if absent).
func procStatus(pid int, field string) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.Join(strings.Fields(v), " ")
		}
	}
	return ""
}

func mib64(n uint64) float64 { return float64(n) / (1 << 20) }
