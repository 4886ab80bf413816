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
