package apply

import (
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	helmtime "helm.sh/helm/v3/pkg/time"
	"k8s.io/client-go/kubernetes/fake"
)

// TestReleaseDigestSurvivesHelmStorage: the digest the engine records
// when Helm writes a release equals the digest of what Helm's Secrets
// driver reads back, also after Helm changes the status and the hooks'
// last run; a changed manifest changes it.
func TestReleaseDigestSurvivesHelmStorage(t *testing.T) {
	r := &release.Release{
		Name: "web", Namespace: "ns", Version: 2,
		Info: &release.Info{Status: release.StatusPendingUpgrade, LastDeployed: helmtime.Now()},
		Chart: &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "c", Version: "1.0.0"},
			Templates: []*chart.File{{Name: "templates/a.yaml", Data: []byte("kind: ConfigMap\n")}},
			Values:    map[string]any{"n": 3, "big": 1.5, "list": []any{"a", 2}, "m": map[string]any{"x": nil}}},
		Config:   map[string]any{"replicaCount": 2, "image": map[string]any{"tag": "1.2"}},
		Manifest: "---\n# Source: c/templates/a.yaml\nkind: ConfigMap\n",
		Hooks:    []*release.Hook{{Name: "h", Kind: "Job", Path: "c/templates/h.yaml", Manifest: "kind: Job\n", Events: []release.HookEvent{release.HookPreUpgrade}}},
		Labels:   map[string]string{LabelManagedBy: ManagedByValue},
	}
	want, err := releaseDigest(r)
	if err != nil {
		t.Fatal(err)
	}
	d := driver.NewSecrets(fake.NewSimpleClientset().CoreV1().Secrets("ns"))
	key := "sh.helm.release.v1.web.v2"
	if err := d.Create(key, r); err != nil {
		t.Fatal(err)
	}
	r.SetStatus(release.StatusDeployed, "Upgrade complete")
	r.Hooks[0].LastRun = release.HookExecution{StartedAt: helmtime.Now(), CompletedAt: helmtime.Now().Add(time.Second), Phase: release.HookPhaseSucceeded}
	if err := d.Update(key, r); err != nil {
		t.Fatal(err)
	}
	got, err := d.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := releaseDigest(got); err != nil || g != want {
		t.Fatalf("digest after the Secrets driver = %s, %v; want %s", g, err, want)
	}
	got.Manifest += "---\nkind: Secret\n"
	if g, _ := releaseDigest(got); g == want {
		t.Error("a changed manifest has the same digest")
	}
}

func TestParseStorageKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		name string
		v    int
		ok   bool
	}{
		{"sh.helm.release.v1.web.v3", "web", 3, true},
		{"sh.helm.release.v1.a.vb.v12", "a.vb", 12, true},
		{"sh.helm.release.v1.web.v0", "", 0, false},
		{"sh.helm.release.v1.web", "", 0, false},
		{"other.web.v1", "", 0, false},
	} {
		name, v, ok := parseStorageKey(tc.key)
		if name != tc.name || v != tc.v || ok != tc.ok {
			t.Errorf("parseStorageKey(%q) = %q, %d, %v", tc.key, name, v, ok)
		}
	}
}
