package link

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// payloadKind is one kind of outbox payload the link sends to the hub.
// payloadKinds is the one place a kind is registered; see
// docs/design/outbox.md.
type payloadKind struct {
	// outbox is the kind's name, drain priority and quota in the cache.
	outbox cache.OutboxKind
	// prepare checks an entry's payload and returns the bytes to send; an
	// error dead-letters the entry (it could never be sent). nil sends the
	// payload as queued. neg is what the connected hub accepts and
	// understands (its Welcome).
	prepare func(l *Link, neg negotiated, seq uint64, data []byte) ([]byte, error)
	// legacy, if set, is how the kind goes to a hub older than payload
	// kinds (its Welcome names none). Without it the kind is held in the
	// outbox while connected to such a hub.
	legacy func(seq uint64, data []byte) (*fleetv1.AgentMessage, error)
	// offer, if set, says whether this agent offers the kind in its Hello
	// (a kind not offered is never accepted, so its entries are held).
	// nil always offers it.
	offer func(cfg Config) bool
}

// payloadKinds are the kinds this agent sends, with their priority and
// bounds. Add a kind here (and a receiver on the hub); the drain needs no
// change.
func payloadKinds() []payloadKind {
	return []payloadKind{{
		// Snapshots of every service's state: highest priority, and a
		// quota of its own so telemetry never evicts it.
		outbox:  cache.OutboxKind{Name: KindStatus, Priority: 100, MaxEntries: 10_000, MaxBytes: 32 << 20},
		prepare: prepareStatus,
		legacy:  legacyStatus,
	}, {
		// Metric batches (telemetryv1.MetricBatch, gzip): lower priority,
		// drained at Config.DrainRates["metrics"] at most, offered only
		// while collection is on. MaxBytes is a default; the assembly
		// sets it from --telemetry-outbox-bytes.
		outbox:  cache.OutboxKind{Name: KindMetrics, Priority: 10, MaxEntries: 1 << 20, MaxBytes: DefaultMetricsOutboxBytes},
		prepare: prepareMetrics,
		offer:   func(cfg Config) bool { return cfg.Telemetry },
	}}
}

// DefaultMetricsOutboxBytes is the default on-disk quota of the metrics
// kind: 512 MiB, about 4 days of a 2,000-series cluster collected
// every 15 s (see docs/design/telemetry.md for the arithmetic).
const DefaultMetricsOutboxBytes = 512 << 20

// prepareMetrics bounds a metrics entry to the tunnel's limits; its
// content is checked by the producer (telemetryv1.Encode) and the hub. The
// entry was written by telemetryv1.Encode, possibly in the symbol form; a
// hub that does not name fleetv1.FeatureMetricSymbols gets it rewritten in
// the series form every hub reads. The form cannot be told without
// decoding, so an older hub (the rare case) always gets it transcoded.
func prepareMetrics(_ *Link, neg negotiated, seq uint64, data []byte) ([]byte, error) {
	if len(data) == 0 || len(data) > telemetryv1.MaxEncodedBytes {
		return nil, fmt.Errorf("metric batch of %d bytes is outside 1..%d", len(data), telemetryv1.MaxEncodedBytes)
	}
	if neg.metricSymbols {
		return data, nil
	}
	b, err := telemetryv1.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("metric batch %d: decode for a hub without %q (to rewrite it in the series form): %w", seq, fleetv1.FeatureMetricSymbols, err)
	}
	out, err := telemetryv1.EncodeSeriesForm(b)
	if err != nil {
		return nil, fmt.Errorf("metric batch %d: encode in the series form for a hub without %q: %w", seq, fleetv1.FeatureMetricSymbols, err)
	}
	return out, nil
}

// OutboxKinds returns the outbox registrations of the kinds the link
// sends, for cache.Options.OutboxKinds.
func OutboxKinds() []cache.OutboxKind {
	var out []cache.OutboxKind
	for _, k := range payloadKinds() {
		out = append(out, k.outbox)
	}
	return out
}

// prepareStatus checks that a status entry is a StatusReport and bounds it
// to the hub's limits (see fitReport), with its outbox seq set.
func prepareStatus(l *Link, _ negotiated, seq uint64, data []byte) ([]byte, error) {
	var rep fleetv1.StatusReport
	if err := proto.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("not a status report: %w", err)
	}
	rep.Seq = seq
	if n := fitReport(&rep); n > 0 {
		l.mu.Lock()
		l.st.StatusTruncated += uint64(n)
		l.mu.Unlock()
		l.log.Warn("status report too large for the hub; left out services (not Deployed ones are kept first)",
			"seq", seq, "left_out", n, "kept", len(rep.Services), "max_services", fleetv1.MaxReportServices)
	}
	return proto.Marshal(&rep)
}

// legacyStatus is a prepared status payload as AgentMessage.status.
func legacyStatus(_ uint64, data []byte) (*fleetv1.AgentMessage, error) {
	var rep fleetv1.StatusReport
	if err := proto.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("not a status report: %w", err)
	}
	return &fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Status{Status: &rep}}, nil
}

// negotiated is what one hub connection accepts, from its Welcome.
type negotiated struct {
	// legacy: the hub names no payload kinds (it predates them).
	legacy   bool
	accepted map[string]bool
	// features are the wire features the hub names (Welcome.features),
	// bounded by fleetv1.MaxFeatures and fleetv1.MaxFeatureBytes.
	features map[string]bool
	// metricSymbols: the hub reads metric batches in the symbol form
	// (fleetv1.FeatureMetricSymbols).
	metricSymbols bool
}

func negotiate(kinds []payloadKind, w *fleetv1.Welcome) negotiated {
	n := negotiated{legacy: len(w.GetPayloadKinds()) == 0, accepted: map[string]bool{}, features: map[string]bool{}}
	for i, f := range w.GetFeatures() {
		if i >= fleetv1.MaxFeatures {
			break
		}
		if f == "" || len(f) > fleetv1.MaxFeatureBytes {
			continue
		}
		n.features[f] = true
	}
	n.metricSymbols = n.features[fleetv1.FeatureMetricSymbols]
	for _, name := range w.GetPayloadKinds() {
		for _, k := range kinds {
			if k.outbox.Name == name {
				n.accepted[name] = true
			}
		}
	}
	return n
}

// kind returns the registration of name.
func (l *Link) kind(name string) (payloadKind, bool) {
	for _, k := range l.kinds {
		if k.outbox.Name == name {
			return k, true
		}
	}
	return payloadKind{}, false
}

// sendable reports whether the drain takes entries of kind now. A kind the
// agent does not know is taken too, to be dead-lettered; a known one the
// hub does not accept is held.
func (l *Link) sendable(n negotiated) func(string) bool {
	return func(name string) bool {
		k, ok := l.kind(name)
		switch {
		case !ok:
			return true
		case n.legacy:
			return k.legacy != nil
		}
		return n.accepted[name]
	}
}

// helloKinds are the kind names offered in Hello.payload_kinds.
func (l *Link) helloKinds() []string {
	var out []string
	for _, k := range l.kinds {
		if k.offer != nil && !k.offer(l.cfg) {
			continue
		}
		out = append(out, k.outbox.Name)
	}
	return out
}
