package fleetsim

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func testFleet(t *testing.T, n int, rate float64, version string) *Fleet {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Hub = "127.0.0.1:1"
	cfg.DeployDelay = time.Millisecond
	cfg.FailRate, cfg.FailChartVersion, cfg.Seed = rate, version, 7
	for i := range n {
		cfg.Identities = append(cfg.Identities, cache.Identity{Cluster: fmt.Sprintf("sim-%05d", i)})
	}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// lastReport waits for a's newest queued status report.
func lastReport(t *testing.T, a *agent, rev uint64) *fleetv1.StatusReport {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		es, _ := a.store.Batch(100, nil)
		if len(es) > 0 {
			var rep fleetv1.StatusReport
			if err := proto.Unmarshal(es[len(es)-1].Payload, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.GetRevision() == rev {
				return &rep
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no status report of revision %d queued", a.cluster, rev)
		}
		time.Sleep(time.Millisecond) // polling the deploy timer, with a deadline
	}
}

func svc(version string) *fleetv1.Service {
	return &fleetv1.Service{Name: "web", Namespace: "apps", Template: "web-" + version, ChartName: "web", ChartVersion: version, ValuesHash: "h-" + version}
}

// TestDeployReports: a simulated deploy queues the reconciler's report
// (Deployed at the desired revision, with the values hash), and failures
// hit the seeded share of agents, only for the chart version named.
func TestDeployReports(t *testing.T) {
	f := testFleet(t, 1000, 0.05, "2.0.0")
	failing := 0
	for _, a := range f.agents {
		if err := a.Desired(context.Background(), &fleetv1.DesiredState{Revision: 5, Full: true, Services: []*fleetv1.Service{svc("1.0.0")}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range f.agents {
		rep := lastReport(t, a, 5)
		s := rep.GetServices()[0]
		if s.GetState() != stateDeployed || s.GetRevision() != 5 || s.GetLastDeployedHash() != "h-1.0.0" || s.GetTemplate() != "web-1.0.0" {
			t.Fatalf("%s: report of 1.0.0: %v", a.cluster, rep)
		}
		if err := a.Desired(context.Background(), &fleetv1.DesiredState{Revision: 6, Services: []*fleetv1.Service{svc("2.0.0")}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range f.agents {
		rep := lastReport(t, a, 6)
		if rep.GetServices()[0].GetState() == stateFailed {
			failing++
		}
	}
	if failing < 25 || failing > 75 {
		t.Errorf("fail rate 0.05 over 1000 agents: %d failed", failing)
	}
	st := f.Statuses()[0]
	if st.Applies != 2 || st.Revision != 6 {
		t.Errorf("status: %+v", st)
	}
}

func TestParseOutage(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Outage
		err  bool
	}{
		{in: "0.1@5s+30s", want: Outage{0.1, 5 * time.Second, 30 * time.Second}},
		{in: "1@0s+1m", want: Outage{1, 0, time.Minute}},
		{in: "0.1", err: true},
		{in: "1.5@1s+1s", err: true},
		{in: "0.1@-1s+1s", err: true},
		{in: "0.1@1s+0s", err: true},
		{in: "x@1s+1s", err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseOutage(tc.in)
			if (err != nil) != tc.err || (!tc.err && got != tc.want) {
				t.Errorf("ParseOutage(%q) = %+v, %v", tc.in, got, err)
			}
		})
	}
}

func FuzzParseOutage(f *testing.F) {
	for _, s := range []string{"0.1@5s+30s", "1@0s+1m", "", "@+", "0.5@1h+1ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseOutage(s)
		if err == nil && (o.Fraction < 0 || o.Fraction > 1 || o.At < 0 || o.For <= 0) {
			t.Fatalf("ParseOutage(%q) accepted %+v", s, o)
		}
	})
}

// TestPick: an outage takes ceil(fraction·N) agents, the same ones for the
// same seed and index, other ones for another index.
func TestPick(t *testing.T) {
	f := testFleet(t, 1000, 0, "")
	a, b := f.Pick(1, 0.1), f.Pick(1, 0.1)
	if len(a) != 100 || fmt.Sprint(a) != fmt.Sprint(b) {
		t.Fatalf("pick: %d agents, stable %v", len(a), fmt.Sprint(a) == fmt.Sprint(b))
	}
	if c := f.Pick(2, 0.1); fmt.Sprint(c) == fmt.Sprint(a) {
		t.Error("outages 1 and 2 took the same agents")
	}
	if n := len(f.Pick(0, 0.0001)); n != 1 {
		t.Errorf("a tiny fraction took %d agents, want 1 (rounded up)", n)
	}
}

// TestDesiredDelta: deltas merge and tombstones remove, as the
// reconciler's Desired does; an old revision is ignored.
func TestDesiredDelta(t *testing.T) {
	f := testFleet(t, 1, 0, "")
	a := f.agents[0]
	other := &fleetv1.Service{Name: "db", Namespace: "apps", ChartVersion: "1", ValuesHash: "d"}
	steps := []*fleetv1.DesiredState{
		{Revision: 2, Full: true, Services: []*fleetv1.Service{svc("1.0.0"), other}},
		{Revision: 3, Services: []*fleetv1.Service{svc("2.0.0")}},
		{Revision: 1, Full: false, Services: []*fleetv1.Service{svc("9")}},
		{Revision: 4, Tombstones: []*fleetv1.Tombstone{{Name: "db", Namespace: "apps"}}},
	}
	for _, ds := range steps {
		if err := a.Desired(context.Background(), ds); err != nil {
			t.Fatal(err)
		}
	}
	rep := lastReport(t, a, 4)
	if len(rep.GetServices()) != 1 || rep.GetServices()[0].GetLastDeployedHash() != "h-2.0.0" {
		t.Fatalf("after delta and tombstone: %v", rep)
	}
}

// TestOutbox: the in-memory outbox hands out entries in order, honours
// sendable, and forgets acknowledged and dead-lettered ones.
func TestOutbox(t *testing.T) {
	m := newMemStore(nil, time.Now)
	for range 5 {
		_ = m.enqueue("status", []byte("x"))
	}
	_ = m.enqueue("other", []byte("y"))
	es, _ := m.Batch(3, func(k string) bool { return k == "status" })
	if len(es) != 3 || es[0].Seq != 1 || es[2].Seq != 3 {
		t.Fatalf("batch: %+v", es)
	}
	_ = m.Ack(1, 2)
	if k, _ := m.DeadLetter(3); k != "status" {
		t.Errorf("dead-letter kind %q", k)
	}
	st, _ := m.OutboxStats()
	if st.Pending != 3 || st.DeadLettered != 1 || st.Kinds["other"].Pending != 1 {
		t.Errorf("stats: %+v", st)
	}
	es, _ = m.Batch(10, nil)
	if len(es) != 3 || es[0].Seq != 4 {
		t.Errorf("after ack: %+v", es)
	}
}

// TestBoltCache: with CacheDir each agent keeps its desired state and its
// outbox in a real agent cache file, which Run closes on its way out.
func TestBoltCache(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Hub, cfg.DeployDelay, cfg.CacheDir = "127.0.0.1:1", time.Millisecond, t.TempDir()
	pem := []byte("not parsed here")
	cfg.Identities = []cache.Identity{{Cluster: "sim-1", KeyPEM: pem, CertPEM: pem, CAPEM: pem}, {Cluster: "sim-2", KeyPEM: pem, CertPEM: pem, CAPEM: pem}}
	f, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := f.agents[0]
	if err := a.Desired(context.Background(), &fleetv1.DesiredState{Revision: 3, Full: true, Services: []*fleetv1.Service{svc("1.0.0")}}); err != nil {
		t.Fatal(err)
	}
	if rev, _, err := a.store.db.LatestDesired(); err != nil || rev != 3 {
		t.Fatalf("desired in the cache file: revision %d, %v", rev, err)
	}
	if rep := lastReport(t, a, 3); rep.GetServices()[0].GetState() != stateDeployed {
		t.Fatalf("report: %v", rep)
	}
	if st, _ := a.store.db.OutboxStats(); st.Pending != 1 {
		t.Errorf("outbox in the cache file: %+v", st)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := f.Run(ctx, nil); err != nil {
		t.Fatal(err)
	}
	c, err := cache.Open(filepath.Join(cfg.CacheDir, "sim-1.db"), cache.DefaultOptions())
	if err != nil {
		t.Fatalf("reopen after Run: %v", err)
	}
	defer c.Close()
	if id, err := c.Identity(); err != nil || id.Cluster != "sim-1" {
		t.Errorf("identity in the cache file: %+v, %v", id, err)
	}
}

// TestStagedActivatesAtWindowStart: a simulated agent with no link
// switches a staged service to its next version when its window opens,
// and reports it; one whose window is later keeps the current version.
func TestStagedActivatesAtWindowStart(t *testing.T) {
	f := testFleet(t, 2, 0, "")
	now := time.Now()
	staged := func(start time.Time) *fleetv1.DesiredState {
		s := svc("1.0.0")
		s.Staged = &fleetv1.StagedService{Next: svc("2.0.0"), Windows: []*fleetv1.Window{
			{Start: timestamppb.New(start), End: timestamppb.New(start.Add(time.Hour))}}}
		return &fleetv1.DesiredState{Revision: 5, Full: true, Services: []*fleetv1.Service{s}}
	}
	soon, later := f.agents[0], f.agents[1]
	if err := soon.Desired(context.Background(), staged(now.Add(30*time.Millisecond))); err != nil {
		t.Fatal(err)
	}
	if err := later.Desired(context.Background(), staged(now.Add(time.Hour))); err != nil {
		t.Fatal(err)
	}
	if rep := lastReport(t, later, 5); rep.GetServices()[0].GetLastDeployedHash() != "h-1.0.0" {
		t.Fatalf("window not open: %v, want 1.0.0", rep)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep := lastReport(t, soon, 5)
		if rep.GetServices()[0].GetLastDeployedHash() == "h-2.0.0" && rep.GetServices()[0].GetState() == stateDeployed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("staged 2.0.0 not reported after its window opened: %v", rep)
		}
		time.Sleep(time.Millisecond) // polling the window timer, with a deadline
	}
	if v := soon.status().Services[0].ChartVersion; v != "2.0.0" {
		t.Errorf("held version %s after activation, want 2.0.0", v)
	}
	if v := later.status().Services[0].ChartVersion; v != "1.0.0" {
		t.Errorf("agent before its window holds %s, want 1.0.0", v)
	}
}
