package server

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
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
}

func tsdbPath(dataDir string) string { return filepath.Join(dataDir, "tsdb") }

// openTelemetry opens the TSDB under the data dir, the receiver of the
// agents' metrics payloads and the Prometheus HTTP API over them.
func (h *Hub) openTelemetry(gcfg *gateway.Config) error {
	db, err := telemetry.Open(telemetry.Options{
		Dir: tsdbPath(h.cfg.DataDir), Retention: h.cfg.TSDB.Retention, RetentionBytes: h.cfg.TSDB.RetentionBytes,
		OutOfOrderWindow: h.cfg.TSDB.OutOfOrderWindow, Logger: h.log,
	})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	h.tsdb = db
	rcfg := telemetry.DefaultReceiverConfig()
	rcfg.DB, rcfg.Logger = db, h.log
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
	return nil
}

func (h *Hub) closeTelemetry() {
	if h.prom != nil {
		_ = h.prom.Close()
	}
	if h.tsdb != nil {
		if err := h.tsdb.Close(); err != nil {
			h.log.Warn("close TSDB", "err", err)
		}
	}
}

// Metrics exposes the metrics receiver (for tests and benchmarks).
func (h *Hub) Metrics() *telemetry.Receiver { return h.metrics }
