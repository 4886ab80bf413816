package telemetry_test

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/telemetry"
	"github.com/tetherfleet/tether/e2e/cluster"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// shared is the package's cluster: one spot node with well-known labels,
// kwok's simulated resource metrics on.
var shared = cluster.Shared{Options: cluster.Options{
	Name: "telemetry",
	Nodes: []cluster.NodeSpec{{
		Name: "edge-spot", CPU: "8", Memory: "32Gi", Pods: "110", InstanceType: "m5.2xlarge", Region: "eu-west-1", Zone: "eu-west-1b",
		Labels: map[string]string{"karpenter.sh/capacity-type": "spot"},
	}},
	ResourceMetrics: true,
}}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// openCache opens a real bbolt outbox with the link's kinds, the metrics
// quota set to quota bytes (0: default).
func openCache(t testing.TB, quota int64) *cache.Cache {
	t.Helper()
	kinds := link.OutboxKinds()
	for i := range kinds {
		if kinds[i].Name == link.KindMetrics && quota > 0 {
			kinds[i].MaxBytes = quota
		}
	}
	c, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{NoSync: true, OutboxKinds: kinds})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sample is one decoded sample with its labels.
type sample struct {
	labels map[string]string
	value  float64
	ts     int64
}

func (s sample) String() string {
	keys := slices.Sorted(maps.Keys(s.labels))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q,", k, s.labels[k])
	}
	return fmt.Sprintf("{%s} %v", b.String(), s.value)
}

// drainMetrics decodes (telemetryv1.Decode) every pending metrics entry
// of c, oldest first, and removes them.
func drainMetrics(t *testing.T, c *cache.Cache) (batches []*telemetryv1.MetricBatch) {
	t.Helper()
	for {
		es, err := c.Batch(64, func(k string) bool { return k == link.KindMetrics })
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			return batches
		}
		for _, e := range es {
			b, err := telemetryv1.Decode(e.Payload)
			if err != nil {
				t.Fatalf("outbox entry %d does not decode: %v", e.Seq, err)
			}
			batches = append(batches, b)
			if err := c.Ack(e.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func samples(batches []*telemetryv1.MetricBatch) []sample {
	var out []sample
	for _, b := range batches {
		for _, s := range b.Series {
			ls := map[string]string{}
			for _, l := range s.Labels {
				ls[l.Name] = l.Value
			}
			for _, smp := range s.Samples {
				out = append(out, sample{labels: ls, value: smp.Value, ts: smp.TimestampMs})
			}
		}
	}
	return out
}

// find returns the samples of metric whose labels include want.
func find(all []sample, metric string, want map[string]string) []sample {
	var out []sample
	for _, s := range all {
		if s.labels["__name__"] != metric {
			continue
		}
		ok := true
		for k, v := range want {
			if s.labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, s)
		}
	}
	return out
}

// one returns the value of the one sample of metric with labels want.
func one(t *testing.T, all []sample, metric string, want map[string]string) float64 {
	t.Helper()
	got := find(all, metric, want)
	if len(got) != 1 {
		var near []string
		for _, s := range find(all, metric, nil) {
			near = append(near, s.String())
		}
		sort.Strings(near)
		if len(near) > 20 {
			near = near[:20]
		}
		t.Fatalf("%s%v: %d samples, want 1; samples of %s:\n%s", metric, want, len(got), metric, strings.Join(near, "\n"))
	}
	return got[0].value
}

// clusterName is what the shipper labels with in these tests.
const clusterName = "edge-7"

func newShipper(t testing.TB, c telemetry.Outbox, maxSeries int) *telemetry.Shipper {
	t.Helper()
	s, err := telemetry.NewShipper(telemetry.ShipperConfig{Cluster: func() string { return clusterName }, Outbox: c, MaxSeries: maxSeries})
	if err != nil {
		t.Fatal(err)
	}
	return s
}
