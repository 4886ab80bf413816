package sources

import (
	"bytes"
	"errors"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
)

// FuzzResourcesChart: any manifest text either is refused with a
// sentinel or becomes a chart that renders back to exactly the
// manifests Resources returned (the escaping holds for any "{{").
func FuzzResourcesChart(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {x: '{{ .Values.y }}'}\n"))
	f.Add([]byte("---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: '{{-'\n"))
	f.Add([]byte("kind: Pod\n"))
	f.Add([]byte("{{{{\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := Resources(map[string][]byte{"f.yaml": in})
		if err != nil {
			if !errors.Is(err, ErrInvalidManifest) && !errors.Is(err, ErrNoManifests) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Resources error without a sentinel: %v", err)
			}
			return
		}
		archive, err := Chart("fz", Version("", m), "fuzz", m)
		if err != nil {
			t.Fatal(err)
		}
		ch, err := loader.LoadArchive(bytes.NewReader(archive))
		if err != nil {
			t.Fatal(err)
		}
		vals, err := chartutil.ToRenderValues(ch, map[string]any{}, chartutil.ReleaseOptions{Name: "r", Namespace: "n"}, chartutil.DefaultCapabilities)
		if err != nil {
			t.Fatal(err)
		}
		out, err := engine.Render(ch, vals)
		if err != nil {
			t.Fatal(err)
		}
		if got := out["fz/"+ManifestsFile]; got != string(m) {
			t.Fatalf("rendered %q; want %q", got, m)
		}
	})
}

// FuzzKustomize: any kustomization is built or refused, never panics.
func FuzzKustomize(f *testing.F) {
	f.Add([]byte("resources: [a.yaml]\nnamePrefix: p-\n"))
	f.Add([]byte("resources: [https://example.com/x]\n"))
	f.Add([]byte("resources: [../../etc]\n"))
	f.Fuzz(func(t *testing.T, k []byte) {
		_, _ = Kustomize(map[string][]byte{
			"kustomization.yaml": k,
			"a.yaml":             []byte("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n"),
		}, ".")
	})
}

// FuzzPackageChart: any Chart.yaml, .helmignore and template either is
// refused with a sentinel or packages into an archive Helm loads, with
// the same name and version, the same bytes every time.
func FuzzPackageChart(f *testing.F) {
	f.Add([]byte("apiVersion: v2\nname: web\nversion: 1.0.0\n"), []byte("*.md\n"), []byte("kind: ConfigMap"))
	f.Add([]byte("apiVersion: v2\nname: web\nversion: 1.0.0\ndependencies: [{name: db, version: 1.0.0}]\n"), []byte(""), []byte(""))
	f.Add([]byte("name: x\n"), []byte("[\n"), []byte("{{"))
	f.Add([]byte("apiVersion: v2\nname: ../x\nversion: 1\n"), []byte("templates/\n"), []byte("x"))
	f.Fuzz(func(t *testing.T, chartYAML, helmignore, tmpl []byte) {
		files := map[string][]byte{"Chart.yaml": chartYAML, ".helmignore": helmignore, "templates/a.yaml": tmpl, "README.md": []byte("r")}
		a, err := PackageChart(files)
		if err != nil {
			if !errors.Is(err, ErrInvalidChart) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("PackageChart error without a sentinel: %v", err)
			}
			return
		}
		b, err := PackageChart(files)
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("packaging again gave another archive (%v)", err)
		}
		if _, err := loader.LoadArchive(bytes.NewReader(a)); err != nil {
			t.Fatalf("packaged archive does not load: %v", err)
		}
	})
}
