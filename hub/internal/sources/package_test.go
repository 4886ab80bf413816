package sources

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
)

// TestPackageChart: a chart directory packages as `helm package` would
// (.helmignore honoured, subcharts kept), into the same bytes each time;
// a dependency that is not vendored, or no Chart.yaml, is refused.
func TestPackageChart(t *testing.T) {
	files := map[string][]byte{
		"Chart.yaml":                 []byte("apiVersion: v2\nname: web\nversion: 1.2.3\ndependencies: [{name: db, version: 0.1.0}]\n"),
		"values.yaml":                []byte("replicas: 2\n"),
		"templates/cm.yaml":          []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: '{{ .Release.Name }}'}\n"),
		"charts/db/Chart.yaml":       []byte("apiVersion: v2\nname: db\nversion: 0.1.0\n"),
		"charts/db/templates/x.yaml": []byte("kind: X\n"),
		".helmignore":                []byte("*.md\nsecret/\n"),
		"README.md":                  []byte("ignored"),
		"secret/key":                 []byte("ignored too"),
	}
	a, err := PackageChart(files)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := PackageChart(files); !bytes.Equal(a, b) {
		t.Error("the same files packaged into other bytes")
	}
	ch, err := loader.LoadArchive(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if ch.Name() != "web" || ch.Metadata.Version != "1.2.3" || len(ch.Dependencies()) != 1 || ch.Values["replicas"] == nil {
		t.Errorf("packaged chart %s %s, %d subcharts, values %v", ch.Name(), ch.Metadata.Version, len(ch.Dependencies()), ch.Values)
	}
	for _, f := range ch.Raw {
		if strings.HasSuffix(f.Name, ".md") || strings.HasPrefix(f.Name, "secret/") {
			t.Errorf("%s is in the archive; .helmignore names it", f.Name)
		}
	}
	delete(files, "charts/db/Chart.yaml")
	delete(files, "charts/db/templates/x.yaml")
	if _, err := PackageChart(files); !errors.Is(err, ErrInvalidChart) || !strings.Contains(err.Error(), "dependency db 0.1.0 is not in charts/") {
		t.Errorf("without the vendored dependency: %v", err)
	}
	if _, err := PackageChart(map[string][]byte{"values.yaml": nil}); !errors.Is(err, ErrInvalidChart) {
		t.Errorf("without Chart.yaml: %v", err)
	}
}
