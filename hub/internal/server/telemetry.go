package server

import (
	"fmt"
	"path/filepath"

	"github.com/tetherfleet/tether/hub/internal/remotewrite"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

// openTelemetry opens the hub's TSDB and, over it, the remote-write
// forwarder: what the metrics receiver appends to h.metrics is stored in
// h.tsdb and queued for every Config.RemoteWrite endpoint.
func (h *Hub) openTelemetry() error {
	db, err := telemetry.Open(telemetry.Options{Dir: filepath.Join(h.cfg.DataDir, "tsdb"), Logger: h.log})
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	h.tsdb = db
	rw := remotewrite.DefaultConfig()
	rw.Dir, rw.Endpoints, rw.Logger = remotewrite.Dir(h.cfg.DataDir), h.cfg.RemoteWrite, h.log
	if h.cfg.RemoteWriteMaxQueueBytes != 0 {
		rw.MaxQueueBytes = h.cfg.RemoteWriteMaxQueueBytes
	}
	if h.metrics, err = remotewrite.New(rw, db); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	for _, e := range rw.Endpoints {
		h.log.Info("remote write on", "endpoint", e.Name, "url", e.URL)
	}
	return nil
}

// RemoteWriteStatus is the health of each remote-write endpoint's queue.
func (h *Hub) RemoteWriteStatus() []remotewrite.Status { return h.metrics.Status() }

func (h *Hub) closeTelemetry() {
	if h.metrics != nil {
		if err := h.metrics.Close(); err != nil {
			h.log.Warn("close remote-write queue", "err", err)
		}
	}
	if h.tsdb != nil {
		if err := h.tsdb.Close(); err != nil {
			h.log.Warn("close TSDB", "err", err)
		}
	}
}
