package telemetry

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"unicode/utf8"
	"unsafe"

	// The standard library's format with a faster inflate: a third of
	// the receiver's decoding (FuzzGunzipMatchesStdlib holds it to the
	// standard library's answers).
	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// decodeBatch is the receiver's decoder of a metrics payload: it accepts
// exactly what telemetryv1.Decode accepts (FuzzDecodeBatchMatchesDecode
// holds it to that) but reads the series straight from the protobuf wire
// into Prometheus label sets and one flat slice of samples, without a
// message object per label and per sample. Series are most of a batch,
// and decoding them into messages cost more than appending them (see
// docs/BENCHMARKS.md, "Telemetry ingestion"). Metadata and targets, few
// and small, go through proto.Unmarshal and telemetryv1.Validate.
//
// Every series gets cluster="<cluster>"; a series naming another cluster
// is an error.

type sample struct {
	t int64
	v float64
}

type decodedSeries struct {
	lset labels.Labels
	// samples index decoded.samples.
	from, to int
	// cached is the series' entry in the cluster's series cache (nil if
	// not cached): its ref is the TSDB's.
	cached *cachedSeries
}

type decoded struct {
	series  []decodedSeries
	samples []sample
	// rest holds the batch's metadata and targets.
	rest telemetryv1.MetricBatch
	// raw is the decompressed batch.
	raw bytes.Buffer
	sb  labels.ScratchBuilder
	// restBuf collects the metadata, target and targets_reported fields
	// for proto.Unmarshal.
	restBuf []byte
	// cache is the cluster's series cache, locked by the caller; nil: none.
	cache *clusterSeries
	// symbols and symSeries are the batch's symbol form (fields 5 and 6),
	// decoded once every field is read; symKeys are the symbols' hashes
	// (with a cache).
	symbols   [][]byte
	symSeries [][]byte
	symKeys   []seriesKey
}

var decodedPool = sync.Pool{New: func() any { return new(decoded) }}

var gzipPool sync.Pool

func (d *decoded) reset() {
	d.series = d.series[:0]
	d.samples = d.samples[:0]
	d.rest.Reset()
	d.raw.Reset()
	d.restBuf = d.restBuf[:0]
	d.cache = nil
	clear(d.symbols)
	clear(d.symSeries)
	d.symbols, d.symSeries, d.symKeys = d.symbols[:0], d.symSeries[:0], d.symKeys[:0]
}

// release returns d to the pool unless it grew past what a typical batch
// needs (a rare huge batch should not pin its memory).
func (d *decoded) release() {
	if d.raw.Cap() > 4<<20 || cap(d.samples) > 1<<18 || cap(d.symbols) > 1<<16 {
		return
	}
	d.reset()
	decodedPool.Put(d)
}

// gunzip decompresses data into d.raw as telemetryv1.Gunzip does.
func (d *decoded) gunzip(data []byte) error {
	if len(data) > telemetryv1.MaxEncodedBytes {
		return fmt.Errorf("%w: %d compressed bytes, limit %d", telemetryv1.ErrTooLarge, len(data), telemetryv1.MaxEncodedBytes)
	}
	if err := telemetryv1.CheckGzipHeader(data); err != nil {
		return err
	}
	br := bytes.NewReader(data)
	zr, _ := gzipPool.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(br)
	} else {
		err = zr.Reset(br)
	}
	if err != nil {
		return fmt.Errorf("metric batch is not gzip: %w", err)
	}
	defer gzipPool.Put(zr)
	zr.Multistream(false)
	if _, err := d.raw.ReadFrom(io.LimitReader(zr, telemetryv1.MaxDecodedBytes+1)); err != nil {
		return fmt.Errorf("decompress metric batch: %w", err)
	}
	if d.raw.Len() > telemetryv1.MaxDecodedBytes {
		return fmt.Errorf("%w: over %d bytes decompressed", telemetryv1.ErrTooLarge, telemetryv1.MaxDecodedBytes)
	}
	if br.Len() > 0 {
		return telemetryv1.TrailingBytesError(br.Len())
	}
	return nil
}

var errBadWire = errors.New("metric batch does not decode")

// decodeBatch decodes and validates one payload of cluster, with cache
// the cluster's series cache (locked by the caller) or nil.
func decodeBatch(data []byte, cluster string, cache *clusterSeries) (*decoded, error) {
	d := decodedPool.Get().(*decoded)
	if cache != nil && cache.caches != nil {
		d.cache = cache
	}
	if err := d.decode(data, cluster); err != nil {
		d.release()
		return nil, err
	}
	return d, nil
}

func (d *decoded) decode(data []byte, cluster string) error {
	if err := d.gunzip(data); err != nil {
		return err
	}
	b := d.raw.Bytes()
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		tag := b[:n]
		b = b[n:]
		if (num == 1 || num == 5 || num == 6) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 5 {
				if err := d.addSymbol(v); err != nil {
					return err
				}
				continue
			}
			if len(d.series)+len(d.symSeries) == telemetryv1.MaxSeries {
				return fmt.Errorf("%w: over %d series", telemetryv1.ErrTooLarge, telemetryv1.MaxSeries)
			}
			if num == 6 {
				// Decoded once the symbols are all read.
				d.symSeries = append(d.symSeries, v)
				continue
			}
			if err := d.decodeSeries(v, cluster); err != nil {
				return fmt.Errorf("series %d: %w", len(d.series), err)
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		if (num == 2 || num == 3) && typ == protowire.BytesType || num == 4 && typ == protowire.VarintType {
			d.restBuf = append(append(d.restBuf, tag...), b[:n]...)
		}
		b = b[n:]
	}
	if err := d.decodeSymbolSeries(cluster); err != nil {
		return err
	}
	if len(d.restBuf) > 0 {
		if err := proto.Unmarshal(d.restBuf, &d.rest); err != nil {
			return fmt.Errorf("%w: %v", errBadWire, err)
		}
		if err := telemetryv1.Validate(&d.rest); err != nil {
			return err
		}
	}
	return nil
}

// label is one label as it arrives, its strings still in the raw batch.
type wireLabel struct{ name, value []byte }

// decodeSeries decodes and checks one Series message, as
// telemetryv1.Validate checks it. The labels of a series the cluster's
// cache knows are not decoded again (see seriescache.go).
func (d *decoded) decodeSeries(b []byte, cluster string) error {
	var rbuf [telemetryv1.MaxLabels][]byte
	raw := rbuf[:0]
	from := len(d.samples)
	// The Label fields' span in the message, for the cache key, while
	// nothing else lies between them (as every encoder writes them).
	whole := b
	lstart, lend, contiguous := 0, 0, true
	for len(b) > 0 {
		at := len(whole) - len(b)
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 1 {
				if len(raw) == telemetryv1.MaxLabels {
					return fmt.Errorf("over %d labels", telemetryv1.MaxLabels)
				}
				switch {
				case len(raw) == 0:
					lstart = at
				case at != lend:
					contiguous = false
				}
				lend = len(whole) - len(b)
				raw = append(raw, v)
				continue
			}
			s, err := decodeSample(v)
			if err != nil {
				return err
			}
			if len(d.samples) == telemetryv1.MaxSamples {
				return fmt.Errorf("%w: over %d samples", telemetryv1.ErrTooLarge, telemetryv1.MaxSamples)
			}
			d.samples = append(d.samples, s)
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		b = b[n:]
	}
	var (
		key    seriesKey
		cached *cachedSeries
		lset   labels.Labels
	)
	if d.cache != nil {
		if contiguous {
			key = d.cache.spanKey(whole[lstart:lend])
		} else {
			key = d.cache.key(raw)
		}
		cached = d.cache.get(key)
	}
	if cached != nil {
		lset = cached.lset
	} else {
		var err error
		if lset, err = d.decodeLabels(raw, cluster); err != nil {
			return err
		}
	}
	if err := checkSamples(d.samples[from:], lset); err != nil {
		return err
	}
	if cached == nil && d.cache != nil {
		cached = d.cache.add(key, lset)
	}
	d.series = append(d.series, decodedSeries{lset: lset, from: from, to: len(d.samples), cached: cached})
	return nil
}

// checkSamples checks the samples of one series: at least one, in
// strictly increasing time order.
func checkSamples(ss []sample, lset labels.Labels) error {
	if len(ss) == 0 {
		return errors.New("no samples")
	}
	last := int64(math.MinInt64)
	for k, s := range ss {
		if s.t <= last {
			return fmt.Errorf("%s: sample %d at %d is not after the one before (%d)", trunc(lset.Get(telemetryv1.MetricNameLabel)), k, s.t, last)
		}
		last = s.t
	}
	return nil
}

// decodeLabels decodes and checks the Label fields of one series and
// returns its label set with cluster="<cluster>".
func (d *decoded) decodeLabels(raw [][]byte, cluster string) (labels.Labels, error) {
	var lbuf [telemetryv1.MaxLabels]wireLabel
	ls := lbuf[:0]
	for _, v := range raw {
		l, err := decodeLabel(v)
		if err != nil {
			return labels.EmptyLabels(), err
		}
		ls = append(ls, l)
	}
	return d.checkLabels(ls, cluster)
}

// checkLabels checks the labels of one series, as telemetryv1.Validate
// does, and returns its label set with cluster="<cluster>". Their
// strings are UTF-8 already.
func (d *decoded) checkLabels(ls []wireLabel, cluster string) (labels.Labels, error) {
	name := ""
	d.sb.Reset()
	// The strings point into d.raw, which is reused: every build of the
	// labels package copies them in Labels() (slicelabels only when told
	// they are unsafe).
	d.sb.SetUnsafeAdd(true)
	for j, l := range ls {
		if !validLabelName(l.name) && string(l.name) != telemetryv1.MetricNameLabel {
			return labels.EmptyLabels(), fmt.Errorf("label %d: %q is not a Prometheus label name", j, trunc(string(l.name)))
		}
		if len(l.value) > telemetryv1.MaxLabelValueBytes {
			return labels.EmptyLabels(), fmt.Errorf("label %s: value is %d bytes, limit %d", l.name, len(l.value), telemetryv1.MaxLabelValueBytes)
		}
		if !utf8.Valid(l.value) {
			return labels.EmptyLabels(), fmt.Errorf("label %s: value is not UTF-8", l.name)
		}
		if len(l.value) == 0 {
			return labels.EmptyLabels(), fmt.Errorf("label %s: empty value (Prometheus drops such labels; leave it out)", l.name)
		}
		for _, k := range ls[:j] {
			if bytes.Equal(k.name, l.name) {
				return labels.EmptyLabels(), fmt.Errorf("label %s appears twice", l.name)
			}
		}
		switch string(l.name) {
		case telemetryv1.MetricNameLabel:
			name = yolo(l.value)
		case telemetryv1.ClusterLabel:
			if string(l.value) != cluster {
				return labels.EmptyLabels(), fmt.Errorf("%w: names cluster %q; this agent is cluster %q and may only send its own series", errOtherCluster, trunc(string(l.value)), cluster)
			}
			continue
		}
		d.sb.Add(yolo(l.name), yolo(l.value))
	}
	if name == "" {
		return labels.EmptyLabels(), errors.New("no __name__ label")
	}
	if !telemetryv1.ValidMetricName(name) {
		return labels.EmptyLabels(), fmt.Errorf("metric name %q is not a Prometheus metric name", trunc(name))
	}
	d.sb.Add(telemetryv1.ClusterLabel, cluster)
	d.sb.Sort()
	return d.sb.Labels(), nil
}

// yolo is b as a string without a copy; the caller keeps it no longer
// than b is unchanged.
func yolo(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

var errOtherCluster = errors.New("series of another cluster")

// validLabelName is telemetryv1.ValidLabelName on bytes.
func validLabelName(n []byte) bool {
	if len(n) == 0 || len(n) > telemetryv1.MaxLabelNameBytes || len(n) >= 2 && n[0] == '_' && n[1] == '_' {
		return false
	}
	for i, c := range n {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// decodeLabel decodes a Label message; its strings must be UTF-8, as
// proto3 strings are.
func decodeLabel(b []byte) (wireLabel, error) {
	var l wireLabel
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return l, fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return l, fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			b = b[n:]
			if !utf8.Valid(v) {
				return l, fmt.Errorf("%w: label string is not UTF-8", errBadWire)
			}
			if num == 1 {
				l.name = v
			} else {
				l.value = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return l, fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		b = b[n:]
	}
	return l, nil
}

// decodeSample decodes a Sample message.
func decodeSample(b []byte) (sample, error) {
	var s sample
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return s, fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == 1 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return s, fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			s.t = int64(v)
			b = b[n:]
		case num == 2 && typ == protowire.Fixed64Type:
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return s, fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			s.v = math.Float64frombits(v)
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return s, fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	return s, nil
}

// consumeTag is protowire.ConsumeTag refusing field numbers above
// protowire.MaxValidNumber too, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, -1
	}
	return num, typ, n
}
