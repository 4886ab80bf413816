package apply_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

func writeChart(t *testing.T, files map[string]string) []byte {
	t.Helper()
	dir := t.TempDir()
	for p, s := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return e2etest.PackageChart(t, dir)
}

// TestHelmOptionsSkipCRDsAndDisableHooks: helmOptions skipCRDs leaves the
// chart's crds/ out and disableHooks its hooks, on a real cluster.
func TestHelmOptionsSkipCRDsAndDisableHooks(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	chart := writeChart(t, map[string]string{
		"Chart.yaml": "apiVersion: v2\nname: opts\nversion: 0.1.0\n",
		"crds/widgets.yaml": `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.opts.tether.dev
spec:
  group: opts.tether.dev
  names: {kind: Widget, plural: widgets, singular: widget}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
`,
		"templates/cm.yaml":   "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  a: b\n",
		"templates/hook.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-hooked\n  annotations:\n    helm.sh/hook: post-install,post-upgrade\ndata:\n  a: b\n",
	})
	const ns = "helm-options"
	crd := func() error {
		return c.Clientset.Discovery().RESTClient().Get().AbsPath("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.opts.tether.dev").Do(t.Context()).Error()
	}
	cm := func(name string) error {
		_, err := c.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), name, metav1.GetOptions{})
		return err
	}
	mustApply(t, e, apply.Release{Name: "skipped", Namespace: ns, Chart: chart,
		Options: apply.Options{SkipCRDs: true, DisableHooks: true}}, apply.ActionInstalled)
	if err := cm("skipped-cm"); err != nil {
		t.Fatalf("the chart's ConfigMap: %v", err)
	}
	if err := crd(); !apierrors.IsNotFound(err) {
		t.Errorf("CRD with skipCRDs: %v, want not found", err)
	}
	if err := cm("skipped-hooked"); !apierrors.IsNotFound(err) {
		t.Errorf("hook ConfigMap with disableHooks: %v, want not found", err)
	}
	mustApply(t, e, apply.Release{Name: "full", Namespace: ns, Chart: chart}, apply.ActionInstalled)
	if err := crd(); err != nil {
		t.Errorf("CRD without skipCRDs: %v", err)
	}
	if err := cm("full-hooked"); err != nil {
		t.Errorf("hook ConfigMap without disableHooks: %v", err)
	}
}

// TestHelmOptionsAtomicRollsBackAFailedUpgrade: with atomic, an upgrade
// that does not become ready within the timeout is rolled back, and an
// install that does not is removed; the timeout bounds both.
func TestHelmOptionsAtomicRollsBackAFailedUpgrade(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	chart := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	const ns, name = "helm-atomic", "podinfo"
	good := apply.Release{Name: name, Namespace: ns, Chart: chart, Values: map[string]any{"replicaCount": 2}}
	first := mustApply(t, e, good, apply.ActionInstalled)
	mustBeHealthy(t, e, name, ns)

	opts := apply.Options{Atomic: true, Timeout: 5 * time.Second}
	bad := apply.Release{Name: name, Namespace: ns, Chart: chart, Options: opts,
		Values: map[string]any{"replicaCount": 2, "nodeSelector": map[string]any{"tether.dev/no-such-node": "true"}}}
	start := time.Now()
	_, err := e.Apply(t.Context(), bad)
	if err == nil {
		t.Fatal("atomic upgrade to unschedulable pods succeeded")
	}
	t.Logf("atomic upgrade after %s: %v", time.Since(start).Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), "rolled back") && !strings.Contains(err.Error(), "rollback") {
		t.Errorf("error %q does not say the upgrade was rolled back", err)
	}
	info, err := e.Get(t.Context(), name, ns)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != "deployed" || info.Revision != 3 || info.Hash != first.Hash {
		t.Fatalf("after rollback: %+v; want revision 3 deployed with the first hash %s", info, first.Hash)
	}
	d, err := c.Clientset.AppsV1().Deployments(ns).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Spec.Template.Spec.NodeSelector) != 0 {
		t.Errorf("deployment node selector after rollback: %v", d.Spec.Template.Spec.NodeSelector)
	}

	badNew := bad
	badNew.Name = "podinfo-new"
	if _, err := e.Apply(t.Context(), badNew); err == nil {
		t.Fatal("atomic install of unschedulable pods succeeded")
	}
	if _, err := e.Get(t.Context(), badNew.Name, ns); !errors.Is(err, apply.ErrReleaseNotFound) {
		t.Errorf("after failed atomic install: %v, want ErrReleaseNotFound", err)
	}
	if err := e.Uninstall(t.Context(), name, ns); err != nil {
		t.Fatal(err)
	}
}

// TestPlanChangesNothing: Plan (syncMode DryRun) says what Apply would do,
// and the cluster stays as it was.
func TestPlanChangesNothing(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	chart := configMapChart(t)
	const ns, name = "plan", "cfg"
	rel := func(v string) apply.Release {
		return apply.Release{Name: name, Namespace: ns, Chart: chart, Values: map[string]any{"v": v}}
	}
	check := func(r apply.Release, act apply.Action, changes ...string) {
		t.Helper()
		pl, err := e.Plan(t.Context(), r)
		if err != nil {
			t.Fatal(err)
		}
		if pl.Action != act || strings.Join(pl.Changes, "|") != strings.Join(changes, "|") {
			t.Fatalf("Plan = %+v; want %s %q", pl, act, changes)
		}
	}
	check(rel("1"), apply.ActionInstalled, "create ConfigMap plan/cfg-cm")
	if _, err := e.Get(t.Context(), name, ns); !errors.Is(err, apply.ErrReleaseNotFound) {
		t.Fatalf("release after Plan: %v, want ErrReleaseNotFound", err)
	}
	if _, err := c.Clientset.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("namespace after Plan: %v, want not found", err)
	}
	mustApply(t, e, rel("1"), apply.ActionInstalled)
	check(rel("1"), apply.ActionUnchanged)
	check(rel("2"), apply.ActionUpgraded, "change ConfigMap plan/cfg-cm")
	if got, _ := c.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), "cfg-cm", metav1.GetOptions{}); got.Data["v"] != "1" {
		t.Fatalf("ConfigMap after Plan of v=2: %v", got.Data)
	}
	if err := c.Clientset.CoreV1().ConfigMaps(ns).Delete(t.Context(), "cfg-cm", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	pl, err := e.Plan(t.Context(), rel("1"))
	if err != nil || pl.Action != apply.ActionRepaired || len(pl.Changes) == 0 {
		t.Fatalf("Plan after the ConfigMap was deleted = %+v, %v; want repaired with reasons", pl, err)
	}
	if _, err := c.Clientset.CoreV1().ConfigMaps(ns).Get(t.Context(), "cfg-cm", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("ConfigMap after Plan: %v, want still deleted", err)
	}
}
