package templates_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/templates"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

const saDoc = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: %s\n"

// TestGitSourcedTemplatesArePinnedByCommit: templates from a real git
// repository on loopback (basic auth), one naming a GitRepository by
// branch, one embedding the source with a semver tag range, render the
// commit they select; a new commit on the branch is picked up once the
// interval has passed, and the tag-pinned template does not move.
func TestGitSourcedTemplatesArePinnedByCommit(t *testing.T) {
	g := e2etest.NewGitServer(t, "reader", "s3cret")
	v1 := g.Commit(map[string]string{
		"deploy/kustomization.yaml": "resources: [sa.yaml]\nnamePrefix: k-\n",
		"deploy/sa.yaml":            strings.ReplaceAll(saDoc, "%s", "one"),
		"plain/sa.yaml":             strings.ReplaceAll(saDoc, "%s", "plain-one"),
		"plain/README.md":           "not a manifest",
	})
	g.Tag("v1.0.0")

	dir := t.TempDir()
	st, repo := openRepo(t, dir)
	cs, err := charts.New(charts.Config{Dir: filepath.Join(dir, "charts"), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	r, err := templates.New(templates.Config{Repo: repo, Charts: cs, Watcher: st, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e := &generatedEnv{repo: repo, cs: cs, r: r}
	e.apply(t, `apiVersion: v1
kind: Secret
metadata: {name: git-auth, namespace: apps}
stringData: {username: reader, password: s3cret}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: repo, namespace: apps}
spec:
  url: `+g.URL+`
  interval: 5m
  ref: {branch: main}
  secretRef: {name: git-auth}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: kust-git, namespace: apps}
spec:
  kustomize:
    localSourceRef: {kind: GitRepository, name: repo}
    path: ./deploy
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: plain-git, namespace: apps}
spec:
  resources:
    path: plain
    remoteSourceSpec:
      git:
        url: `+g.URL+`
        interval: 5m
        ref: {semver: ">=1.0.0 <2.0.0"}
        secretRef: {name: git-auth}
`)
	kust := e.ready(t, "apps", "kust-git")
	if got, want := e.rendered(t, kust), strings.ReplaceAll(saDoc, "%s", "k-one"); got != want {
		t.Fatalf("kustomize from git rendered:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasSuffix(kust.Status.Source, "@"+v1) {
		t.Errorf("source %q; want it pinned to commit %s", kust.Status.Source, v1)
	}
	plain := e.ready(t, "apps", "plain-git")
	if got, want := e.rendered(t, plain), strings.ReplaceAll(saDoc, "%s", "plain-one"); got != want {
		t.Fatalf("resources from git rendered:\n%s\nwant:\n%s", got, want)
	}

	v2 := g.Commit(map[string]string{
		"deploy/sa.yaml": strings.ReplaceAll(saDoc, "%s", "two"),
		"plain/sa.yaml":  strings.ReplaceAll(saDoc, "%s", "plain-two"),
	})
	// Within the interval nothing is fetched; after it, the branch moves.
	if again := e.ready(t, "apps", "kust-git"); again.Status.ChartDigest != kust.Status.ChartDigest {
		t.Fatal("the branch was fetched again within its interval")
	}
	clock.Add(6 * time.Minute)
	kust2 := e.ready(t, "apps", "kust-git")
	if got, want := e.rendered(t, kust2), strings.ReplaceAll(saDoc, "%s", "k-two"); got != want || !strings.HasSuffix(kust2.Status.Source, "@"+v2) {
		t.Fatalf("after a new commit: rendered %q from %s; want %q from %s", got, kust2.Status.Source, want, v2)
	}
	if p2 := e.ready(t, "apps", "plain-git"); p2.Status.ChartDigest != plain.Status.ChartDigest {
		t.Fatal("the semver-pinned template moved without a new tag")
	}

	// A wrong password: not ready, and the message has no secret.
	e.apply(t, `apiVersion: v1
kind: Secret
metadata: {name: git-auth, namespace: apps}
stringData: {username: reader, password: wrong-pass}
`)
	clock.Add(6 * time.Minute)
	if _, _, err := r.ResolveAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	o, _ := repo.Get(context.Background(), objects.KindServiceTemplate, "apps", "kust-git")
	ok, why := o.(*objects.ServiceTemplate).Ready()
	if ok || !strings.Contains(why, "GitRepository apps/repo") || strings.Contains(why, "wrong-pass") {
		t.Fatalf("with a wrong password: Ready() = %v, %q; want not ready, naming the repository, without the password", ok, why)
	}
}
