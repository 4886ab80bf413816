package telemetry

import (
	"fmt"
	"hash/maphash"
	"math"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/encoding/protowire"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// The symbol form of a batch (MetricBatch.symbols and symbol_series) is
// decoded after every field of the batch is read, since a peer may send
// the fields in any order. Each symbol is checked once (its length and
// UTF-8); a series is a list of symbol indexes, so a known series costs a
// hash over its symbols' hashes, which are made once per batch: the key
// does not depend on where the agent put a string in this batch's table.

// addSymbol records one symbol, checked as proto.Unmarshal and
// telemetryv1.Decode check it.
func (d *decoded) addSymbol(v []byte) error {
	if len(d.symbols) == telemetryv1.MaxSymbols {
		return fmt.Errorf("%w: over %d symbols", telemetryv1.ErrTooLarge, telemetryv1.MaxSymbols)
	}
	if len(v) > telemetryv1.MaxLabelValueBytes {
		return fmt.Errorf("symbol %d is %d bytes, limit %d", len(d.symbols), len(v), telemetryv1.MaxLabelValueBytes)
	}
	if !utf8.Valid(v) {
		return fmt.Errorf("%w: symbol %d is not UTF-8", errBadWire, len(d.symbols))
	}
	d.symbols = append(d.symbols, v)
	return nil
}

// decodeSymbolSeries decodes the batch's symbol series, after its series
// of field 1.
func (d *decoded) decodeSymbolSeries(cluster string) error {
	if len(d.symSeries) == 0 {
		return nil
	}
	if d.cache != nil {
		c := d.cache.caches
		for _, s := range d.symbols {
			d.symKeys = append(d.symKeys, seriesKey{maphash.Bytes(c.seedE, s), maphash.Bytes(c.seedF, s)})
		}
	}
	for _, v := range d.symSeries {
		if err := d.decodeSymbolSeriesOne(v, cluster); err != nil {
			return fmt.Errorf("series %d: %w", len(d.series), err)
		}
	}
	return nil
}

// symState is one SymbolSeries while it is read.
type symState struct {
	refs       [2 * telemetryv1.MaxLabels]uint32
	nrefs      int
	from       int // its first sample in decoded.samples
	nts, nvals int
}

// add records element v of field num of a SymbolSeries.
func (d *decoded) add(st *symState, num protowire.Number, v uint64) error {
	var i int
	switch num {
	case 1:
		if st.nrefs == len(st.refs) {
			return fmt.Errorf("over %d labels", telemetryv1.MaxLabels)
		}
		// proto keeps the low 32 bits of a uint32 field's varint.
		st.refs[st.nrefs] = uint32(v)
		st.nrefs++
		return nil
	case 2:
		i = st.from + st.nts
		st.nts++
	default:
		i = st.from + st.nvals
		st.nvals++
	}
	// Timestamps and values may come in any order: the sample exists once
	// either did.
	if i == len(d.samples) {
		if len(d.samples) == telemetryv1.MaxSamples {
			return fmt.Errorf("%w: over %d samples", telemetryv1.ErrTooLarge, telemetryv1.MaxSamples)
		}
		d.samples = append(d.samples, sample{})
	}
	if num == 2 {
		d.samples[i].t = int64(v)
	} else {
		d.samples[i].v = math.Float64frombits(v)
	}
	return nil
}

// decodeSymbolSeriesOne decodes and checks one SymbolSeries message; its
// repeated fields may come packed or one by one, as proto allows.
func (d *decoded) decodeSymbolSeriesOne(b []byte, cluster string) error {
	st := symState{from: len(d.samples)}
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case (num == 1 || num == 2) && typ == protowire.VarintType, num == 3 && typ == protowire.Fixed64Type:
			v, n := consumeElem(num, b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			b = b[n:]
			if err := d.add(&st, num, v); err != nil {
				return err
			}
		case (num == 1 || num == 2 || num == 3) && typ == protowire.BytesType:
			packed, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			b = b[n:]
			if num == 1 {
				// Most of a live batch: a series' refs, packed, mostly
				// one byte each.
				for len(packed) > 0 {
					v, n := uint64(packed[0]), 1
					if v >= 0x80 {
						if v, n = protowire.ConsumeVarint(packed); n < 0 {
							return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
						}
					}
					packed = packed[n:]
					if st.nrefs == len(st.refs) {
						return fmt.Errorf("over %d labels", telemetryv1.MaxLabels)
					}
					// proto keeps the low 32 bits of a uint32 field's varint.
					st.refs[st.nrefs] = uint32(v)
					st.nrefs++
				}
				continue
			}
			for len(packed) > 0 {
				v, n := consumeElem(num, packed)
				if n < 0 {
					return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
				}
				packed = packed[n:]
				if err := d.add(&st, num, v); err != nil {
					return err
				}
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: %v", errBadWire, protowire.ParseError(n))
			}
			b = b[n:]
		}
	}
	refs := st.refs[:st.nrefs]
	if len(refs)%2 != 0 {
		return fmt.Errorf("%d label refs, not (name, value) pairs", len(refs))
	}
	if st.nts != st.nvals {
		return fmt.Errorf("%d timestamps and %d values", st.nts, st.nvals)
	}
	for j, r := range refs {
		if int(r) >= len(d.symbols) {
			return fmt.Errorf("label %d refers to symbol %d of %d", j/2, r, len(d.symbols))
		}
	}
	var (
		key    seriesKey
		cached *cachedSeries
		lset   labels.Labels
	)
	if d.cache != nil {
		key = d.symbolKey(refs)
		cached = d.cache.get(key)
	}
	if cached != nil {
		lset = cached.lset
	} else {
		var lbuf [telemetryv1.MaxLabels]wireLabel
		ls := lbuf[:0]
		for j := 0; j < len(refs); j += 2 {
			ls = append(ls, wireLabel{name: d.symbols[refs[j]], value: d.symbols[refs[j+1]]})
		}
		var err error
		if lset, err = d.checkLabels(ls, cluster); err != nil {
			return err
		}
	}
	if err := checkSamples(d.samples[st.from:], lset); err != nil {
		return err
	}
	if cached == nil && d.cache != nil {
		cached = d.cache.add(key, lset)
	}
	d.series = append(d.series, decodedSeries{lset: lset, from: st.from, to: len(d.samples), cached: cached})
	return nil
}

// consumeElem reads one element of SymbolSeries field num: a fixed64
// value (field 3) or a varint.
func consumeElem(num protowire.Number, b []byte) (uint64, int) {
	if num == 3 {
		return protowire.ConsumeFixed64(b)
	}
	return protowire.ConsumeVarint(b)
}

// symbolKey is the cache key of a series given as symbol refs: two
// polynomial sums over the sequence of its symbols' hashes, each chain
// with its own secret odd multiplier (seriesCaches.mulA, mulB). The
// symbols' hashes are secret random values (maphash, seeds of this
// process), so two different sequences of strings give one key with a
// probability near 2^-126 and an agent cannot aim at it; the key names the
// strings, not where this batch's table put them.
func (d *decoded) symbolKey(refs []uint32) seriesKey {
	c := d.cache.caches
	a, b := uint64(len(refs)), uint64(len(refs))
	for _, r := range refs {
		k := d.symKeys[r]
		a = a*c.mulA + k.a
		b = b*c.mulB + k.b
	}
	return seriesKey{a, b}
}
