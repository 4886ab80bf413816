package telemetry

import (
	"bytes"
	stdgzip "compress/gzip"
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// FuzzDecodeBatchMatchesDecode: the receiver's decoder accepts exactly
// the batches telemetryv1.Decode accepts (and refuses those naming
// another cluster), with the same series, samples, metadata and targets.
// The input is the protobuf before compression, so the fuzzer's changes
// reach the protobuf decoders rather than gzip's checksum.
func FuzzDecodeBatchMatchesDecode(f *testing.F) {
	for _, b := range []*telemetryv1.MetricBatch{
		{},
		{Series: []*telemetryv1.Series{series("kube_pod_info", testNow, 4, 1, "namespace", "a", "pod", "p"), series("up", testNow, 2, 0)}},
		{Series: []*telemetryv1.Series{series("up", testNow, 3, 1, "job", "a", "cluster", "edge-1"), series("up", testNow, 1, 1, "cluster", "edge-2")}},
		{Series: []*telemetryv1.Series{series("up", testNow, 2, math.NaN(), "z", "é")}, Metadata: []*telemetryv1.MetricMetadata{{Metric: "up", Type: "gauge", Help: "h"}},
			Targets: []*telemetryv1.TargetHealth{{Job: "j", Url: "http://x", Health: "up", Samples: 3}}},
		{Series: []*telemetryv1.Series{{Labels: []*telemetryv1.Label{{Name: "__name__", Value: "up"}, {Name: "a", Value: ""}}, Samples: []*telemetryv1.Sample{{TimestampMs: 5}}}}},
		{Series: []*telemetryv1.Series{{Labels: []*telemetryv1.Label{{Name: "__name__", Value: "up"}}, Samples: []*telemetryv1.Sample{{TimestampMs: 5}, {TimestampMs: 5}}}}},
	} {
		raw, err := proto.Marshal(b)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
		// The same in the symbol form, where Encode takes it.
		if data, err := telemetryv1.Encode(b); err == nil {
			raw, err := telemetryv1.Gunzip(data)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(raw)
		}
	}
	// The symbol form as proto allows it but Encode does not write it:
	// refs one by one (one of them past 32 bits: proto keeps the low
	// ones), values before timestamps, a packed field in two parts, and
	// the symbols after the series.
	var sym []byte
	sym = protowire.AppendTag(sym, 3, protowire.Fixed64Type)
	sym = protowire.AppendFixed64(sym, math.Float64bits(1.5))
	for _, r := range []uint64{0, 1, 2, 1<<32 | 3} {
		sym = protowire.AppendVarint(protowire.AppendTag(sym, 1, protowire.VarintType), r)
	}
	sym = protowire.AppendBytes(protowire.AppendTag(sym, 2, protowire.BytesType), protowire.AppendVarint(nil, 1000))
	sym = protowire.AppendBytes(protowire.AppendTag(sym, 3, protowire.BytesType), protowire.AppendFixed64(nil, math.Float64bits(2)))
	sym = protowire.AppendBytes(protowire.AppendTag(sym, 2, protowire.BytesType), protowire.AppendVarint(nil, 2000))
	var symBatch []byte
	symBatch = protowire.AppendBytes(protowire.AppendTag(symBatch, 6, protowire.BytesType), sym)
	for _, s := range []string{"__name__", "up", "job", "a"} {
		symBatch = protowire.AppendString(protowire.AppendTag(symBatch, 5, protowire.BytesType), s)
	}
	f.Add(symBatch)
	// Wire oddities: a label as a varint, an unknown field, a group, a
	// repeated timestamp (the last wins), a truncated message.
	odd := protowire.AppendTag(nil, 1, protowire.BytesType)
	var ser []byte
	ser = protowire.AppendTag(ser, 1, protowire.VarintType)
	ser = protowire.AppendVarint(ser, 7)
	ser = protowire.AppendTag(ser, 9, protowire.Fixed32Type)
	ser = protowire.AppendFixed32(ser, 1)
	lbl := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "__name__")
	lbl = protowire.AppendString(protowire.AppendTag(lbl, 2, protowire.BytesType), "up")
	ser = protowire.AppendBytes(protowire.AppendTag(ser, 1, protowire.BytesType), lbl)
	smp := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 1)
	smp = protowire.AppendVarint(protowire.AppendTag(smp, 1, protowire.VarintType), 2)
	ser = protowire.AppendBytes(protowire.AppendTag(ser, 2, protowire.BytesType), smp)
	f.Add(protowire.AppendBytes(odd, ser))
	f.Add(protowire.AppendBytes(odd, ser)[:len(ser)/2])
	f.Add(append(protowire.AppendTag(nil, 5, protowire.StartGroupType), protowire.AppendTag(nil, 5, protowire.EndGroupType)...))

	f.Fuzz(func(t *testing.T, raw []byte) {
		data := telemetryv1.Gzip(raw)
		want, werr := telemetryv1.Decode(data)
		// Without the series cache, filling one, then hitting it: the
		// same answer each time.
		caches := newSeriesCaches(1000, 1000, time.Hour)
		cs := caches.lock("edge-1", testNow)
		defer cs.mu.Unlock()
		for _, cache := range []*clusterSeries{nil, cs, cs} {
			checkDecodeBatch(t, data, want, werr, cache)
		}
	})
}

func checkDecodeBatch(t *testing.T, data []byte, want *telemetryv1.MetricBatch, werr error, cache *clusterSeries) {
	t.Helper()
	got, gerr := decodeBatch(data, "edge-1", cache)
	if gerr == nil {
		defer got.release()
	}
	if werr != nil {
		if gerr == nil {
			t.Fatalf("Decode refuses (%v), decodeBatch accepts", werr)
		}
		return
	}
	other := false
	for _, s := range want.Series {
		for _, l := range s.Labels {
			if l.Name == telemetryv1.ClusterLabel && l.Value != "edge-1" {
				other = true
			}
		}
	}
	if other {
		if !errors.Is(gerr, errOtherCluster) {
			t.Fatalf("a series names another cluster: decodeBatch err = %v", gerr)
		}
		return
	}
	if gerr != nil {
		t.Fatalf("Decode accepts, decodeBatch refuses: %v", gerr)
	}
	if len(got.series) != len(want.Series) {
		t.Fatalf("%d series, Decode has %d", len(got.series), len(want.Series))
	}
	for i, s := range want.Series {
		var sb labels.ScratchBuilder
		for _, l := range s.Labels {
			if l.Name != telemetryv1.ClusterLabel {
				sb.Add(l.Name, l.Value)
			}
		}
		sb.Add(telemetryv1.ClusterLabel, "edge-1")
		sb.Sort()
		g := got.series[i]
		if !labels.Equal(g.lset, sb.Labels()) {
			t.Fatalf("series %d: labels %s, Decode has %s", i, g.lset, sb.Labels())
		}
		gs := got.samples[g.from:g.to]
		if len(gs) != len(s.Samples) {
			t.Fatalf("series %d: %d samples, Decode has %d", i, len(gs), len(s.Samples))
		}
		for k, smp := range s.Samples {
			if gs[k].t != smp.TimestampMs || math.Float64bits(gs[k].v) != math.Float64bits(smp.Value) {
				t.Fatalf("series %d sample %d: %v, Decode has %v", i, k, gs[k], smp)
			}
		}
	}
	if !proto.Equal(&got.rest, &telemetryv1.MetricBatch{Metadata: want.Metadata, Targets: want.Targets, TargetsReported: want.TargetsReported}) {
		t.Fatalf("metadata and targets differ:\n%v\n%v", &got.rest, want)
	}
}

// FuzzGunzipMatchesStdlib: the receiver's gunzip (klauspost/compress)
// accepts exactly the streams telemetryv1.Gunzip (the standard library)
// does, with the same bytes out: its input is the
// compressed payload itself (multi-member streams, trailing bytes, bad
// checksums, header fields).
func FuzzGunzipMatchesStdlib(f *testing.F) {
	one := telemetryv1.Gzip([]byte("series bytes"))
	f.Add(one)
	f.Add(append(slices.Clone(one), telemetryv1.Gzip([]byte("second member"))...))
	f.Add(append(slices.Clone(one), 0, 1, 2))
	f.Add(one[:len(one)-3])
	bad := slices.Clone(one)
	bad[len(bad)-6] ^= 0xff
	f.Add(bad)
	var named bytes.Buffer
	zw := stdgzip.NewWriter(&named)
	zw.Name, zw.Comment, zw.Extra = "batch", "c", []byte{1, 2, 3, 4}
	_, _ = zw.Write(bytes.Repeat([]byte("ab"), 1000))
	_ = zw.Close()
	f.Add(named.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		want, werr := telemetryv1.Gunzip(data)
		d := new(decoded)
		gerr := d.gunzip(data)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("standard library: %v; receiver: %v", werr, gerr)
		}
		if werr == nil && !bytes.Equal(want, d.raw.Bytes()) {
			t.Fatalf("decompressed %d bytes, the standard library %d", d.raw.Len(), len(want))
		}
	})
}
