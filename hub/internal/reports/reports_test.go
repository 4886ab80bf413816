package reports_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func report(rev uint64, at time.Time, state string) *fleetv1.StatusReport {
	return &fleetv1.StatusReport{Revision: rev, Observed: timestamppb.New(at), Services: []*fleetv1.ServiceStatus{
		{Name: "web", Namespace: "apps", State: state, Revision: rev, Time: timestamppb.New(at)},
	}}
}

func TestNewerReportsWinResendsAreIgnored(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := &reports.Reports{Store: st}
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	for _, step := range []struct {
		rep   *fleetv1.StatusReport
		state string
		rev   uint64
	}{
		{report(3, t0, "Provisioning"), "Provisioning", 3},
		{report(3, t0.Add(time.Minute), "Deployed"), "Deployed", 3},
		// A resend of an older report after a reconnect changes nothing.
		{report(3, t0, "Provisioning"), "Deployed", 3},
		{report(5, t0.Add(2*time.Minute), "Failed"), "Failed", 5},
	} {
		if err := r.SaveReport(ctx, "edge-1", step.rep); err != nil {
			t.Fatal(err)
		}
		got, ok, err := r.Get(ctx, "edge-1")
		if err != nil || !ok || got.Revision != step.rev || got.Services[0].State != step.state {
			t.Fatalf("after saving %v: %+v, %v, %v; want state %s revision %d", step.rep, got, ok, err, step.state, step.rev)
		}
	}
	if err := r.Delete(ctx, "edge-1"); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := r.Get(ctx, "edge-1"); ok || err != nil {
		t.Fatalf("after Delete: ok %v, err %v", ok, err)
	}
	if err := r.Delete(ctx, "edge-1"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestOversizedReportRefused(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r := &reports.Reports{Store: st}
	big := &fleetv1.StatusReport{Revision: 1}
	for range 1001 {
		big.Services = append(big.Services, &fleetv1.ServiceStatus{Name: "x", Namespace: "y"})
	}
	if err := r.SaveReport(context.Background(), "edge-1", big); err == nil {
		t.Fatal("a report with 1,001 services was stored")
	}
	if _, ok, _ := r.Get(context.Background(), "edge-1"); ok {
		t.Fatal("refused report left a record")
	}
}

// TestFutureTimestampDoesNotFreezeClusterStatus: one report stamped a day
// ahead (an agent clock running fast, then corrected) used to win over
// every later report until real time caught up. Reports are ordered by
// their outbox seq, and agent timestamps are clamped to the hub's clock
// plus MaxClockSkew.
func TestFutureTimestampDoesNotFreezeClusterStatus(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	hubNow := time.Date(2026, 11, 26, 8, 0, 0, 0, time.UTC)
	r := &reports.Reports{Store: st, Now: func() time.Time { return hubNow }}
	ctx := context.Background()
	withSeq := func(rep *fleetv1.StatusReport, seq uint64) *fleetv1.StatusReport { rep.Seq = seq; return rep }
	for _, step := range []struct {
		name  string
		rep   *fleetv1.StatusReport
		state string
	}{
		{"a day ahead", withSeq(report(3, hubNow.Add(24*time.Hour), "Failed"), 100), "Failed"},
		{"clock corrected", withSeq(report(3, hubNow, "Deployed"), 101), "Deployed"},
		{"resend of the future one", withSeq(report(3, hubNow.Add(24*time.Hour), "Failed"), 100), "Deployed"},
		{"restarted outbox", withSeq(report(4, hubNow, "Provisioning"), 1), "Provisioning"},
	} {
		if err := r.SaveReport(ctx, "edge-1", step.rep); err != nil {
			t.Fatal(err)
		}
		got, _, err := r.Get(ctx, "edge-1")
		if err != nil {
			t.Fatal(err)
		}
		if got.Services[0].State != step.state {
			t.Fatalf("%s: state %s; want %s", step.name, got.Services[0].State, step.state)
		}
		if limit := hubNow.Add(reports.MaxClockSkew); got.Observed.After(limit) || got.Services[0].Time.After(limit) {
			t.Fatalf("%s: stored times %v / %v beyond hub now + skew", step.name, got.Observed, got.Services[0].Time)
		}
	}

	// An agent without seq numbers: the future stamp is clamped, so a
	// report ten minutes of hub time later wins.
	r2 := &reports.Reports{Store: st, Now: func() time.Time { return hubNow }}
	if err := r2.SaveReport(ctx, "legacy", report(3, hubNow.Add(24*time.Hour), "Failed")); err != nil {
		t.Fatal(err)
	}
	hubNow = hubNow.Add(10 * time.Minute)
	if err := r2.SaveReport(ctx, "legacy", report(3, hubNow, "Deployed")); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := r2.Get(ctx, "legacy"); got.Services[0].State != "Deployed" {
		t.Fatalf("legacy agent: state %s; want Deployed", got.Services[0].State)
	}
}
