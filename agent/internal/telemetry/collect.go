package telemetry

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"

	"github.com/tetherfleet/tether/agent/internal/staleness"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// Emitter ships a batch (Shipper.Emit).
type Emitter interface {
	Emit(*telemetryv1.MetricBatch) error
}

// Config configures a Collector.
type Config struct {
	// RESTConfig reaches the cluster's kube-apiserver.
	RESTConfig *rest.Config
	// Emitter ships each collection's batches.
	Emitter Emitter
	// Interval between collections; DefaultConfig has 15 s.
	Interval time.Duration
	// PageSize is the objects of one list request; default 500.
	PageSize int
	// MaxSeries cuts a collection into batches; 0 is DefaultMaxSeries.
	MaxSeries int
	// Usage also collects CPU and memory usage (metrics.k8s.io, else the
	// kubelets' resource metrics). Default on.
	Usage bool
	// Timeout bounds one collection; default Interval (at least 10 s).
	Timeout time.Duration
	// MaxStaleSeries bounds the series tracked for staleness markers;
	// 0 is staleness.DefaultMaxSeries.
	MaxStaleSeries int
	Logger         *slog.Logger
	Now            func() time.Time
}

// DefaultConfig returns the defaults; RESTConfig and Emitter must be set.
func DefaultConfig() Config {
	return Config{Interval: 15 * time.Second, PageSize: 500, Usage: true}
}

// Validate reports what is wrong with c, changing nothing.
func (c *Config) Validate() error {
	switch {
	case c.RESTConfig == nil || c.Emitter == nil:
		return errors.New("telemetry: Config.RESTConfig and Emitter are required")
	case c.Interval <= 0:
		return fmt.Errorf("telemetry: interval %s must be positive", c.Interval)
	case c.PageSize < 0 || c.MaxSeries < 0 || c.Timeout < 0 || c.MaxStaleSeries < 0:
		return fmt.Errorf("telemetry: page size %d, max series %d, timeout %s and max stale series %d must not be negative", c.PageSize, c.MaxSeries, c.Timeout, c.MaxStaleSeries)
	}
	return nil
}

// Stats count the collector's work since it started.
type Stats struct {
	Collections uint64    `json:"collections"`
	Failures    uint64    `json:"failures,omitempty"`
	LastSeries  int       `json:"lastSeries"`
	LastAt      time.Time `json:"lastAt,omitzero"`
	LastError   string    `json:"lastError,omitempty"`
	// UsageSource is where the last usage came from: "metrics.k8s.io",
	// "kubelet" or "" (none).
	UsageSource string `json:"usageSource,omitempty"`
	// StaleMarkers: staleness markers shipped for series a collection no
	// longer had. UntrackedSeries: series not tracked for them because
	// the tracker was full (Config.MaxStaleSeries), once per collection.
	StaleMarkers    uint64 `json:"staleMarkers,omitempty"`
	UntrackedSeries uint64 `json:"untrackedSeries,omitempty"`
}

// Collector collects inventory and usage every Interval and ships them.
type Collector struct {
	cfg  Config
	log  *slog.Logger
	hc   *http.Client
	base string

	// collecting serializes Collect; stale is the series of the last
	// complete collection (staleness markers), under it.
	collecting sync.Mutex
	stale      *staleness.Tracker

	mu sync.Mutex
	st Stats
	// metricsAPI caches whether metrics.k8s.io is served (nil: unknown).
	metricsAPI    *bool
	metricsProbed time.Time
	// cpu integrates metrics.k8s.io's CPU rates into counters, by node
	// or container; pruned to what the last collection saw.
	cpu map[string]cpuCounter
}

// New returns a Collector; Run runs it.
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 500
	}
	if cfg.MaxSeries == 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = max(cfg.Interval, 10*time.Second)
	}
	hc, err := rest.HTTPClientFor(cfg.RESTConfig)
	if err != nil {
		return nil, fmt.Errorf("telemetry: HTTP client for %s: %w", cfg.RESTConfig.Host, err)
	}
	return &Collector{cfg: cfg, log: cfg.Logger, hc: hc, base: strings.TrimSuffix(cfg.RESTConfig.Host, "/"),
		stale: staleness.New(staleness.Config{MaxSeries: cfg.MaxStaleSeries})}, nil
}

// Stats returns a snapshot of the counters.
func (col *Collector) Stats() Stats {
	col.mu.Lock()
	defer col.mu.Unlock()
	return col.st
}

// Run collects at once, then every Interval, until ctx is done; a failed
// collection is logged and counted, and the next one runs on time.
func (col *Collector) Run(ctx context.Context) error {
	t := time.NewTicker(col.cfg.Interval)
	defer t.Stop()
	for {
		if err := col.Collect(ctx); err != nil && ctx.Err() == nil {
			col.log.Warn("telemetry collection failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Collect runs one collection and ships it: every series of it carries
// the collection's timestamp. A complete collection also ships a
// staleness marker, at its timestamp, for each series of the previous
// complete collection it no longer has (a deleted pod's); a failed or
// partial one marks nothing (what it could not list is not gone).
func (col *Collector) Collect(parent context.Context) error {
	col.collecting.Lock()
	defer col.collecting.Unlock()
	ctx, cancel := context.WithTimeout(parent, col.cfg.Timeout)
	defer cancel()
	now := col.cfg.Now()
	c := newCollection(now.UnixMilli(), col.cfg.MaxSeries, col.cfg.Emitter.Emit)
	c.stale = col.stale
	err := col.inventory(ctx, c)
	source := ""
	if err == nil && col.cfg.Usage {
		source, err = col.usage(ctx, c)
	}
	var markers int
	if err == nil && c.err == nil && !c.partial && parent.Err() == nil {
		ms := col.stale.End(c.ts)
		for _, m := range ms {
			c.addSeries(m)
		}
		markers = len(ms)
	} else {
		col.stale.Abort()
	}
	if ferr := c.flush(); err == nil {
		err = ferr
	}
	if parent.Err() != nil {
		return nil // stopping: not a failed collection
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	col.st.StaleMarkers += uint64(markers)
	col.st.UntrackedSeries += uint64(col.stale.Untracked())
	col.st.Collections++
	col.st.LastAt, col.st.LastSeries = now, c.series
	col.st.UsageSource = source
	col.st.LastError = ""
	if err != nil {
		col.st.Failures++
		col.st.LastError = err.Error()
	}
	return err
}

// errNotServed: the API path is not served by this cluster (404).
var errNotServed = errors.New("not served")

// get GETs path on the API server and hands the body to read.
func (col *Collector) get(ctx context.Context, path string, read func(io.Reader) error) error {
	return col.getAs(ctx, path, "application/json", read)
}

// getAs is get with an Accept header.
func (col *Collector) getAs(ctx context.Context, path, accept string, read func(io.Reader) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, col.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", accept)
	resp, err := col.hc.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusServiceUnavailable {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("GET %s: %s: %w", path, resp.Status, errNotServed)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := read(resp.Body); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// listPaged lists path page by page (limit/continue), decoding each item
// into a T of the fields used and handing it to each; only one page is
// held at a time.
func listPaged[T any](ctx context.Context, col *Collector, path string, each func(*T)) error {
	cont := ""
	for {
		q := url.Values{"limit": {fmt.Sprint(col.cfg.PageSize)}}
		if cont != "" {
			q.Set("continue", cont)
		}
		var page struct {
			Metadata listMeta `json:"metadata"`
			Items    []T      `json:"items"`
		}
		err := col.get(ctx, path+"?"+q.Encode(), func(r io.Reader) error { return json.NewDecoder(r).Decode(&page) })
		if err != nil {
			return fmt.Errorf("list %s: %w", path, err)
		}
		for i := range page.Items {
			each(&page.Items[i])
		}
		if cont = page.Metadata.Continue; cont == "" {
			return nil
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Compare(a, b) })
	return keys
}
