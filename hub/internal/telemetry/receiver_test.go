package telemetry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"
	"google.golang.org/protobuf/proto"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// testNow is the hub's clock in these tests: the TSDB takes any time, so
// tests need not depend on the wall clock.
var testNow = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

func openTestDB(t testing.TB) *DB {
	t.Helper()
	db, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("close TSDB: %v", err)
		}
	})
	return db
}

func newTestReceiver(t testing.TB, db Appendable) *Receiver {
	t.Helper()
	cfg := DefaultReceiverConfig()
	cfg.DB = db
	cfg.Now = func() time.Time { return testNow }
	r, err := NewReceiver(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// series builds a series of metric name with labels kv (name, value, ...)
// and samples every 15 s from start.
func series(name string, start time.Time, n int, value float64, kv ...string) *telemetryv1.Series {
	s := &telemetryv1.Series{Labels: []*telemetryv1.Label{{Name: "__name__", Value: name}}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.Labels = append(s.Labels, &telemetryv1.Label{Name: kv[i], Value: kv[i+1]})
	}
	for i := range n {
		s.Samples = append(s.Samples, &telemetryv1.Sample{TimestampMs: start.Add(time.Duration(i) * 15 * time.Second).UnixMilli(), Value: value + float64(i)})
	}
	return s
}

func encode(t testing.TB, b *telemetryv1.MetricBatch) []byte {
	t.Helper()
	data, err := telemetryv1.Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// stored returns every sample of the series matching ms, by series.
func stored(t *testing.T, db *DB, ms ...*labels.Matcher) map[string][]float64 {
	t.Helper()
	q, err := db.Querier(math.MinInt64/4, math.MaxInt64/4)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	out := map[string][]float64{}
	ss := q.Select(context.Background(), false, nil, ms...)
	for ss.Next() {
		it := ss.At().Iterator(nil)
		k := ss.At().Labels().String()
		out[k] = []float64{}
		for it.Next() != 0 {
			_, v := it.At()
			out[k] = append(out[k], v)
		}
		if it.Err() != nil {
			t.Fatal(it.Err())
		}
	}
	if ss.Err() != nil {
		t.Fatal(ss.Err())
	}
	return out
}

func nameIs(n string) *labels.Matcher { return labels.MustNewMatcher(labels.MatchEqual, "__name__", n) }

func TestReceiverStoresBatchWithClusterLabel(t *testing.T) {
	db := openTestDB(t)
	r := newTestReceiver(t, db)
	start := testNow.Add(-time.Minute)
	b := &telemetryv1.MetricBatch{
		Series: []*telemetryv1.Series{
			series("node_memory_working_set_bytes", start, 4, 100, "node", "n1"),
			series("kube_node_status_capacity", start, 4, 2, "node", "n1", "resource", "cpu", "cluster", "edge-1"),
		},
		Metadata: []*telemetryv1.MetricMetadata{{Metric: "node_memory_working_set_bytes", Type: "gauge", Help: "Working set.", Unit: "bytes"}},
		Targets:  []*telemetryv1.TargetHealth{{Job: "podinfo", Url: "http://10.0.0.1:9898/metrics", Health: "up", LastScrapeMs: start.UnixMilli(), LastDurationMs: 12, Samples: 40}},
	}
	if err := r.ReceivePayload(context.Background(), "edge-1", 1, encode(t, b)); err != nil {
		t.Fatalf("ReceivePayload: %v", err)
	}
	got := stored(t, db, labels.MustNewMatcher(labels.MatchEqual, "cluster", "edge-1"))
	want := map[string][]float64{
		`{__name__="node_memory_working_set_bytes", cluster="edge-1", node="n1"}`:             {100, 101, 102, 103},
		`{__name__="kube_node_status_capacity", cluster="edge-1", node="n1", resource="cpu"}`: {2, 3, 4, 5},
	}
	if len(got) != len(want) {
		t.Fatalf("stored %v, want %v", got, want)
	}
	for k, v := range want {
		if strings.Join(fmtFloats(got[k]), ",") != strings.Join(fmtFloats(v), ",") {
			t.Errorf("series %s: stored %v, want %v", k, got[k], v)
		}
	}
	if st := r.Stats("edge-1"); st.Batches != 1 || st.Samples != 8 || st.Refused != 0 {
		t.Errorf("stats %+v, want 1 batch of 8 samples", st)
	}
	md := r.Metadata("", 0, 0)
	if m := md["node_memory_working_set_bytes"]; len(m) != 1 || m[0] != (Metadata{Type: "gauge", Help: "Working set.", Unit: "bytes"}) {
		t.Errorf("metadata %v", md)
	}
	tg := r.Targets("edge-1")
	if len(tg) != 1 || tg[0].Health != "up" || tg[0].URL != "http://10.0.0.1:9898/metrics" || tg[0].LastDuration != 12*time.Millisecond || tg[0].Samples != 40 {
		t.Errorf("targets %+v", tg)
	}
	if r.Targets("edge-2") != nil {
		t.Error("edge-2 has targets it never reported")
	}
	// A batch without targets keeps the last list.
	if err := r.ReceivePayload(context.Background(), "edge-1", 2, encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow, 1, 1)}})); err != nil {
		t.Fatal(err)
	}
	if len(r.Targets("edge-1")) != 1 {
		t.Error("a batch without targets cleared the cluster's targets")
	}
}

func fmtFloats(v []float64) []string {
	out := make([]string, len(v))
	for i, f := range v {
		out[i] = fmt.Sprint(f)
	}
	return out
}

func TestReceiverRefuses(t *testing.T) {
	db := openTestDB(t)
	r := newTestReceiver(t, db)
	ok := series("up", testNow, 1, 1)
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"another cluster's label", `names cluster "edge-2"`, encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{ok, series("up", testNow, 1, 1, "cluster", "edge-2")}})},
		{"sample far in the future", "past the hub's clock", encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{ok, series("up", testNow.Add(10*time.Minute), 1, 1, "job", "x")}})},
		{"not gzip", "not gzip", []byte("hello")},
		{"invalid label name", "not a Prometheus label name", gzipProto(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{{
			Labels: []*telemetryv1.Label{{Name: "__name__", Value: "up"}, {Name: "bad-name", Value: "x"}}, Samples: []*telemetryv1.Sample{{TimestampMs: testNow.UnixMilli(), Value: 1}}}}})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := r.ReceivePayload(context.Background(), "edge-1", 7, tc.data)
			if !errors.Is(err, gateway.ErrPayloadRefused) {
				t.Fatalf("err = %v, want a refusal", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "batch 7") {
				t.Errorf("err = %q, want it to name batch 7 and say %q", err, tc.want)
			}
		})
	}
	if got := stored(t, db, nameIs("up")); len(got) != 0 {
		t.Errorf("refused batches stored %v", got)
	}
	if st := r.Stats("edge-1"); st.Refused != 4 || st.Batches != 0 {
		t.Errorf("stats %+v, want 4 refused", st)
	}
	// Just inside the allowed clock skew is stored.
	if err := r.ReceivePayload(context.Background(), "edge-1", 8, encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow.Add(4*time.Minute), 1, 1)}})); err != nil {
		t.Errorf("a sample 4m ahead (limit 5m): %v", err)
	}
}

// gzipProto encodes b without Encode's validation.
func gzipProto(t *testing.T, b *telemetryv1.MetricBatch) []byte {
	t.Helper()
	raw, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return telemetryv1.Gzip(raw)
}

func TestReceiverResentBatchesStoreOnce(t *testing.T) {
	db := openTestDB(t)
	r := newTestReceiver(t, db)
	ctx := context.Background()
	a := encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow.Add(-10*time.Minute), 10, 0)}})
	b := encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow.Add(-10*time.Minute+150*time.Second), 10, 10)}})
	// a, then b; a again (its ack was lost, after b: out of order), then
	// b again (its newest sample is the series' newest).
	for i, d := range [][]byte{a, b, a, b} {
		if err := r.ReceivePayload(ctx, "edge-1", uint64(i+1), d); err != nil {
			t.Fatalf("batch %d: %v", i+1, err)
		}
	}
	got := stored(t, db, nameIs("up"))
	vals := got[`{__name__="up", cluster="edge-1"}`]
	if len(vals) != 20 {
		t.Fatalf("stored %d samples (%v), want the 20 distinct ones", len(vals), vals)
	}
	for i, v := range vals {
		if v != float64(i) {
			t.Fatalf("sample %d = %v, want %d", i, v, i)
		}
	}
	// The same timestamp with another value: counted, the batch is acked.
	c := &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow.Add(-10*time.Minute+285*time.Second), 1, 99)}}
	if err := r.ReceivePayload(ctx, "edge-1", 5, encode(t, c)); err != nil {
		t.Fatalf("a conflicting duplicate failed the batch: %v", err)
	}
	if st := r.Stats("edge-1"); st.Duplicates != 1 || st.Batches != 5 {
		t.Errorf("stats %+v, want 1 duplicate in 5 batches", st)
	}
}

func TestReceiverOutOfOrderBacklog(t *testing.T) {
	db := openTestDB(t)
	r := newTestReceiver(t, db)
	ctx := context.Background()
	// The link is back: current samples arrive first, then the day-old
	// backlog, then a batch from beyond the 7-day window.
	now := encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow.Add(-time.Minute), 4, 100)}})
	dayOld := encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow.Add(-24*time.Hour), 240, 0)}})
	tooOld := encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow.Add(-8*24*time.Hour), 3, 0), series("other", testNow, 1, 5)}})
	for i, d := range [][]byte{now, dayOld, tooOld} {
		if err := r.ReceivePayload(ctx, "edge-1", uint64(i+1), d); err != nil {
			t.Fatalf("batch %d: %v", i+1, err)
		}
	}
	if got := stored(t, db, nameIs("up")); len(got[`{__name__="up", cluster="edge-1"}`]) != 244 {
		t.Errorf("stored %d samples of up, want 244 (4 current + 240 of the day-old backlog)", len(got[`{__name__="up", cluster="edge-1"}`]))
	}
	if got := stored(t, db, nameIs("other")); len(got) != 1 {
		t.Errorf("the batch with too-old samples lost its good series: %v", got)
	}
	if st := r.Stats("edge-1"); st.TooOld != 3 || st.Samples != 245 {
		t.Errorf("stats %+v, want 3 too old, 245 stored", st)
	}
}

// TestReceiverStorageFailureNotAcknowledged: a TSDB that cannot write
// (here: closed, as after a disk failure) gives an error that is not a
// refusal, so the agent keeps the batch.
func TestReceiverStorageFailureNotAcknowledged(t *testing.T) {
	db, err := Open(Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	r := newTestReceiver(t, db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	err = r.ReceivePayload(context.Background(), "edge-1", 1, encode(t, &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{series("up", testNow, 2, 1)}}))
	if err == nil || errors.Is(err, gateway.ErrPayloadRefused) {
		t.Fatalf("err = %v, want a failure that is not a refusal", err)
	}
	if st := r.Stats("edge-1"); st.Batches != 0 {
		t.Errorf("stats %+v count an unstored batch", st)
	}
}

var _ storage.Appendable = (*DB)(nil)

func TestReceiverTargetList(t *testing.T) {
	r := newTestReceiver(t, openTestDB(t))
	up := func(i int) []*telemetryv1.Series {
		return []*telemetryv1.Series{series("up", testNow.Add(time.Duration(i)*time.Second), 1, 1)}
	}
	batches := []struct {
		name string
		b    *telemetryv1.MetricBatch
		want []string // URLs
	}{
		{"a scrape flush", &telemetryv1.MetricBatch{Series: up(0), Targets: []*telemetryv1.TargetHealth{{Job: "j", Url: "http://a"}, {Job: "j", Url: "http://b"}}, TargetsReported: true}, []string{"http://a", "http://b"}},
		{"an inventory batch says nothing of targets", &telemetryv1.MetricBatch{Series: up(1)}, []string{"http://a", "http://b"}},
		{"an older agent's batch with targets", &telemetryv1.MetricBatch{Series: up(2), Targets: []*telemetryv1.TargetHealth{{Job: "j", Url: "http://c"}}}, []string{"http://c"}},
		{"the last scrape config removed", &telemetryv1.MetricBatch{Series: up(3), TargetsReported: true}, nil},
	}
	for i, c := range batches {
		if err := r.ReceivePayload(context.Background(), "edge-1", uint64(i+1), encode(t, c.b)); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var got []string
		for _, tg := range r.Targets("edge-1") {
			got = append(got, tg.URL)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("after %s: targets %v, want %v", c.name, got, c.want)
		}
	}
}
