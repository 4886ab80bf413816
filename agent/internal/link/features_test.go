package link

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// gzipBatch marshals and compresses b as it is, symbol fields and all,
// without Encode's checks.
func gzipBatch(t *testing.T, b *telemetryv1.MetricBatch) []byte {
	t.Helper()
	raw, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return telemetryv1.Gzip(raw)
}

// gunzipBatch is the batch in data as sent, without Decode's resolving of
// the symbol form.
func gunzipBatch(t *testing.T, data []byte) *telemetryv1.MetricBatch {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	var b telemetryv1.MetricBatch
	if err := proto.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	return &b
}

// seriesString is s as `name=value,...@ts=value,...`, to compare batches.
func seriesString(s *telemetryv1.Series) string {
	var sb strings.Builder
	for i, l := range s.GetLabels() {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(l.GetName() + "=" + l.GetValue())
	}
	sb.WriteByte('@')
	for i, smp := range s.GetSamples() {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "%d=%g", smp.GetTimestampMs(), smp.GetValue())
	}
	return sb.String()
}

// TestMetricsFormFollowsHubFeatures: a hub naming
// fleetv1.FeatureMetricSymbols gets a queued metric batch byte for byte; a
// hub without it gets the batch rewritten in the series form (no symbol
// fields, the same series), whichever form it was queued in.
func TestMetricsFormFollowsHubFeatures(t *testing.T) {
	up := &telemetryv1.Series{
		Labels: []*telemetryv1.Label{
			{Name: telemetryv1.MetricNameLabel, Value: "up"},
			{Name: telemetryv1.ClusterLabel, Value: "edge-1"},
		},
		Samples: []*telemetryv1.Sample{{TimestampMs: 1000, Value: 1}},
	}
	symbolForm := gzipBatch(t, &telemetryv1.MetricBatch{
		Symbols:      []string{telemetryv1.MetricNameLabel, "up", telemetryv1.ClusterLabel, "edge-1"},
		SymbolSeries: []*telemetryv1.SymbolSeries{{LabelRefs: []uint32{0, 1, 2, 3}, TimestampsMs: []int64{1000}, Values: []float64{1}}},
	})
	seriesForm, err := telemetryv1.EncodeSeriesForm(&telemetryv1.MetricBatch{Series: []*telemetryv1.Series{up}})
	if err != nil {
		t.Fatal(err)
	}
	want := seriesString(up)
	for _, tc := range []struct {
		name     string
		queued   []byte
		features []string
		symbols  bool // the hub names FeatureMetricSymbols
	}{
		{"symbol form to a hub with symbols", symbolForm, []string{"other.feature", fleetv1.FeatureMetricSymbols}, true},
		{"series form to a hub with symbols", seriesForm, []string{fleetv1.FeatureMetricSymbols}, true},
		// This case needs telemetryv1.Decode to read the symbol form.
		{"symbol form to an older hub", symbolForm, nil, false},
		{"series form to an older hub", seriesForm, []string{"other.feature"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
			hub := linktest.Start(t, linktest.Config{CA: ca.CA, AcceptKinds: []string{KindMetrics}, Features: tc.features})
			ob := openOutbox(t, cacheOptions())
			if err := ob.Enqueue(KindMetrics, tc.queued); err != nil {
				t.Fatal(err)
			}
			l := newTestLink(t, ca, hub.Addr, ob)
			l.cfg.Telemetry = true
			startLink(t, l)
			waitDrained(t, ob)
			if st, _ := ob.OutboxStats(); st.DeadLettered != 0 {
				t.Fatalf("outbox = %+v; want the batch sent, not dead-lettered", st)
			}
			var got []linktest.Payload
			for _, p := range hub.Payloads() {
				if p.Kind == KindMetrics {
					got = append(got, p)
				}
			}
			if len(got) != 1 {
				t.Fatalf("hub received %d metric batches; want 1", len(got))
			}
			data := got[0].Data
			if tc.symbols {
				if !bytes.Equal(data, tc.queued) {
					t.Fatalf("hub naming %s received a changed batch (%d bytes, queued %d)", fleetv1.FeatureMetricSymbols, len(data), len(tc.queued))
				}
				return
			}
			if sent := gunzipBatch(t, data); len(sent.GetSymbolSeries()) != 0 || len(sent.GetSymbols()) != 0 || len(sent.GetSeries()) == 0 {
				t.Fatalf("older hub received %d series, %d symbol series, %d symbols; want the series form",
					len(sent.GetSeries()), len(sent.GetSymbolSeries()), len(sent.GetSymbols()))
			}
			b, err := telemetryv1.Decode(data)
			if err != nil {
				t.Fatalf("batch sent to an older hub does not decode: %v", err)
			}
			if len(b.GetSeries()) != 1 || seriesString(b.GetSeries()[0]) != want {
				var s []string
				for _, x := range b.GetSeries() {
					s = append(s, seriesString(x))
				}
				t.Fatalf("older hub received series %q; want [%s]", s, want)
			}
		})
	}
}

// TestMetricsUndecodableForOlderHub: for a hub without the symbol form a
// batch that does not decode is dead-lettered (it could never be sent),
// and the drain goes on.
func TestMetricsUndecodableForOlderHub(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	hub := linktest.Start(t, linktest.Config{CA: ca.CA, AcceptKinds: []string{KindMetrics}})
	ob := openOutbox(t, cacheOptions())
	if err := ob.Enqueue(KindMetrics, []byte("not gzip")); err != nil {
		t.Fatal(err)
	}
	if err := ob.Enqueue(KindStatus, statusPayload(t, 1)); err != nil {
		t.Fatal(err)
	}
	l := newTestLink(t, ca, hub.Addr, ob)
	l.cfg.Telemetry = true
	startLink(t, l)
	waitDrained(t, ob)
	st, _ := ob.OutboxStats()
	if st.Kinds[KindMetrics].DeadLettered != 1 || len(hub.Reports()) != 1 {
		t.Fatalf("outbox = %+v, hub has %d reports; want the batch dead-lettered and status sent", st, len(hub.Reports()))
	}
}

// TestNegotiateFeatures: the hub's features are recorded, bounded by
// fleetv1.MaxFeatures and fleetv1.MaxFeatureBytes.
func TestNegotiateFeatures(t *testing.T) {
	many := make([]string, fleetv1.MaxFeatures)
	for i := range many {
		many[i] = "f" + strings.Repeat("x", i)
	}
	for _, tc := range []struct {
		name     string
		features []string
		symbols  bool
		known    int
	}{
		{"none", nil, false, 0},
		{"symbols", []string{fleetv1.FeatureMetricSymbols}, true, 1},
		{"symbols among others", []string{"a", fleetv1.FeatureMetricSymbols, "b"}, true, 3},
		{"empty and too long left out", []string{"", strings.Repeat("y", fleetv1.MaxFeatureBytes+1), "ok"}, false, 1},
		{"past MaxFeatures left out", slices.Concat(many, []string{fleetv1.FeatureMetricSymbols}), false, fleetv1.MaxFeatures},
		{"within MaxFeatures", slices.Concat(many[:fleetv1.MaxFeatures-1], []string{fleetv1.FeatureMetricSymbols}), true, fleetv1.MaxFeatures},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := negotiate(payloadKinds(), &fleetv1.Welcome{PayloadKinds: []string{KindMetrics}, Features: tc.features})
			if n.metricSymbols != tc.symbols || len(n.features) != tc.known {
				t.Fatalf("negotiated metricSymbols %v, %d features; want %v, %d", n.metricSymbols, len(n.features), tc.symbols, tc.known)
			}
		})
	}
}
