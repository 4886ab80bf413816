package telemetry

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// cacheReceiver is a Receiver whose clock the test moves, with the series
// cache bounded by total and perCluster.
func cacheReceiver(t *testing.T, total, perCluster int) (*Receiver, *DB, *time.Time) {
	t.Helper()
	db := openTestDB(t)
	now := testNow
	cfg := DefaultReceiverConfig()
	cfg.DB = db
	cfg.Now = func() time.Time { return now }
	cfg.MaxCachedSeries, cfg.MaxCachedSeriesPerCluster = total, perCluster
	r, err := NewReceiver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, db, &now
}

var anyName = labels.MustNewMatcher(labels.MatchRegexp, "__name__", ".+")

func receive(t *testing.T, r *Receiver, cluster string, seq uint64, ss ...*telemetryv1.Series) {
	t.Helper()
	if err := r.ReceivePayload(context.Background(), cluster, seq, encode(t, &telemetryv1.MetricBatch{Series: ss})); err != nil {
		t.Fatalf("batch %d of %s: %v", seq, cluster, err)
	}
}

// cachedRefs are cluster's cached series by label set, with their refs.
func cachedRefs(r *Receiver, cluster string) map[string]uint64 {
	r.series.mu.Lock()
	cs := r.series.clusters[cluster]
	r.series.mu.Unlock()
	out := map[string]uint64{}
	if cs == nil {
		return out
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, e := range cs.m {
		out[e.lset.String()] = uint64(e.ref)
	}
	return out
}

func TestSeriesCacheHitsStoreTheSameSeries(t *testing.T) {
	r, db, _ := cacheReceiver(t, 100, 100)
	at := func(i int) time.Time { return testNow.Add(time.Duration(i-10) * 15 * time.Second) }
	up := func(i int) *telemetryv1.Series {
		return series("up", at(i), 1, float64(i), "job", "a", "cluster", "edge-1")
	}
	mem := func(i int) *telemetryv1.Series { return series("mem", at(i), 1, float64(10*i), "pod", "p") }

	receive(t, r, "edge-1", 1, up(0), mem(0))
	refs := cachedRefs(r, "edge-1")
	wantKeys := []string{`{__name__="mem", cluster="edge-1", pod="p"}`, `{__name__="up", cluster="edge-1", job="a"}`}
	if got := slices.Sorted(maps.Keys(refs)); !slices.Equal(got, wantKeys) {
		t.Fatalf("cached %v, want %v", got, wantKeys)
	}
	for k, ref := range refs {
		if ref == 0 {
			t.Errorf("%s cached without its TSDB ref", k)
		}
	}

	// Hits: the same wire bytes, later samples.
	receive(t, r, "edge-1", 2, up(1), mem(1))
	if got := cachedRefs(r, "edge-1"); !maps.Equal(got, refs) {
		t.Errorf("after a hit the cache is %v, want %v", got, refs)
	}

	// A stale ref (the TSDB dropped the series after a head compaction)
	// falls back to the label set, and the new ref is cached.
	r.series.clusters["edge-1"].mu.Lock()
	for _, e := range r.series.clusters["edge-1"].m {
		e.ref = 1 << 40
	}
	r.series.clusters["edge-1"].mu.Unlock()
	receive(t, r, "edge-1", 3, up(2), mem(2))
	if got := cachedRefs(r, "edge-1"); !maps.Equal(got, refs) {
		t.Errorf("after stale refs the cache is %v, want %v", got, refs)
	}

	// Another cluster sending the same bytes gets its own series.
	receive(t, r, "edge-2", 1, mem(0))
	if got := slices.Collect(maps.Keys(cachedRefs(r, "edge-2"))); !slices.Equal(got, []string{`{__name__="mem", cluster="edge-2", pod="p"}`}) {
		t.Errorf("edge-2 cached %v", got)
	}
	// A known series does not carry a batch that names another cluster.
	err := r.ReceivePayload(context.Background(), "edge-2", 2, encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{mem(1), up(1)}}))
	if err == nil {
		t.Fatal("edge-2 stored a series labelled cluster=edge-1")
	}

	got := stored(t, db, anyName)
	want := map[string][]float64{
		`{__name__="up", cluster="edge-1", job="a"}`:  {0, 1, 2},
		`{__name__="mem", cluster="edge-1", pod="p"}`: {0, 10, 20},
		`{__name__="mem", cluster="edge-2", pod="p"}`: {0},
	}
	if len(got) != len(want) {
		t.Fatalf("TSDB has %v, want %v", got, want)
	}
	for k, v := range want {
		if !slices.Equal(got[k], v) {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
	}
	if st := r.Stats("edge-1"); st.Samples != 6 || st.Batches != 3 {
		t.Errorf("edge-1 stats %+v, want 6 samples in 3 batches", st)
	}
}

func TestSeriesCacheBounds(t *testing.T) {
	r, db, now := cacheReceiver(t, 3, 2)
	s := func(name string, at time.Time) *telemetryv1.Series { return series(name, at, 1, 1) }
	t0 := testNow.Add(-time.Hour)

	// Per cluster: 3 series, 2 cached, all 3 stored.
	receive(t, r, "edge-1", 1, s("a", t0), s("b", t0), s("c", t0))
	if n := len(cachedRefs(r, "edge-1")); n != 2 {
		t.Errorf("edge-1 has %d cached series, want the per-cluster bound 2", n)
	}
	// Over all clusters: 3 in all, so edge-2 gets 1 of its 2.
	receive(t, r, "edge-2", 1, s("a", t0), s("b", t0))
	if n := len(cachedRefs(r, "edge-2")); n != 1 {
		t.Errorf("edge-2 has %d cached series, want 1 (3 in all)", n)
	}
	if n := r.series.len(); n != 3 {
		t.Errorf("%d cached series, want the bound 3", n)
	}
	if n := len(stored(t, db, anyName)); n != 5 {
		t.Errorf("TSDB has %d series, want 5: the bound limits the cache, not what is stored", n)
	}

	// TTL: edge-1 keeps sending a only; its own batches sweep what it
	// stopped sending, and the sweep over idle clusters drops edge-2's.
	*now = now.Add(DefaultCachedSeriesTTL + time.Minute)
	receive(t, r, "edge-1", 2, s("a", t0.Add(time.Minute)))
	*now = now.Add(DefaultCachedSeriesTTL/2 + time.Minute)
	receive(t, r, "edge-1", 3, s("a", t0.Add(2*time.Minute)))
	if got := slices.Collect(maps.Keys(cachedRefs(r, "edge-1"))); !slices.Equal(got, []string{`{__name__="a", cluster="edge-1"}`}) {
		t.Errorf("edge-1 cache after the TTL: %v, want only a", got)
	}
	if got := cachedRefs(r, "edge-2"); len(got) != 0 {
		t.Errorf("idle edge-2 still cached %v after the TTL", got)
	}
	if n := r.series.len(); n != 1 {
		t.Errorf("%d cached series counted, want 1", n)
	}

	// Forget drops a cluster's cache and frees its budget.
	r.Forget("edge-1")
	if n := r.series.len(); n != 0 {
		t.Errorf("%d cached series after Forget, want 0", n)
	}
	receive(t, r, "edge-3", 1, s("a", t0), s("b", t0))
	if n := len(cachedRefs(r, "edge-3")); n != 2 {
		t.Errorf("edge-3 has %d cached series, want 2 once the budget is free", n)
	}
}

func TestSeriesCacheOff(t *testing.T) {
	r, db, _ := cacheReceiver(t, 0, 0)
	receive(t, r, "edge-1", 1, series("up", testNow, 1, 1))
	receive(t, r, "edge-1", 2, series("up", testNow.Add(time.Second), 1, 2))
	if n := r.series.len(); n != 0 {
		t.Errorf("%d series cached with the cache off", n)
	}
	if got := stored(t, db, labels.MustNewMatcher(labels.MatchEqual, "__name__", "up")); !slices.Equal(got[`{__name__="up", cluster="edge-1"}`], []float64{1, 2}) {
		t.Errorf("stored %v", got)
	}
}

// TestSeriesCacheKeysNameStrings: in both wire forms a known series is a
// hit however the batch around it changed; in the symbol form a new
// series first shifts every symbol index after it, and the known series
// are still hits (one cache entry each), so the key names the strings.
func TestSeriesCacheKeysNameStrings(t *testing.T) {
	for _, form := range []struct {
		name string
		enc  func(*telemetryv1.MetricBatch) ([]byte, error)
	}{{"symbol form", telemetryv1.Encode}, {"series form", telemetryv1.EncodeSeriesForm}} {
		t.Run(form.name, func(t *testing.T) {
			r, db, _ := cacheReceiver(t, 100, 100)
			send := func(seq uint64, ss ...*telemetryv1.Series) {
				t.Helper()
				data, err := form.enc(&telemetryv1.MetricBatch{Series: ss})
				if err != nil {
					t.Fatal(err)
				}
				if err := r.ReceivePayload(context.Background(), "edge-1", seq, data); err != nil {
					t.Fatal(err)
				}
			}
			at := func(i int) time.Time { return testNow.Add(time.Duration(i-10) * 15 * time.Second) }
			a := func(i int) *telemetryv1.Series {
				return series("kube_pod_info", at(i), 1, 1, "pod", "web-0", "node", "n1")
			}
			b := func(i int) *telemetryv1.Series {
				return series("kube_pod_info", at(i), 1, 1, "pod", "web-1", "node", "n1")
			}
			send(1, a(0), b(0))
			if n := len(cachedRefs(r, "edge-1")); n != 2 {
				t.Fatalf("%d cached series after the first batch, want 2", n)
			}
			entries := func() int {
				cs := r.series.clusters["edge-1"]
				cs.mu.Lock()
				defer cs.mu.Unlock()
				return len(cs.m)
			}
			// New strings first: every index of a and b moves.
			send(2, series("kube_node_info", at(1), 1, 1, "node", "n0", "kernel", "6.1"), b(1), a(1))
			if n := entries(); n != 3 {
				t.Fatalf("%d cache entries after a new series came first, want 3 (a and b hits, one new)", n)
			}
			if got := stored(t, db, anyName); len(got) != 3 || len(got[`{__name__="kube_pod_info", cluster="edge-1", node="n1", pod="web-0"}`]) != 2 {
				t.Fatalf("TSDB has %v", got)
			}
		})
	}
}
