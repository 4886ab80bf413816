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
