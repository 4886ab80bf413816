package telemetryv1

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

func series(name string, labels ...string) *Series {
	s := &Series{Labels: []*Label{{Name: MetricNameLabel, Value: name}}}
	for i := 0; i+1 < len(labels); i += 2 {
		s.Labels = append(s.Labels, &Label{Name: labels[i], Value: labels[i+1]})
	}
	s.Samples = []*Sample{{TimestampMs: 1000, Value: 1}, {TimestampMs: 2000, Value: 2}}
	return s
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	b := &MetricBatch{
		Series:   []*Series{series("kube_pod_container_resource_requests", "cluster", "edge-1", "resource", "cpu")},
		Metadata: []*MetricMetadata{{Metric: "kube_pod_container_resource_requests", Type: "gauge", Help: "requests"}},
		Targets:  []*TargetHealth{{Job: "podinfo", Url: "http://10.0.0.1:9898/metrics", Health: "up", Samples: 12}},
	}
	data, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(b, got) {
		t.Fatalf("round trip changed the batch:\n%v\n%v", b, got)
	}
}

// TestEncodeForms: Encode writes the symbol form, EncodeSeriesForm the
// series form, and both decode to the batch encoded. A batch of more
// distinct strings than MaxSymbols goes in the series form.
func TestEncodeForms(t *testing.T) {
	b := &MetricBatch{Series: []*Series{
		series("kube_pod_info", "cluster", "edge-1", "pod", "web-0"),
		series("kube_pod_info", "cluster", "edge-1", "pod", "web-1"),
	}, TargetsReported: true}
	unzip := func(data []byte) *MetricBatch {
		t.Helper()
		raw, err := Gunzip(data)
		if err != nil {
			t.Fatal(err)
		}
		var w MetricBatch
		if err := proto.Unmarshal(raw, &w); err != nil {
			t.Fatal(err)
		}
		return &w
	}
	sym, err := Encode(b)
	if err != nil {
		t.Fatal(err)
	}
	w := unzip(sym)
	if len(w.Series) != 0 || len(w.SymbolSeries) != 2 || len(w.Symbols) != 7 {
		t.Fatalf("Encode wrote %d series, %d symbol series, symbols %q; want 0, 2 and 7 distinct strings", len(w.Series), len(w.SymbolSeries), w.Symbols)
	}
	old, err := EncodeSeriesForm(b)
	if err != nil {
		t.Fatal(err)
	}
	if w := unzip(old); len(w.Series) != 2 || len(w.SymbolSeries) != 0 {
		t.Fatalf("EncodeSeriesForm wrote %d series and %d symbol series", len(w.Series), len(w.SymbolSeries))
	}
	for _, data := range [][]byte{sym, old} {
		got, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(b, got) {
			t.Fatalf("decoded batch differs:\n%v\n%v", b, got)
		}
	}
	if _, err := Encode(w); err == nil {
		t.Fatal("Encode accepted a batch that already holds symbol_series")
	}

	// More distinct strings than MaxSymbols: the series form.
	many := &MetricBatch{}
	for i := 0; len(many.Series)*20 <= MaxSymbols; i++ {
		s := series("m")
		for k := range 20 {
			s.Labels = append(s.Labels, &Label{Name: "l" + strconv.Itoa(k), Value: strconv.Itoa(i*20 + k)})
		}
		s.Samples = s.Samples[:1]
		many.Series = append(many.Series, s)
	}
	data, err := Encode(many)
	if err != nil {
		t.Fatal(err)
	}
	if w := unzip(data); len(w.Series) != len(many.Series) || len(w.SymbolSeries) != 0 {
		t.Fatalf("%d distinct strings: Encode wrote %d series, %d symbol series; want the series form", len(many.Series)*20, len(w.Series), len(w.SymbolSeries))
	}
}

// TestDecodeMixedForms: series of field 1 come first, then the symbol
// series, in order.
func TestDecodeMixedForms(t *testing.T) {
	w := &MetricBatch{
		Series:       []*Series{series("a")},
		Symbols:      []string{MetricNameLabel, "b", "c"},
		SymbolSeries: []*SymbolSeries{{LabelRefs: []uint32{0, 1}, TimestampsMs: []int64{5}, Values: []float64{1}}, {LabelRefs: []uint32{0, 2}, TimestampsMs: []int64{6, 7}, Values: []float64{2, 3}}},
	}
	raw, err := proto.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(Gzip(raw))
	if err != nil {
		t.Fatal(err)
	}
	want := &MetricBatch{Series: []*Series{series("a"),
		{Labels: []*Label{{Name: MetricNameLabel, Value: "b"}}, Samples: []*Sample{{TimestampMs: 5, Value: 1}}},
		{Labels: []*Label{{Name: MetricNameLabel, Value: "c"}}, Samples: []*Sample{{TimestampMs: 6, Value: 2}, {TimestampMs: 7, Value: 3}}}}}
	if !proto.Equal(want, got) {
		t.Fatalf("decoded:\n%v\nwant:\n%v", got, want)
	}
}

func TestDecodeRefuses(t *testing.T) {
	marshal := func(b *MetricBatch) []byte {
		raw, err := proto.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return Gzip(raw)
	}
	outOfOrder := series("up")
	outOfOrder.Samples = []*Sample{{TimestampMs: 2, Value: 1}, {TimestampMs: 2, Value: 1}}
	noSamples := series("up")
	noSamples.Samples = nil
	cases := []struct {
		name, data, want string
		raw              []byte
	}{
		{name: "not gzip", raw: []byte("hello"), want: "not gzip"},
		{name: "not proto", raw: Gzip([]byte{0xff, 0xff, 0xff}), want: "does not decode"},
		{name: "gzip bomb", raw: Gzip(make([]byte, MaxDecodedBytes+10)), want: "too large"},
		{name: "no name", raw: marshal(&MetricBatch{Series: []*Series{{Labels: []*Label{{Name: "a", Value: "b"}}, Samples: []*Sample{{TimestampMs: 1}}}}}), want: "no __name__"},
		{name: "bad label name", raw: marshal(&MetricBatch{Series: []*Series{series("up", "bad-name", "x")}}), want: `"bad-name" is not a Prometheus label name`},
		{name: "reserved label", raw: marshal(&MetricBatch{Series: []*Series{series("up", "__address__", "x")}}), want: "not a Prometheus label name"},
		{name: "bad metric name", raw: marshal(&MetricBatch{Series: []*Series{series("1up")}}), want: "not a Prometheus metric name"},
		{name: "duplicate label", raw: marshal(&MetricBatch{Series: []*Series{series("up", "a", "1", "a", "2")}}), want: "appears twice"},
		{name: "empty value", raw: marshal(&MetricBatch{Series: []*Series{series("up", "a", "")}}), want: "empty value"},
		{name: "out of order", raw: marshal(&MetricBatch{Series: []*Series{outOfOrder}}), want: "not after"},
		{name: "no samples", raw: marshal(&MetricBatch{Series: []*Series{noSamples}}), want: "no samples"},
		{name: "bad type", raw: marshal(&MetricBatch{Metadata: []*MetricMetadata{{Metric: "up", Type: "weird"}}}), want: "unknown metric type"},
		{name: "too big", raw: make([]byte, MaxEncodedBytes+1), want: "too large"},
		{name: "odd label refs", raw: marshal(&MetricBatch{Symbols: []string{MetricNameLabel, "up"}, SymbolSeries: []*SymbolSeries{{LabelRefs: []uint32{0, 1, 1}, TimestampsMs: []int64{1}, Values: []float64{1}}}}), want: "series 0: 3 label refs, not (name, value) pairs"},
		{name: "ref past the symbols", raw: marshal(&MetricBatch{Symbols: []string{MetricNameLabel, "up"}, SymbolSeries: []*SymbolSeries{{LabelRefs: []uint32{0, 2}, TimestampsMs: []int64{1}, Values: []float64{1}}}}), want: "series 0: label 0 refers to symbol 2 of 2"},
		{name: "timestamps without values", raw: marshal(&MetricBatch{Symbols: []string{MetricNameLabel, "up"}, SymbolSeries: []*SymbolSeries{{LabelRefs: []uint32{0, 1}, TimestampsMs: []int64{1, 2}, Values: []float64{1}}}}), want: "series 0: 2 timestamps and 1 values"},
		{name: "symbol series without samples", raw: marshal(&MetricBatch{Symbols: []string{MetricNameLabel, "up"}, SymbolSeries: []*SymbolSeries{{LabelRefs: []uint32{0, 1}}}}), want: "no samples"},
		{name: "symbol series bad label", raw: marshal(&MetricBatch{Symbols: []string{MetricNameLabel, "up", "bad-name"}, SymbolSeries: []*SymbolSeries{{LabelRefs: []uint32{0, 1, 2, 1}, TimestampsMs: []int64{1}, Values: []float64{1}}}}), want: `"bad-name" is not a Prometheus label name`},
		{name: "too many labels by refs", raw: marshal(&MetricBatch{Symbols: []string{MetricNameLabel, "up"}, SymbolSeries: []*SymbolSeries{{LabelRefs: make([]uint32, 2*MaxLabels+2), TimestampsMs: []int64{1}, Values: []float64{1}}}}), want: "65 labels, limit 64"},
		{name: "symbol too long", raw: marshal(&MetricBatch{Symbols: []string{strings.Repeat("x", MaxLabelValueBytes+1)}}), want: "symbol 0 is 4097 bytes"},
		{name: "too many series over both forms", raw: marshal(&MetricBatch{Series: make([]*Series, MaxSeries), Symbols: []string{"x"}, SymbolSeries: []*SymbolSeries{{}}}), want: "too large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.raw)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode: %v, want an error containing %q", err, c.want)
			}
		})
	}
	if _, err := Decode(make([]byte, MaxEncodedBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized batch: %v, want ErrTooLarge", err)
	}
}

func TestEncodeRefusesWhatDecodeRefuses(t *testing.T) {
	if _, err := Encode(&MetricBatch{Series: []*Series{series("up", "bad-name", "x")}}); err == nil {
		t.Fatal("Encode accepted a bad label name")
	}
}

func TestValidNames(t *testing.T) {
	for n, want := range map[string]bool{"a": true, "_a": true, "a1": true, "1a": false, "__name__": false, "a-b": false, "": false, "é": false} {
		if got := ValidLabelName(n); got != want {
			t.Errorf("ValidLabelName(%q) = %v, want %v", n, got, want)
		}
	}
	for n, want := range map[string]bool{"up": true, "a:b": true, ":a": true, "1a": false, "a.b": false} {
		if got := ValidMetricName(n); got != want {
			t.Errorf("ValidMetricName(%q) = %v, want %v", n, got, want)
		}
	}
}

// FuzzDecode: whatever bytes a peer sends, Decode neither panics nor
// accepts a batch that Validate refuses, and what it accepts encodes again.
func FuzzDecode(f *testing.F) {
	for _, b := range []*MetricBatch{
		{Series: []*Series{series("up", "cluster", "a")}},
		{Metadata: []*MetricMetadata{{Metric: "up", Type: "gauge"}}, Targets: []*TargetHealth{{Job: "j"}}},
	} {
		for _, enc := range []func(*MetricBatch) ([]byte, error){Encode, EncodeSeriesForm} {
			data, err := enc(b)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte("not gzip"))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Decode(data)
		if err != nil {
			return
		}
		if err := Validate(b); err != nil {
			t.Fatalf("Decode accepted a batch Validate refuses: %v", err)
		}
		if _, err := Encode(b); err != nil && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}
