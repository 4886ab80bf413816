package apply_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/reconcile"
	"github.com/tetherfleet/tether/e2e/e2etest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestSyncModesOnACluster: the reconciler with a real engine keeps each
// service as its syncMode says: OneTime installs once and never upgrades
// or repairs, Continuous upgrades but does not repair drift,
// ContinuousWithDriftDetection (the default) does both, DryRun installs
// nothing and says what it would do; helmOptions wait: false reports a
// never-ready service Deployed once applied.
func TestSyncModesOnACluster(t *testing.T) {
	c := testCluster(t)
	e, db := newEngineWithCache(t, c)
	ctx := t.Context()
	chart := configMapChart(t)
	dg := chartDigest(chart)
	podinfo := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	pdg := chartDigest(podinfo)
	for d, b := range map[string][]byte{dg: chart, pdg: podinfo} {
		if err := db.PutChart(d, b); err != nil {
			t.Fatal(err)
		}
	}
	r, err := reconcile.New(reconcile.Config{Cache: db, Engine: e, Charts: cachedCharts{}, HealthTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]string{"once": reconcile.SyncOneTime, "cont": reconcile.SyncContinuous, "drift": "", "dry": reconcile.SyncDryRun}
	desired := func(rev uint64, v string) *fleetv1.DesiredState {
		ds := &fleetv1.DesiredState{Revision: rev, Full: true}
		for _, name := range []string{"cont", "drift", "dry", "once"} {
			ds.Services = append(ds.Services, &fleetv1.Service{Name: name, Namespace: "sync-" + name, ChartDigest: dg,
				ValuesYaml: []byte("v: \"" + v + "\"\n"), ValuesHash: "h" + v, SyncMode: modes[name]})
		}
		ds.Services = append(ds.Services, &fleetv1.Service{Name: "nowait", Namespace: "sync-nowait", ChartDigest: pdg,
			ValuesYaml: []byte("nodeSelector: {tether.dev/no-such-node: \"true\"}\n"), ValuesHash: "p1",
			HelmOptions: &fleetv1.HelmOptions{SkipWait: true}})
		return ds
	}
	status := func(name string) *fleetv1.ServiceStatus {
		for _, s := range r.Statuses() {
			if s.GetName() == name {
				return s
			}
		}
		t.Fatalf("no status for %s in %v", name, r.Statuses())
		return nil
	}
	cm := func(name string) (string, error) {
		got, err := c.Clientset.CoreV1().ConfigMaps("sync-"+name).Get(ctx, name+"-cm", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return got.Data["v"], nil
	}
	revision := func(name string) int {
		info, err := e.Get(ctx, name, "sync-"+name)
		if err != nil {
			t.Fatalf("release %s: %v", name, err)
		}
		return info.Revision
	}

	if err := r.Desired(ctx, desired(1, "1")); err != nil {
		t.Fatal(err)
	}
	r.Pass(ctx)
	for _, name := range []string{"once", "cont", "drift", "nowait"} {
		if s := status(name); s.GetState() != reconcile.StateDeployed {
			t.Fatalf("%s after the first pass: %v, want Deployed", name, s)
		}
	}
	if s := status("dry"); s.GetState() != reconcile.StateDryRun || s.GetMessage() != "dry run: would install: create ConfigMap sync-dry/dry-cm" {
		t.Fatalf("dry: %v", s)
	}
	if _, err := e.Get(ctx, "dry", "sync-dry"); !errors.Is(err, apply.ErrReleaseNotFound) {
		t.Fatalf("DryRun release: %v, want not installed", err)
	}

	// Drift: the ConfigMaps are deleted; only the default mode repairs.
	for _, name := range []string{"once", "cont", "drift"} {
		if err := c.Clientset.CoreV1().ConfigMaps("sync-"+name).Delete(ctx, name+"-cm", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r.Pass(ctx)
	if v, err := cm("drift"); err != nil || v != "1" {
		t.Errorf("ContinuousWithDriftDetection: ConfigMap %q, %v; want repaired", v, err)
	}
	for _, name := range []string{"once", "cont"} {
		if _, err := cm(name); !apierrors.IsNotFound(err) {
			t.Errorf("%s: ConfigMap %v; want still deleted (no drift repair)", modes[name], err)
		}
	}

	// A change: OneTime is not upgraded, the others are.
	if err := r.Desired(ctx, desired(2, "2")); err != nil {
		t.Fatal(err)
	}
	r.Pass(ctx)
	if got := revision("once"); got != 1 {
		t.Errorf("OneTime release revision %d after a change, want 1", got)
	}
	if s := status("once"); s.GetState() != reconcile.StateDeployed || !strings.Contains(s.GetMessage(), "OneTime") || s.GetLastDeployedHash() == "h2" {
		t.Errorf("OneTime status %v; want Deployed, saying the change is not applied", s)
	}
	if v, err := cm("cont"); err != nil || v != "2" || revision("cont") != 2 {
		t.Errorf("Continuous after a change: ConfigMap %q, %v, revision %d; want upgraded to 2", v, err, revision("cont"))
	}
	if s := status("cont"); s.GetState() != reconcile.StateDeployed || s.GetLastDeployedHash() != "h2" {
		t.Errorf("Continuous status %v", s)
	}
	if v, err := cm("drift"); err != nil || v != "2" {
		t.Errorf("default after a change: ConfigMap %q, %v", v, err)
	}
	if s := status("dry"); s.GetState() != reconcile.StateDryRun {
		t.Errorf("dry: %v", s)
	}
	t.Logf("once: %s", status("once").GetMessage())
}
