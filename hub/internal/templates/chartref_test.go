package templates_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/e2e/ociregistry"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/templates"
)

// manifestDigest asks the registry for the manifest digest of ref
// (HOST/PATH:TAG), as `crane digest` would.
func manifestDigest(t *testing.T, ref, user, pass string) string {
	t.Helper()
	c, err := registry.NewClient(registry.ClientOptPlainHTTP(), registry.ClientOptBasicAuth(user, pass),
		registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "creds.json")))
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Resolve(ref)
	if err != nil {
		t.Fatalf("resolve %s: %v", ref, err)
	}
	return d.Digest.String()
}

// TestChartRefOCIRepository: ServiceTemplates whose chartRef is a Flux
// OCIRepository (v1 and v1beta2), by tag, semver range and manifest
// digest, with a registry login from a kubernetes.io/dockerconfigjson
// Secret, resolve from a real registry on loopback to the pushed
// chart's digest; within the OCIRepository's interval nothing is asked
// again. A tag that is not there is a clear status message without the
// password.
func TestChartRefOCIRepository(t *testing.T) {
	const user, pass = "robot", "oci-pass-5521"
	reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass})
	archive := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	pushed := reg.PushChart(t, archive, "charts")
	digest := manifestDigest(t, pushed, user, pass)
	dockerConfig := fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, reg.Host, base64.StdEncoding.EncodeToString([]byte(user+":"+pass)))

	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	w := newWorldWith(t, clock)
	doc := fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: registry, namespace: apps}
type: kubernetes.io/dockerconfigjson
stringData: {.dockerconfigjson: %q}
`, dockerConfig)
	for _, oc := range []struct{ name, version, ref string }{
		{"by-tag", "v1", "{tag: 6.14.1}"},
		{"by-semver", "v1beta2", `{semver: ">=6.0.0 <7.0.0"}`},
		{"by-digest", "v1", "{digest: " + digest + "}"},
		{"missing-tag", "v1", "{tag: 9.9.9}"},
	} {
		doc += fmt.Sprintf(`---
apiVersion: source.toolkit.fluxcd.io/%s
kind: OCIRepository
metadata: {name: %s, namespace: apps}
spec:
  url: %s
  interval: 10m
  insecure: true
  ref: %s
  secretRef: {name: registry}
  layerSelector: {mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip, operation: copy}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: %s, namespace: apps}
spec:
  helm:
    chartRef: {kind: OCIRepository, name: %s}
`, oc.version, oc.name, reg.URL("charts/podinfo"), oc.ref, oc.name, oc.name)
	}
	w.apply(t, doc)
	ctx := context.Background()
	if pending, _, err := w.r.ResolveAll(ctx); err != nil || pending != 1 {
		t.Fatalf("ResolveAll = %d pending, %v; want only missing-tag pending", pending, err)
	}
	for name, at := range map[string]string{"by-tag": ":6.14.1", "by-semver": " (semver >=6.0.0 <7.0.0)", "by-digest": "@" + digest} {
		st := w.template(t, "apps", name)
		if ok, why := st.Ready(); !ok || st.Status.ChartDigest != charts.Digest(archive) || st.Status.ChartName != "podinfo" || st.Status.ChartVersion != "6.14.1" {
			t.Errorf("%s: ready %v (%s), status %+v; want podinfo 6.14.1 %s", name, ok, why, st.Status, charts.Digest(archive))
		}
		if want := "OCIRepository apps/" + name + " " + reg.URL("charts/podinfo") + at; st.Status.Source != want {
			t.Errorf("%s: source %q; want %q", name, st.Status.Source, want)
		}
	}
	if !w.cs.Has(charts.Digest(archive)) {
		t.Error("the chart is not in the chart store")
	}
	miss := w.template(t, "apps", "missing-tag").Status
	if miss.Valid || !strings.Contains(miss.Message, "OCIRepository apps/missing-tag") || !strings.Contains(miss.Message, "podinfo:9.9.9") || strings.Contains(miss.Message, pass) {
		t.Errorf("missing tag: status %+v; want a message naming the OCIRepository and the reference, without the password", miss)
	}

	// Within the interval the resolved templates ask nothing; the one
	// that failed is retried.
	w.apply(t, "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {name: missing-tag, namespace: apps}\nspec: {url: "+reg.URL("charts/podinfo")+", interval: 10m, insecure: true, ref: {tag: 6.14.1}, secretRef: {name: registry}}\n")
	before := reg.Requests()
	if pending, _, err := w.r.ResolveAll(ctx); err != nil || pending != 0 {
		t.Fatalf("ResolveAll after fixing the tag = %d pending, %v", pending, err)
	}
	fixed := reg.Requests()
	if _, _, err := w.r.ResolveAll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := reg.Requests(); n != fixed || fixed == before {
		t.Errorf("registry requests: %d before, %d after fixing the tag, %d after one more pass; want the fix to ask and the pass within the interval not to", before, fixed, n)
	}
	clock.Add(11 * time.Minute)
	if _, _, err := w.r.ResolveAll(ctx); err != nil {
		t.Fatal(err)
	}
	if reg.Requests() == fixed {
		t.Error("after the interval the OCIRepositories were not asked again")
	}
	if strings.Contains(w.logs.String(), pass) {
		t.Error("the registry password is in the logs")
	}
}

// chartFiles reads a chart directory into files under prefix, for a git
// commit.
func chartFiles(t *testing.T, dir, prefix string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[prefix+"/"+filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestChartsOfHelmChartsAndGit: a chartRef to a Flux HelmChart of a
// HelmRepository (a version range) or of a GitRepository, a chartSpec
// whose sourceRef is a GitRepository, and chartSource from a
// GitRepository or an embedded git spec all resolve; the charts from
// git are the chart directory packaged by the hub, pinned by commit,
// and a new commit is picked up after the interval. A chart directory
// whose dependencies are not vendored, and a HelmChart of a Bucket,
// are clear status messages.
func TestChartsOfHelmChartsAndGit(t *testing.T) {
	podinfo := e2etest.SharedChart(t, "podinfo")
	g := e2etest.NewGitServer(t, "", "")
	files := chartFiles(t, podinfo, "charts/podinfo")
	files["charts/broken/Chart.yaml"] = "apiVersion: v2\nname: broken\nversion: 0.1.0\ndependencies:\n- {name: redis, version: 1.0.0, repository: https://charts.example.com}\n"
	v1 := g.Commit(files)
	repoURL := e2etest.HelmRepo(t, podinfo)

	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	w := newWorldWith(t, clock)
	w.apply(t, `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: charts, namespace: apps}
spec: {url: `+repoURL+`, interval: 10m}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: repo, namespace: apps}
spec: {url: `+g.URL+`, interval: 5m, ref: {branch: main}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmChart
metadata: {name: of-repo, namespace: apps}
spec: {chart: podinfo, version: "6.x", interval: 10m, sourceRef: {kind: HelmRepository, name: charts}}
---
apiVersion: source.toolkit.fluxcd.io/v1beta2
kind: HelmChart
metadata: {name: of-git, namespace: apps}
spec: {chart: ./charts/podinfo, interval: 10m, sourceRef: {kind: GitRepository, name: repo}}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmChart
metadata: {name: of-bucket, namespace: apps}
spec: {chart: podinfo, interval: 10m, sourceRef: {kind: Bucket, name: b}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: ref-repo, namespace: apps}
spec: {helm: {chartRef: {kind: HelmChart, name: of-repo}}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: ref-git, namespace: apps}
spec: {helm: {chartRef: {kind: HelmChart, name: of-git, namespace: apps}}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: ref-bucket, namespace: apps}
spec: {helm: {chartRef: {kind: HelmChart, name: of-bucket}}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: spec-git, namespace: apps}
spec: {helm: {chartSpec: {chart: charts/podinfo, interval: 10m, sourceRef: {kind: GitRepository, name: repo}}}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: source-local, namespace: apps}
spec:
  helm:
    chartSource:
      localSourceRef: {kind: GitRepository, name: repo}
      path: charts/podinfo
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: source-remote, namespace: apps}
spec:
  helm:
    chartSource:
      deploymentType: Remote
      path: ./charts/podinfo
      remoteSourceSpec:
        git: {url: `+g.URL+`, interval: 5m, ref: {commit: `+v1+`}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: broken, namespace: apps}
spec:
  helm:
    chartSource:
      localSourceRef: {kind: GitRepository, name: repo}
      path: charts/broken
`)
	ctx := context.Background()
	if pending, _, err := w.r.ResolveAll(ctx); err != nil || pending != 2 {
		t.Fatalf("ResolveAll = %d pending, %v; want ref-bucket and broken pending", pending, err)
	}
	repoChart := w.template(t, "apps", "ref-repo")
	if ok, why := repoChart.Ready(); !ok || repoChart.Status.ChartName != "podinfo" || repoChart.Status.ChartVersion != "6.14.1" || !w.cs.Has(repoChart.Status.ChartDigest) {
		t.Errorf("ref-repo: ready %v (%s), status %+v; want the repository's podinfo 6.14.1 (the newest 6.x)", ok, why, repoChart.Status)
	}
	if want := "HelmChart apps/of-repo: chart podinfo 6.14.1 of HelmRepository apps/charts"; repoChart.Status.Source != want {
		t.Errorf("ref-repo: source %q; want %q", repoChart.Status.Source, want)
	}
	var gitDigest string
	for _, name := range []string{"ref-git", "spec-git", "source-local", "source-remote"} {
		st := w.template(t, "apps", name)
		if ok, why := st.Ready(); !ok || st.Status.ChartName != "podinfo" || st.Status.ChartVersion != "6.14.1" {
			t.Fatalf("%s: ready %v (%s), status %+v; want podinfo 6.14.1 packaged from git", name, ok, why, st.Status)
		}
		if !strings.Contains(st.Status.Source, "@"+v1) {
			t.Errorf("%s: source %q; want it pinned to commit %s", name, st.Status.Source, v1)
		}
		if gitDigest == "" {
			gitDigest = st.Status.ChartDigest
		} else if st.Status.ChartDigest != gitDigest {
			t.Errorf("%s: digest %s; the same chart directory packaged as %s for another template", name, st.Status.ChartDigest, gitDigest)
		}
		loaded := loadStored(t, w.cs, st.Status.ChartDigest)
		if len(loaded.Templates) == 0 || loaded.Values["replicaCount"] == nil {
			t.Errorf("%s: the packaged chart lost its templates or values", name)
		}
	}
	for name, want := range map[string]string{
		"ref-bucket": "HelmChart apps/of-bucket: sourceRef Bucket is not supported as a template source yet",
		"broken":     "dependency redis 1.0.0 is not in charts/",
	} {
		if st := w.template(t, "apps", name).Status; st.Valid || !strings.Contains(st.Message, want) {
			t.Errorf("%s: status %+v; want a message containing %q", name, st, want)
		}
	}

	// A new commit: the branch-following templates move after the git
	// interval, the commit-pinned one does not.
	chartYAML := files["charts/podinfo/Chart.yaml"]
	v2 := g.Commit(map[string]string{"charts/podinfo/Chart.yaml": strings.Replace(chartYAML, "version: 6.14.1", "version: 6.14.2", 1)})
	clock.Add(6 * time.Minute)
	if _, _, err := w.r.ResolveAll(ctx); err != nil {
		t.Fatal(err)
	}
	for name, version := range map[string]string{"ref-git": "6.14.2", "spec-git": "6.14.2", "source-local": "6.14.2", "source-remote": "6.14.1"} {
		st := w.template(t, "apps", name)
		if ok, _ := st.Ready(); !ok || st.Status.ChartVersion != version {
			t.Errorf("%s after commit %s: status %+v; want version %s", name, v2, st.Status, version)
		}
	}
}

// loadStored loads a chart from the chart store.
func loadStored(t *testing.T, cs *charts.Store, digest string) *chart.Chart {
	t.Helper()
	rc, _, err := cs.Open(digest)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	ch, err := loader.LoadArchive(&buf)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// newWorldWith is newWorld with a clock for the sources' intervals.
func newWorldWith(t *testing.T, clock *fakeClock) *world {
	t.Helper()
	w := newWorld(t)
	r, err := templates.New(templates.Config{Repo: w.repo, Charts: w.cs, Watcher: w.st, Logger: w.log, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	w.r = r
	return w
}

// TestChartRefOCIRepositoryOverTLS: an OCIRepository's certSecretRef
// (ca.crt, tls.crt, tls.key) and a username/password secretRef reach a
// registry with a private CA that wants client certificates.
func TestChartRefOCIRepositoryOverTLS(t *testing.T) {
	const user, pass = "robot", "tls-pass-0193"
	reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass, TLS: true, ClientCerts: true})
	archive := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	reg.PushChart(t, archive, "charts")
	w := newWorld(t)
	w.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: apps}
stringData: {username: %s, password: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: tls, namespace: apps}
data: {ca.crt: %s, tls.crt: %s, tls.key: %s}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: podinfo, namespace: apps}
spec: {url: %s, interval: 5m, ref: {tag: 6.14.1}, secretRef: {name: creds}, certSecretRef: {name: tls}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: podinfo, namespace: apps}
spec: {helm: {chartRef: {kind: OCIRepository, name: podinfo}}}
`, user, pass, b64(reg.CAPEM), b64(reg.ClientCertPEM), b64(reg.ClientKeyPEM), reg.URL("charts/podinfo")))
	if pending, _, err := w.r.ResolveAll(context.Background()); err != nil || pending != 0 {
		t.Fatalf("ResolveAll = %d pending, %v; status %+v", pending, err, w.template(t, "apps", "podinfo").Status)
	}
	if st := w.template(t, "apps", "podinfo"); st.Status.ChartDigest != charts.Digest(archive) {
		t.Errorf("status %+v; want the pushed chart", st.Status)
	}
}
