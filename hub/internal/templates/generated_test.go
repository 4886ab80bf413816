package templates_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"

	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/sources"
	"github.com/tetherfleet/tether/hub/internal/templates"
)

// generatedEnv is a resolver on a real bbolt store and chart store.
type generatedEnv struct {
	repo *objects.Repo
	cs   *charts.Store
	r    *templates.Resolver
}

func newGeneratedEnv(t *testing.T) *generatedEnv {
	t.Helper()
	dir := t.TempDir()
	st, repo := openRepo(t, dir)
	cs, err := charts.New(charts.Config{Dir: filepath.Join(dir, "charts"), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	r, err := templates.New(templates.Config{Repo: repo, Charts: cs, Watcher: st})
	if err != nil {
		t.Fatal(err)
	}
	return &generatedEnv{repo: repo, cs: cs, r: r}
}

func (e *generatedEnv) apply(t *testing.T, doc string) {
	t.Helper()
	objs, err := objects.Decode([]byte(doc), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.repo.Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
}

// ready resolves and returns the template, failing unless it is ready.
func (e *generatedEnv) ready(t *testing.T, ns, name string) *objects.ServiceTemplate {
	t.Helper()
	ctx := context.Background()
	if _, _, err := e.r.ResolveAll(ctx); err != nil {
		t.Fatal(err)
	}
	o, err := e.repo.Get(ctx, objects.KindServiceTemplate, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	st := o.(*objects.ServiceTemplate)
	if ok, why := st.Ready(); !ok {
		t.Fatalf("template %s/%s not ready: %s (status %+v)", ns, name, why, st.Status)
	}
	return st
}

// rendered loads the stored chart by the template's digest and renders
// it with Helm's engine, as an agent would; it returns the manifests.
func (e *generatedEnv) rendered(t *testing.T, st *objects.ServiceTemplate) string {
	t.Helper()
	rc, _, err := e.cs.Open(st.Status.ChartDigest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	if charts.Digest(buf.Bytes()) != st.Status.ChartDigest {
		t.Fatal("stored archive does not match its digest")
	}
	ch, err := loader.LoadArchive(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.Name != st.Metadata.Name || ch.Metadata.Version != st.Status.ChartVersion {
		t.Fatalf("chart %s %s; want %s %s", ch.Metadata.Name, ch.Metadata.Version, st.Metadata.Name, st.Status.ChartVersion)
	}
	vals, err := chartutil.ToRenderValues(ch, map[string]any{}, chartutil.ReleaseOptions{Name: "r", Namespace: "ns"}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 {
		t.Fatalf("rendered %d files; want 1", len(out))
	}
	return out[ch.Metadata.Name+"/"+sources.ManifestsFile]
}

const cmA = `apiVersion: v1
kind: ConfigMap
metadata:
  name: a
data:
  tmpl: '{{ .Values.notRendered }} {{- x }}'
`

const cmB = `apiVersion: v1
kind: Namespace
metadata:
  name: b
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: c
`

func TestResourcesTemplateFromConfigMapRendersToItsManifests(t *testing.T) {
	e := newGeneratedEnv(t)
	e.apply(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: manifests, namespace: apps}
data:
  b.yaml: |
`+indent(cmB)+`
  a.yaml: |
`+indent(cmA)+`
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: plain, namespace: apps}
spec:
  version: 1.2.0
  resources:
    deploymentType: Remote
    localSourceRef: {kind: ConfigMap, name: manifests}
`)
	st := e.ready(t, "apps", "plain")
	if !strings.HasPrefix(st.Status.ChartVersion, "1.2.0+") || st.Status.Source != "ConfigMap apps/manifests" {
		t.Errorf("status %+v; want version 1.2.0+digest from ConfigMap apps/manifests", st.Status)
	}
	want := cmA + "---\n" + cmB // keys sorted, {{ kept as written
	if got := e.rendered(t, st); got != want {
		t.Fatalf("rendered:\n%s\nwant:\n%s", got, want)
	}

	// The ConfigMap changes: a new chart, without a change to the template.
	first := st.Status.ChartDigest
	e.apply(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: manifests, namespace: apps}
data:
  a.yaml: |
`+indent(cmA))
	st = e.ready(t, "apps", "plain")
	if st.Status.ChartDigest == first {
		t.Fatal("chart digest unchanged after the ConfigMap changed")
	}
	if got := e.rendered(t, st); got != cmA {
		t.Fatalf("rendered after change:\n%s\nwant:\n%s", got, cmA)
	}

	// A document that is not an object: not ready, saying which.
	e.apply(t, `apiVersion: v1
kind: ConfigMap
metadata: {name: manifests, namespace: apps}
data: {a.yaml: "kind: Pod\n"}`)
	if _, _, err := e.r.ResolveAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	o, _ := e.repo.Get(context.Background(), objects.KindServiceTemplate, "apps", "plain")
	if ok, why := o.(*objects.ServiceTemplate).Ready(); ok || !strings.Contains(why, "a.yaml: document 1: no apiVersion") {
		t.Fatalf("Ready() = %v, %q; want not ready naming a.yaml's document", ok, why)
	}
}

func TestKustomizeTemplateFromSecretRendersTheBuild(t *testing.T) {
	e := newGeneratedEnv(t)
	e.apply(t, `apiVersion: v1
kind: Secret
metadata: {name: kust, namespace: apps}
stringData:
  kustomization.yaml: |
    namePrefix: edge-
    commonLabels: {app: web}
    resources: [sa.yaml]
  sa.yaml: |
    apiVersion: v1
    kind: ServiceAccount
    metadata: {name: web}
---
apiVersion: v1
kind: Secret
metadata: {name: remote, namespace: apps}
stringData:
  kustomization.yaml: |
    resources: ["https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v3.3.1"]
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: kust, namespace: apps}
spec: {kustomize: {localSourceRef: {kind: Secret, name: kust}}}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: remote, namespace: apps}
spec: {kustomize: {localSourceRef: {kind: Secret, name: remote}}}
`)
	st := e.ready(t, "apps", "kust")
	want := "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  labels:\n    app: web\n  name: edge-web\n"
	if got := e.rendered(t, st); got != want {
		t.Fatalf("rendered:\n%s\nwant:\n%s", got, want)
	}
	if !strings.HasPrefix(st.Status.ChartVersion, "0.0.0+") {
		t.Errorf("chart version %q; want 0.0.0+digest without spec.version", st.Status.ChartVersion)
	}
	o, _ := e.repo.Get(context.Background(), objects.KindServiceTemplate, "apps", "remote")
	if ok, why := o.(*objects.ServiceTemplate).Ready(); ok || !strings.Contains(why, "remote references are not fetched") {
		t.Fatalf("remote kustomization: Ready() = %v, %q; want refused", ok, why)
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimSuffix(s, "\n"), "\n", "\n    ")
}
