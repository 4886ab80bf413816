package provision

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/charts"
)

func inMemoryChart(t testing.TB) []byte {
	t.Helper()
	archive, err := charts.PackageDir(filepath.Join("..", "..", "..", "bundles", "cluster-templates", "capd-in-memory"))
	if err != nil {
		t.Fatal(err)
	}
	return archive
}

func TestRenderInMemoryTemplate(t *testing.T) {
	archive := inMemoryChart(t)
	r, err := Render(archive, "edge-1", "fleet", []byte(`{"workersNumber": 2}`))
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	for _, u := range r.Objects {
		kinds[u.GetKind()]++
		if u.GetNamespace() != "fleet" || u.GetLabels()[LabelDeployment] != "edge-1" {
			t.Errorf("%s %s: namespace %q labels %v, want fleet and the deployment label", u.GetKind(), u.GetName(), u.GetNamespace(), u.GetLabels())
		}
		if u.GetKind() == "MachineDeployment" {
			if n, _, _ := unstructuredInt(u.Object, "spec", "replicas"); n != 2 {
				t.Errorf("MachineDeployment replicas = %d, want 2 from spec.config", n)
			}
		}
	}
	want := map[string]int{"Cluster": 1, "DevCluster": 1, "DevMachineTemplate": 2, "KubeadmControlPlane": 1, "KubeadmConfigTemplate": 1, "MachineDeployment": 1}
	for k, n := range want {
		if kinds[k] != n {
			t.Errorf("%s objects = %d, want %d (all: %v)", k, kinds[k], n, kinds)
		}
	}
	if r.KubernetesVersion != "v1.37.0" {
		t.Errorf("KubernetesVersion = %q, want v1.37.0", r.KubernetesVersion)
	}
	if strings.Join(r.Providers, ",") != "infrastructure-docker,control-plane-kubeadm,bootstrap-kubeadm" || r.ProviderContracts["infrastructure-docker"] != "v1beta2" || len(r.ProviderContracts) != 3 {
		t.Errorf("Providers %v contracts %v, want the chart's cluster.x-k8s.io annotations", r.Providers, r.ProviderContracts)
	}
	again, err := Render(archive, "edge-1", "fleet", []byte(`{"workersNumber": 2}`))
	if err != nil || again.Hash != r.Hash {
		t.Errorf("second render: hash %s err %v, want the same hash %s", again.Hash, err, r.Hash)
	}
	other, _ := Render(archive, "edge-1", "fleet", []byte(`{"workersNumber": 3}`))
	if other.Hash == r.Hash {
		t.Error("a different config rendered the same hash")
	}
}

func TestRenderBadInput(t *testing.T) {
	archive := inMemoryChart(t)
	for _, tc := range []struct {
		name, config string
		want         error
		msg          string
	}{
		{"wrong type", `{"workersNumber": "two"}`, ErrInvalidConfig, "workersNumber"},
		{"unknown field", `{"region": "mars"}`, ErrInvalidConfig, "region"},
		{"out of range", `{"controlPlaneNumber": 0}`, ErrInvalidConfig, "controlPlaneNumber"},
		{"not an object", `[1]`, ErrInvalidConfig, "JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(archive, "edge-1", "fleet", []byte(tc.config))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("Render(%s) = %v, want %v naming %q", tc.config, err, tc.want, tc.msg)
			}
		})
	}
	t.Run("does not render", func(t *testing.T) {
		dir := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(dir, "templates"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "Chart.yaml"), []byte("apiVersion: v2\nname: broken\nversion: 0.1.0\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "templates", "x.yaml"), []byte(`{{ fail "broken on purpose" }}`), 0o644))
		archive, err := charts.PackageDir(dir)
		must(t, err)
		if _, err := Render(archive, "edge-1", "fleet", nil); !errors.Is(err, ErrRender) || !strings.Contains(err.Error(), "broken on purpose") {
			t.Errorf("Render = %v, want ErrRender with the chart's message", err)
		}
	})
	t.Run("not a chart", func(t *testing.T) {
		if _, err := Render([]byte("nope"), "edge-1", "fleet", nil); !errors.Is(err, ErrRender) {
			t.Errorf("Render = %v, want ErrRender", err)
		}
	})
}

// FuzzRender: no spec.config makes Render panic; it renders or refuses.
func FuzzRender(f *testing.F) {
	archive := inMemoryChart(f)
	for _, s := range []string{`{}`, `{"workersNumber": 2}`, `{"workersNumber": "x"}`, `null`, `[`, `{"clusterNetwork": {"pods": {"cidrBlocks": [1]}}}`, `{"startup": {"vm": "1s"}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, config []byte) {
		r, err := Render(archive, "edge-1", "fleet", config)
		if err == nil && len(r.Objects) == 0 {
			t.Fatal("rendered no objects without an error")
		}
		if err != nil && !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, ErrRender) {
			t.Fatalf("error %v is neither ErrInvalidConfig nor ErrRender", err)
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func unstructuredInt(obj map[string]any, fields ...string) (int64, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return 0, false, nil
		}
		cur = m[f]
	}
	switch v := cur.(type) {
	case int64:
		return v, true, nil
	case float64:
		return int64(v), true, nil
	}
	return 0, false, nil
}
