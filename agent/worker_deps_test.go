package agent_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLongRunningAgentLinksNoHelm keeps Helm's SDK (and kubectl,
// kustomize, oras, client-go's discovery and typed clientset under it)
// out of tether-agent: they are most of an agent's memory, and they run
// in tether-agent-helm, started only while there is Helm work
// (docs/design/agent.md, "The Helm worker").
func TestLongRunningAgentLinksNoHelm(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/tetherfleet/tether/agent/cmd/tether-agent").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	forbidden := []string{
		"helm.sh/helm/v3/pkg/action",
		"helm.sh/helm/v3/pkg/kube",
		"helm.sh/helm/v3/pkg/storage",
		"k8s.io/kubectl",
		"sigs.k8s.io/kustomize",
		"oras.land",
		"k8s.io/client-go/discovery",
		"k8s.io/client-go/restmapper",
		"k8s.io/client-go/kubernetes",
		"github.com/tetherfleet/tether/agent/internal/apply",
		"github.com/tetherfleet/tether/agent/internal/helmworker",
	}
	for _, d := range deps {
		for _, f := range forbidden {
			if d == f || strings.HasPrefix(d, f+"/") {
				t.Errorf("tether-agent depends on %s (forbidden: %s belongs in tether-agent-helm)", d, f)
			}
		}
	}
	// The worker does link Helm: if it did not, the check above would be
	// looking at the wrong package paths.
	out, err = exec.Command("go", "list", "-deps", "github.com/tetherfleet/tether/agent/cmd/tether-agent-helm").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps tether-agent-helm: %v\n%s", err, out)
	}
	if !containsDep(strings.Fields(string(out)), "helm.sh/helm/v3/pkg/action") {
		t.Errorf("tether-agent-helm does not link helm.sh/helm/v3/pkg/action; are the package paths right?")
	}
}
