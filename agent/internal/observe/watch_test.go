package observe_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/observe"
)

func cmManifest(names ...string) string {
	var b strings.Builder
	for _, n := range names {
		b.WriteString("---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + n + "\ndata:\n  v: \"1\"\n")
	}
	return b.String()
}

// TestWatcherWatchesWhatTheRecordsName: the watcher runs one informer per
// resource and namespace the recorded manifests name, reports updates and
// deletes of those objects for their release, not of another Helm object
// in the same namespace, and stops informers no longer needed.
func TestWatcherWatchesWhatTheRecordsName(t *testing.T) {
	c := testCluster(t)
	o, ct := newObserver(t, c)
	ns1, ns2 := newNamespace(t, c, "watch-a"), newNamespace(t, c, "watch-b")
	db, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	save := func(ns, name, manifest string) {
		t.Helper()
		rv := cache.ReleaseRevision{Revision: 1, Digest: "sha256:d", Written: t0, Status: "deployed", Deployed: t0}
		if err := rv.SetManifest(manifest); err != nil {
			t.Fatal(err)
		}
		if err := db.SaveReleaseRecord(cache.ReleaseRecord{Namespace: ns, Name: name, Installed: t0, Updated: t0, Revisions: []cache.ReleaseRevision{rv}}); err != nil {
			t.Fatal(err)
		}
	}
	save(ns1, "a", cmManifest("a-cm", "a-cm2"))
	save(ns2, "b", cmManifest("b-cm"))
	helm := map[string]string{"app.kubernetes.io/managed-by": "Helm"}
	for ns, names := range map[string][]string{ns1: {"a-cm", "a-cm2", "other"}, ns2: {"b-cm"}} {
		for _, n := range names {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: n, Namespace: ns, Labels: helm}, Data: map[string]string{"v": "1"}}
			if _, err := c.Clientset.CoreV1().ConfigMaps(ns).Create(t.Context(), cm, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	var mu sync.Mutex
	var got []observe.Change
	changed := make(chan struct{}, 100)
	w, err := observe.NewWatcher(observe.WatcherConfig{Observer: o, Records: db, OnChange: func(ch observe.Change) {
		mu.Lock()
		got = append(got, ch)
		mu.Unlock()
		changed <- struct{}{}
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if err := w.Watch(ctx, []string{ns1 + "/a", ns2 + "/b"}); err != nil {
		t.Fatal(err)
	}
	if n := w.Informers(); n != 2 {
		t.Fatalf("%d informers, want 2 (ConfigMaps in %s and in %s)", n, ns1, ns2)
	}
	waitFor := func(what string, cond func(observe.Change) bool) observe.Change {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			mu.Lock()
			for _, ch := range got {
				if cond(ch) {
					mu.Unlock()
					return ch
				}
			}
			mu.Unlock()
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("no change %s; got %+v", what, got)
			}
		}
	}
	// Both informers synced: each reported its release once.
	waitFor("for the start of a", func(ch observe.Change) bool { return ch.Service == ns1+"/a" && strings.Contains(ch.Object, "started") })
	waitFor("for the start of b", func(ch observe.Change) bool { return ch.Service == ns2+"/b" && strings.Contains(ch.Object, "started") })

	cms := c.Clientset.CoreV1().ConfigMaps(ns1)
	edit := func(name string) {
		t.Helper()
		cm, err := cms.Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cm.Data["v"] = "2"
		if _, err := cms.Update(t.Context(), cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	edit("other") // Helm's, but no watched release names it
	edit("a-cm2")
	ch := waitFor("for a-cm2", func(ch observe.Change) bool { return ch.Object == "ConfigMap "+ns1+"/a-cm2" })
	if ch.Service != ns1+"/a" || !ch.Spec || ch.Deleted {
		t.Errorf("edit of a-cm2: %+v", ch)
	}
	mu.Lock()
	for _, ch := range got {
		if strings.Contains(ch.Object, "other") {
			t.Errorf("reported an object no release names: %+v", ch)
		}
	}
	mu.Unlock()
	if err := c.Clientset.CoreV1().ConfigMaps(ns2).Delete(t.Context(), "b-cm", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	ch = waitFor("for the delete of b-cm", func(ch observe.Change) bool { return ch.Object == "ConfigMap "+ns2+"/b-cm" })
	if ch.Service != ns2+"/b" || !ch.Deleted {
		t.Errorf("delete of b-cm: %+v", ch)
	}
	// ConfigMaps of ns2 were listed and watched there, not cluster-wide.
	if n := ct.count("/api/v1/namespaces/" + ns2 + "/configmaps"); n == 0 {
		t.Errorf("no list or watch of ConfigMaps in %s", ns2)
	}

	if err := w.Watch(ctx, []string{ns1 + "/a"}); err != nil {
		t.Fatal(err)
	}
	if n := w.Informers(); n != 1 {
		t.Errorf("%d informers after b is no longer watched, want 1", n)
	}
}
