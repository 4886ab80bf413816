// Package staged runs a staged rollout across three real harness
// clusters with real agents and Helm, one site's link cut by a fault
// proxy, as an operator would see it: the canary stage goes first, the
// main stage waits for approval, the dark site is Deferred without holding
// the wave, and catches up once its link is back.
package staged

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

const objects = `
apiVersion: tether.dev/v1alpha1
kind: HelmRepository
metadata: {name: testrepo, namespace: apps}
spec: {url: %q}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: podinfo-6.14.1, namespace: apps}
spec:
  helm:
    chartSpec: {chart: podinfo, version: 6.14.1, sourceRef: {kind: HelmRepository, name: testrepo}}
`

// mcs is the MultiClusterService: podinfo with replicaCount %d, and the
// rollout policy when withPolicy.
func mcs(replicas int, withPolicy bool) string {
	s := fmt.Sprintf(`
apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: web, namespace: apps}
spec:
  clusterSelector: {matchLabels: {app: web}}
  serviceSpec:
    services:
      - template: podinfo-6.14.1
        name: web
        namespace: web
        values: |
          replicaCount: %d
`, replicas)
	if withPolicy {
		s += `  rollout:
    strategy: Staged
    minSuccessTime: 2s
    offlineClusters: Skip
    stages:
      - {name: canary, clusterSelector: {matchLabels: {ring: canary}}}
      - {name: main, clusterSelector: {matchLabels: {ring: main}}, promotion: Manual}
`
	}
	return s
}

type site struct {
	name, ring string
	kube       *cluster.Cluster
	proxy      *e2etest.FaultProxy // nil: straight to the hub
}

func apply(t *testing.T, hub *e2etest.Hub, doc string) {
	t.Helper()
	if out, errOut, code := bins.RunStdin(t, hub.Env, []byte(doc), "tether", "apply", "-f", "-"); code != 0 {
		t.Fatalf("tether apply: exit %d: %s%s", code, out, errOut)
	}
}

// replicas is the podinfo Deployment's spec.replicas on a site's cluster.
func replicas(t *testing.T, s *site) int32 {
	d, err := s.kube.Clientset.AppsV1().Deployments("web").Get(context.Background(), "web-podinfo", metav1.GetOptions{})
	if err != nil {
		return -1
	}
	return *d.Spec.Replicas
}

type rolloutStatus struct {
	Revision uint64
	Phase    string
	Stages   []struct{ Name, Phase, Reason string }
	Clusters map[string]struct{ Stage, State, Reason string }
}

func status(t *testing.T, hub *e2etest.Hub) rolloutStatus {
	t.Helper()
	var st rolloutStatus
	bins.JSON(t, hub.Env, &st, "tether", "rollout", "status", "web", "-n", "apps", "-o", "json")
	return st
}

func (s rolloutStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "revision %d %s;", s.Revision, s.Phase)
	for _, st := range s.Stages {
		fmt.Fprintf(&b, " stage %s %s %s;", st.Name, st.Phase, st.Reason)
	}
	for n, c := range s.Clusters {
		fmt.Fprintf(&b, " %s %s %s;", n, c.State, c.Reason)
	}
	return b.String()
}

func TestStagedRolloutWithAnOfflineSite(t *testing.T) {
	hub := bins.StartHub(t)
	repo := e2etest.HelmRepo(t, e2etest.SharedChart(t, "podinfo"))
	sites := []*site{{name: "paris-1", ring: "canary"}, {name: "berlin-1", ring: "main"}, {name: "lyon-1", ring: "main"}}
	for i, s := range sites {
		s.kube = cluster.Start(t, cluster.Options{Name: s.name, NodeCount: 1})
		addr := hub.AgentAddr
		if i == 2 {
			s.proxy = e2etest.NewFaultProxy(t, hub.AgentAddr)
			addr = s.proxy.Addr
		}
		bins.Start(t, "agent-"+s.name, nil, "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", addr,
			"--token", hub.Token(t, s.name), "--kubeconfig", s.kube.KubeconfigPath, "--max-backoff", "2s", "--drift-interval", "5s")
		bins.MustRun(t, hub.Env, "tether", "label", "cluster", s.name, "app=web", "ring="+s.ring)
	}
	key := func(s *site) string { return s.name + "/web/web" }
	all := map[string]string{key(sites[0]): "Deployed", key(sites[1]): "Deployed", key(sites[2]): "Deployed"}

	// Revision 1 everywhere, then the policy alone (added first, as the
	// docs say), so revision 2 is the one rolled out.
	apply(t, hub, fmt.Sprintf(objects, repo)+"---"+mcs(1, false))
	hub.WaitServices(t, 5*time.Minute, all)
	apply(t, hub, mcs(1, true))

	// Lyon's uplink goes down.
	lyon := sites[2]
	lyon.proxy.Cut()
	e2etest.Eventually(t, "lyon-1 offline at the hub", 2*time.Minute, func() (bool, string) {
		var cl struct{ State string }
		bins.JSON(t, hub.Env, &cl, "tether", "get", "cluster", lyon.name, "-o", "json")
		return cl.State != "Connected", cl.State
	})

	apply(t, hub, mcs(2, true))
	// The canary goes first; the main stage waits for approval.
	e2etest.Eventually(t, "canary succeeded, main waiting for approval", 3*time.Minute, func() (bool, string) {
		st := status(t, hub)
		c := st.Clusters["paris-1"]
		return c.State == "Succeeded" && replicas(t, sites[0]) == 2, st.String()
	})
	st := status(t, hub)
	if b := st.Clusters["berlin-1"]; b.State != "Pending" {
		t.Fatalf("berlin-1 before the main stage is approved: %s, want Pending (%s)", b.State, st)
	}
	if n := replicas(t, sites[1]); n != 1 {
		t.Fatalf("berlin-1 runs %d replicas before its stage was approved, want 1", n)
	}

	bins.MustRun(t, hub.Env, "tether", "rollout", "approve", "web", "main", "-n", "apps")
	// Berlin takes it; Lyon is Deferred and does not hold the wave.
	e2etest.Eventually(t, "main stage done with lyon-1 deferred", 3*time.Minute, func() (bool, string) {
		st := status(t, hub)
		return st.Clusters["berlin-1"].State == "Succeeded" && st.Clusters["lyon-1"].State == "Deferred" &&
			st.Phase == "Complete" && replicas(t, sites[1]) == 2, st.String()
	})
	if n := replicas(t, lyon); n != 1 {
		t.Fatalf("lyon-1, offline, runs %d replicas; it cannot have had revision 2", n)
	}
	out := bins.MustRun(t, hub.Env, "tether", "rollout", "status", "web", "-n", "apps")
	t.Logf("tether rollout status web -n apps, lyon-1 dark:\n%s", out)
	if !strings.Contains(out, "lyon-1") || !strings.Contains(out, "Deferred") {
		t.Fatalf("rollout status does not show lyon-1 Deferred:\n%s", out)
	}

	// The link comes back: Lyon catches up by itself.
	lyon.proxy.Restore()
	e2etest.Eventually(t, "lyon-1 caught up", 5*time.Minute, func() (bool, string) {
		st := status(t, hub)
		return st.Clusters["lyon-1"].State == "Succeeded" && replicas(t, lyon) == 2, st.String()
	})
	hub.WaitServices(t, time.Minute, all)
}
