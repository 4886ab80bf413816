package cluster_test

import (
	"sort"
	"testing"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// The benchmarks record start-up time and the resident memory of each
// component (VmRSS once ready) for docs/e2e-numbers.md:
//
//	go test -run '^$' -bench . -benchtime 1x ./e2e/cluster/

func BenchmarkStartBare(b *testing.B) {
	benchmarkStart(b, cluster.Options{Name: "bench-bare"})
}

func BenchmarkStartSimulated3Nodes(b *testing.B) {
	benchmarkStart(b, cluster.Options{Name: "bench-sim", NodeCount: 3})
}

func BenchmarkStartManagement(b *testing.B) {
	benchmarkStart(b, cluster.Options{Name: "bench-mgmt", Management: true})
}

func benchmarkStart(b *testing.B, opts cluster.Options) {
	rss := map[string]float64{}
	for b.Loop() {
		c, err := cluster.Launch(b.Context(), opts)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		m, err := c.RSS()
		if err != nil {
			b.Fatal(err)
		}
		for k, v := range m {
			rss[k] += float64(v)
		}
		if err := c.Stop(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	names := make([]string, 0, len(rss))
	var total float64
	for k, v := range rss {
		names = append(names, k)
		total += v
	}
	sort.Strings(names)
	for _, k := range names {
		b.ReportMetric(rss[k]/float64(b.N)/(1<<20), "MiB-"+k)
	}
	b.ReportMetric(total/float64(b.N)/(1<<20), "MiB-total")
}
