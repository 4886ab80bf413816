package server

import (
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/remotewrite"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
	"github.com/tetherfleet/tether/protocol/version"
)

// TSDBConfig configures the hub's metrics store; zero fields take the
// defaults of package telemetry.
type TSDBConfig struct {
	// Retention is how long samples are kept.
	Retention time.Duration
	// RetentionBytes bounds the TSDB's blocks on disk; 0 means no bound.
	RetentionBytes int64
	// OutOfOrderWindow is how old a sample an agent's backlog may still
	// bring in, behind the newest sample of its series.
	OutOfOrderWindow time.Duration
	// SeriesCache bounds the series whose decoded label sets and TSDB
	// refs the receiver keeps (telemetry.ReceiverConfig.MaxCachedSeries);
	// negative turns the cache off.
	SeriesCache int
}

func tsdbPath(dataDir string) string { return filepath.Join(dataDir, "tsdb") }

// openTelemetry opens the TSDB under the data dir; over it the
// remote-write forwarder (what is appended to it is stored in the TSDB and
// queued for every Config.RemoteWrite endpoint), the receiver of the
// agents' metrics payloads, which appends through the forwarder, and the
// Prometheus HTTP API.
func (h *Hub) openTelemetry(gcfg *gateway.Config) error {
	db, err := telemetry.Open(telemetry.Options{
		Dir: tsdbPath(h.cfg.DataDir), Retention: h.cfg.TSDB.Retention, RetentionBytes: h.cfg.TSDB.RetentionBytes,
		OutOfOrderWindow: h.cfg.TSDB.OutOfOrderWindow, Logger: h.log,
	})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	h.tsdb = db
	rw := remotewrite.DefaultConfig()
	rw.Dir, rw.Endpoints, rw.Logger = remotewrite.Dir(h.cfg.DataDir), h.cfg.RemoteWrite, h.log
	rw.ExternalLabels = externalLabels(h.cfg.ExternalLabels)
	if h.cfg.RemoteWriteMaxQueueBytes != 0 {
		rw.MaxQueueBytes = h.cfg.RemoteWriteMaxQueueBytes
	}
	if h.forward, err = remotewrite.New(rw, db); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	for _, e := range rw.Endpoints {
		h.log.Info("remote write on", "endpoint", e.Name, "url", e.URL)
	}
	rcfg := telemetry.DefaultReceiverConfig()
	rcfg.DB, rcfg.Logger = h.forward, h.log
	switch n := h.cfg.TSDB.SeriesCache; {
	case n < 0:
		rcfg.MaxCachedSeries = 0
	case n > 0:
		rcfg.MaxCachedSeries = n
		rcfg.MaxCachedSeriesPerCluster = min(n, rcfg.MaxCachedSeriesPerCluster)
	}
	if h.metrics, err = telemetry.NewReceiver(rcfg); err != nil {
		return err
	}
	acfg := telemetry.DefaultAPIConfig()
	acfg.DB, acfg.Metadata, acfg.Logger, acfg.Version = db, h.metrics, h.log, version.Get()
	if h.prom, err = telemetry.NewAPI(acfg); err != nil {
		return err
	}
	if gcfg.Payloads == nil {
		gcfg.Payloads = map[string]gateway.PayloadReceiver{}
	}
	gcfg.Payloads[telemetryv1.PayloadKind] = h.metrics
	// The receiver decodes metric batches in the symbol form as well as the
	// series form, so agents may send the smaller one.
	if !slices.Contains(gcfg.Features, fleetv1.FeatureMetricSymbols) {
		gcfg.Features = append(gcfg.Features, fleetv1.FeatureMetricSymbols)
	}
	return nil
}

func (h *Hub) closeTelemetry() {
	if h.prom != nil {
		_ = h.prom.Close()
	}
	if h.forward != nil {
		if err := h.forward.Close(); err != nil {
			h.log.Warn("close remote-write queue", "err", err)
		}
	}
	if h.tsdb != nil {
		if err := h.tsdb.Close(); err != nil {
			h.log.Warn("close TSDB", "err", err)
		}
	}
}

// Metrics exposes the metrics receiver (for tests and benchmarks).
func (h *Hub) Metrics() *telemetry.Receiver { return h.metrics }

// RemoteWriteStatus is the health of each remote-write endpoint's queue.
func (h *Hub) RemoteWriteStatus() []remotewrite.Status { return h.forward.Status() }
