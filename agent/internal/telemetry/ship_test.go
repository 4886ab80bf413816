package telemetry_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/telemetry"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// synthetic is a batch of n series of metric at ts, labelled i=0..n-1.
func synthetic(metric string, n int, ts int64) *telemetryv1.MetricBatch {
	b := &telemetryv1.MetricBatch{}
	for i := range n {
		b.Series = append(b.Series, &telemetryv1.Series{
			Labels:  []*telemetryv1.Label{{Name: "__name__", Value: metric}, {Name: "i", Value: fmt.Sprint(i)}, {Name: "pod", Value: fmt.Sprintf("web-5d8f7c9b4-%05d", i)}},
			Samples: []*telemetryv1.Sample{{TimestampMs: ts, Value: float64(i)}},
		})
	}
	return b
}

// TestEmitLabelsAndCuts: Emit labels every series with the cluster (a
// series' own cluster label becomes exported_cluster), cuts a batch over
// MaxSeries into several outbox entries, and refuses an invalid batch
// whole, enqueueing nothing.
func TestEmitLabelsAndCuts(t *testing.T) {
	ob := openCache(t, 0)
	s := newShipper(t, ob, 10)
	b := synthetic("up", 25, 1000)
	b.Series[3].Labels = append(b.Series[3].Labels, &telemetryv1.Label{Name: "cluster", Value: "someone-else"})
	if err := s.Emit(b); err != nil {
		t.Fatal(err)
	}
	batches := drainMetrics(t, ob)
	if len(batches) != 3 {
		t.Fatalf("25 series at 10 per batch made %d outbox entries; want 3", len(batches))
	}
	all := samples(batches)
	if len(all) != 25 {
		t.Fatalf("%d samples decoded; want 25", len(all))
	}
	for _, smp := range all {
		if smp.labels["cluster"] != clusterName {
			t.Fatalf("series %s: cluster label not %q", smp, clusterName)
		}
	}
	if got := find(all, "up", map[string]string{"i": "3"}); len(got) != 1 || got[0].labels["exported_cluster"] != "someone-else" {
		t.Fatalf("series with its own cluster label: %v; want it kept as exported_cluster", got)
	}

	bad := synthetic("up", 2, 1000)
	bad.Series[1].Labels = append(bad.Series[1].Labels, &telemetryv1.Label{Name: "bad-name", Value: "x"})
	if err := s.Emit(bad); err == nil {
		t.Fatal("Emit of a batch with an invalid label name succeeded")
	}
	if st, _ := ob.OutboxStats(); st.Kinds[link.KindMetrics].Pending != 0 {
		t.Fatalf("invalid batch left %d entries in the outbox; want none", st.Kinds[link.KindMetrics].Pending)
	}

	unenrolled, err := telemetry.NewShipper(telemetry.ShipperConfig{Cluster: func() string { return "" }, Outbox: ob})
	if err != nil {
		t.Fatal(err)
	}
	if err := unenrolled.Emit(synthetic("up", 1, 1)); !errors.Is(err, telemetry.ErrNotEnrolled) {
		t.Fatalf("Emit before enrolment: %v; want ErrNotEnrolled", err)
	}
}

// TestOutboxQuotaEvictsOldestMetrics: past the metrics quota the oldest
// batches are evicted and counted as dropped, the newest are kept, and a
// status report queued before is never evicted.
func TestOutboxQuotaEvictsOldestMetrics(t *testing.T) {
	probe := openCache(t, 0)
	if err := newShipper(t, probe, 0).Emit(synthetic("kube_pod_info", 500, 1)); err != nil {
		t.Fatal(err)
	}
	st, _ := probe.OutboxStats()
	size := int64(st.Kinds[link.KindMetrics].Bytes)

	// Room for three batches of about that size (telemetryv1 needs the
	// quota to hold its largest batch; these are far smaller).
	quota := 3*size + size/2
	ob := openCache(t, quota)
	if err := ob.Enqueue(link.KindStatus, []byte("status report")); err != nil {
		t.Fatal(err)
	}
	// Only Enqueue: this test is about eviction, one entry per batch
	// (merging is TestEmitMergesIntoTheNewestPendingEntry's).
	s := newShipper(t, enqueueOnly{ob}, 0)
	const emitted = 10
	for i := range emitted {
		if err := s.Emit(synthetic("kube_pod_info", 500, int64(i+1)*15000)); err != nil {
			t.Fatal(err)
		}
	}
	st, _ = ob.OutboxStats()
	m := st.Kinds[link.KindMetrics]
	if m.Pending+m.Dropped != emitted || m.Dropped == 0 || m.Bytes > uint64(quota) {
		t.Fatalf("metrics stats %+v with a %d-byte quota; want pending+dropped = %d, some dropped, bytes within the quota", m, quota, emitted)
	}
	if st.Kinds[link.KindStatus].Pending != 1 || st.Kinds[link.KindStatus].Dropped != 0 {
		t.Fatalf("status stats %+v; want the report kept", st.Kinds[link.KindStatus])
	}
	// The kept batches are the newest, oldest first.
	batches := drainMetrics(t, ob)
	for i, b := range batches {
		want := int64(emitted-len(batches)+i+1) * 15000
		if got := b.Series[0].Samples[0].TimestampMs; got != want {
			t.Fatalf("kept batch %d is from %d; want %d (the newest kept, oldest first)", i, got, want)
		}
	}
}

// TestEmitMergesIntoTheNewestPendingEntry: while nothing drains, each
// collection is merged into the newest outbox entry until it holds
// MaxMergedCollections samples per series; every sample is kept, in
// order. An entry the drain holds is never rewritten: the next
// collection starts a new entry, and the held one is sent as it was.
func TestEmitMergesIntoTheNewestPendingEntry(t *testing.T) {
	ob := openCache(t, 0)
	s := newShipper(t, ob, 100)
	const n = 25
	for k := range n {
		if err := s.Emit(synthetic("kube_pod_info", 3, int64(1000*(k+1)))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := ob.OutboxStats()
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64((n + telemetry.MaxMergedCollections - 1) / telemetry.MaxMergedCollections); st.Kinds[link.KindMetrics].Pending != want {
		t.Fatalf("%d collections left %d outbox entries; want %d (merged %d at a time)", n, st.Kinds[link.KindMetrics].Pending, want, telemetry.MaxMergedCollections)
	}
	// The drain takes the newest entry (3 collections so far): it is in
	// flight, so the next collection must not be merged into it.
	held, err := ob.Batch(64, func(k string) bool { return k == link.KindMetrics })
	if err != nil || len(held) != 3 {
		t.Fatalf("Batch: %d entries, %v; want 3", len(held), err)
	}
	tail := held[len(held)-1]
	if err := s.Emit(synthetic("kube_pod_info", 3, int64(1000*(n+1)))); err != nil {
		t.Fatal(err)
	}
	again, err := ob.Peek(64)
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 4 || string(again[2].Payload) != string(tail.Payload) {
		t.Fatalf("after an emit while the newest entry was in flight: %d entries (want 4), held entry rewritten: %v", len(again), len(again) > 2 && string(again[2].Payload) != string(tail.Payload))
	}
	if err := ob.Ack(held[0].Seq, held[1].Seq, held[2].Seq); err != nil {
		t.Fatal(err)
	}
	// Once acknowledged, the new entry merges again.
	if err := s.Emit(synthetic("kube_pod_info", 3, int64(1000*(n+2)))); err != nil {
		t.Fatal(err)
	}
	batches := drainMetrics(t, ob)
	var all []sample
	for _, e := range held {
		b, err := telemetryv1.Decode(e.Payload)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, samples([]*telemetryv1.MetricBatch{b})...)
	}
	all = append(all, samples(batches)...)
	if len(batches) != 1 {
		t.Fatalf("after the ack, %d entries; want the two later collections merged into 1", len(batches))
	}
	for i := range 3 {
		got := find(all, "kube_pod_info", map[string]string{"i": fmt.Sprint(i)})
		if len(got) != n+2 {
			t.Fatalf("series i=%d: %d samples; want %d", i, len(got), n+2)
		}
		for k, smp := range got {
			if smp.ts != int64(1000*(k+1)) {
				t.Fatalf("series i=%d sample %d at %d; want %d (in order, none lost)", i, k, smp.ts, 1000*(k+1))
			}
		}
	}
}

// enqueueOnly hides the cache's EnqueueMerge from a Shipper.
type enqueueOnly struct{ c *cache.Cache }

func (o enqueueOnly) Enqueue(kind string, payload []byte) error { return o.c.Enqueue(kind, payload) }
