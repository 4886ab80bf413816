package alerting

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

// BenchmarkCollect: one fleet collection of 1,000 connected clusters with
// 20 reported services each (25,000 series) into a real TSDB.
func BenchmarkCollect(b *testing.B) {
	db, err := telemetry.Open(telemetry.Options{Dir: filepath.Join(b.TempDir(), "tsdb")})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	fs := &fleetSource{}
	for i := range 1000 {
		name := fmt.Sprintf("edge-%d", i)
		fs.clusters = append(fs.clusters, fleet.Cluster{Name: name, Enrolled: t0, LastSeen: t0, CertNotAfter: t0.Add(90 * 24 * time.Hour)})
		fs.sessions = append(fs.sessions, gateway.SessionInfo{Cluster: name, LastHeartbeat: t0, OutboxKinds: []gateway.OutboxKindStats{{Kind: "report"}, {Kind: "metrics"}}})
		r := reports.Report{Cluster: name}
		for j := range 20 {
			r.Services = append(r.Services, reports.Service{Name: fmt.Sprintf("svc-%d", j), Namespace: "apps", State: "Deployed"})
		}
		fs.reports = append(fs.reports, r)
	}
	c := &collector{fleet: fs, reports: reportSource{fs}, sessions: fs, db: db}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := c.collect(context.Background(), t0.Add(time.Duration(i)*30*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(c.last)), "series")
}

// BenchmarkFlush: a flush of 10,000 firing alerts in 100 groups, every
// group due and changed (the worst case: every group notifies).
func BenchmarkFlush(b *testing.B) {
	p := testPolicyB(b)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		d := NewDispatcher(DispatcherConfig{Now: func() time.Time { return t0 }, QueueSize: 1000})
		d.SetPolicies([]*policy{p})
		for j := range 10000 {
			d.Put(alert(t0, "alertname", fmt.Sprintf("A%d", j%100), "cluster", fmt.Sprintf("edge-%d", j)))
		}
		b.StartTimer()
		d.flush(t0.Add(time.Minute))
	}
}

func testPolicyB(b *testing.B) *policy {
	np := &objects.NotificationPolicy{Spec: objects.NotificationPolicySpec{
		Route:     objects.AlertRoute{Receiver: "team", GroupBy: []string{"alertname"}, GroupWait: "30s"},
		Receivers: []objects.AlertReceiver{{Name: "team", Webhook: &objects.WebhookReceiver{URL: "http://unused"}}}}}
	np.Metadata.Namespace, np.Metadata.Name = "ops", "p"
	m := &Manager{}
	p, err := m.compilePolicy(context.Background(), np, nil)
	if err != nil {
		b.Fatal(err)
	}
	return p
}
