package rollouts

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

// cdFleetSize keeps the hub-wide ClusterDeployment rollout's fleet small:
// the policy logic is the MCS one, proven at 1,000 in TestFleetRollouts;
// this checks the ClusterDeployment path end to end.
const cdFleetSize = 200

// cds is one ClusterDeployment per cluster (namespace cds) running chart
// sim at version, and the template it names.
func cds(names []string, version string) string {
	tmpl := "sim-" + strings.ReplaceAll(version, ".", "-")
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: %s, namespace: cds}
spec: {helm: {chartSpec: {chart: sim, version: %s, sourceRef: {name: tether-local}}}}
`, tmpl, version)
	for _, n := range names {
		fmt.Fprintf(&b, `---
apiVersion: tether.dev/v1alpha1
kind: ClusterDeployment
metadata: {name: %s, namespace: cds}
spec:
  template: adopted
  serviceSpec:
    services: [{template: %s, name: site, namespace: apps}]
`, n, tmpl)
	}
	return b.String()
}

// TestFleetClusterDeploymentRollout: a hub started with
// --cluster-deployment-rollout (Progressive, maxConcurrency 10%, Skip)
// and 200 simulated agents, each with its own ClusterDeployment. Every
// ClusterDeployment changes at once: at no sample are more than 20
// clusters Progressing nor more than 20 agents holding 2.0.0 not yet
// deployed; 10% offline are Deferred and catch up when back.
func TestFleetClusterDeploymentRollout(t *testing.T) {
	const max = cdFleetSize / 10
	policy := filepath.Join(t.TempDir(), "cd-rollout.yaml")
	if err := os.WriteFile(policy, []byte("rollout:\n  strategy: Progressive\n  maxConcurrency: 10%\n  minSuccessTime: 0s\n  offlineClusters: Skip\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := startFleet(t, bins, fleetOptions{agents: cdFleetSize, deployDelay: 50 * time.Millisecond, simFlags: []string{"--seed", "11"}},
		"--cluster-deployment-rollout", policy)
	f.pushCharts(t, "1.0.0", "2.0.0")
	const ns, name = "_hub", "clusterdeployments"

	f.apply(t, cds(f.names, "1.0.0"))
	f.waitRollout(t, ns, name, "first serviceSpecs everywhere", 5*time.Minute, func(r *Record) bool {
		return r.Phase == "Complete" && r.Counts()["Succeeded"] == cdFleetSize
	})
	e2etest.Eventually(t, "every agent on 1.0.0", time.Minute, func() (bool, string) {
		n, missing := onVersion(f.mustAgents(t), "site", "1.0.0")
		return n == cdFleetSize, fmt.Sprintf("%d on 1.0.0; e.g. %v", n, missing[:min(5, len(missing))])
	})
	wave := func() uint64 { r, _ := f.rollout(ns, name); return r.Revision }()

	dark := f.pick(t, 5, 0.10)
	f.setOnline(t, dark, false)
	f.apply(t, cds(f.names, "2.0.0"))
	samples, busy := 0, 0
	e2etest.Eventually(t, "the wave completes without the dark sites", 5*time.Minute, func() (bool, string) {
		r, err := f.rollout(ns, name)
		if err != nil {
			return false, err.Error()
		}
		if r.Revision != wave+1 {
			return false, fmt.Sprintf("wave %d", r.Revision)
		}
		samples++
		c := r.Counts()
		if c["Progressing"] > max {
			t.Fatalf("sample %d: %d clusters Progressing, maxConcurrency %d: %v", samples, c["Progressing"], max, c)
		}
		if c["Progressing"] > 0 {
			busy++
		}
		inflight := 0
		for _, a := range f.mustAgents(t) {
			if v, st := a.Service("apps", "site"); v == "2.0.0" && st != "Deployed" {
				inflight++
			}
		}
		if inflight > max {
			t.Fatalf("sample %d: %d agents hold 2.0.0 not yet deployed, maxConcurrency %d", samples, inflight, max)
		}
		return r.Phase == "Complete" && c["Succeeded"] == cdFleetSize-len(dark) && c["Deferred"] == len(dark), fmt.Sprintf("%s %v", r.Phase, c)
	})
	if busy < 2 {
		t.Errorf("only %d of %d samples saw the wave in flight: not a continuous check", busy, samples)
	}
	as := f.mustAgents(t)
	for _, d := range dark {
		if v, _ := as[d].Service("apps", "site"); v != "1.0.0" {
			t.Errorf("dark %s holds %q, want 1.0.0 until it returns", d, v)
		}
	}
	out := f.bins.MustRun(t, f.hub.Env, "tether", "rollout", "status", "clusterdeployments")
	if !strings.Contains(out, "Rollout of ClusterDeployment changes (hub-wide)") || !strings.Contains(out, "Deferred") {
		t.Errorf("status:\n%s", firstLines(out, 12))
	}
	t.Logf("tether rollout status clusterdeployments:\n%s", firstLines(out, 12))
	f.setOnline(t, dark, true)
	f.waitRollout(t, ns, name, "the dark sites caught up", 3*time.Minute, func(r *Record) bool {
		return r.Counts()["Succeeded"] == cdFleetSize
	})
	e2etest.Eventually(t, "every agent on 2.0.0", time.Minute, func() (bool, string) {
		n, missing := onVersion(f.mustAgents(t), "site", "2.0.0")
		return n == cdFleetSize, fmt.Sprintf("%d on 2.0.0; e.g. %v", n, missing[:min(5, len(missing))])
	})
	t.Logf("%d samples, %d with clusters in flight", samples, busy)
}
