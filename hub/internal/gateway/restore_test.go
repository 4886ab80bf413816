package gateway_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/pki"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// dataHub is a gateway with a desired-state compiler on a data directory
// that survives stop and start, so a test can restore its store file.
type dataHub struct {
	*testHub
	store *boltstore.Store
	repo  *objects.Repo
	c     *desired.Compiler
	stop  func()
}

func startDataHub(t *testing.T, dir string) *dataHub {
	t.Helper()
	clk := &clock{now: time.Now()}
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := fleet.New(fleet.Config{Store: st, Now: clk.Now, CAFingerprint: ca.FingerprintSum()})
	if err != nil {
		t.Fatal(err)
	}
	repo, err := objects.NewRepo(objects.RepoConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	c, err := desired.New(desired.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.ServerCert([]string{"127.0.0.1"}, time.Hour, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	cfg.Registry, cfg.Signer, cfg.Certificate, cfg.ClientCAs = reg, ca, serving, ca.Pool()
	cfg.Desired = compilerSource{c}
	cfg.Now = clk.Now
	gw, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- gw.Serve(ctx, ln) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Serve: %v", err)
		}
		if err := st.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	}
	t.Cleanup(stop)
	return &dataHub{
		testHub: &testHub{addr: ln.Addr().String(), ca: ca, fleet: reg, gw: gw, clock: clk},
		store:   st, repo: repo, c: c, stop: stop,
	}
}

// compilerSource is what the hub server wires: the compiler plus HasChart.
type compilerSource struct{ *desired.Compiler }

func (compilerSource) HasChart(context.Context, string, string) (bool, error) { return false, nil }

const restoreTemplates = `apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: app, namespace: acme}
spec: {helm: {chartSpec: {chart: app, version: 1.0.0, sourceRef: {name: tether-local}}}}
`

// deploy makes services (names) the desired state of edge-1 and compiles.
func (h *dataHub) deploy(t *testing.T, names ...string) uint64 {
	t.Helper()
	var svcs []string
	for _, n := range names {
		svcs = append(svcs, fmt.Sprintf("{template: app, name: %s, namespace: apps}", n))
	}
	y := restoreTemplates + `---
apiVersion: tether.dev/v1alpha1
kind: ClusterDeployment
metadata: {name: edge-1, namespace: acme}
spec:
  template: adopted
  serviceSpec:
    services: [` + strings.Join(svcs, ", ") + `]
`
	objs, err := objects.Decode([]byte(y), "test")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := h.repo.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	_, err = h.repo.UpdateStatus(ctx, objects.KindServiceTemplate, "acme", "app", func(o objects.Object) error {
		o.(*objects.ServiceTemplate).Status = objects.ServiceTemplateStatus{ChartDigest: "sha256:app1", ChartName: "app", ChartVersion: "1.0.0", Valid: true}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.c.Recompile(ctx); err != nil {
		t.Fatal(err)
	}
	rev, err := h.c.Revision(ctx, "edge-1")
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

// syncAs connects with tc, says hello with (have, epoch) and returns the
// first desired state the hub sends.
func (h *dataHub) syncAs(t *testing.T, tc *tls.Config, have uint64, epoch string) *fleetv1.DesiredState {
	t.Helper()
	_, cc := h.dial(t, tc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := fleetv1.NewFleetClient(cc).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{
		Cluster: "edge-1", AgentVersion: "test", HaveRevision: have, HaveEpoch: epoch,
	}}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("sync (have %d, epoch %q): %v", have, epoch, err)
		}
		if ds := msg.GetDesired(); ds != nil {
			if err := stream.CloseSend(); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			return ds
		}
	}
}

func serviceNames(ds *fleetv1.DesiredState) []string {
	var out []string
	for _, s := range ds.GetServices() {
		out = append(out, s.GetName())
	}
	slices.Sort(out)
	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRestoredHubReplacesAgentStateFromLostHistory: an agent holds
// revision ~100 with {A}; the hub is restored to a backup taken at
// revision ~50 with {B}. On reconnect the hub must send a full,
// authoritative {B} (below the agent's revision), not nothing and not a
// delta over {A}. It must also do so after the restored store's own
// writes have pushed its revisions past the agent's, which reuse the
// agent's revision numbers for another history.
func TestRestoredHubReplacesAgentStateFromLostHistory(t *testing.T) {
	dir := t.TempDir()
	h := startDataHub(t, dir)
	tc := mustEnroll(t, h.testHub, "edge-1")
	revB := h.deploy(t, "b")
	// Backup of the store at this point.
	h.stop()
	copyFile(t, filepath.Join(dir, "hub.db"), filepath.Join(dir, "backup.db"))

	h = startDataHub(t, dir)
	for i := range 50 { // unrelated writes push the store revision up
		if _, err := h.fleet.CreateToken(context.Background(), fleet.TokenRequest{Cluster: fmt.Sprintf("other-%d", i), TTL: time.Hour, Uses: 1}); err != nil {
			t.Fatal(err)
		}
	}
	revA := h.deploy(t, "a")
	got := h.syncAs(t, tc, 0, "")
	if got.GetRevision() != revA || !slices.Equal(serviceNames(got), []string{"a"}) || got.GetEpoch() == "" {
		t.Fatalf("before restore: agent got %v; want {a} at %d with an epoch", got, revA)
	}
	agentRev, agentEpoch := got.GetRevision(), got.GetEpoch()

	// Restore the backup.
	h.stop()
	copyFile(t, filepath.Join(dir, "backup.db"), filepath.Join(dir, "hub.db"))
	h = startDataHub(t, dir)
	if _, err := h.c.Recompile(context.Background()); err != nil {
		t.Fatal(err)
	}
	ds := h.syncAs(t, tc, agentRev, agentEpoch)
	if !ds.GetFull() || ds.GetRevision() != revB || !slices.Equal(serviceNames(ds), []string{"b"}) || ds.GetEpoch() != agentEpoch {
		t.Fatalf("after restore: agent at %d/{a} got %v; want the full state {b} at %d, epoch %s", agentRev, ds, revB, agentEpoch)
	}

	// The restored hub moves on past the agent's revision before the agent
	// (still at its lost revision) comes back.
	for i := range 60 {
		if _, err := h.fleet.CreateToken(context.Background(), fleet.TokenRequest{Cluster: fmt.Sprintf("later-%d", i), TTL: time.Hour, Uses: 1}); err != nil {
			t.Fatal(err)
		}
	}
	revBC := h.deploy(t, "b", "c")
	if revBC <= agentRev {
		t.Fatalf("test setup: restored history at %d has not passed the agent's %d", revBC, agentRev)
	}
	ds = h.syncAs(t, tc, agentRev, agentEpoch)
	if !ds.GetFull() || ds.GetRevision() != revBC || !slices.Equal(serviceNames(ds), []string{"b", "c"}) {
		t.Fatalf("restored hub past the agent's revision: agent at %d/{a} got %v; want the full state {b, c} at %d", agentRev, ds, revBC)
	}

	// An agent from another store (a new hub) gets the full state even at
	// a revision number the hub has.
	ds = h.syncAs(t, tc, revBC, "another-store")
	if !ds.GetFull() || !slices.Equal(serviceNames(ds), []string{"b", "c"}) {
		t.Fatalf("agent of another epoch got %v; want the full state", ds)
	}
}
