package telemetry

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// TestReceiverStoresStaleMarkers: a StaleNaN sample an agent sends for a
// series that went (a deleted pod's kube_pod_info) is stored as is, and
// an instant query after it no longer returns the series, though it is
// well inside the 5-minute lookback; before the marker it still does.
func TestReceiverStoresStaleMarkers(t *testing.T) {
	db := openTestDB(t)
	rcv := newTestReceiver(t, db)
	start := testNow.Add(-10 * time.Minute)
	marker := start.Add(3 * 15 * time.Second)
	stale := series("kube_pod_info", start, 3, 1, "namespace", "web", "pod", "web-1")
	stale.Samples = append(stale.Samples, &telemetryv1.Sample{TimestampMs: marker.UnixMilli(), Value: math.Float64frombits(value.StaleNaN)})
	kept := series("kube_pod_info", start, 4, 1, "namespace", "web", "pod", "web-0")
	b := &telemetryv1.MetricBatch{Series: []*telemetryv1.Series{stale, kept}}
	if err := rcv.ReceivePayload(context.Background(), "edge-1", 1, encode(t, b)); err != nil {
		t.Fatalf("ReceivePayload: %v", err)
	}
	var bits []uint64
	for _, v := range stored(t, db, nameIs("kube_pod_info"), labels.MustNewMatcher(labels.MatchEqual, "pod", "web-1")) {
		for _, f := range v {
			bits = append(bits, math.Float64bits(f))
		}
	}
	if len(bits) != 4 || bits[3] != value.StaleNaN {
		t.Fatalf("stored %x, want 3 samples then the StaleNaN bits %x", bits, value.StaleNaN)
	}

	cfg := DefaultAPIConfig()
	cfg.DB, cfg.Metadata, cfg.Now = db, rcv, func() time.Time { return testNow }
	api, err := NewAPI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Close() })
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{marker.Add(-time.Second), "2"}, // web-1's last sample is within the lookback
		{marker, "1"},
		{marker.Add(time.Minute), "1"}, // not 5 minutes: gone at once
	} {
		code, resp := call(t, api, http.MethodGet, "/api/v1/query", form("query", `count(kube_pod_info{cluster="edge-1"})`, "time", unix(tc.at)))
		want := fmt.Sprintf(`{"resultType":"vector","result":[{"metric":{},"value":[%s,"%s"]}]}`, unix(tc.at), tc.want)
		if code != http.StatusOK || string(resp.Data) != want {
			t.Errorf("at marker%+v: %d %s %s, want %s", tc.at.Sub(marker), code, resp.Data, resp.Error, want)
		}
	}
}
