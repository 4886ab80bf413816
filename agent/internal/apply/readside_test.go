package apply_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"helm.sh/helm/v3/pkg/release"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/engine"
	"github.com/tetherfleet/tether/agent/internal/observe"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// TestReadSideAgreesWithHelm: after every Helm operation the engine runs
// (install, upgrade, a failed upgrade, a repair, an interruption left in
// Helm's storage, uninstall), the Helm-free reader, working from the
// record the engine wrote, answers Get, Health and Drift as the engine
// does from Helm's storage, and says Unchanged exactly when Apply would
// leave the release alone.
func TestReadSideAgreesWithHelm(t *testing.T) {
	c := testCluster(t)
	e, db := newEngineWithCache(t, c)
	ctx := t.Context()
	obs, err := observe.New(observe.Config{RESTConfig: c.RESTConfig})
	if err != nil {
		t.Fatal(err)
	}
	r, err := observe.NewReader(observe.ReaderConfig{Records: db, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	chart := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	const ns, name = "read-side", "podinfo"
	rel := apply.Release{Name: name, Namespace: ns, Chart: chart, ValuesYAML: []byte("replicaCount: 1\n"), Hash: "v1"}

	agree := func(t *testing.T, wantUnchanged bool) {
		t.Helper()
		res, ok, err := r.Unchanged(ctx, name, ns, rel.Hash)
		if err != nil || ok != wantUnchanged {
			t.Errorf("reader Unchanged(%s) = %v, %v; want %v", rel.Hash, ok, err, wantUnchanged)
		}
		hi, herr := e.Get(ctx, name, ns)
		ri, rerr := r.Get(ctx, name, ns)
		switch {
		case herr != nil:
			if !errors.Is(rerr, engine.ErrReleaseNotFound) && !errors.Is(rerr, engine.ErrUnknown) {
				t.Errorf("engine Get: %v; reader Get = %+v, %v", herr, ri, rerr)
			}
		case rerr == nil:
			if !hi.Updated.Equal(ri.Updated) {
				t.Errorf("Updated: engine %v, reader %v", hi.Updated, ri.Updated)
			}
			hi.Updated = ri.Updated
			if hi != ri {
				t.Errorf("Get: engine %+v, reader %+v", hi, ri)
			}
			if ok && (res.Revision != hi.Revision || res.Hash != hi.Hash || res.Manifest == "") {
				t.Errorf("Unchanged result %d/%s, engine's release %d/%s", res.Revision, res.Hash, hi.Revision, hi.Hash)
			}
		case !errors.Is(rerr, engine.ErrUnknown):
			t.Errorf("engine Get = %+v; reader Get: %v, want the same or ErrUnknown", hi, rerr)
		}
		if rerr != nil {
			return // the reader sends the rest to Helm
		}
		hh, herr := e.Health(ctx, name, ns)
		rh, rerr := r.Health(ctx, name, ns)
		if herr != nil || rerr != nil || hh != rh {
			t.Errorf("Health: engine %+v, %v; reader %+v, %v", hh, herr, rh, rerr)
		}
		hd, herr := e.Drift(ctx, name, ns, apply.DriftRules{})
		rd, rerr := r.Drift(ctx, name, ns, apply.DriftRules{})
		if herr != nil || rerr != nil || hd.Drifted != rd.Drifted || !slices.Equal(hd.Reasons, rd.Reasons) {
			t.Errorf("Drift: engine %+v, %v; reader %+v, %v", hd, herr, rd, rerr)
		}
	}

	mustApply(t, e, rel, apply.ActionInstalled)
	agree(t, true)
	mustBeHealthy(t, e, name, ns)
	agree(t, true)

	rel.ValuesYAML, rel.Hash = []byte("replicaCount: 2\n"), "v2"
	agree(t, false) // the record holds v1
	mustApply(t, e, rel, apply.ActionUpgraded)
	agree(t, true)

	t.Run("deleted Deployment", func(t *testing.T) {
		if err := c.Clientset.AppsV1().Deployments(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		agree(t, true) // unchanged by hash: drift is the reconciler's next question
		if _, err := e.Repair(ctx, rel); err != nil {
			t.Fatal(err)
		}
		agree(t, true)
	})

	t.Run("failed upgrade", func(t *testing.T) {
		bad := rel
		bad.ValuesYAML, bad.Hash = []byte("replicaCount: -1\n"), "v3-bad"
		if _, err := e.Apply(ctx, bad); err == nil {
			t.Fatal("Apply with replicaCount -1: nil error")
		}
		rec, err := db.ReleaseRecord(ns, name)
		if err != nil {
			t.Fatal(err)
		}
		if rv, _ := rec.Latest(); rv.Status != "failed" || rv.Hash != "v3-bad" {
			t.Fatalf("record after a failed upgrade: %+v", rv)
		}
		saved := rel
		rel = bad
		agree(t, false) // failed: Apply would upgrade again
		rel = saved
		agree(t, false)
		mustApply(t, e, rel, apply.ActionUpgraded)
		agree(t, true)
	})

	t.Run("interrupted upgrade in Helm's storage", func(t *testing.T) {
		// What a crash during `helm upgrade` leaves, written behind the
		// engine's back: the record says deployed, the Secret's label
		// says otherwise, so the reader asks Helm.
		hc := helmConfig(t, c, ns)
		last, err := hc.Releases.Last(name)
		if err != nil {
			t.Fatal(err)
		}
		last.SetStatus(release.StatusPendingUpgrade, "Preparing upgrade")
		if err := hc.Releases.Update(last); err != nil {
			t.Fatal(err)
		}
		agree(t, false)
		mustApply(t, e, rel, apply.ActionRepaired)
		agree(t, true)
	})

	t.Run("uninstall", func(t *testing.T) {
		if err := e.Uninstall(ctx, name, ns); err != nil {
			t.Fatal(err)
		}
		agree(t, false)
		if _, err := r.Get(ctx, name, ns); !errors.Is(err, engine.ErrReleaseNotFound) {
			t.Errorf("reader Get after Uninstall: %v, want ErrReleaseNotFound", err)
		}
		if list, err := r.List(ctx); err != nil || slices.ContainsFunc(list, func(ri engine.ReleaseInfo) bool { return ri.Name == name && ri.Namespace == ns }) {
			t.Errorf("reader List after Uninstall = %+v, %v", list, err)
		}
	})
}

// TestBlockScalarIsNotDrift: a ConfigMap whose last field is a YAML block
// scalar (data: {config.yaml: |...}) as charts often write it is not
// drift right after Apply. Helm stores each document as "...\n---", and
// splitting the stored manifest the way Helm's releaseutil does loses the
// block's final newline, which the object Helm applied has: Drift
// reported every such ConfigMap changed and Repair could never fix it, so
// the reconciler upgraded the release on every pass.
func TestBlockScalarIsNotDrift(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	dir := t.TempDir()
	files := map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: blocks\nversion: 0.1.0\n",
		"templates/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  config.yaml: |\n    level: info\n    port: 9898\n",
		"templates/other.yaml":  "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  script.sh: |\n    #!/bin/sh\n    echo ---\n    exit 0\n\n",
	}
	for p, s := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const ns = "block-scalars"
	mustApply(t, e, apply.Release{Name: "blocks", Namespace: ns, Chart: e2etest.PackageChart(t, dir)}, apply.ActionInstalled)
	cm, err := c.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), "settings", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("live config.yaml = %q", cm.Data["config.yaml"])
	mustNotDrift(t, e, "blocks", ns)
}
