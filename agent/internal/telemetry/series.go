package telemetry

import (
	"github.com/tetherfleet/tether/agent/internal/staleness"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// family describes one metric family for the batch metadata.
type family struct{ name, typ, help string }

// collection accumulates the series of one collection at one timestamp
// and ships them whenever MaxSeries are full, so a large cluster never
// holds more than one batch of series in memory.
type collection struct {
	ts     int64
	max    int
	emit   func(*telemetryv1.MetricBatch) error
	batch  *telemetryv1.MetricBatch
	known  map[string]bool
	series int
	err    error
	// stale, if set, is told every series added.
	stale *staleness.Tracker
	// partial: a source of the collection failed without failing it
	// (one kubelet of several): its series are missing, not gone.
	partial bool
}

func newCollection(ts int64, max int, emit func(*telemetryv1.MetricBatch) error) *collection {
	return &collection{ts: ts, max: max, emit: emit, batch: &telemetryv1.MetricBatch{}, known: map[string]bool{}}
}

// add appends one sample of metric f with the label pairs (name, value,
// name, value, ...); pairs with an empty value are left out, as
// Prometheus drops them anyway.
func (c *collection) add(f family, v float64, pairs ...string) {
	if c.err != nil {
		return
	}
	if !c.known[f.name] {
		c.known[f.name] = true
		c.batch.Metadata = append(c.batch.Metadata, &telemetryv1.MetricMetadata{Metric: f.name, Type: f.typ, Help: f.help})
	}
	ls := make([]*telemetryv1.Label, 0, len(pairs)/2+2)
	ls = append(ls, &telemetryv1.Label{Name: telemetryv1.MetricNameLabel, Value: f.name})
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			continue
		}
		ls = append(ls, &telemetryv1.Label{Name: pairs[i], Value: boundValue(pairs[i+1], telemetryv1.MaxLabelValueBytes)})
	}
	if c.stale != nil {
		c.stale.Seen(ls) // before the shipper adds its cluster label
	}
	c.addSeries(&telemetryv1.Series{Labels: ls, Samples: []*telemetryv1.Sample{{TimestampMs: c.ts, Value: v}}})
}

// addSeries appends a series as it is (a staleness marker).
func (c *collection) addSeries(s *telemetryv1.Series) {
	if c.err != nil {
		return
	}
	c.batch.Series = append(c.batch.Series, s)
	c.series++
	if len(c.batch.Series) >= c.max {
		c.flush()
	}
}

func (c *collection) flush() error {
	if c.err == nil && len(c.batch.Series) > 0 {
		c.err = c.emit(c.batch)
	}
	c.batch = &telemetryv1.MetricBatch{}
	return c.err
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
