package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/alerting"
)

// TestAlertTable: `tether get alerts` shows name, state, since and the
// labels; -o wide adds the summary and each receiver's last delivery.
func TestAlertTable(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	rows := []alerting.AlertView{{
		Name: "TetherClusterOffline", State: "firing", Since: now.Add(-20 * time.Minute),
		Labels:      map[string]string{"alertname": "TetherClusterOffline", "cluster": "edge-1", "severity": "warning"},
		Annotations: map[string]string{"summary": "Cluster edge-1 is offline"},
		Receivers:   []string{"ops/ops/team"},
		Deliveries: []alerting.Delivery{
			{Receiver: "ops/ops/team", Integration: "webhook", Status: "firing", At: now.Add(-10 * time.Minute), Error: "503"},
			{Receiver: "ops/ops/team", Integration: "webhook", Status: "firing", At: now.Add(-5 * time.Minute)},
			{Receiver: "ops/ops/team", Integration: "email", Status: "firing", At: now.Add(-5 * time.Minute), Error: "smtp h:25: dial: refused"},
		},
	}}
	var narrow, wide bytes.Buffer
	if err := (&outputFlag{}).print(&narrow, rows, func() table { return alertTable(rows, now) }); err != nil {
		t.Fatal(err)
	}
	if err := (&outputFlag{format: "wide"}).print(&wide, rows, func() table { return alertTable(rows, now) }); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TetherClusterOffline", "firing", "20m", "cluster=edge-1,severity=warning", "ops/ops/team"} {
		if !strings.Contains(narrow.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, narrow.String())
		}
	}
	if strings.Contains(narrow.String(), "webhook") {
		t.Errorf("deliveries outside -o wide:\n%s", narrow.String())
	}
	for _, want := range []string{"Cluster edge-1 is offline", "ops/ops/team webhook firing ok 5m", "ops/ops/team email firing failed (smtp h:25: dial: refused) 5m"} {
		if !strings.Contains(wide.String(), want) {
			t.Errorf("wide table lacks %q:\n%s", want, wide.String())
		}
	}
}
