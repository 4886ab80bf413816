package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/prometheus/storage"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// Appendable is the part of the TSDB the receiver writes to (*DB is one).
type Appendable interface {
	Appender(ctx context.Context) storage.Appender
}

// ReceiverConfig configures a Receiver.
type ReceiverConfig struct {
	// DB stores the samples (required).
	DB Appendable
	// Now is the hub's clock; nil means time.Now.
	Now func() time.Time
	// MaxFuture is how far past the hub's clock a sample may be; a batch
	// with a later sample is refused (the agent's clock is wrong, and the
	// sample would hide every correct one after it).
	MaxFuture time.Duration
	// MaxClusters bounds the clusters whose targets and counters are kept
	// in memory.
	MaxClusters int
	// MaxMetadataFamilies bounds the metric families whose metadata is
	// kept; MaxMetadataPerFamily bounds the distinct descriptions of one.
	MaxMetadataFamilies  int
	MaxMetadataPerFamily int
	// MaxCachedSeries bounds the series cache (seriescache.go) over all
	// clusters, MaxCachedSeriesPerCluster per cluster; 0 turns it off.
	// CachedSeriesTTL drops an entry a cluster stopped sending.
	MaxCachedSeries           int
	MaxCachedSeriesPerCluster int
	CachedSeriesTTL           time.Duration
	Logger                    *slog.Logger
}

// Receiver defaults.
const (
	DefaultMaxFuture            = 5 * time.Minute
	DefaultMaxClusters          = 10000
	DefaultMaxMetadataFamilies  = 20000
	DefaultMaxMetadataPerFamily = 4
	// A cached series costs about 100 bytes besides its label set, which
	// it shares with the TSDB's head when the series was new.
	DefaultMaxCachedSeries           = 1 << 20
	DefaultMaxCachedSeriesPerCluster = 100000
	DefaultCachedSeriesTTL           = 15 * time.Minute
)

// DefaultReceiverConfig returns the defaults; DB must still be set.
func DefaultReceiverConfig() ReceiverConfig {
	return ReceiverConfig{
		MaxFuture:            DefaultMaxFuture,
		MaxClusters:          DefaultMaxClusters,
		MaxMetadataFamilies:  DefaultMaxMetadataFamilies,
		MaxMetadataPerFamily: DefaultMaxMetadataPerFamily,

		MaxCachedSeries:           DefaultMaxCachedSeries,
		MaxCachedSeriesPerCluster: DefaultMaxCachedSeriesPerCluster,
		CachedSeriesTTL:           DefaultCachedSeriesTTL,
	}
}

// Validate checks c.
func (c *ReceiverConfig) Validate() error {
	switch {
	case c.DB == nil:
		return errors.New("telemetry: ReceiverConfig.DB is required")
	case c.MaxFuture <= 0:
		return fmt.Errorf("telemetry: ReceiverConfig.MaxFuture %s must be positive", c.MaxFuture)
	case c.MaxClusters <= 0 || c.MaxMetadataFamilies <= 0 || c.MaxMetadataPerFamily <= 0:
		return fmt.Errorf("telemetry: ReceiverConfig: MaxClusters %d, MaxMetadataFamilies %d and MaxMetadataPerFamily %d must be positive",
			c.MaxClusters, c.MaxMetadataFamilies, c.MaxMetadataPerFamily)
	case c.MaxCachedSeries < 0 || c.MaxCachedSeriesPerCluster < 0:
		return fmt.Errorf("telemetry: ReceiverConfig: MaxCachedSeries %d and MaxCachedSeriesPerCluster %d must not be negative", c.MaxCachedSeries, c.MaxCachedSeriesPerCluster)
	case c.MaxCachedSeries > 0 && (c.MaxCachedSeriesPerCluster == 0 || c.CachedSeriesTTL <= 0):
		return fmt.Errorf("telemetry: ReceiverConfig: with MaxCachedSeries %d, MaxCachedSeriesPerCluster (%d) and CachedSeriesTTL (%s) must be positive", c.MaxCachedSeries, c.MaxCachedSeriesPerCluster, c.CachedSeriesTTL)
	}
	return nil
}

// Metadata describes one metric family, as /api/v1/metadata shows it.
type Metadata struct {
	Type string `json:"type"`
	Help string `json:"help"`
	Unit string `json:"unit"`
}

// Target is the last reported health of one scrape target of a cluster.
type Target struct {
	Job           string        `json:"job"`
	URL           string        `json:"url"`
	Health        string        `json:"health"`
	LastError     string        `json:"lastError,omitempty"`
	LastScrape    time.Time     `json:"lastScrape,omitzero"`
	LastDuration  time.Duration `json:"lastDuration"`
	Samples       int64         `json:"samples"`
	ReportedAtSeq uint64        `json:"reportedAtSeq"`
	ReceivedByHub time.Time     `json:"receivedByHub"`
}

// IngestStats count what the receiver did with one cluster's batches.
type IngestStats struct {
	Batches uint64 `json:"batches"`
	// Samples were stored.
	Samples uint64 `json:"samples"`
	// TooOld samples lay behind the out-of-order window (or retention)
	// and were dropped; the batch was still acknowledged.
	TooOld uint64 `json:"tooOld"`
	// Duplicates had the timestamp of a stored sample with another value
	// (an identical resent sample is stored once and not counted).
	Duplicates uint64 `json:"duplicates"`
	// Refused batches were refused for good.
	Refused uint64 `json:"refused"`
}

// Receiver stores the agents' metric batches (payload kind
// telemetryv1.PayloadKind) in the TSDB. It implements
// gateway.PayloadReceiver.
type Receiver struct {
	cfg    ReceiverConfig
	log    *slog.Logger
	series *seriesCaches

	mu       sync.Mutex
	stats    map[string]*IngestStats
	targets  map[string][]Target
	metadata map[string][]Metadata
}

// NewReceiver returns a Receiver for cfg.
func NewReceiver(cfg ReceiverConfig) (*Receiver, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Receiver{
		cfg: cfg, log: cfg.Logger,
		series: newSeriesCaches(cfg.MaxCachedSeries, cfg.MaxCachedSeriesPerCluster, cfg.CachedSeriesTTL),
		stats:  map[string]*IngestStats{}, targets: map[string][]Target{}, metadata: map[string][]Metadata{},
	}, nil
}

var _ gateway.PayloadReceiver = (*Receiver)(nil)

// ReceivePayload decodes one batch of cluster's agent and appends it in one
// commit. It refuses for good (gateway.ErrPayloadRefused) a batch that
// does not decode, names another cluster or holds a sample too far in the
// future; it returns another error (the agent keeps the batch and sends it
// again) when the TSDB cannot store it now, e.g. its disk is full.
func (r *Receiver) ReceivePayload(ctx context.Context, cluster string, seq uint64, data []byte) error {
	if cluster == "" {
		return r.refuse(cluster, fmt.Errorf("%w: metrics batch %d: no cluster identity", gateway.ErrPayloadRefused, seq))
	}
	cache := r.series.lock(cluster, r.cfg.Now())
	if cache != nil {
		defer cache.mu.Unlock()
	}
	d, err := decodeBatch(data, cluster, cache)
	if err != nil {
		return r.refuse(cluster, fmt.Errorf("%w: metrics batch %d of %q: %v", gateway.ErrPayloadRefused, seq, cluster, err))
	}
	defer d.release()
	if err := r.checkFuture(d); err != nil {
		return r.refuse(cluster, fmt.Errorf("%w: metrics batch %d of %q: %v", gateway.ErrPayloadRefused, seq, cluster, err))
	}
	var stored, tooOld, dups uint64
	app := r.cfg.DB.Appender(ctx)
	for _, s := range d.series {
		var ref storage.SeriesRef
		if s.cached != nil {
			ref = s.cached.ref
		}
		for _, smp := range d.samples[s.from:s.to] {
			nref, err := app.Append(ref, s.lset, smp.t, smp.v)
			switch {
			case err == nil:
				ref = nref
				stored++
			case errors.Is(err, storage.ErrTooOldSample), errors.Is(err, storage.ErrOutOfBounds), errors.Is(err, storage.ErrOutOfOrderSample):
				tooOld++
			case errors.Is(err, storage.ErrDuplicateSampleForTimestamp):
				dups++
			default:
				_ = app.Rollback()
				return fmt.Errorf("telemetry: append metrics batch %d of %q, series %s: %w", seq, cluster, s.lset, err)
			}
		}
		if s.cached != nil && ref != 0 {
			s.cached.ref = ref
		}
	}
	if err := app.Commit(); err != nil {
		// A full or failing disk: not acknowledged, the agent keeps it.
		return fmt.Errorf("telemetry: commit metrics batch %d of %q: %w", seq, cluster, err)
	}
	r.record(cluster, seq, &d.rest, stored, tooOld, dups)
	if tooOld+dups > 0 {
		r.log.Debug("metrics batch stored with dropped samples", "cluster", cluster, "seq", seq, "stored", stored, "too_old", tooOld, "duplicates", dups)
	}
	return nil
}

// checkFuture refuses a batch with a sample more than MaxFuture past the
// hub's clock.
func (r *Receiver) checkFuture(d *decoded) error {
	now := r.cfg.Now()
	limit := now.Add(r.cfg.MaxFuture).UnixMilli()
	for i, s := range d.series {
		if last := d.samples[s.to-1].t; last > limit {
			return fmt.Errorf("series %d (%s) has a sample at %s, more than %s past the hub's clock (%s): check the agent's clock",
				i, s.lset.Get(telemetryv1.MetricNameLabel), time.UnixMilli(last).UTC().Format(time.RFC3339), r.cfg.MaxFuture, now.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func (r *Receiver) refuse(cluster string, err error) error {
	r.mu.Lock()
	if st := r.statsLocked(cluster); st != nil {
		st.Refused++
	}
	r.mu.Unlock()
	return err
}

// statsLocked returns cluster's counters, nil if MaxClusters are kept.
func (r *Receiver) statsLocked(cluster string) *IngestStats {
	st, ok := r.stats[cluster]
	if !ok {
		if len(r.stats) >= r.cfg.MaxClusters {
			return nil
		}
		st = &IngestStats{}
		r.stats[cluster] = st
	}
	return st
}

func (r *Receiver) record(cluster string, seq uint64, b *telemetryv1.MetricBatch, stored, tooOld, dups uint64) {
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if st := r.statsLocked(cluster); st != nil {
		st.Batches++
		st.Samples += stored
		st.TooOld += tooOld
		st.Duplicates += dups
	}
	if len(b.Targets) > 0 || b.TargetsReported {
		if _, ok := r.targets[cluster]; ok || len(r.targets) < r.cfg.MaxClusters {
			ts := make([]Target, 0, len(b.Targets))
			for _, t := range b.Targets {
				tg := Target{
					Job: t.Job, URL: t.Url, Health: t.Health, LastError: t.LastError,
					LastDuration: time.Duration(t.LastDurationMs) * time.Millisecond, Samples: t.Samples,
					ReportedAtSeq: seq, ReceivedByHub: now,
				}
				if t.LastScrapeMs > 0 {
					tg.LastScrape = time.UnixMilli(t.LastScrapeMs).UTC()
				}
				ts = append(ts, tg)
			}
			sort.SliceStable(ts, func(i, j int) bool {
				if ts[i].Job != ts[j].Job {
					return ts[i].Job < ts[j].Job
				}
				return ts[i].URL < ts[j].URL
			})
			r.targets[cluster] = ts
		}
	}
	for _, m := range b.Metadata {
		md := Metadata{Type: m.Type, Help: m.Help, Unit: m.Unit}
		if md.Type == "" {
			md.Type = "unknown"
		}
		have, ok := r.metadata[m.Metric]
		if !ok && len(r.metadata) >= r.cfg.MaxMetadataFamilies {
			continue
		}
		if slices.Contains(have, md) {
			continue
		}
		if len(have) >= r.cfg.MaxMetadataPerFamily {
			// Keep the newest descriptions: an agent upgrade changes help texts.
			have = have[1:]
		}
		r.metadata[m.Metric] = append(slices.Clip(have), md)
	}
}

// Targets returns cluster's scrape targets as of its last batch that
// reported them (nil if none did since the hub started).
func (r *Receiver) Targets(cluster string) []Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.targets[cluster])
}

// Stats returns cluster's ingestion counters since the hub started.
func (r *Receiver) Stats(cluster string) IngestStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.stats[cluster]; ok {
		return *st
	}
	return IngestStats{}
}

// Forget drops what the receiver keeps in memory about a deleted cluster.
func (r *Receiver) Forget(cluster string) {
	r.mu.Lock()
	delete(r.stats, cluster)
	delete(r.targets, cluster)
	r.mu.Unlock()
	// Not under r.mu: a batch holds its cluster's cache, then r.mu.
	r.series.forget(cluster)
}

// Metadata returns the metadata of the metric families that match metric
// ("" for all), at most limit families (0: no limit) and limitPerMetric
// descriptions each (0: no limit), as /api/v1/metadata answers it.
func (r *Receiver) Metadata(metric string, limit, limitPerMetric int) map[string][]Metadata {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string][]Metadata{}
	if metric != "" {
		if md, ok := r.metadata[metric]; ok {
			out[metric] = capMetadata(md, limitPerMetric)
		}
		return out
	}
	names := make([]string, 0, len(r.metadata))
	for n := range r.metadata {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if limit > 0 && len(out) >= limit {
			break
		}
		out[n] = capMetadata(r.metadata[n], limitPerMetric)
	}
	return out
}

func capMetadata(md []Metadata, limit int) []Metadata {
	if limit > 0 && len(md) > limit {
		md = md[:limit]
	}
	return slices.Clone(md)
}
