package telemetry_test

import (
	"testing"

	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/telemetry"
)

// BenchmarkCollect collects a harness cluster of about 2,000 series (100
// pods of one container on a kwok node, with usage) and reports the
// encoded size of one collection and, from it, the outbox bytes of 24 h
// and 3 days of 2,000 series every 15 s (5,760 collections a day).
//
//	TETHER_E2E_BIN_DIR=... go test -run '^$' -bench BenchmarkCollect -benchtime 20x ./agent/internal/telemetry/
func BenchmarkCollect(b *testing.B) {
	c := shared.Get(b)
	setupInventoryTB(b, c, "bench", 100)
	ob := openCache(b, 0)
	col := newCollector(b, c, newShipper(b, ob, 0), func(cfg *telemetry.Config) { cfg.MaxSeries = 20000 })
	if err := col.Collect(b.Context()); err != nil { // warm: usage appears after kwok saw the pods
		b.Fatal(err)
	}
	var bytes, series float64
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		before, _ := ob.OutboxStats()
		if err := col.Collect(b.Context()); err != nil {
			b.Fatal(err)
		}
		after, _ := ob.OutboxStats()
		bytes += float64(after.Kinds[link.KindMetrics].Bytes - before.Kinds[link.KindMetrics].Bytes)
		series += float64(col.Stats().LastSeries)
	}
	n := float64(b.N)
	perSeries := bytes / series
	b.ReportMetric(bytes/n, "bytes/collection")
	b.ReportMetric(series/n, "series/collection")
	b.ReportMetric(perSeries, "bytes/series")
	b.ReportMetric(perSeries*2000*5760/(1<<20), "MiB/24h@2000series")
	b.ReportMetric(perSeries*2000*5760*3/(1<<20), "MiB/3d@2000series")
}
