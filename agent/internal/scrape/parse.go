package scrape

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/prometheus/prometheus/model/textparse"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// errSampleLimit: a scrape had more samples than its limit.
var errSampleLimit = errors.New("sample limit exceeded")

// parseInput is what one scrape's parse needs.
type parseInput struct {
	body        []byte
	contentType string
	target      labels.Labels // final target labels (cluster included)
	relabel     []*relabel.Config
	sampleLimit int
	defaultMs   int64 // timestamp of samples without one
	cluster     string
}

// parsed is one scrape's result.
type parsed struct {
	series []*telemetryv1.Series
	// stamped[i]: series[i] has a timestamp of the exposition's (such
	// series get no staleness markers, as in Prometheus); shorter than
	// series when the last ones have none.
	stamped  []bool
	metadata []*telemetryv1.MetricMetadata
	scraped  int // samples exposed
	kept     int // after metric relabelling, invalid ones left out
	invalid  int // dropped: not legal on the wire, or a duplicate
}

// parse reads a text-format or OpenMetrics body. It returns what it read
// until an error (a partial scrape is kept only when err is nil).
func parse(in parseInput) (*parsed, error) {
	p, err := textparse.New(in.body, in.contentType, labels.NewSymbolTable(), textparse.ParserOptions{FallbackContentType: "text/plain"})
	if p == nil {
		return nil, fmt.Errorf("content type %q: %w", in.contentType, err)
	}
	out := &parsed{}
	seen := map[uint64][]labels.Labels{} // by hash; a collision is compared
	meta := map[string]*telemetryv1.MetricMetadata{}
	var metaOrder []string
	metaFor := func(name []byte) *telemetryv1.MetricMetadata {
		n := string(name)
		m := meta[n]
		if m == nil {
			if len(meta) >= telemetryv1.MaxMetadata {
				return &telemetryv1.MetricMetadata{} // discarded
			}
			m = &telemetryv1.MetricMetadata{Metric: n}
			meta[n] = m
			metaOrder = append(metaOrder, n)
		}
		return m
	}
	var (
		ls labels.Labels
		lb = labels.NewBuilder(labels.EmptyLabels())
	)
	for {
		e, err := p.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("parse: %w", err)
		}
		switch e {
		case textparse.EntryType:
			name, typ := p.Type()
			metaFor(name).Type = string(typ)
			continue
		case textparse.EntryHelp:
			name, help := p.Help()
			metaFor(name).Help = truncUTF8(string(help), telemetryv1.MaxHelpBytes)
			continue
		case textparse.EntryUnit:
			name, unit := p.Unit()
			metaFor(name).Unit = truncUTF8(string(unit), telemetryv1.MaxHelpBytes)
			continue
		case textparse.EntrySeries:
		default:
			continue // comments; native histograms (not requested)
		}
		_, ts, v := p.Series()
		out.scraped++
		p.Labels(&ls)
		lb.Reset(ls)
		mergeTargetLabels(lb, in.target)
		if !relabel.ProcessBuilder(lb, in.relabel...) {
			continue
		}
		lb.Set(telemetryv1.ClusterLabel, in.cluster)
		final := lb.Labels()
		s, ok := wireSeries(final)
		if !ok {
			out.invalid++
			continue
		}
		h := final.Hash()
		if slices.ContainsFunc(seen[h], func(o labels.Labels) bool { return labels.Equal(o, final) }) {
			out.invalid++
			continue
		}
		seen[h] = append(seen[h], final)
		out.kept++
		if out.kept > in.sampleLimit {
			return nil, fmt.Errorf("%w: more than %d samples after metric relabelling", errSampleLimit, in.sampleLimit)
		}
		ms := in.defaultMs
		if ts != nil {
			ms = *ts
			out.stamped = append(out.stamped, make([]bool, len(out.series)+1-len(out.stamped))...)
			out.stamped[len(out.series)] = true
		}
		s.Samples = []*telemetryv1.Sample{{TimestampMs: ms, Value: v}}
		out.series = append(out.series, s)
	}
	for _, n := range metaOrder {
		m := meta[n]
		if telemetryv1.ValidMetricName(m.Metric) && utf8.ValidString(m.Help) && utf8.ValidString(m.Unit) && len(m.Type) <= 64 {
			out.metadata = append(out.metadata, m)
		}
	}
	return out, nil
}

// mergeTargetLabels adds the target's labels to a scraped series as
// Prometheus does with honor_labels: false: a scraped label the target
// also has is kept as exported_<name> (exported_exported_<name> if that
// is taken too), and the target's value wins.
func mergeTargetLabels(lb *labels.Builder, target labels.Labels) {
	target.Range(func(l labels.Label) {
		if v := lb.Get(l.Name); v != "" {
			name := "exported_" + l.Name
			for lb.Get(name) != "" {
				name = "exported_" + name
			}
			lb.Set(name, v)
		}
		lb.Set(l.Name, l.Value)
	})
}

// wireSeries converts labels to a wire series, or reports that the hub
// would refuse them (names, count, value size, UTF-8).
func wireSeries(ls labels.Labels) (*telemetryv1.Series, bool) {
	if ls.Len() > telemetryv1.MaxLabels {
		return nil, false
	}
	s := &telemetryv1.Series{Labels: make([]*telemetryv1.Label, 0, ls.Len())}
	ok := true
	ls.Range(func(l labels.Label) {
		switch {
		case !ok:
		case l.Name == telemetryv1.MetricNameLabel:
			ok = telemetryv1.ValidMetricName(l.Value)
		case !telemetryv1.ValidLabelName(l.Name), len(l.Value) > telemetryv1.MaxLabelValueBytes, !utf8.ValidString(l.Value):
			ok = false
		}
		s.Labels = append(s.Labels, &telemetryv1.Label{Name: l.Name, Value: l.Value})
	})
	if !ok || ls.Get(telemetryv1.MetricNameLabel) == "" {
		return nil, false
	}
	return s, true
}

// truncUTF8 cuts s to at most n bytes at a rune boundary.
func truncUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return strings.ToValidUTF8(s, "")
}
