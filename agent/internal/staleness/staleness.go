// Package staleness tracks the series a source (one scrape target, the
// inventory collector) reported in its last round, so that the series it
// stops reporting get a Prometheus staleness marker (a sample of
// value.StaleNaN bits) instead of lingering in instant queries for the
// 5-minute lookback, as Prometheus' own scrape loop does.
//
// A Tracker is used by one goroutine at a time. A round is the Seen calls
// between two End (or Abort) calls. A series is keyed by its whole label
// set, __name__ included, in any label order. A Tracker holds at most
// Config.MaxSeries series (what a source sends is untrusted input: an
// exporter can expose any number of series); past that, new series are
// not tracked and counted (Untracked), and get no marker when they go.
package staleness

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/value"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// DefaultMaxSeries bounds one Tracker by default.
const DefaultMaxSeries = 200_000

// Config configures a Tracker.
type Config struct {
	// MaxSeries bounds the series tracked, those of the previous round
	// not yet seen again included; 0 is DefaultMaxSeries.
	MaxSeries int
}

// Tracker is the set of series of one source's last round.
type Tracker struct {
	max   int
	round uint64
	index map[string]int // key -> position in keys and rounds
	keys  []string
	// rounds[i] is the round keys[i] was last seen in.
	rounds    []uint64
	untracked int // in the round under way
	last      int // Untracked of the last round ended
	buf       []byte
	sorted    []*telemetryv1.Label
}

// New returns an empty Tracker; a negative MaxSeries is taken as 0.
func New(cfg Config) *Tracker {
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	return &Tracker{max: cfg.MaxSeries, index: map[string]int{}}
}

// Seen records that the series with labels ls was reported in this
// round. It reports false if the series is not tracked: the Tracker is
// full.
func (t *Tracker) Seen(ls []*telemetryv1.Label) bool {
	t.buf = t.key(t.buf[:0], ls)
	if i, ok := t.index[string(t.buf)]; ok {
		t.rounds[i] = t.round
		return true
	}
	if len(t.keys) >= t.max {
		t.untracked++
		return false
	}
	k := string(t.buf)
	t.index[k] = len(t.keys)
	t.keys = append(t.keys, k)
	t.rounds = append(t.rounds, t.round)
	return true
}

// End ends a complete round: it returns a staleness marker at ts for
// every series tracked but not seen in the round, and forgets them.
func (t *Tracker) End(ts int64) []*telemetryv1.Series {
	var out []*telemetryv1.Series
	j := 0
	for i, k := range t.keys {
		if t.rounds[i] != t.round {
			out = append(out, marker(k, ts))
			delete(t.index, k)
			continue
		}
		if i != j {
			t.keys[j], t.rounds[j] = k, t.rounds[i]
			t.index[k] = j
		}
		j++
	}
	clear(t.keys[j:])
	t.keys, t.rounds = t.keys[:j], t.rounds[:j]
	t.next()
	return out
}

// Abort ends a round that did not see everything (a failed or partial
// collection): nothing is marked stale; the series it saw are tracked,
// and so are those it did not see, until a complete round goes without
// them.
func (t *Tracker) Abort() { t.next() }

// All returns a staleness marker at ts for every tracked series (the
// source went away) and forgets them.
func (t *Tracker) All(ts int64) []*telemetryv1.Series {
	out := make([]*telemetryv1.Series, 0, len(t.keys))
	for _, k := range t.keys {
		out = append(out, marker(k, ts))
	}
	clear(t.index)
	t.keys, t.rounds = nil, nil
	t.next()
	return out
}

// Len is the number of series tracked.
func (t *Tracker) Len() int { return len(t.keys) }

// Untracked is the number of series the last round ended (End, Abort or
// All) saw but could not track.
func (t *Tracker) Untracked() int { return t.last }

func (t *Tracker) next() {
	t.round++
	t.last, t.untracked = t.untracked, 0
}

// key appends the canonical key of ls to b: for each label, sorted by
// name, the length-prefixed name and value (unambiguous whatever bytes
// they hold).
func (t *Tracker) key(b []byte, ls []*telemetryv1.Label) []byte {
	byName := func(x, y *telemetryv1.Label) int { return strings.Compare(x.GetName(), y.GetName()) }
	if !slices.IsSortedFunc(ls, byName) {
		t.sorted = append(t.sorted[:0], ls...)
		slices.SortFunc(t.sorted, byName)
		ls = t.sorted
		defer clear(t.sorted)
	}
	for _, l := range ls {
		b = binary.AppendUvarint(b, uint64(len(l.GetName())))
		b = append(b, l.GetName()...)
		b = binary.AppendUvarint(b, uint64(len(l.GetValue())))
		b = append(b, l.GetValue()...)
	}
	return b
}

// marker is the series of key with one StaleNaN sample at ts.
func marker(key string, ts int64) *telemetryv1.Series {
	var ls []*telemetryv1.Label
	for len(key) > 0 {
		var name, val string
		name, key = next(key)
		val, key = next(key)
		ls = append(ls, &telemetryv1.Label{Name: name, Value: val})
	}
	return &telemetryv1.Series{Labels: ls, Samples: []*telemetryv1.Sample{{TimestampMs: ts, Value: math.Float64frombits(value.StaleNaN)}}}
}

// next splits a length-prefixed string off k (keys are built by key, so
// they are well formed).
func next(k string) (string, string) {
	n, w := binary.Uvarint([]byte(k[:min(len(k), binary.MaxVarintLen64)]))
	k = k[w:]
	return k[:n], k[n:]
}
