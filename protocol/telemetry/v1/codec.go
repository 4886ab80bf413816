// Package telemetryv1 is the wire form of the metrics an agent sends its
// hub: MetricBatch (telemetry.proto), gzip-compressed, as the data of an
// outbox Payload of kind PayloadKind. Decode is the hub's one entry point
// for that untrusted input: it bounds what a peer can make the hub hold and
// refuses, with the place and the reason, anything Prometheus would not
// store as given.
package telemetryv1

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
)

// PayloadKind is the outbox and Payload kind of a gzip-compressed
// MetricBatch.
const PayloadKind = "metrics"

// Limits of one batch. The agent cuts its batches under them; the hub
// refuses a batch over any of them.
const (
	// MaxEncodedBytes bounds the compressed batch (the Payload data). It
	// stays well under the tunnel's 4 MiB message limit.
	MaxEncodedBytes = 1 << 20
	// MaxDecodedBytes bounds the batch once decompressed (a gzip bomb is
	// refused after reading this much).
	MaxDecodedBytes = 16 << 20
	// MaxSeries bounds the series of one batch.
	MaxSeries = 20000
	// MaxSamples bounds the samples of one batch, all series together.
	MaxSamples = 200000
	// MaxLabels bounds the labels of one series, __name__ included.
	MaxLabels = 64
	// MaxLabelNameBytes and MaxLabelValueBytes bound one label.
	MaxLabelNameBytes  = 256
	MaxLabelValueBytes = 4096
	// MaxMetadata and MaxTargets bound the metadata and target entries.
	MaxMetadata = 4096
	MaxTargets  = 1024
	// MaxHelpBytes bounds MetricMetadata.help and TargetHealth.last_error.
	MaxHelpBytes = 1024
	// MaxSymbols bounds MetricBatch.symbols; each symbol is at most
	// MaxLabelValueBytes. Encode writes a batch with more distinct label
	// strings in the series form.
	MaxSymbols = 1 << 18
)

// MetricNameLabel is the label that holds a series' metric name.
const MetricNameLabel = "__name__"

// ClusterLabel is the label every series carries: the name of the cluster
// it comes from. The hub sets it from the agent's identity.
const ClusterLabel = "cluster"

// Encode marshals and compresses b, its series in the symbol form
// (MetricBatch.symbol_series; hubs that name fleetv1.FeatureMetricSymbols
// read it). It refuses a batch Decode would refuse. b is not changed.
func Encode(b *MetricBatch) ([]byte, error) {
	if err := Validate(b); err != nil {
		return nil, err
	}
	w, ok := symbolForm(b)
	if !ok {
		return encode(b)
	}
	return encode(w)
}

// EncodeSeriesForm is Encode writing the series as Series messages (field
// 1), as hubs without fleetv1.FeatureMetricSymbols read them.
func EncodeSeriesForm(b *MetricBatch) ([]byte, error) {
	if err := Validate(b); err != nil {
		return nil, err
	}
	return encode(b)
}

// symbolForm returns b with its series in the symbol form, or false if
// they have more distinct strings than MaxSymbols.
func symbolForm(b *MetricBatch) (*MetricBatch, bool) {
	w := &MetricBatch{Metadata: b.Metadata, Targets: b.Targets, TargetsReported: b.TargetsReported,
		SymbolSeries: make([]*SymbolSeries, len(b.Series))}
	index := make(map[string]uint32, 2*len(b.Series))
	ref := func(s string) uint32 {
		r, ok := index[s]
		if !ok {
			r = uint32(len(w.Symbols))
			index[s] = r
			w.Symbols = append(w.Symbols, s)
		}
		return r
	}
	nrefs, nsamples := 0, 0
	for _, s := range b.Series {
		nrefs += 2 * len(s.Labels)
		nsamples += len(s.Samples)
	}
	refs := make([]uint32, 0, nrefs)
	ts := make([]int64, 0, nsamples)
	vs := make([]float64, 0, nsamples)
	for i, s := range b.Series {
		from := len(refs)
		for _, l := range s.Labels {
			refs = append(refs, ref(l.Name), ref(l.Value))
		}
		if len(w.Symbols) > MaxSymbols {
			return nil, false
		}
		tfrom := len(ts)
		for _, smp := range s.Samples {
			ts = append(ts, smp.TimestampMs)
			vs = append(vs, smp.Value)
		}
		w.SymbolSeries[i] = &SymbolSeries{LabelRefs: refs[from:len(refs):len(refs)], TimestampsMs: ts[tfrom:len(ts):len(ts)], Values: vs[tfrom:len(vs):len(vs)]}
	}
	return w, true
}

func encode(b *MetricBatch) ([]byte, error) {
	raw, err := proto.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("marshal metric batch: %w", err)
	}
	if len(raw) > MaxDecodedBytes {
		return nil, fmt.Errorf("metric batch is %d bytes, over the %d-byte limit", len(raw), MaxDecodedBytes)
	}
	data := Gzip(raw)
	if len(data) > MaxEncodedBytes {
		return nil, fmt.Errorf("compressed metric batch is %d bytes, over the %d-byte limit", len(data), MaxEncodedBytes)
	}
	return data, nil
}

// Gzip compresses raw as Encode does (one gzip member, BestSpeed) without
// looking at what it holds: for tests and tools that need a batch Encode
// would refuse to write.
func Gzip(raw []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed) // a valid level: no error
	_, _ = zw.Write(raw)                               // a bytes.Buffer does not fail
	_ = zw.Close()
	return buf.Bytes()
}

// Gunzip decompresses one batch: a single gzip member (RFC 1952, its
// reserved flag bits clear) of at most MaxEncodedBytes with nothing after
// it, at most MaxDecodedBytes once decompressed.
func Gunzip(data []byte) ([]byte, error) {
	if len(data) > MaxEncodedBytes {
		return nil, fmt.Errorf("%w: %d compressed bytes, limit %d", ErrTooLarge, len(data), MaxEncodedBytes)
	}
	if err := CheckGzipHeader(data); err != nil {
		return nil, err
	}
	br := bytes.NewReader(data)
	zr, err := gzip.NewReader(br)
	if err != nil {
		return nil, fmt.Errorf("metric batch is not gzip: %w", err)
	}
	zr.Multistream(false)
	raw, err := io.ReadAll(io.LimitReader(zr, MaxDecodedBytes+1))
	if err != nil {
		return nil, fmt.Errorf("decompress metric batch: %w", err)
	}
	if len(raw) > MaxDecodedBytes {
		return nil, fmt.Errorf("%w: over %d bytes decompressed", ErrTooLarge, MaxDecodedBytes)
	}
	if br.Len() > 0 {
		return nil, TrailingBytesError(br.Len())
	}
	return raw, nil
}

// CheckGzipHeader refuses a gzip header with reserved flag bits set,
// which RFC 1952 says a reader must refuse (Go's reader does not check;
// others do, and every decoder of a batch must agree).
func CheckGzipHeader(data []byte) error {
	if len(data) >= 4 && data[3]&0xe0 != 0 {
		return fmt.Errorf("metric batch is not gzip: reserved header flags %#x set", data[3]&0xe0)
	}
	return nil
}

// ErrTooLarge is wrapped by Decode's errors for a batch over a size limit.
var ErrTooLarge = errors.New("metric batch too large")

// TrailingBytesError is Decode's error for bytes after the gzip member: a
// batch is exactly one member, as Encode writes it.
type TrailingBytesError int

func (e TrailingBytesError) Error() string {
	return fmt.Sprintf("metric batch has %d bytes after its gzip stream (a batch is one gzip member)", int(e))
}

// Decode decompresses, unmarshals and validates one batch.
func Decode(data []byte) (*MetricBatch, error) {
	raw, err := Gunzip(data)
	if err != nil {
		return nil, err
	}
	var b MetricBatch
	if err := proto.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("metric batch does not decode: %w", err)
	}
	if err := fromSymbols(&b); err != nil {
		return nil, err
	}
	if err := Validate(&b); err != nil {
		return nil, err
	}
	return &b, nil
}

// fromSymbols turns b's symbol_series into series after those b has,
// and clears the symbol fields.
func fromSymbols(b *MetricBatch) error {
	if len(b.Series)+len(b.SymbolSeries) > MaxSeries {
		return fmt.Errorf("%w: %d series, limit %d", ErrTooLarge, len(b.Series)+len(b.SymbolSeries), MaxSeries)
	}
	if len(b.Symbols) > MaxSymbols {
		return fmt.Errorf("%w: %d symbols, limit %d", ErrTooLarge, len(b.Symbols), MaxSymbols)
	}
	for i, s := range b.Symbols {
		if len(s) > MaxLabelValueBytes {
			return fmt.Errorf("symbol %d is %d bytes, limit %d", i, len(s), MaxLabelValueBytes)
		}
	}
	samples := 0
	for _, s := range b.Series {
		samples += len(s.Samples)
	}
	for i, ss := range b.SymbolSeries {
		at := len(b.Series)
		refs := ss.LabelRefs
		switch {
		case len(refs)%2 != 0:
			return fmt.Errorf("series %d: %d label refs, not (name, value) pairs", at, len(refs))
		case len(refs) > 2*MaxLabels:
			return fmt.Errorf("series %d: %d labels, limit %d", at, len(refs)/2, MaxLabels)
		case len(ss.TimestampsMs) != len(ss.Values):
			return fmt.Errorf("series %d: %d timestamps and %d values", at, len(ss.TimestampsMs), len(ss.Values))
		}
		if samples += len(ss.TimestampsMs); samples > MaxSamples {
			return fmt.Errorf("%w: over %d samples", ErrTooLarge, MaxSamples)
		}
		s := &Series{Labels: make([]*Label, len(refs)/2), Samples: make([]*Sample, len(ss.TimestampsMs))}
		for j := 0; j < len(refs); j += 2 {
			if max(refs[j], refs[j+1]) >= uint32(len(b.Symbols)) {
				return fmt.Errorf("series %d: label %d refers to symbol %d of %d", at, j/2, max(refs[j], refs[j+1]), len(b.Symbols))
			}
			s.Labels[j/2] = &Label{Name: b.Symbols[refs[j]], Value: b.Symbols[refs[j+1]]}
		}
		for k, t := range ss.TimestampsMs {
			s.Samples[k] = &Sample{TimestampMs: t, Value: ss.Values[k]}
		}
		b.Series = append(b.Series, s)
		b.SymbolSeries[i] = nil
	}
	b.Symbols, b.SymbolSeries = nil, nil
	return nil
}

// Validate checks b against the limits and Prometheus' rules for names:
// every series has a metric name, label names are Prometheus' legacy
// names (letters, digits and '_', not starting with a digit; "__" only in
// __name__), appear once, values are UTF-8, and samples are in strictly
// increasing time order. Errors name the series and label at fault.
func Validate(b *MetricBatch) error {
	if len(b.Symbols) > 0 || len(b.SymbolSeries) > 0 {
		return errors.New("metric batch holds symbol_series: Encode writes them, Decode turns them into series")
	}
	if len(b.Series) > MaxSeries {
		return fmt.Errorf("%w: %d series, limit %d", ErrTooLarge, len(b.Series), MaxSeries)
	}
	if len(b.Metadata) > MaxMetadata {
		return fmt.Errorf("%w: %d metadata entries, limit %d", ErrTooLarge, len(b.Metadata), MaxMetadata)
	}
	if len(b.Targets) > MaxTargets {
		return fmt.Errorf("%w: %d targets, limit %d", ErrTooLarge, len(b.Targets), MaxTargets)
	}
	samples := 0
	for i, s := range b.Series {
		samples += len(s.Samples)
		if samples > MaxSamples {
			return fmt.Errorf("%w: over %d samples", ErrTooLarge, MaxSamples)
		}
		if err := validateSeries(s); err != nil {
			return fmt.Errorf("series %d: %w", i, err)
		}
	}
	for i, m := range b.Metadata {
		if !ValidMetricName(m.Metric) {
			return fmt.Errorf("metadata %d: metric name %q is not a Prometheus metric name", i, m.Metric)
		}
		switch m.Type {
		case "counter", "gauge", "histogram", "gaugehistogram", "summary", "info", "stateset", "unknown", "":
		default:
			return fmt.Errorf("metadata %d (%s): unknown metric type %q", i, m.Metric, m.Type)
		}
		if err := boundedText("help", m.Help); err != nil {
			return fmt.Errorf("metadata %d (%s): %w", i, m.Metric, err)
		}
		if err := boundedText("unit", m.Unit); err != nil {
			return fmt.Errorf("metadata %d (%s): %w", i, m.Metric, err)
		}
	}
	for i, t := range b.Targets {
		for _, f := range []struct{ name, v string }{{"job", t.Job}, {"url", t.Url}, {"health", t.Health}, {"last_error", t.LastError}} {
			if err := boundedText(f.name, f.v); err != nil {
				return fmt.Errorf("target %d: %w", i, err)
			}
		}
	}
	return nil
}

func boundedText(field, v string) error {
	if len(v) > MaxHelpBytes {
		return fmt.Errorf("%s is %d bytes, limit %d", field, len(v), MaxHelpBytes)
	}
	if !utf8.ValidString(v) {
		return fmt.Errorf("%s is not UTF-8", field)
	}
	return nil
}

func validateSeries(s *Series) error {
	if len(s.Labels) > MaxLabels {
		return fmt.Errorf("%d labels, limit %d", len(s.Labels), MaxLabels)
	}
	if len(s.Samples) == 0 {
		return errors.New("no samples")
	}
	name := ""
	for j, l := range s.Labels {
		if !ValidLabelName(l.Name) && l.Name != MetricNameLabel {
			return fmt.Errorf("label %d: %q is not a Prometheus label name", j, trunc(l.Name))
		}
		if len(l.Value) > MaxLabelValueBytes {
			return fmt.Errorf("label %s: value is %d bytes, limit %d", l.Name, len(l.Value), MaxLabelValueBytes)
		}
		if !utf8.ValidString(l.Value) {
			return fmt.Errorf("label %s: value is not UTF-8", l.Name)
		}
		if l.Value == "" {
			return fmt.Errorf("label %s: empty value (Prometheus drops such labels; leave it out)", l.Name)
		}
		for _, k := range s.Labels[:j] {
			if k.Name == l.Name {
				return fmt.Errorf("label %s appears twice", l.Name)
			}
		}
		if l.Name == MetricNameLabel {
			name = l.Value
		}
	}
	if name == "" {
		return errors.New("no __name__ label")
	}
	if !ValidMetricName(name) {
		return fmt.Errorf("metric name %q is not a Prometheus metric name", trunc(name))
	}
	var last int64 = math.MinInt64
	for k, smp := range s.Samples {
		if smp.TimestampMs <= last {
			return fmt.Errorf("%s: sample %d at %d is not after the one before (%d)", name, k, smp.TimestampMs, last)
		}
		last = smp.TimestampMs
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// ValidLabelName reports whether n is a Prometheus legacy label name that
// a peer may set: [a-zA-Z_][a-zA-Z0-9_]*, at most MaxLabelNameBytes, and
// not starting with "__" (reserved for Prometheus' own labels).
func ValidLabelName(n string) bool {
	if n == "" || len(n) > MaxLabelNameBytes || len(n) >= 2 && n[0] == '_' && n[1] == '_' {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// ValidMetricName reports whether n is a Prometheus legacy metric name:
// [a-zA-Z_:][a-zA-Z0-9_:]*, at most MaxLabelNameBytes.
func ValidMetricName(n string) bool {
	if n == "" || len(n) > MaxLabelNameBytes {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
