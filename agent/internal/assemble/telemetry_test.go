package assemble

import (
	"testing"

	"github.com/tetherfleet/tether/agent/internal/link"
)

// TestTelemetryConfig: the metrics quota flag reaches the cache's kind
// registration, a quota that cannot hold one batch is refused, and a
// link-only agent has no emitter.
func TestTelemetryConfig(t *testing.T) {
	tc := DefaultTelemetryConfig()
	tc.OutboxBytes = 3 << 30
	var got int64
	for _, k := range outboxKinds(tc) {
		if k.Name == link.KindMetrics {
			got = k.MaxBytes
		}
	}
	if got != 3<<30 {
		t.Fatalf("metrics quota = %d; want %d from the config", got, int64(3<<30))
	}
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Telemetry.OutboxBytes = 1000
	if err := cfg.Validate(); err == nil {
		t.Fatal("a 1000-byte metrics quota was accepted")
	}
	cfg.Telemetry.OutboxBytes, cfg.Telemetry.Interval = 0, -1
	if err := cfg.Validate(); err == nil {
		t.Fatal("a negative interval was accepted")
	}
}
