package apply_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/reconcile"
	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

const (
	evilCRB   = "tenant-is-cluster-admin"
	victimNS  = "forged-victim"
	victimCM  = "precious"
	forgedRev = 3
)

// evilHooks: a ClusterRoleBinding on every hook event Helm runs for
// install, upgrade, rollback and uninstall.
func evilHooks() []*release.Hook {
	return []*release.Hook{{
		Name: evilCRB, Kind: "ClusterRoleBinding", Path: "evil/templates/crb.yaml",
		Manifest: `apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: ` + evilCRB + `
  annotations:
    helm.sh/hook: pre-install,pre-upgrade,pre-delete,post-delete,pre-rollback
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: default, namespace: tenant}]
`,
		Events: []release.HookEvent{release.HookPreInstall, release.HookPreUpgrade, release.HookPreDelete, release.HookPostDelete, release.HookPreRollback},
	}}
}

// victimManifest lists a ConfigMap in another namespace, which Helm would
// delete on uninstall (and on an upgrade whose chart does not render it).
const victimManifest = `---
# Source: evil/templates/cm.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: ` + victimCM + `
  namespace: ` + victimNS + `
data:
  a: b
`

// plant stores a release record Secret the way a tenant who may write
// Secrets in ns can: through Helm's own Secrets driver, with tether's
// labels.
func plant(t *testing.T, cs kubernetes.Interface, r *release.Release) {
	t.Helper()
	r.Labels = map[string]string{apply.LabelManagedBy: apply.ManagedByValue, apply.LabelHash: "forged"}
	d := driver.NewSecrets(cs.CoreV1().Secrets(r.Namespace))
	key := "sh.helm.release.v1." + r.Name + ".v" + itoa(r.Version)
	if err := d.Create(key, r); errors.Is(err, driver.ErrReleaseExists) {
		err = d.Update(key, r)
		if err != nil {
			t.Fatal(err)
		}
	} else if err != nil {
		t.Fatal(err)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func forgedRelease(ns, name string, version int) *release.Release {
	return &release.Release{
		Name: name, Namespace: ns, Version: version,
		Info:     &release.Info{Status: release.StatusDeployed, Description: "Upgrade complete"},
		Chart:    &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "evil", Version: "0.1.0"}},
		Config:   map[string]any{},
		Manifest: victimManifest,
		Hooks:    evilHooks(),
	}
}

// configMapChart packages a one-ConfigMap chart.
func configMapChart(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"Chart.yaml":        "apiVersion: v2\nname: cm\nversion: 0.1.0\n",
		"templates/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  v: {{ .Values.v | default \"1\" | quote }}\n",
	}
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

func ensureNamespace(t *testing.T, cs kubernetes.Interface, ns string) {
	t.Helper()
	_, err := cs.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// assertUntouched: the hook's ClusterRoleBinding was never created, the
// other namespace's ConfigMap is still there and the forged Secret too.
func assertUntouched(t *testing.T, c *cluster.Cluster, ns, name string, version int) {
	t.Helper()
	ctx := context.WithoutCancel(t.Context())
	if _, err := c.Clientset.RbacV1().ClusterRoleBindings().Get(ctx, evilCRB, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRoleBinding %s: %v, want not found (a forged hook ran)", evilCRB, err)
	}
	if _, err := c.Clientset.CoreV1().ConfigMaps(victimNS).Get(ctx, victimCM, metav1.GetOptions{}); err != nil {
		t.Errorf("ConfigMap %s/%s: %v, want it untouched", victimNS, victimCM, err)
	}
	key := "sh.helm.release.v1." + name + ".v" + itoa(version)
	if _, err := c.Clientset.CoreV1().Secrets(ns).Get(ctx, key, metav1.GetOptions{}); err != nil {
		t.Errorf("forged Secret %s/%s: %v, want it left in place", ns, key, err)
	}
}

type cachedCharts struct{}

func (cachedCharts) FetchChart(context.Context, string) ([]byte, error) {
	return nil, errors.New("offline: charts come from the cache")
}

func chartDigest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// TestForgedReleaseSecretIsNeverTrusted: a tenant who may write Secrets in
// one namespace plants a release Secret with tether's labels whose hooks
// bind cluster-admin and whose manifest lists a ConfigMap in another
// namespace. The engine and the reconciler never list, uninstall, upgrade
// or install over it; the service is reported Failed, saying why.
func TestForgedReleaseSecretIsNeverTrusted(t *testing.T) {
	c := testCluster(t)
	e, db := newEngineWithCache(t, c)
	ctx := t.Context()
	const ns, name = "forged-tenant", "nginx-web"
	ensureNamespace(t, c.Clientset, ns)
	ensureNamespace(t, c.Clientset, victimNS)
	if _, err := c.Clientset.CoreV1().ConfigMaps(victimNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: victimCM}, Data: map[string]string{"a": "b"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	plant(t, c.Clientset, forgedRelease(ns, name, forgedRev))
	// A second forged release whose name no desired service has: only
	// removeDeleted could reach it.
	plant(t, c.Clientset, forgedRelease(ns, "orphan", 1))

	t.Run("List does not see it", func(t *testing.T) {
		list, err := e.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			if r.Namespace == ns {
				t.Errorf("List returned the forged release %s/%s", r.Namespace, r.Name)
			}
		}
	})

	t.Run("engine refuses it", func(t *testing.T) {
		chart := configMapChart(t)
		_, err := e.Apply(ctx, apply.Release{Name: name, Namespace: ns, Chart: chart})
		want := "release secret not written by this agent (revision 3 unknown"
		if !errors.Is(err, apply.ErrForeignRelease) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), ns+"/"+name) {
			t.Errorf("Apply over the forged release: %v, want ErrForeignRelease saying %q", err, want)
		}
		if err := e.Uninstall(ctx, name, ns); !errors.Is(err, apply.ErrForeignRelease) {
			t.Errorf("Uninstall of the forged release: %v, want ErrForeignRelease", err)
		}
		if _, err := e.Repair(ctx, apply.Release{Name: name, Namespace: ns, Chart: chart}); !errors.Is(err, apply.ErrForeignRelease) {
			t.Errorf("Repair of the forged release: %v, want ErrForeignRelease", err)
		}
		if _, err := e.Drift(ctx, name, ns, apply.DriftRules{}); !errors.Is(err, apply.ErrForeignRelease) {
			t.Errorf("Drift of the forged release: %v, want ErrForeignRelease", err)
		}
		assertUntouched(t, c, ns, name, forgedRev)
		assertUntouched(t, c, ns, "orphan", 1)
	})

	t.Run("reconciler reports it Failed and removes nothing", func(t *testing.T) {
		chart := configMapChart(t)
		dg := chartDigest(chart)
		if err := db.PutChart(dg, chart); err != nil {
			t.Fatal(err)
		}
		r, err := reconcile.New(reconcile.Config{Cache: db, Engine: e, Charts: cachedCharts{}, HealthTimeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		ds := &fleetv1.DesiredState{Revision: 1, Full: true, Services: []*fleetv1.Service{
			{Name: name, Namespace: ns, ChartDigest: dg, ValuesHash: "h1"},
		}}
		if err := r.Desired(ctx, ds); err != nil {
			t.Fatal(err)
		}
		r.Pass(ctx)
		var st *fleetv1.ServiceStatus
		for _, s := range r.Statuses() {
			if s.GetNamespace() == ns {
				if s.GetName() != name {
					t.Errorf("status for %s/%s: the reconciler acted on a release it does not own", s.GetNamespace(), s.GetName())
				}
				st = s
			}
		}
		want := "release " + ns + "/" + name + ": release secret not written by this agent (revision 3 unknown"
		if st == nil || st.GetState() != reconcile.StateFailed || !strings.Contains(st.GetMessage(), want) {
			t.Fatalf("status = %v, want Failed containing %q", st, want)
		}
		t.Logf("status message: %s", st.GetMessage())
		// The status report went to the outbox.
		entries, err := db.Peek(10)
		if err != nil || len(entries) == 0 {
			t.Fatalf("outbox = %d entries, %v; want the status report", len(entries), err)
		}
		var rep fleetv1.StatusReport
		if err := proto.Unmarshal(entries[len(entries)-1].Payload, &rep); err != nil || len(rep.GetServices()) != 1 || rep.GetServices()[0].GetState() != reconcile.StateFailed {
			t.Errorf("queued report = %v, %v", &rep, err)
		}
		// The service is deleted from the desired state: nothing the
		// agent did not install is uninstalled.
		if err := r.Desired(ctx, &fleetv1.DesiredState{Revision: 2, Full: true}); err != nil {
			t.Fatal(err)
		}
		r.Pass(ctx)
		assertUntouched(t, c, ns, name, forgedRev)
		assertUntouched(t, c, ns, "orphan", 1)
	})
}

// TestForgedRevisionOverGenuineReleaseIsRefused: a release the agent did
// install gets a forged newer revision (and, separately, its stored
// revision rewritten in place). The engine refuses to upgrade, uninstall
// or read it, List reports it unverified, and nothing is created or
// deleted.
func TestForgedRevisionOverGenuineReleaseIsRefused(t *testing.T) {
	c := testCluster(t)
	e, _ := newEngineWithCache(t, c)
	ctx := t.Context()
	const ns, name = "forged-over", "web"
	ensureNamespace(t, c.Clientset, victimNS)
	if _, err := c.Clientset.CoreV1().ConfigMaps(victimNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: victimCM}, Data: map[string]string{"a": "b"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	chart := configMapChart(t)
	rel := apply.Release{Name: name, Namespace: ns, Chart: chart, Values: map[string]any{"v": "1"}}
	mustApply(t, e, rel, apply.ActionInstalled)
	mustApply(t, e, apply.Release{Name: name, Namespace: ns, Chart: chart, Values: map[string]any{"v": "2"}}, apply.ActionUpgraded)
	mustApply(t, e, apply.Release{Name: name, Namespace: ns, Chart: chart, Values: map[string]any{"v": "2"}}, apply.ActionUnchanged)

	refused := func(t *testing.T, want string) {
		t.Helper()
		_, err := e.Apply(ctx, apply.Release{Name: name, Namespace: ns, Chart: chart, Values: map[string]any{"v": "3"}})
		if !errors.Is(err, apply.ErrForeignRelease) || !strings.Contains(err.Error(), want) {
			t.Errorf("Apply: %v, want ErrForeignRelease saying %q", err, want)
		}
		if err := e.Uninstall(ctx, name, ns); !errors.Is(err, apply.ErrForeignRelease) {
			t.Errorf("Uninstall: %v, want ErrForeignRelease", err)
		}
		if _, err := e.Health(ctx, name, ns); !errors.Is(err, apply.ErrForeignRelease) {
			t.Errorf("Health: %v, want ErrForeignRelease", err)
		}
		list, err := e.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, r := range list {
			if r.Namespace == ns && r.Name == name {
				found = true
				if r.Status != "unverified" || !strings.Contains(r.Description, want) {
					t.Errorf("List entry = %+v, want unverified saying %q", r, want)
				}
			}
		}
		if !found {
			t.Errorf("List lost the genuine release %s/%s", ns, name)
		}
		if _, err := c.Clientset.CoreV1().ConfigMaps(ns).Get(ctx, name+"-cm", metav1.GetOptions{}); err != nil {
			t.Errorf("the genuine release's ConfigMap: %v", err)
		}
	}

	t.Run("forged newer revision", func(t *testing.T) {
		forged := forgedRelease(ns, name, 3)
		plant(t, c.Clientset, forged)
		refused(t, "revision 3 unknown")
		assertUntouched(t, c, ns, name, 3)
		if err := c.Clientset.CoreV1().Secrets(ns).Delete(ctx, "sh.helm.release.v1."+name+".v3", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("genuine revision rewritten in place", func(t *testing.T) {
		d := driver.NewSecrets(c.Clientset.CoreV1().Secrets(ns))
		key := "sh.helm.release.v1." + name + ".v2"
		genuine, err := d.Get(key)
		if err != nil {
			t.Fatal(err)
		}
		altered := *genuine
		altered.Manifest += victimManifest
		altered.Hooks = evilHooks()
		if err := d.Update(key, &altered); err != nil {
			t.Fatal(err)
		}
		refused(t, "revision 2 differs from what this agent wrote")
		assertUntouched(t, c, ns, name, 2)
		// Put the genuine revision back: the agent owns it again.
		if err := d.Update(key, genuine); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("genuine again", func(t *testing.T) {
		mustApply(t, e, apply.Release{Name: name, Namespace: ns, Chart: chart, Values: map[string]any{"v": "3"}}, apply.ActionUpgraded)
		if err := e.Uninstall(ctx, name, ns); err != nil {
			t.Fatal(err)
		}
		list, err := e.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range list {
			if r.Namespace == ns {
				t.Errorf("List after Uninstall still has %+v", r)
			}
		}
		if _, err := c.Clientset.CoreV1().ConfigMaps(victimNS).Get(ctx, victimCM, metav1.GetOptions{}); err != nil {
			t.Errorf("ConfigMap %s/%s: %v", victimNS, victimCM, err)
		}
	})
}

// installLikeV1 installs and upgrades a release the way the engine did
// before the release record existed (cache schema 1): Helm with tether's
// labels, nothing recorded.
func installLikeV1(t *testing.T, c *cluster.Cluster, ns, name string, archive []byte, values []map[string]any, hash string) {
	t.Helper()
	hc := helmConfig(t, c, ns)
	labels := map[string]string{apply.LabelManagedBy: apply.ManagedByValue, apply.LabelHash: apply.HashLabel(hash)}
	for i, v := range values {
		ch, err := loader.LoadArchive(bytes.NewReader(archive))
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			in := action.NewInstall(hc)
			in.ReleaseName, in.Namespace, in.CreateNamespace, in.Labels = name, ns, true, labels
			_, err = in.RunWithContext(t.Context(), ch, v)
		} else {
			up := action.NewUpgrade(hc)
			up.Namespace, up.ResetValues, up.Labels, up.MaxHistory = ns, true, labels, 5
			_, err = up.RunWithContext(t.Context(), name, ch, v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestSchema1ReleasesAreAdoptedOnlyWhenTheyMatch: after the cache upgrade
// from schema 1, a release the old agent installed is adopted when it is
// exactly what the agent renders from the desired state; a forged release
// with the same labels and hash is refused and left untouched.
func TestSchema1ReleasesAreAdoptedOnlyWhenTheyMatch(t *testing.T) {
	c := testCluster(t)
	e, db := newEngineWithCache(t, c)
	ctx := t.Context()
	const ns = "adopt-v1"
	archive := configMapChart(t)
	installLikeV1(t, c, ns, "web", archive, []map[string]any{{"v": "1"}, {"v": "2"}}, "h2")
	want := apply.Release{Name: "web", Namespace: ns, Chart: archive, Values: map[string]any{"v": "2"}, Hash: "h2", ChartDigest: chartDigest(archive)}

	if _, err := e.Apply(ctx, want); !errors.Is(err, apply.ErrForeignRelease) {
		t.Fatalf("Apply before adoption: %v, want ErrForeignRelease", err)
	}
	// Not what the desired state says: not adopted.
	other := want
	other.Values, other.Hash = map[string]any{"v": "3"}, "h3"
	if ok, err := e.Adopt(ctx, other); ok || !errors.Is(err, apply.ErrForeignRelease) {
		t.Errorf("Adopt with other values = %v, %v; want ErrForeignRelease", ok, err)
	}
	ok, err := e.Adopt(ctx, want)
	if err != nil || !ok {
		t.Fatalf("Adopt = %v, %v; want adopted", ok, err)
	}
	rec, err := db.ReleaseRecord(ns, "web")
	if err != nil || !rec.Adopted || len(rec.Revisions) != 1 || rec.Revisions[0].Revision != 2 || rec.Revisions[0].Chart != want.ChartDigest {
		t.Fatalf("record after adoption = %+v, %v", rec, err)
	}
	if ok, err := e.Adopt(ctx, want); ok || err != nil {
		t.Errorf("second Adopt = %v, %v; want nothing to do", ok, err)
	}
	mustApply(t, e, want, apply.ActionUnchanged)
	mustApply(t, e, apply.Release{Name: "web", Namespace: ns, Chart: archive, Values: map[string]any{"v": "4"}, Hash: "h4"}, apply.ActionUpgraded)

	// A forged release with tether's labels and the desired hash.
	ensureNamespace(t, c.Clientset, victimNS)
	if _, err := c.Clientset.CoreV1().ConfigMaps(victimNS).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: victimCM}, Data: map[string]string{"a": "b"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	forged := forgedRelease(ns, "evil", 2)
	plant(t, c.Clientset, forged)
	s, err := c.Clientset.CoreV1().Secrets(ns).Get(ctx, "sh.helm.release.v1.evil.v2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Labels[apply.LabelHash] = apply.HashLabel("h2")
	if _, err := c.Clientset.CoreV1().Secrets(ns).Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	evil := want
	evil.Name = "evil"
	if ok, err := e.Adopt(ctx, evil); ok || !errors.Is(err, apply.ErrForeignRelease) || !strings.Contains(err.Error(), "not what this agent renders") {
		t.Errorf("Adopt of a forged release = %v, %v; want refused", ok, err)
	}
	if _, err := db.ReleaseRecord(ns, "evil"); !errors.Is(err, cache.ErrNotFound) {
		t.Errorf("record of the forged release: %v, want none", err)
	}
	assertUntouched(t, c, ns, "evil", 2)
	if err := e.Uninstall(ctx, "web", ns); err != nil {
		t.Fatal(err)
	}
}
