package apply_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// One cluster serves every test in this file: starting one costs more
// than all the Helm work together. Tests use their own namespaces.
var shared = cluster.Shared{Options: cluster.Options{Name: "apply", NodeCount: 2}}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// testCluster returns the shared cluster, started on first use. Missing
// binaries fail the test with the harness's message (run `make e2e-bins`).
func testCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	return shared.Get(t)
}

func newEngine(t *testing.T, c *cluster.Cluster) *apply.Engine {
	t.Helper()
	e, _ := newEngineWithCache(t, c)
	return e
}

// newEngineWithCache returns an engine whose release record is a real
// agent cache file, and that cache.
func newEngineWithCache(t *testing.T, c *cluster.Cluster) (*apply.Engine, *cache.Cache) {
	t.Helper()
	db, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e, err := apply.New(apply.Config{
		RESTConfig:   c.RESTConfig,
		Records:      db,
		Logger:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Timeout:      2 * time.Minute,
		PollInterval: 250 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close(); db.Close() })
	return e, db
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, seen := cond(ctx)
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not true within %s; last seen: %s", what, timeout, seen)
		case <-tick.C:
		}
	}
}

func deploymentReplicas(ctx context.Context, cs kubernetes.Interface, ns, name string) (int32, error) {
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, err
	}
	return *d.Spec.Replicas, nil
}

func mustApply(t *testing.T, e *apply.Engine, r apply.Release, want apply.Action) apply.Result {
	t.Helper()
	res, err := e.Apply(t.Context(), r)
	if err != nil {
		t.Fatalf("Apply %s/%s: %v", r.Namespace, r.Name, err)
	}
	if res.Action != want {
		t.Fatalf("Apply %s/%s: action %s, want %s", r.Namespace, r.Name, res.Action, want)
	}
	return res
}

func mustBeHealthy(t *testing.T, e *apply.Engine, name, ns string) {
	t.Helper()
	start := time.Now()
	h, err := e.WaitHealthy(t.Context(), name, ns, 2*time.Minute)
	if err != nil || !h.Ready {
		t.Fatalf("WaitHealthy %s/%s: %+v, %v", ns, name, h, err)
	}
	t.Logf("%s/%s healthy after %s", ns, name, time.Since(start).Round(time.Millisecond))
}

func mustNotDrift(t *testing.T, e *apply.Engine, name, ns string) {
	t.Helper()
	d, err := e.Drift(t.Context(), name, ns, apply.DriftRules{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Drifted {
		t.Fatalf("Drift %s/%s right after apply: %q", ns, name, d.Reasons)
	}
}

// TestPodinfoLifecycle installs, upgrades, checks, breaks, repairs and
// removes podinfo.
func TestPodinfoLifecycle(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	ctx := t.Context()
	chart := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	const ns, name = "applications-web", "podinfo"
	rel := apply.Release{Name: name, Namespace: ns, Chart: chart, ValuesYAML: []byte("replicaCount: 1\n"), Hash: "v1"}

	res := mustApply(t, e, rel, apply.ActionInstalled)
	if res.Revision != 1 || !strings.Contains(res.Manifest, "kind: Deployment") {
		t.Fatalf("install result: revision %d, manifest %.200q", res.Revision, res.Manifest)
	}
	mustBeHealthy(t, e, name, ns)
	mustNotDrift(t, e, name, ns)

	t.Run("unchanged apply is a no-op", func(t *testing.T) {
		res := mustApply(t, e, rel, apply.ActionUnchanged)
		if res.Revision != 1 {
			t.Errorf("revision %d, want 1", res.Revision)
		}
	})

	rel.ValuesYAML = []byte("replicaCount: 2\n")
	rel.Hash = "v2"
	t.Run("upgrade by a values change", func(t *testing.T) {
		res := mustApply(t, e, rel, apply.ActionUpgraded)
		if res.Revision != 2 || res.Hash != "v2" {
			t.Errorf("revision %d hash %q, want 2 and v2", res.Revision, res.Hash)
		}
		if n, err := deploymentReplicas(ctx, c.Clientset, ns, name); err != nil || n != 2 {
			t.Fatalf("Deployment replicas = %d, %v; want 2", n, err)
		}
		mustBeHealthy(t, e, name, ns)
		mustNotDrift(t, e, name, ns)
		info, err := e.Get(ctx, name, ns)
		if err != nil || info.Hash != "v2" || info.Status != "deployed" || info.Chart != "podinfo" || info.Version != "6.14.1" {
			t.Errorf("Get = %+v, %v", info, err)
		}
		mustApply(t, e, rel, apply.ActionUnchanged)
	})

	t.Run("deleted Deployment is drift and Repair restores it", func(t *testing.T) {
		if err := c.Clientset.AppsV1().Deployments(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "Drift reports the Deployment missing", time.Minute, func(ctx context.Context) (bool, string) {
			d, err := e.Drift(ctx, name, ns, apply.DriftRules{})
			if err != nil {
				return false, err.Error()
			}
			return d.Drifted && slices.Contains(d.Reasons, "Deployment applications-web/podinfo is missing"), fmt.Sprint(d.Reasons)
		})
		res, err := e.Repair(ctx, rel)
		if err != nil || res.Action != apply.ActionRepaired {
			t.Fatalf("Repair = %+v, %v", res, err)
		}
		if n, err := deploymentReplicas(ctx, c.Clientset, ns, name); err != nil || n != 2 {
			t.Fatalf("after Repair: Deployment replicas = %d, %v; want 2", n, err)
		}
		mustBeHealthy(t, e, name, ns)
		mustNotDrift(t, e, name, ns)
	})

	t.Run("scaled Deployment is drift and Repair resets it", func(t *testing.T) {
		patch := []byte(`{"spec":{"replicas":5}}`)
		if _, err := c.Clientset.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		d, err := e.Drift(ctx, name, ns, apply.DriftRules{})
		if err != nil {
			t.Fatal(err)
		}
		want := "Deployment applications-web/podinfo: spec.replicas is 5, want 2"
		if !d.Drifted || !slices.Contains(d.Reasons, want) {
			t.Fatalf("Drift = %q, want %q", d.Reasons, want)
		}
		if _, err := e.Repair(ctx, rel); err != nil {
			t.Fatal(err)
		}
		if n, err := deploymentReplicas(ctx, c.Clientset, ns, name); err != nil || n != 2 {
			t.Fatalf("after Repair: Deployment replicas = %d, %v; want 2", n, err)
		}
		mustNotDrift(t, e, name, ns)
	})

	t.Run("changed image and label are drift and Repair resets them", func(t *testing.T) {
		d, err := c.Clientset.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantImage := d.Spec.Template.Spec.Containers[0].Image
		d.Spec.Template.Spec.Containers[0].Image = "example.com/evil:1"
		d.Labels["app.kubernetes.io/name"] = "other"
		if _, err := c.Clientset.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		dr, err := e.Drift(ctx, name, ns, apply.DriftRules{})
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"Deployment applications-web/podinfo: spec.template.spec.containers[0].image is example.com/evil:1, want " + wantImage,
			"Deployment applications-web/podinfo: metadata.labels.app.kubernetes.io/name is other, want podinfo",
		} {
			if !slices.Contains(dr.Reasons, want) {
				t.Errorf("Drift = %q, missing %q", dr.Reasons, want)
			}
		}
		if _, err := e.Repair(ctx, rel); err != nil {
			t.Fatal(err)
		}
		mustNotDrift(t, e, name, ns)
	})

	t.Run("interrupted upgrade is recovered", func(t *testing.T) {
		// What a crash during `helm upgrade` leaves: the latest revision
		// in pending-upgrade.
		hc := helmConfig(t, c, ns)
		last, err := hc.Releases.Last(name)
		if err != nil {
			t.Fatal(err)
		}
		last.SetStatus(release.StatusPendingUpgrade, "Preparing upgrade")
		if err := hc.Releases.Update(last); err != nil {
			t.Fatal(err)
		}
		d, err := e.Drift(ctx, name, ns, apply.DriftRules{})
		if err != nil || !slices.Contains(d.Reasons, "release applications-web/podinfo is pending-upgrade") {
			t.Fatalf("Drift = %q, %v", d.Reasons, err)
		}
		res := mustApply(t, e, rel, apply.ActionRepaired)
		if res.Revision != last.Version+1 {
			t.Errorf("revision %d, want %d", res.Revision, last.Version+1)
		}
		info, err := e.Get(ctx, name, ns)
		if err != nil || info.Status != "deployed" {
			t.Fatalf("Get = %+v, %v", info, err)
		}
		mustBeHealthy(t, e, name, ns)
		hist, err := hc.Releases.History(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) > 5 {
			t.Errorf("%d revisions stored, want at most MaxHistory 5", len(hist))
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		if err := e.Uninstall(ctx, name, ns); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Clientset.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("Deployment after Uninstall: %v, want not found", err)
		}
		if _, err := e.Get(ctx, name, ns); !errors.Is(err, apply.ErrReleaseNotFound) {
			t.Errorf("Get after Uninstall: %v, want ErrReleaseNotFound", err)
		}
		d, err := e.Drift(ctx, name, ns, apply.DriftRules{})
		if err != nil || !d.Drifted {
			t.Errorf("Drift after Uninstall = %+v, %v; want drifted", d, err)
		}
		if err := e.Uninstall(ctx, name, ns); err != nil {
			t.Errorf("second Uninstall: %v, want nil", err)
		}
	})
}

func helmConfig(t *testing.T, c *cluster.Cluster, ns string) *action.Configuration {
	t.Helper()
	hc := new(action.Configuration)
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig, flags.Namespace = &c.KubeconfigPath, &ns
	if err := hc.Init(flags, ns, "secret", func(string, ...any) {}); err != nil {
		t.Fatal(err)
	}
	return hc
}

// TestNeverReady: pods that no node accepts stay Pending, and WaitHealthy
// says which Deployment and which pod, and why.
func TestNeverReady(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	chart := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	const ns, name = "never-ready", "podinfo"
	rel := apply.Release{Name: name, Namespace: ns, Chart: chart,
		Values: map[string]any{"replicaCount": 2, "nodeSelector": map[string]any{"tether.dev/no-such-node": "true"}}}
	mustApply(t, e, rel, apply.ActionInstalled)

	h, err := e.WaitHealthy(t.Context(), name, ns, 5*time.Second)
	if !errors.Is(err, apply.ErrNotReady) || h.Ready {
		t.Fatalf("WaitHealthy = %+v, %v; want ErrNotReady", h, err)
	}
	t.Logf("WaitHealthy: %v", err)
	for _, want := range []string{"Deployment never-ready/podinfo: 0/2 replicas available after 5s", "pod never-ready/podinfo-", "Pending: Unschedulable"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("WaitHealthy error %q does not contain %q", err, want)
		}
	}
	h, err = e.Health(t.Context(), name, ns)
	if err != nil || h.Ready || !strings.Contains(h.Message, "0/2 replicas available") {
		t.Errorf("Health = %+v, %v", h, err)
	}
	if err := e.Uninstall(t.Context(), name, ns); err != nil {
		t.Fatal(err)
	}
}

// TestRenderError: a chart that does not render fails with Helm's message
// and installs nothing.
func TestRenderError(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	dir := t.TempDir()
	files := map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: broken\nversion: 0.1.0\n",
		"templates/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: {{ .Values.a | nosuchfunc }}\n",
	}
	for p, s := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const ns = "render-error"
	_, err := e.Apply(t.Context(), apply.Release{Name: "broken", Namespace: ns, Chart: e2etest.PackageChart(t, dir)})
	if err == nil || !strings.Contains(err.Error(), `function "nosuchfunc" not defined`) || !strings.Contains(err.Error(), "render-error/broken") {
		t.Fatalf("Apply error = %v, want Helm's parse error naming the release", err)
	}
	t.Logf("Apply: %v", err)
	if _, err := e.Get(t.Context(), "broken", ns); !errors.Is(err, apply.ErrReleaseNotFound) {
		t.Errorf("Get after failed Apply: %v, want ErrReleaseNotFound", err)
	}
	if _, err := c.Clientset.CoreV1().Namespaces().Get(t.Context(), ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("namespace after failed render: %v, want not found (nothing applied)", err)
	}
}

func TestInvalidInput(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	for _, tc := range []struct {
		name string
		rel  apply.Release
		want string
	}{
		{"bad name", apply.Release{Name: "Bad_Name", Namespace: "x", Chart: []byte("x")}, "release name"},
		{"bad namespace", apply.Release{Name: "a", Namespace: "No/pe", Chart: []byte("x")}, "namespace"},
		{"no chart", apply.Release{Name: "a", Namespace: "x"}, "no chart archive"},
		{"not a tgz", apply.Release{Name: "a", Namespace: "x", Chart: []byte("not gzip")}, "load chart archive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Apply(t.Context(), tc.rel)
			if !errors.Is(err, apply.ErrInvalidRelease) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Apply = %v, want ErrInvalidRelease mentioning %q", err, tc.want)
			}
		})
	}
}

// TestTwoNamespaces: the same release name in two namespaces are two
// releases; List shows tether's releases only.
func TestTwoNamespaces(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	ctx := t.Context()
	chart := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	for i, ns := range []string{"team-a", "team-b"} {
		mustApply(t, e, apply.Release{Name: "web", Namespace: ns, Chart: chart, Values: map[string]any{"replicaCount": i + 1}}, apply.ActionInstalled)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		mustBeHealthy(t, e, "web", ns)
		mustNotDrift(t, e, "web", ns)
	}
	if n, err := deploymentReplicas(ctx, c.Clientset, "team-b", "web-podinfo"); err != nil || n != 2 {
		t.Errorf("team-b replicas = %d, %v; want 2", n, err)
	}

	// A release tether did not install is listed by nobody and left alone.
	hc := helmConfig(t, c, "team-a")
	foreign := action.NewInstall(hc)
	foreign.ReleaseName, foreign.Namespace = "foreign", "team-a"
	ch, err := loader.LoadDir(e2etest.SharedChart(t, "podinfo"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := foreign.Run(ch, map[string]any{"replicaCount": 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, apply.Release{Name: "foreign", Namespace: "team-a", Chart: chart}); !errors.Is(err, apply.ErrForeignRelease) {
		t.Errorf("Apply over a foreign release: %v, want ErrForeignRelease", err)
	}
	if err := e.Uninstall(ctx, "foreign", "team-a"); !errors.Is(err, apply.ErrForeignRelease) {
		t.Errorf("Uninstall of a foreign release: %v, want ErrForeignRelease", err)
	}

	list, err := e.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range list {
		if strings.HasPrefix(r.Namespace, "team-") {
			got = append(got, r.Namespace+"/"+r.Name+"@"+r.Status)
		}
	}
	if want := []string{"team-a/web@deployed", "team-b/web@deployed"}; !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}

	if err := e.Uninstall(ctx, "web", "team-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Get(ctx, "web", "team-b"); err != nil {
		t.Errorf("team-b/web after uninstalling team-a/web: %v", err)
	}
	if err := e.Uninstall(ctx, "web", "team-b"); err != nil {
		t.Fatal(err)
	}
}

// TestCancelledApply: a caller that gives up does not interrupt Helm; the
// next operation waits for it and finds a consistent release.
func TestCancelledApply(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	chart := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	rel := apply.Release{Name: "podinfo", Namespace: "cancelled", Chart: chart}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := e.Apply(ctx, rel); !errors.Is(err, context.Canceled) {
		t.Logf("Apply with a cancelled context: %v (the lock was free and Helm won the race)", err)
	}
	res, err := e.Apply(t.Context(), rel)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != apply.ActionInstalled && res.Action != apply.ActionUnchanged {
		t.Errorf("second Apply: %s, want installed or unchanged", res.Action)
	}
	mustBeHealthy(t, e, "podinfo", "cancelled")
	if err := e.Uninstall(t.Context(), "podinfo", "cancelled"); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(t.Context(), rel); !errors.Is(err, apply.ErrClosed) {
		t.Errorf("Apply after Close: %v, want ErrClosed", err)
	}
}

// TestIngressNginx installs a big real chart. Its admission webhook is
// disabled: the webhook's certificate Jobs "complete" on simulated nodes
// without running, so no certificate is made and the
// ValidatingWebhookConfiguration would point at a server that never
// answers, failing every Ingress write in the cluster.
func TestIngressNginx(t *testing.T) {
	c := testCluster(t)
	e := newEngine(t, c)
	chart := e2etest.PackageChart(t, e2etest.SharedChart(t, "ingress-nginx"))
	const ns, name = "ingress-nginx", "ingress-nginx"
	rel := apply.Release{Name: name, Namespace: ns, Chart: chart, ValuesYAML: []byte(`
controller:
  admissionWebhooks:
    enabled: false
  service:
    type: ClusterIP
`)}
	start := time.Now()
	res := mustApply(t, e, rel, apply.ActionInstalled)
	t.Logf("ingress-nginx installed in %s (revision %d)", time.Since(start).Round(time.Millisecond), res.Revision)
	mustBeHealthy(t, e, name, ns)
	mustNotDrift(t, e, name, ns)
	mustApply(t, e, rel, apply.ActionUnchanged)
	if err := e.Uninstall(t.Context(), name, ns); err != nil {
		t.Fatal(err)
	}
}
