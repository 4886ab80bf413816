package reconcile_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/reconcile"
	"github.com/tetherfleet/tether/e2e/e2etest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// TestDriftExclusionsAreNotFoughtOver: with k0rdent's driftExclusions
// naming a Deployment's /spec/replicas, another controller's edit of the
// replicas (an HPA's) is left alone by the check its event triggers, and
// an edit of the image is repaired by the next one, which again leaves
// the replicas as the other controller set them. driftIgnore on a
// ServiceAccount: its edits are not even compared.
func TestDriftExclusionsAreNotFoughtOver(t *testing.T) {
	c := testCluster(t)
	e, db := newEngine(t, c)
	podinfo := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	dg := digestOf(podinfo)
	if err := db.PutChart(dg, podinfo); err != nil {
		t.Fatal(err)
	}
	const ns = "watch-hpa"
	ensureNamespace(t, c, ns)
	ds := &fleetv1.DesiredState{Revision: 1, Full: true, Services: []*fleetv1.Service{{
		Name: "podinfo", Namespace: ns, ChartDigest: dg, ValuesYaml: []byte("replicaCount: 1\n"), ValuesHash: "p1",
		DriftExclusions: []*fleetv1.DriftExclusion{{Paths: []string{"/spec/replicas"},
			Target: &fleetv1.ObjectSelector{Group: "apps", Kind: "Deployment", Name: "podin.*"}}},
	}}}
	r := runWatched(t, c, reconcile.Config{Cache: db, Engine: e, HealthTimeout: 2 * time.Minute}, ds)
	k := ns + "/podinfo"
	eventually(t, "podinfo Deployed", 2*time.Minute, func() (bool, string) {
		s := stateOf(r, k)
		return s.GetState() == reconcile.StateDeployed, fmt.Sprint(s)
	})
	deps := c.Clientset.AppsV1().Deployments(ns)
	edit := func(what string, f func(d *appsv1.Deployment)) {
		t.Helper()
		d, err := deps.Get(t.Context(), "podinfo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		f(d)
		if _, err := deps.Update(t.Context(), d, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}

	// The HPA scales to 3. A pass that starts after the edit (the
	// service's lock orders it after any check its event triggered)
	// finds no drift and repairs nothing.
	before := r.Stats()
	edit("scale", func(d *appsv1.Deployment) { three := int32(3); d.Spec.Replicas = &three })
	r.Pass(t.Context())
	replicas := func() int32 {
		t.Helper()
		d, err := deps.Get(t.Context(), "podinfo", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return *d.Spec.Replicas
	}
	if st := r.Stats(); st.WatchRepairs != before.WatchRepairs || st.PassRepairs != before.PassRepairs {
		t.Fatalf("the excluded replicas were repaired: %+v (before %+v); %v", st, before, stateOf(r, k))
	}
	if got := replicas(); got != 3 {
		t.Fatalf("spec.replicas %d after a pass; want the HPA's 3", got)
	}

	// Someone edits the image: that is drift, repaired by the check its
	// event triggers or by the pass after it; the repair keeps the HPA's
	// replicas.
	var want string
	edit("set image", func(d *appsv1.Deployment) {
		want = d.Spec.Template.Spec.Containers[0].Image
		d.Spec.Template.Spec.Containers[0].Image = "example.invalid/podinfo:edited"
	})
	r.Pass(t.Context())
	d, err := deps.Get(t.Context(), "podinfo", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != want {
		t.Fatalf("image %s after a pass; want %s back", img, want)
	}
	if st := r.Stats(); st.WatchRepairs+st.PassRepairs != before.WatchRepairs+before.PassRepairs+1 {
		t.Errorf("repairs %+v (before %+v); want the image repaired once", st, before)
	}
	if got := *d.Spec.Replicas; got != 3 {
		t.Errorf("spec.replicas %d after the image repair; want the HPA's 3 kept", got)
	}
}

// TestStatusEventsOfAProvisioningServiceReadHealthOnly: a Deployment
// whose pods cannot be scheduled keeps its service Provisioning; once a
// node gets the label its nodeSelector asks for (no spec of the release
// changes), the Deployment's status events are answered by health reads
// alone (no apply or drift check per event), and one of them makes the
// service Deployed: passes are an hour apart, so only watch checks can.
func TestStatusEventsOfAProvisioningServiceReadHealthOnly(t *testing.T) {
	c := testCluster(t)
	e, db := newEngine(t, c)
	podinfo := e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo"))
	dg := digestOf(podinfo)
	if err := db.PutChart(dg, podinfo); err != nil {
		t.Fatal(err)
	}
	const ns, label = "watch-health", "tether.test/health-only"
	ensureNamespace(t, c, ns)
	ds := &fleetv1.DesiredState{Revision: 1, Full: true, Services: []*fleetv1.Service{
		{Name: "podinfo", Namespace: ns, ChartDigest: dg, ValuesHash: "h1",
			ValuesYaml: []byte("replicaCount: 1\nnodeSelector: {\"" + label + "\": \"yes\"}\n")}}}
	r := runWatched(t, c, reconcile.Config{Cache: db, Engine: e, HealthTimeout: 5 * time.Minute}, ds)
	k := ns + "/podinfo"
	// The watch's first events (its informers synced) and the Deployment
	// controller's first sync (its revision annotation) ask for full
	// turns; a check that has seen the pod unschedulable ran after both.
	eventually(t, "podinfo Provisioning, a watch check saw its pod unschedulable", 2*time.Minute, func() (bool, string) {
		s, st := stateOf(r, k), r.Stats()
		return s.GetState() == reconcile.StateProvisioning && strings.Contains(s.GetMessage(), "Unschedulable") &&
				st.WatchChecks > 0 && st.WatchChecksDone == st.WatchChecks,
			fmt.Sprintf("%v; %+v", s, st)
	})
	before := r.Stats()
	nodes, err := c.Clientset.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) == 0 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	node := nodes.Items[0]
	node.Labels[label] = "yes"
	if _, err := c.Clientset.CoreV1().Nodes().Update(t.Context(), &node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n, err := c.Clientset.CoreV1().Nodes().Get(context.Background(), node.Name, metav1.GetOptions{})
		if err == nil {
			delete(n.Labels, label)
			_, _ = c.Clientset.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{})
		}
	})
	eventually(t, "podinfo Deployed", 2*time.Minute, func() (bool, string) {
		s := stateOf(r, k)
		return s.GetState() == reconcile.StateDeployed, fmt.Sprint(s)
	})
	if st := r.Stats(); st.HealthChecks == before.HealthChecks {
		t.Fatalf("no health-only check (%+v, before %+v); every status event ran a full turn", st, before)
	}
}
