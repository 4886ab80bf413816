package telemetry

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// Outbox is where batches wait for the hub (the agent's cache).
type Outbox interface {
	Enqueue(kind string, payload []byte) error
}

// ShipperConfig configures a Shipper.
type ShipperConfig struct {
	// Cluster returns this agent's cluster name ("" before enrolment;
	// Emit then refuses with ErrNotEnrolled).
	Cluster func() string
	Outbox  Outbox
	// Notify wakes the outbox drain (link.KickOutbox); nil: none.
	Notify func()
	// MaxSeries bounds the series of one enqueued batch; 0 is
	// DefaultMaxSeries.
	MaxSeries int
}

// DefaultMaxSeries is the series of one outbox entry at most: about
// 60-150 KB compressed for typical inventory series, far under
// telemetryv1.MaxEncodedBytes.
const DefaultMaxSeries = 5000

// Sentinel errors of the package.
var (
	// ErrNotEnrolled: the agent has no cluster name yet to label with.
	ErrNotEnrolled = errors.New("telemetry: agent not enrolled yet (no cluster name)")
)

// Shipper labels, cuts, encodes and enqueues metric batches. It is safe
// for concurrent use.
type Shipper struct{ cfg ShipperConfig }

// NewShipper returns a Shipper.
func NewShipper(cfg ShipperConfig) (*Shipper, error) {
	if cfg.Cluster == nil || cfg.Outbox == nil {
		return nil, errors.New("telemetry: ShipperConfig.Cluster and Outbox are required")
	}
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	return &Shipper{cfg: cfg}, nil
}

// Emit ships b: every series gets cluster="<this cluster>" (a series'
// own cluster label is renamed exported_cluster, as Prometheus does with
// honor_labels off), then b is cut into batches of at most MaxSeries
// series and under telemetryv1's limits, each encoded and enqueued as
// outbox kind "metrics". Emit owns b afterwards (it changes its labels).
// An invalid batch (telemetryv1.Validate) is refused whole, with nothing
// enqueued; the outbox quota evicts the oldest batches, never this one.
func (s *Shipper) Emit(b *telemetryv1.MetricBatch) error {
	cluster := s.cfg.Cluster()
	if cluster == "" {
		return ErrNotEnrolled
	}
	for _, ser := range b.Series {
		labelCluster(ser, cluster)
	}
	if err := telemetryv1.Validate(b); err != nil {
		return fmt.Errorf("telemetry: emit: %w", err)
	}
	parts := cut(b, s.cfg.MaxSeries)
	var encoded [][]byte
	var single *telemetryv1.MetricBatch
	if len(parts) == 1 {
		single = parts[0]
	}
	for len(parts) > 0 {
		p := parts[0]
		parts = parts[1:]
		data, err := telemetryv1.Encode(p)
		if err != nil && len(p.Series) > 1 {
			// Over the compressed limit: halve and try again.
			h := len(p.Series) / 2
			parts = append([]*telemetryv1.MetricBatch{
				{Series: p.Series[:h], Metadata: p.Metadata, Targets: p.Targets, TargetsReported: p.TargetsReported},
				{Series: p.Series[h:]},
			}, parts...)
			continue
		}
		if err != nil {
			return fmt.Errorf("telemetry: emit: encode: %w", err)
		}
		encoded = append(encoded, data)
	}
	mo, canMerge := s.cfg.Outbox.(mergingOutbox)
	for i, data := range encoded {
		var err error
		if canMerge && single != nil && len(encoded) == 1 {
			err = mo.EnqueueMerge(telemetryv1.PayloadKind, data, func(tail []byte) ([]byte, bool) {
				return mergeInto(tail, single, s.cfg.MaxSeries)
			})
		} else {
			err = s.cfg.Outbox.Enqueue(telemetryv1.PayloadKind, data)
		}
		if err != nil {
			return fmt.Errorf("telemetry: emit: enqueue batch %d of %d (%d bytes): %w", i+1, len(encoded), len(data), err)
		}
	}
	if s.cfg.Notify != nil && len(encoded) > 0 {
		s.cfg.Notify()
	}
	return nil
}

// cut splits b into batches of at most max series and MaxSamples samples;
// metadata and targets go with the first.
func cut(b *telemetryv1.MetricBatch, max int) []*telemetryv1.MetricBatch {
	var out []*telemetryv1.MetricBatch
	cur := &telemetryv1.MetricBatch{Metadata: b.Metadata, Targets: b.Targets, TargetsReported: b.TargetsReported}
	samples := 0
	for _, ser := range b.Series {
		if len(cur.Series) >= max || samples+len(ser.Samples) > telemetryv1.MaxSamples {
			out = append(out, cur)
			cur, samples = &telemetryv1.MetricBatch{}, 0
		}
		cur.Series = append(cur.Series, ser)
		samples += len(ser.Samples)
	}
	if len(cur.Series) > 0 || len(cur.Metadata) > 0 || len(cur.Targets) > 0 || cur.TargetsReported {
		out = append(out, cur)
	}
	return out
}

// exportedCluster is where a series' own cluster label goes.
const exportedCluster = "exported_" + telemetryv1.ClusterLabel

func labelCluster(s *telemetryv1.Series, cluster string) {
	i := slices.IndexFunc(s.Labels, func(l *telemetryv1.Label) bool { return l.Name == telemetryv1.ClusterLabel })
	if i >= 0 {
		if s.Labels[i].Value == cluster {
			return
		}
		if !slices.ContainsFunc(s.Labels, func(l *telemetryv1.Label) bool { return l.Name == exportedCluster }) {
			s.Labels = append(s.Labels, &telemetryv1.Label{Name: exportedCluster, Value: s.Labels[i].Value})
		}
		s.Labels[i].Value = cluster
		sortLabels(s.Labels)
		return
	}
	s.Labels = append(s.Labels, &telemetryv1.Label{Name: telemetryv1.ClusterLabel, Value: cluster})
	sortLabels(s.Labels)
}

func sortLabels(ls []*telemetryv1.Label) {
	slices.SortFunc(ls, func(a, b *telemetryv1.Label) int { return strings.Compare(a.Name, b.Name) })
}

// MaxObjectLabelBytes bounds a label value taken from an object a tenant
// may write (node and pod labels, the Helm release).
const MaxObjectLabelBytes = 256

// boundValue makes v a label value Prometheus stores: valid UTF-8, at
// most max bytes (cut at a rune boundary).
func boundValue(v string, max int) string {
	if !utf8.ValidString(v) {
		v = strings.ToValidUTF8(v, "\uFFFD")
	}
	if len(v) <= max {
		return v
	}
	v = v[:max]
	for len(v) > 0 && !utf8.ValidString(v) {
		v = v[:len(v)-1]
	}
	return v
}
