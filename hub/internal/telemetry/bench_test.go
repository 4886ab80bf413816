//go:build unix

package telemetry

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// Benchmark batches look like an agent's: benchSeries series of
// kube-state-metrics and kubelet shape, steps samples each, 15 s apart:
// 1 is a connected agent's batch (one collection), 10 a backlog's (the
// agent merges up to 10 collections into an outbox entry).
const (
	benchSeries = 2000
	benchStep   = 15 * time.Second
)

var benchT0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// benchBatch is batch i of the run: the next benchSteps steps.
func benchBatch(i, benchSteps int) *telemetryv1.MetricBatch {
	b := &telemetryv1.MetricBatch{Series: make([]*telemetryv1.Series, benchSeries)}
	t0 := benchT0.Add(time.Duration(i*benchSteps) * benchStep)
	for s := range benchSeries {
		ser := &telemetryv1.Series{Labels: []*telemetryv1.Label{
			{Name: "__name__", Value: "kube_pod_container_resource_requests"},
			{Name: "namespace", Value: "ns-" + strconv.Itoa(s%20)},
			{Name: "pod", Value: "pod-" + strconv.Itoa(s)},
			{Name: "container", Value: "app"},
			{Name: "node", Value: "node-" + strconv.Itoa(s%10)},
			{Name: "resource", Value: "cpu"},
			{Name: "unit", Value: "core"},
		}, Samples: make([]*telemetryv1.Sample, benchSteps)}
		for k := range benchSteps {
			ser.Samples[k] = &telemetryv1.Sample{TimestampMs: t0.Add(time.Duration(k) * benchStep).UnixMilli(), Value: float64(s*7+i*benchSteps+k) / 100}
		}
		b.Series[s] = ser
	}
	return b
}

// rawAppend appends the samples of benchBatch(i) to db with the labels
// already built: one appender, one commit.
// With refs (nil: none) it keeps each series' ref between batches, as
// Prometheus' scrape loop does.
func rawAppend(db storage.Appendable, sets []labels.Labels, refs []storage.SeriesRef, i, benchSteps int) error {
	app := db.Appender(context.Background())
	t0 := benchT0.Add(time.Duration(i*benchSteps) * benchStep)
	for s := range sets {
		var ref storage.SeriesRef
		if refs != nil {
			ref = refs[s]
		}
		for k := range benchSteps {
			var err error
			if ref, err = app.Append(ref, sets[s], t0.Add(time.Duration(k)*benchStep).UnixMilli(), float64(s*7+i*benchSteps+k)/100); err != nil {
				_ = app.Rollback()
				return err
			}
		}
		if refs != nil {
			refs[s] = ref
		}
	}
	return app.Commit()
}

// BenchmarkIngest compares a metrics payload through Receiver.ReceivePayload
// (gunzip, unmarshal, validate, label checks, append, commit) with the raw
// TSDB appender appending the same samples (labels built beforehand, one
// appender and one commit per batch), in the same run: without and with
// the series refs kept between batches. Batches are built before the
// timer starts; each iteration brings the next steps of the same 2000
// series, as an agent's batches do. "cache-off" is the receiver without
// its series cache.
func BenchmarkIngest(b *testing.B) {
	for _, steps := range []int{1, 10} {
		receiver := func(cache bool, enc func(*telemetryv1.MetricBatch) ([]byte, error)) func(b *testing.B) {
			return func(b *testing.B) {
				db := openTestDB(b)
				cfg := DefaultReceiverConfig()
				cfg.DB = db
				cfg.Now = func() time.Time { return benchT0.Add(time.Duration(b.N*steps+1) * benchStep) }
				if !cache {
					cfg.MaxCachedSeries = 0
				}
				r, err := NewReceiver(cfg)
				if err != nil {
					b.Fatal(err)
				}
				payloads := make([][]byte, b.N)
				for i := range payloads {
					if payloads[i], err = enc(benchBatch(i, steps)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				runtime.GC()
				cpu0 := cpuTime(b)
				b.ResetTimer()
				for i := range b.N {
					if err := r.ReceivePayload(context.Background(), "edge-1", uint64(i+1), payloads[i]); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				reportRates(b, cpuTime(b)-cpu0, steps)
				b.ReportMetric(float64(len(payloads[0])), "payload-B")
			}
		}
		raw := func(keepRefs bool) func(b *testing.B) {
			return func(b *testing.B) {
				db := openTestDB(b)
				first := benchBatch(0, steps)
				sets := make([]labels.Labels, benchSeries)
				for i, s := range first.Series {
					var sb labels.ScratchBuilder
					for _, l := range s.Labels {
						sb.Add(l.Name, l.Value)
					}
					sb.Add("cluster", "edge-1")
					sb.Sort()
					sets[i] = sb.Labels()
				}
				var refs []storage.SeriesRef
				if keepRefs {
					refs = make([]storage.SeriesRef, len(sets))
				}
				b.ReportAllocs()
				runtime.GC()
				cpu0 := cpuTime(b)
				b.ResetTimer()
				for i := range b.N {
					if err := rawAppend(db, sets, refs, i, steps); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				reportRates(b, cpuTime(b)-cpu0, steps)
			}
		}
		b.Run(fmt.Sprintf("steps=%d/receiver", steps), receiver(true, telemetryv1.Encode))
		b.Run(fmt.Sprintf("steps=%d/receiver-series-form", steps), receiver(true, telemetryv1.EncodeSeriesForm))
		b.Run(fmt.Sprintf("steps=%d/receiver-cache-off", steps), receiver(false, telemetryv1.Encode))
		b.Run(fmt.Sprintf("steps=%d/raw-appender", steps), raw(false))
		b.Run(fmt.Sprintf("steps=%d/raw-appender-refs", steps), raw(true))
	}
}

// cpuTime is the process' user+system CPU time. On a shared machine
// (load far above its cores) wall time mostly measures the neighbours;
// samples per CPU-second is the steadier figure. It includes the GC and
// the TSDB's own goroutines, which is the cost the hub pays.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func reportRates(b *testing.B, cpu time.Duration, steps int) {
	n := float64(b.N * benchSeries * steps)
	b.ReportMetric(n/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(n/cpu.Seconds(), "samples/cpu-s")
}

// BenchmarkHeapPerSeries ingests memSeries series (4 samples each, one
// cluster) through the receiver and reports the Go heap the hub holds
// for them, per series (run with -benchtime=1x).
func BenchmarkHeapPerSeries(b *testing.B) {
	const memSeries = 100_000
	for b.Loop() {
		db := openTestDB(b)
		r := newTestReceiver(b, db)
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		for start := 0; start < memSeries; start += 10_000 {
			batch := &telemetryv1.MetricBatch{}
			for s := start; s < start+10_000; s++ {
				ser := &telemetryv1.Series{Labels: []*telemetryv1.Label{
					{Name: "__name__", Value: "container_memory_working_set_bytes"},
					{Name: "namespace", Value: "ns-" + strconv.Itoa(s%50)},
					{Name: "pod", Value: fmt.Sprintf("pod-%d", s)},
					{Name: "container", Value: "app"},
					{Name: "node", Value: "node-" + strconv.Itoa(s%100)},
				}}
				for k := range 4 {
					ser.Samples = append(ser.Samples, &telemetryv1.Sample{TimestampMs: testNow.Add(time.Duration(k-4) * benchStep).UnixMilli(), Value: float64(s + k)})
				}
				batch.Series = append(batch.Series, ser)
			}
			if err := r.ReceivePayload(context.Background(), "edge-1", uint64(start+1), encode(b, batch)); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if got := db.Head().NumSeries(); got != memSeries {
			b.Fatalf("head holds %d series, want %d", got, memSeries)
		}
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/memSeries, "heap-B/series")
	}
}
