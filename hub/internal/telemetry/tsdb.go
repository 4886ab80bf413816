// Package telemetry is the hub's metrics store: the agents' metric batches
// (protocol/telemetry/v1) appended to an embedded Prometheus TSDB under the
// data directory (Receiver), queried with PromQL through the Prometheus
// HTTP API (API). docs/design/telemetry.md has the rules.
package telemetry

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/prometheus/tsdb"
)

// Options configure the embedded TSDB.
type Options struct {
	// Dir is the TSDB directory (required).
	Dir string
	// Retention is how long samples are kept; 0 means 15 days.
	Retention time.Duration
	// RetentionBytes bounds the blocks on disk; 0 means no bound.
	RetentionBytes int64
	// OutOfOrderWindow is how far behind the newest sample of a series an
	// older one is still accepted: an agent's backlog after an outage
	// arrives this late. 0 means 7 days.
	OutOfOrderWindow time.Duration
	Logger           *slog.Logger
}

// Defaults of Options.
const (
	DefaultRetention        = 15 * 24 * time.Hour
	DefaultOutOfOrderWindow = 7 * 24 * time.Hour
)

// DB is the hub's embedded TSDB.
type DB struct {
	*tsdb.DB
	opts Options
}

// Open opens (or creates) the TSDB in opts.Dir.
func Open(opts Options) (*DB, error) {
	if opts.Dir == "" {
		return nil, errors.New("telemetry: Options.Dir is required")
	}
	if opts.Retention == 0 {
		opts.Retention = DefaultRetention
	}
	if opts.OutOfOrderWindow == 0 {
		opts.OutOfOrderWindow = DefaultOutOfOrderWindow
	}
	if opts.Retention < 0 || opts.RetentionBytes < 0 || opts.OutOfOrderWindow < 0 {
		return nil, fmt.Errorf("telemetry: retention %s, retention bytes %d and out-of-order window %s must not be negative", opts.Retention, opts.RetentionBytes, opts.OutOfOrderWindow)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	to := tsdb.DefaultOptions()
	to.RetentionDuration = opts.Retention.Milliseconds()
	to.MaxBytes = opts.RetentionBytes
	to.OutOfOrderTimeWindow = opts.OutOfOrderWindow.Milliseconds()
	db, err := tsdb.Open(opts.Dir, opts.Logger, nil, to, nil)
	if err != nil {
		return nil, fmt.Errorf("telemetry: open TSDB in %s: %w", opts.Dir, err)
	}
	return &DB{DB: db, opts: opts}, nil
}
