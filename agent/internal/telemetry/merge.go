package telemetry

import (
	"slices"
	"strings"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// MaxMergedCollections bounds how many collections of a series one
// outbox entry holds. While the link is down the drain holds nothing, so
// each new batch is merged into the newest pending entry until it holds
// this many samples per series: a backlog then carries each label set
// once per MaxMergedCollections collections instead of once per
// collection, which is most of its size on disk and most of the hub's
// work to take it in (docs/BENCHMARKS.md, "Telemetry backlog").
const MaxMergedCollections = 10

// mergingOutbox is an outbox that can rewrite its newest entry of a kind
// (cache.Cache is one).
type mergingOutbox interface {
	EnqueueMerge(kind string, payload []byte, merge func(tail []byte) ([]byte, bool)) error
}

// seriesKey identifies a series by its label set, whatever the order.
func seriesKey(s *telemetryv1.Series) string {
	ls := slices.Clone(s.Labels)
	slices.SortFunc(ls, func(a, b *telemetryv1.Label) int { return strings.Compare(a.Name, b.Name) })
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.Name)
		b.WriteByte(0xff)
		b.WriteString(l.Value)
		b.WriteByte(0xff)
	}
	return b.String()
}

// mergeInto returns the encoded tail batch with next's samples added, or
// false when that would break a bound: a series' samples not after the
// tail's, more than MaxMergedCollections samples of a series, more than
// maxSeries series, the wire's sample or size limits, or a tail that does
// not decode.
func mergeInto(tail []byte, next *telemetryv1.MetricBatch, maxSeries int) ([]byte, bool) {
	b, err := telemetryv1.Decode(tail)
	if err != nil {
		return nil, false
	}
	index := make(map[string]*telemetryv1.Series, len(b.Series))
	samples := 0
	for _, s := range b.Series {
		index[seriesKey(s)] = s
		samples += len(s.Samples)
	}
	for _, s := range next.Series {
		samples += len(s.Samples)
		old := index[seriesKey(s)]
		if old == nil {
			b.Series = append(b.Series, s)
			continue
		}
		if len(old.Samples)+len(s.Samples) > MaxMergedCollections ||
			len(s.Samples) > 0 && s.Samples[0].TimestampMs <= old.Samples[len(old.Samples)-1].TimestampMs {
			return nil, false
		}
		old.Samples = append(old.Samples, s.Samples...)
	}
	if len(b.Series) > maxSeries || samples > telemetryv1.MaxSamples {
		return nil, false
	}
	for _, m := range next.Metadata {
		if !slices.ContainsFunc(b.Metadata, func(o *telemetryv1.MetricMetadata) bool { return o.Metric == m.Metric }) {
			b.Metadata = append(b.Metadata, m)
		}
	}
	if len(next.Targets) > 0 || next.TargetsReported {
		b.Targets = next.Targets
		b.TargetsReported = b.TargetsReported || next.TargetsReported
	}
	data, err := telemetryv1.Encode(b)
	if err != nil {
		return nil, false
	}
	return data, true
}
