package templates_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	"github.com/tetherfleet/tether/hub/internal/templates"
)

// The repository is Flux's kind, as k0rdent writes it; its interval is
// the retry period of templates that do not resolve.
const manifests = `
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: repo, namespace: apps}
spec: {url: %q, interval: 7m}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: podinfo, namespace: apps}
spec: {helm: {chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: repo}}}}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: missing, namespace: apps}
spec: {helm: {chartSpec: {chart: podinfo, version: 9.9.9, sourceRef: {kind: HelmRepository, name: repo}}}}
`

// openRepo opens a bbolt store in dir, closed when the test ends, and an
// object repository on it.
func openRepo(t *testing.T, dir string) (*boltstore.Store, *objects.Repo) {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	repo, err := objects.NewRepo(objects.RepoConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	return st, repo
}

func TestResolverRecordsDigestsAndErrors(t *testing.T) {
	dir := t.TempDir()
	st, repo := openRepo(t, dir)
	cs, err := charts.New(charts.Config{Dir: filepath.Join(dir, "charts"), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	url := e2etest.HelmRepo(t, e2etest.SharedChart(t, "podinfo"))
	objs, err := objects.Decode([]byte(strings.Replace(manifests, "%q", `"`+url+`"`, 1)), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := repo.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	r, err := templates.New(templates.Config{Repo: repo, Charts: cs, Watcher: st})
	if err != nil {
		t.Fatal(err)
	}
	pending, retry, err := r.ResolveAll(ctx)
	if err != nil || pending != 1 {
		t.Fatalf("ResolveAll = %d pending, %v; want the missing version pending", pending, err)
	}
	if retry != 7*time.Minute {
		t.Errorf("ResolveAll retry = %v; want the repository's interval 7m", retry)
	}
	get := func(name string) *objects.ServiceTemplate {
		o, err := repo.Get(ctx, objects.KindServiceTemplate, "apps", name)
		if err != nil {
			t.Fatal(err)
		}
		return o.(*objects.ServiceTemplate)
	}
	ok := get("podinfo")
	if ready, why := ok.Ready(); !ready || !strings.HasPrefix(ok.Status.ChartDigest, "sha256:") || !cs.Has(ok.Status.ChartDigest) {
		t.Fatalf("podinfo template: ready %v (%s), status %+v", ready, why, ok.Status)
	}
	bad := get("missing")
	if ready, _ := bad.Ready(); ready || !strings.Contains(bad.Status.Message, "9.9.9") {
		t.Fatalf("missing-version template: status %+v; want not ready with a message naming the version", bad.Status)
	}

	// Run picks up a fix: the template now names an existing version.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	fixed, err := objects.Decode([]byte(`apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: missing, namespace: apps}
spec: {helm: {chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: repo}}}}
`), "fix.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Apply(ctx, fixed); err != nil {
		t.Fatal(err)
	}
	e2etest.Eventually(t, "fixed template resolved", 30*time.Second, func() (bool, string) {
		st := get("missing").Status
		return st.Valid && st.ChartDigest == ok.Status.ChartDigest, st.Message
	})
}

// flakyCharts fails its first fails calls with the same error (so the
// status, once written, does not change again), then resolves.
type flakyCharts struct {
	fails int32
	calls atomic.Int32
}

func (f *flakyCharts) AddGenerated(context.Context, []byte, string, bool) (charts.Chart, error) {
	return charts.Chart{}, errors.New("flakyCharts: no generated charts")
}

func (f *flakyCharts) PullOCI(context.Context, charts.RepoRef, string, string, string) (charts.Chart, error) {
	return charts.Chart{}, errors.New("flakyCharts: no OCI pulls")
}

func (f *flakyCharts) Resolve(_ context.Context, _ charts.RepoRef, name, version string) (charts.Chart, error) {
	if f.calls.Add(1) <= f.fails {
		return charts.Chart{}, errors.New("chart repository unreachable")
	}
	return charts.Chart{Digest: "sha256:" + strings.Repeat("ab", 32), Name: name, Version: version}, nil
}

// TestRunRetriesUnresolvedTemplatesWithoutAChange: a template that fails
// to resolve is tried again after Config.Retry although nothing in the
// store changes (the second failure records the same status, so no event
// follows it): only the retry timer brings the third and fourth attempts.
func TestRunRetriesUnresolvedTemplatesWithoutAChange(t *testing.T) {
	st, repo := openRepo(t, t.TempDir())
	objs, err := objects.Decode([]byte(`apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: web, namespace: apps}
spec: {helm: {chartSpec: {chart: web, version: 1.0.0, sourceRef: {kind: HelmRepository, name: `+objects.LocalRepository+`}}}}
`), "web.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := repo.Apply(ctx, objs); err != nil {
		t.Fatal(err)
	}
	cs := &flakyCharts{fails: 3}
	r, err := templates.New(templates.Config{Repo: repo, Charts: cs, Watcher: st, Retry: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	e2etest.Eventually(t, "template resolved after retries", 30*time.Second, func() (bool, string) {
		o, err := repo.Get(ctx, objects.KindServiceTemplate, "apps", "web")
		if err != nil {
			return false, err.Error()
		}
		ready, why := o.(*objects.ServiceTemplate).Ready()
		return ready, why
	})
	if n := cs.calls.Load(); n != 4 {
		t.Fatalf("%d resolve attempts, want 4 (three failures, then success)", n)
	}
}
