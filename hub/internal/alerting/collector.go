package alerting

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/reports"
)

// Fleet series the collector writes.
const (
	SeriesConnected  = "tether_cluster_connected"
	SeriesLastSeen   = "tether_cluster_last_seen_timestamp_seconds"
	SeriesService    = "tether_service_status"
	SeriesDropped    = "tether_outbox_dropped_total"
	SeriesPending    = "tether_outbox_pending"
	SeriesCertExpiry = "tether_agent_certificate_expiry_timestamp_seconds"
)

// ClusterLister lists the fleet's clusters (fleet.Registry).
type ClusterLister interface {
	List(ctx context.Context) ([]fleet.Cluster, error)
}

// ReportLister lists the agents' latest service reports (reports.Reports).
type ReportLister interface {
	List(ctx context.Context) ([]reports.Report, error)
}

// SessionLister lists the connected agents (gateway.Gateway).
type SessionLister interface {
	Sessions() []gateway.SessionInfo
}

// collector appends the hub's fleet series.
type collector struct {
	fleet    ClusterLister
	reports  ReportLister
	sessions SessionLister
	db       storage.AppendableV2
	mu       sync.Mutex // one collection at a time
	// last holds the series of the previous collection, so those gone get
	// a stale marker.
	last map[uint64]labels.Labels
}

type sample struct {
	ls labels.Labels
	v  float64
}

// series returns the fleet's series at now: one per cluster (connected,
// last seen, certificate expiry), per cluster and outbox kind (dropped,
// pending) and per reported service (its current state only).
func (c *collector) series(ctx context.Context) ([]sample, error) {
	clusters, err := c.fleet.List(ctx)
	if err != nil {
		return nil, err
	}
	var sessions map[string]gateway.SessionInfo
	if c.sessions != nil {
		sessions = map[string]gateway.SessionInfo{}
		for _, s := range c.sessions.Sessions() {
			sessions[s.Cluster] = s
		}
	}
	var out []sample
	add := func(v float64, kv ...string) { out = append(out, sample{labels.FromStrings(kv...), v}) }
	known := map[string]bool{}
	for _, cl := range clusters {
		if cl.Enrolled.IsZero() {
			continue // a join token was made; no agent yet
		}
		known[cl.Name] = true
		s, connected := sessions[cl.Name]
		seen := cl.LastSeen
		if seen.IsZero() {
			seen = cl.Enrolled // enrolled, never seen since: offline from then
		}
		if connected && s.LastHeartbeat.After(seen) {
			seen = s.LastHeartbeat
		}
		add(b2f(connected), "__name__", SeriesConnected, "cluster", cl.Name)
		if !seen.IsZero() {
			add(float64(seen.UnixMilli())/1000, "__name__", SeriesLastSeen, "cluster", cl.Name)
		}
		if !cl.CertNotAfter.IsZero() {
			add(float64(cl.CertNotAfter.Unix()), "__name__", SeriesCertExpiry, "cluster", cl.Name)
		}
		if connected {
			if len(s.OutboxKinds) == 0 {
				add(float64(s.OutboxDropped), "__name__", SeriesDropped, "cluster", cl.Name, "kind", "all")
				add(float64(s.OutboxPending), "__name__", SeriesPending, "cluster", cl.Name, "kind", "all")
			}
			for _, k := range s.OutboxKinds {
				add(float64(k.Dropped), "__name__", SeriesDropped, "cluster", cl.Name, "kind", k.Kind)
				add(float64(k.Pending), "__name__", SeriesPending, "cluster", cl.Name, "kind", k.Kind)
			}
		}
	}
	if c.reports != nil {
		reps, err := c.reports.List(ctx)
		if err != nil {
			return nil, err
		}
		for _, r := range reps {
			if !known[r.Cluster] {
				continue
			}
			for _, svc := range r.Services {
				add(1, "__name__", SeriesService, "cluster", r.Cluster, "namespace", svc.Namespace, "service", svc.Name, "state", svc.State)
			}
		}
	}
	return out, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// collect appends the series at now, and stale markers for the series of
// the previous collection that are gone.
func (c *collector) collect(ctx context.Context, now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ss, err := c.series(ctx)
	if err != nil {
		return fmt.Errorf("collect fleet series: %w", err)
	}
	t := now.UnixMilli()
	app := c.db.AppenderV2(ctx)
	cur := make(map[uint64]labels.Labels, len(ss))
	for _, s := range ss {
		cur[s.ls.Hash()] = s.ls
		if _, err := app.Append(0, s.ls, 0, t, s.v, nil, nil, storage.AOptions{}); err != nil {
			_ = app.Rollback()
			return fmt.Errorf("append %s: %w", s.ls, err)
		}
	}
	for h, ls := range c.last {
		if _, ok := cur[h]; ok {
			continue
		}
		if _, err := app.Append(0, ls, 0, t, math.Float64frombits(value.StaleNaN), nil, nil, storage.AOptions{}); err != nil {
			_ = app.Rollback()
			return fmt.Errorf("append stale marker of %s: %w", ls, err)
		}
	}
	if err := app.Commit(); err != nil {
		return fmt.Errorf("commit fleet series: %w", err)
	}
	c.last = cur
	return nil
}
