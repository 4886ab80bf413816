package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestAgentDependencies keeps the agent binary small and independent: it
// must not link hub code, Cluster API or the Prometheus TSDB.
func TestAgentDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/tetherfleet/tether/agent/cmd/tether-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	forbidden := []string{
		"github.com/tetherfleet/tether/hub/",
		"github.com/tetherfleet/tether/e2e/",
		"sigs.k8s.io/cluster-api",
		"github.com/prometheus/prometheus/tsdb",
		"github.com/prometheus/prometheus/promql",
		"k8s.io/kubernetes",
	}
	deps := strings.Fields(string(out))
	if len(deps) < 10 {
		t.Fatalf("go list -deps returned %d packages; the check would prove nothing", len(deps))
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("agent binary depends on %s (forbidden prefix %s)", d, f)
			}
		}
	}
	if !containsDep(deps, "github.com/tetherfleet/tether/protocol/tunnel") {
		t.Errorf("agent deps do not include protocol/tunnel; is the package path right?")
	}
}

func containsDep(deps []string, p string) bool {
	for _, d := range deps {
		if d == p {
			return true
		}
	}
	return false
}

// TestReadSideDependencies keeps the agent's Helm-free read side light:
// the long-running agent answers "up to date? healthy? drifted?" with
// these packages and must not link Helm's engine, the typed clientset or
// client-go discovery (with kube-openapi and gnostic, about 10 MiB of RSS
// each; Helm's action package brings kubectl, kustomize and oras).
func TestReadSideDependencies(t *testing.T) {
	forbidden := []string{
		"helm.sh/helm/v3/pkg/action",
		"helm.sh/helm/v3/pkg/kube",
		"helm.sh/helm/v3/pkg/storage",
		"k8s.io/client-go/kubernetes", // the typed clientset and its typed sub-packages
		"k8s.io/client-go/discovery",
		"k8s.io/client-go/restmapper",
		"k8s.io/client-go/dynamic/dynamicinformer",
		"k8s.io/kubectl",
		"sigs.k8s.io/kustomize",
		"oras.land",
		"github.com/google/gnostic",
	}
	for _, pkg := range []string{"observe", "engine", "reconcile", "telemetry"} {
		t.Run(pkg, func(t *testing.T) {
			path := "github.com/tetherfleet/tether/agent/internal/" + pkg
			out, err := exec.Command("go", "list", "-deps", path).CombinedOutput()
			if err != nil {
				t.Fatalf("go list -deps %s: %v\n%s", path, err, out)
			}
			deps := strings.Fields(string(out))
			if !containsDep(deps, path) || !containsDep(deps, "k8s.io/apimachinery/pkg/util/validation") {
				t.Fatalf("go list -deps %s lacks the package itself or apimachinery (%d packages); the check would prove nothing", path, len(deps))
			}
			for _, d := range deps {
				for _, f := range forbidden {
					if d == f || strings.HasPrefix(d, f+"/") {
						t.Errorf("%s depends on %s (forbidden: %s)", path, d, f)
					}
				}
			}
		})
	}
}
