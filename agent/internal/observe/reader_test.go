package observe_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	"github.com/tetherfleet/tether/agent/internal/observe"
	"github.com/tetherfleet/tether/e2e/cluster"
)

const readerManifest = `---
# Source: web/templates/config.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-settings
data:
  mode: fast
`

// helmSecret writes the Secret in which Helm stores revision rev of
// release name, labelled as Helm labels it (its content does not matter
// to the reader: it never trusts it).
func helmSecret(t *testing.T, c *cluster.Cluster, ns, name string, rev int, status string) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: observe.SecretName(name, rev), Namespace: ns,
			Labels: map[string]string{"name": name, "owner": "helm", "status": status, "version": strconv.Itoa(rev)}},
		Type: "helm.sh/release.v1",
		Data: map[string][]byte{"release": []byte("H4sI")},
	}
	if _, err := c.Clientset.CoreV1().Secrets(ns).Create(t.Context(), s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

var t0 = time.Date(2026, 2, 1, 10, 0, 0, 0, time.UTC)

// record is what the Helm engine records for a deployed revision.
func record(t *testing.T, ns, name string, rev int, status, hash string) cache.ReleaseRecord {
	t.Helper()
	rv := cache.ReleaseRevision{Revision: rev, Digest: "sha256:d" + strconv.Itoa(rev), Written: t0, Status: status,
		Description: "Upgrade complete", Hash: engine.HashLabel(hash), ChartName: "web", ChartVersion: "1.0.0", Deployed: t0}
	if err := rv.SetManifest(readerManifest); err != nil {
		t.Fatal(err)
	}
	rec := cache.ReleaseRecord{Namespace: ns, Name: name, Installed: t0, Updated: t0, Revisions: []cache.ReleaseRevision{rv}}
	if rev > 1 {
		old := cache.ReleaseRevision{Revision: rev - 1, Digest: "sha256:old", Written: t0, Status: "superseded"}
		rec.Revisions = []cache.ReleaseRevision{old, rv}
	}
	return rec
}

// TestReaderAnswersFromTheRecord: the reader says Unchanged only when the
// record's newest revision is deployed with the wanted hash and Helm's
// Secret of it exists and does not contradict it; an old record without
// the read-side fields, a deleted or relabelled Secret, a Secret claiming
// a newer revision, or a release the agent has no record of make it say
// "not known" (ask Helm) or "not found", never "unchanged"; List, Get,
// Health and Drift answer from the recorded status and manifest.
func TestReaderAnswersFromTheRecord(t *testing.T) {
	c := testCluster(t)
	o, _ := newObserver(t, c)
	ns := newNamespace(t, c, "reader")
	ctx := t.Context()
	db, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	r, err := observe.NewReader(observe.ReaderConfig{Records: db, Observer: o})
	if err != nil {
		t.Fatal(err)
	}
	applyIn(t, c, ns, readerManifest)
	const hash = "sha256:chart+values-v2"

	save := func(rec cache.ReleaseRecord) {
		t.Helper()
		if err := db.SaveReleaseRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
	unchanged := func(t *testing.T, name, hash string) (engine.Result, bool) {
		t.Helper()
		res, ok, err := r.Unchanged(ctx, name, ns, hash)
		if err != nil {
			t.Fatalf("Unchanged %s: %v", name, err)
		}
		return res, ok
	}

	save(record(t, ns, "web", 2, "deployed", hash))
	helmSecret(t, c, ns, "web", 2, "deployed")

	t.Run("deployed with the hash and its Secret present is unchanged", func(t *testing.T) {
		res, ok := unchanged(t, "web", hash)
		if !ok || res.Action != engine.ActionUnchanged || res.Revision != 2 || res.Hash != engine.HashLabel(hash) || res.Manifest != readerManifest {
			t.Fatalf("Unchanged = %+v, %v", res, ok)
		}
		if _, ok := unchanged(t, "web", "sha256:chart+values-v3"); ok {
			t.Error("Unchanged for another hash: true")
		}
		if _, ok := unchanged(t, "web", ""); ok {
			t.Error("Unchanged for an empty hash: true")
		}
		info, err := r.Get(ctx, "web", ns)
		want := engine.ReleaseInfo{Name: "web", Namespace: ns, Revision: 2, Status: "deployed", Chart: "web", Version: "1.0.0",
			Hash: engine.HashLabel(hash), Description: "Upgrade complete"}
		if err != nil || !info.Updated.Equal(t0) {
			t.Fatalf("Get = %+v, %v", info, err)
		}
		info.Updated = time.Time{}
		if info != want {
			t.Errorf("Get = %+v, want %+v", info, want)
		}
		if h, err := r.Health(ctx, "web", ns); err != nil || !h.Ready {
			t.Errorf("Health = %+v, %v", h, err)
		}
		if d, err := r.Drift(ctx, "web", ns, engine.DriftRules{}); err != nil || d.Drifted {
			t.Errorf("Drift = %+v, %v", d, err)
		}
		patch := []byte(`{"data":{"mode":"slow"}}`)
		if _, err := c.Clientset.CoreV1().ConfigMaps(ns).Patch(ctx, "web-settings", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		if d, err := r.Drift(ctx, "web", ns, engine.DriftRules{}); err != nil || !slices.Equal(d.Reasons, []string{"ConfigMap reader/web-settings: data.mode is slow, want fast"}) {
			t.Errorf("Drift after a change = %q, %v", d.Reasons, err)
		}
	})

	t.Run("an old record without the read-side fields is unknown", func(t *testing.T) {
		save(cache.ReleaseRecord{Namespace: ns, Name: "old", Installed: t0, Updated: t0,
			Revisions: []cache.ReleaseRevision{{Revision: 1, Digest: "sha256:x", Written: t0}}})
		helmSecret(t, c, ns, "old", 1, "deployed")
		if _, ok := unchanged(t, "old", hash); ok {
			t.Error("Unchanged of an old record: true")
		}
		if _, err := r.Get(ctx, "old", ns); !errors.Is(err, engine.ErrUnknown) {
			t.Errorf("Get of an old record: %v, want ErrUnknown", err)
		}
		if _, err := r.Health(ctx, "old", ns); !errors.Is(err, engine.ErrUnknown) {
			t.Errorf("Health of an old record: %v, want ErrUnknown", err)
		}
		if _, err := r.Drift(ctx, "old", ns, engine.DriftRules{}); !errors.Is(err, engine.ErrUnknown) {
			t.Errorf("Drift of an old record: %v, want ErrUnknown", err)
		}
	})

	t.Run("a deleted Secret is not unchanged", func(t *testing.T) {
		save(record(t, ns, "gone", 3, "deployed", hash))
		helmSecret(t, c, ns, "gone", 3, "deployed")
		if _, ok := unchanged(t, "gone", hash); !ok {
			t.Fatal("Unchanged with the Secret present: false")
		}
		if err := c.Clientset.CoreV1().Secrets(ns).Delete(ctx, observe.SecretName("gone", 3), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, ok := unchanged(t, "gone", hash); ok {
			t.Error("Unchanged after Helm's Secret was deleted: true")
		}
		if _, err := r.Get(ctx, "gone", ns); !errors.Is(err, engine.ErrUnknown) || !strings.Contains(err.Error(), "sh.helm.release.v1.gone.v3") {
			t.Errorf("Get after the Secret was deleted: %v, want ErrUnknown naming the Secret", err)
		}
		if _, err := r.Drift(ctx, "gone", ns, engine.DriftRules{}); !errors.Is(err, engine.ErrUnknown) {
			t.Errorf("Drift after the Secret was deleted: %v, want ErrUnknown", err)
		}
	})

	t.Run("a Secret whose labels contradict the record is not unchanged", func(t *testing.T) {
		save(record(t, ns, "relabelled", 1, "deployed", hash))
		helmSecret(t, c, ns, "relabelled", 1, "pending-upgrade") // as a crash during an upgrade leaves it
		if _, ok := unchanged(t, "relabelled", hash); ok {
			t.Error("Unchanged with a Secret labelled pending-upgrade: true")
		}
		if _, err := r.Get(ctx, "relabelled", ns); !errors.Is(err, engine.ErrUnknown) {
			t.Errorf("Get: %v, want ErrUnknown", err)
		}
	})

	t.Run("a newer revision planted beside it is not unchanged", func(t *testing.T) {
		save(record(t, ns, "overtaken", 1, "deployed", hash))
		helmSecret(t, c, ns, "overtaken", 1, "deployed")
		if _, ok := unchanged(t, "overtaken", hash); !ok {
			t.Fatal("Unchanged before the plant: false")
		}
		helmSecret(t, c, ns, "overtaken", 2, "deployed") // Helm would read it as the current revision
		if _, ok := unchanged(t, "overtaken", hash); ok {
			t.Error("Unchanged with a Secret claiming a newer revision: true")
		}
		if _, err := r.Get(ctx, "overtaken", ns); !errors.Is(err, engine.ErrUnknown) || !strings.Contains(err.Error(), "claims revision 2") {
			t.Errorf("Get: %v, want ErrUnknown naming the newer revision", err)
		}
	})

	t.Run("a failed release is not unchanged, not healthy and drifted", func(t *testing.T) {
		rec := record(t, ns, "failing", 2, "failed", hash)
		rec.Revisions[1].Description = "Upgrade \"failing\" failed: timed out"
		save(rec)
		helmSecret(t, c, ns, "failing", 2, "failed")
		if _, ok := unchanged(t, "failing", hash); ok {
			t.Error("Unchanged of a failed release: true")
		}
		h, err := r.Health(ctx, "failing", ns)
		if err != nil || h.Ready || h.Message != `release reader/failing: failed: Upgrade "failing" failed: timed out` {
			t.Errorf("Health = %+v, %v", h, err)
		}
		d, err := r.Drift(ctx, "failing", ns, engine.DriftRules{})
		if err != nil || !d.Drifted || !slices.Contains(d.Reasons, "release reader/failing is failed") {
			t.Errorf("Drift = %+v, %v", d, err)
		}
	})

	t.Run("a revision whose write was not confirmed is unknown", func(t *testing.T) {
		rec := record(t, ns, "unconfirmed", 2, "", hash)
		save(rec)
		helmSecret(t, c, ns, "unconfirmed", 2, "deployed")
		if _, ok := unchanged(t, "unconfirmed", hash); ok {
			t.Error("Unchanged of an unconfirmed revision: true")
		}
		if _, err := r.Health(ctx, "unconfirmed", ns); !errors.Is(err, engine.ErrUnknown) {
			t.Errorf("Health: %v, want ErrUnknown", err)
		}
	})

	t.Run("a release without a record is not found, whatever the cluster holds", func(t *testing.T) {
		helmSecret(t, c, ns, "planted", 1, "deployed")
		if _, ok := unchanged(t, "planted", hash); ok {
			t.Error("Unchanged of a release the agent never recorded: true")
		}
		if _, err := r.Get(ctx, "planted", ns); !errors.Is(err, engine.ErrReleaseNotFound) {
			t.Errorf("Get: %v, want ErrReleaseNotFound", err)
		}
		if _, err := r.Health(ctx, "planted", ns); !errors.Is(err, engine.ErrReleaseNotFound) {
			t.Errorf("Health: %v, want ErrReleaseNotFound", err)
		}
		if d, err := r.Drift(ctx, "planted", ns, engine.DriftRules{}); err != nil || !slices.Equal(d.Reasons, []string{"release reader/planted is not installed"}) {
			t.Errorf("Drift = %+v, %v", d, err)
		}
	})

	t.Run("List", func(t *testing.T) {
		list, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, ri := range list {
			got = append(got, ri.Namespace+"/"+ri.Name+"="+ri.Status+"@"+strconv.Itoa(ri.Revision))
		}
		want := []string{"reader/failing=failed@2", "reader/gone=deployed@3", "reader/old=unknown@1", "reader/overtaken=deployed@1", "reader/relabelled=deployed@1",
			"reader/unconfirmed=unknown@2", "reader/web=deployed@2"}
		if !slices.Equal(got, want) {
			t.Errorf("List = %q, want %q", got, want)
		}
	})
}
