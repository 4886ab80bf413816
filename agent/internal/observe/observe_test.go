package observe_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/tetherfleet/tether/agent/internal/observe"
	"github.com/tetherfleet/tether/e2e/cluster"
)

// One cluster (one simulated node) serves every test in this package;
// tests use their own namespaces.
var shared = cluster.Shared{Options: cluster.Options{Name: "observe", NodeCount: 1}}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// testCluster returns the shared cluster, started on first use. Missing
// binaries fail the test with the harness's message (run `make e2e-bins`).
func testCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	return shared.Get(t)
}

// countingTransport counts the requests per URL path.
type countingTransport struct {
	next http.RoundTripper
	mu   sync.Mutex
	n    map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n[r.URL.Path]++
	c.mu.Unlock()
	return c.next.RoundTrip(r)
}

func (c *countingTransport) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[path]
}

// newObserver returns an observer of c whose requests are counted.
func newObserver(t *testing.T, c *cluster.Cluster) (*observe.Observer, *countingTransport) {
	t.Helper()
	hc, err := rest.HTTPClientFor(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	ct := &countingTransport{next: hc.Transport, n: map[string]int{}}
	hc.Transport = ct
	o, err := observe.New(observe.Config{RESTConfig: c.RESTConfig, HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	return o, ct
}

// clusterScoped are the kinds these tests use that have no namespace.
var clusterScoped = []string{"ClusterRole", "CustomResourceDefinition", "Namespace", "Gadget"}

// applyIn server-side applies manifest, putting namespaced objects that
// name none into ns, as Helm does for a release in ns.
func applyIn(t *testing.T, c *cluster.Cluster, ns, manifest string) {
	t.Helper()
	objs, err := cluster.DecodeObjects(strings.NewReader(manifest))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetNamespace() == "" && !slices.Contains(clusterScoped, o.GetKind()) {
			o.SetNamespace(ns)
		}
	}
	if err := c.ApplyObjects(t.Context(), objs...); err != nil {
		t.Fatal(err)
	}
}

func newNamespace(t *testing.T, c *cluster.Cluster, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Clientset.CoreV1().Namespaces().Create(t.Context(), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

// eventually polls cond until it holds or timeout passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func(ctx context.Context) (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, seen := cond(ctx)
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not true within %s; last seen: %s", what, timeout, seen)
		case <-tick.C:
		}
	}
}

const readyManifest = `---
# Source: app/templates/config.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
---
# Source: app/templates/deployment.yaml
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example.com/web:1
---
# Source: app/templates/job.yaml
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: example.com/migrate:1
`

const stuckManifest = `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: stuck
spec:
  replicas: 2
  selector:
    matchLabels: {app: stuck}
  template:
    metadata:
      labels: {app: stuck}
    spec:
      nodeSelector: {tether.dev/no-such-node: "true"}
      containers:
      - name: web
        image: example.com/web:1
`

const stuckJobManifest = `---
apiVersion: batch/v1
kind: Job
metadata:
  name: stuck-job
spec:
  template:
    spec:
      restartPolicy: Never
      nodeSelector: {tether.dev/no-such-node: "true"}
      containers:
      - name: job
        image: example.com/job:1
`

// TestHealth: workloads that become ready (a Deployment, a completed Job)
// are healthy; a Deployment whose pods no node takes, a Job that cannot
// run and a workload that is missing are not, and the message says which
// object, why, and which pod.
func TestHealth(t *testing.T) {
	c := testCluster(t)
	o, _ := newObserver(t, c)
	ns := newNamespace(t, c, "health")

	t.Run("ready", func(t *testing.T) {
		applyIn(t, c, ns, readyManifest)
		eventually(t, "Deployment and Job ready", 2*time.Minute, func(ctx context.Context) (bool, string) {
			h, err := o.Health(ctx, readyManifest, ns)
			if err != nil {
				return false, err.Error()
			}
			return h.Ready && h.Message == "", h.Message
		})
	})

	t.Run("missing", func(t *testing.T) {
		h, err := o.Health(t.Context(), strings.ReplaceAll(stuckManifest, "name: stuck", "name: absent"), ns)
		if err != nil || h.Ready || h.Message != "Deployment health/absent: missing" {
			t.Fatalf("Health of a Deployment never applied = %+v, %v", h, err)
		}
	})

	t.Run("deployment not ready", func(t *testing.T) {
		applyIn(t, c, ns, stuckManifest)
		eventually(t, "Health names the unschedulable pod", time.Minute, func(ctx context.Context) (bool, string) {
			h, err := o.Health(ctx, stuckManifest, ns)
			if err != nil {
				return false, err.Error()
			}
			return !h.Ready && strings.HasPrefix(h.Message, "Deployment health/stuck: 0/2 replicas available; pod health/stuck-") &&
				strings.Contains(h.Message, ": Pending: Unschedulable: "), h.Message
		})
	})

	t.Run("job not complete", func(t *testing.T) {
		applyIn(t, c, ns, stuckJobManifest)
		eventually(t, "Health says the Job is not complete and why", time.Minute, func(ctx context.Context) (bool, string) {
			h, err := o.Health(ctx, stuckJobManifest, ns)
			if err != nil {
				return false, err.Error()
			}
			return !h.Ready && strings.HasPrefix(h.Message, "Job health/stuck-job: not complete (1 active, 0 succeeded, 0 failed); pod health/stuck-job-") &&
				strings.Contains(h.Message, "Pending: Unschedulable"), h.Message
		})
	})

	t.Run("first problem in manifest order", func(t *testing.T) {
		h, err := o.Health(t.Context(), readyManifest+stuckJobManifest+stuckManifest, ns)
		if err != nil || h.Ready || !strings.HasPrefix(h.Message, "Job health/stuck-job: ") {
			t.Fatalf("Health = %+v, %v; want the Job, the first object not ready", h, err)
		}
	})

	t.Run("bad manifest", func(t *testing.T) {
		if _, err := o.Health(t.Context(), "kind: Deployment\n", ns); err == nil {
			t.Fatal("Health of a manifest without names: nil error")
		}
	})
}

const driftManifest = `---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cm
  labels: {app: drift}
data:
  k: v
  empty: ""
  run.sh: |
    echo ---
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: observe-drift-reader
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels: {app: drift-web}
  template:
    metadata:
      labels: {app: drift-web}
    spec:
      containers:
      - name: web
        image: example.com/web:1
        resources:
          requests: {cpu: "0.5", memory: 64Mi}
`

// TestDrift: the live objects of a manifest just applied do not drift
// (server defaults, quantities normalised by the server and a block
// scalar that ends a document included); a
// changed field, a deleted namespaced object, a deleted cluster-scoped
// object and a kind with no API are drift, each with its reason.
func TestDrift(t *testing.T) {
	c := testCluster(t)
	o, _ := newObserver(t, c)
	ns := newNamespace(t, c, "drift")
	ctx := t.Context()
	applyIn(t, c, ns, driftManifest)

	d, err := o.Drift(ctx, driftManifest, ns, nil)
	if err != nil || d.Drifted || len(d.Reasons) > 0 {
		t.Fatalf("Drift right after apply = %+v, %v; want none", d, err)
	}

	patch := []byte(`{"data":{"k":"changed"},"metadata":{"labels":{"app":"other"}}}`)
	if _, err := c.Clientset.CoreV1().ConfigMaps(ns).Patch(ctx, "cm", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Clientset.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Clientset.RbacV1().ClusterRoles().Delete(ctx, "observe-drift-reader", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	manifest := driftManifest + "---\napiVersion: gizmos.tether.dev/v1\nkind: Gizmo\nmetadata:\n  name: g\n"
	want := []string{
		"ConfigMap drift/cm: data.k is changed, want v",
		"ConfigMap drift/cm: metadata.labels.app is other, want drift",
		"ClusterRole observe-drift-reader is missing",
		"Deployment drift/web is missing",
		"Gizmo g is missing (no API for gizmos.tether.dev/v1, Kind=Gizmo)",
	}
	eventually(t, "Drift reports each change", time.Minute, func(ctx context.Context) (bool, string) {
		d, err := o.Drift(ctx, manifest, ns, nil)
		if err != nil {
			return false, err.Error()
		}
		got := slices.Clone(d.Reasons)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		return d.Drifted && slices.Equal(got, w), fmt.Sprintf("%q", d.Reasons)
	})
}

func crd(group, kind, plural, scope string) string {
	return fmt.Sprintf(`apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: %[3]s.%[1]s
spec:
  group: %[1]s
  scope: %[4]s
  names: {kind: %[2]s, plural: %[3]s, singular: %[5]s, listKind: %[2]sList}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
`, group, kind, plural, scope, strings.ToLower(kind))
}

// servedBy waits until the API server's discovery of gv lists resource,
// asking with a client of its own (so the observer's counts stay its
// own).
func servedBy(t *testing.T, c *cluster.Cluster, gv schema.GroupVersion, resource string) {
	t.Helper()
	eventually(t, resource+" served in "+gv.String(), time.Minute, func(ctx context.Context) (bool, string) {
		list, err := c.Clientset.Discovery().ServerResourcesForGroupVersion(gv.String())
		if err != nil {
			return false, err.Error()
		}
		for _, r := range list.APIResources {
			if r.Name == resource {
				return true, ""
			}
		}
		return false, fmt.Sprint(list.APIResources)
	})
}

// TestMapperFindsACRDInstalledAfterTheFirstLookup: the mapper caches a
// group-version's resources; a kind added to it later (a CRD the chart
// installed a moment ago), or a group-version that appears later, is
// found by asking the API server exactly once more; a kind it knows costs
// no request; Drift then maps the new kind with its scope.
func TestMapperFindsACRDInstalledAfterTheFirstLookup(t *testing.T) {
	c := testCluster(t)
	o, ct := newObserver(t, c)
	ctx := t.Context()
	m := o.Mapper()
	const group = "obs.tether.dev"
	gv := schema.GroupVersion{Group: group, Version: "v1"}
	path := "/apis/" + group + "/v1"

	applyIn(t, c, "", crd(group, "Widget", "widgets", "Namespaced"))
	servedBy(t, c, gv, "widgets")
	mp, err := m.Map(ctx, gv.WithKind("Widget"))
	if err != nil || mp.Resource != gv.WithResource("widgets") || !mp.Namespaced {
		t.Fatalf("Map Widget = %+v, %v", mp, err)
	}
	if _, err := m.Map(ctx, gv.WithKind("Widget")); err != nil {
		t.Fatal(err)
	}
	if n := ct.count(path); n != 1 {
		t.Fatalf("%s asked %d times for two lookups of a kind it serves, want 1", path, n)
	}

	if _, err := m.Map(ctx, gv.WithKind("Gadget")); !errors.Is(err, observe.ErrNoMatch) {
		t.Fatalf("Map Gadget before its CRD: %v, want ErrNoMatch", err)
	}
	applyIn(t, c, "", crd(group, "Gadget", "gadgets", "Cluster"))
	servedBy(t, c, gv, "gadgets")
	before := ct.count(path)
	mp, err = m.Map(ctx, gv.WithKind("Gadget"))
	if err != nil || mp.Resource != gv.WithResource("gadgets") || mp.Namespaced {
		t.Fatalf("Map Gadget after its CRD = %+v, %v", mp, err)
	}
	if n := ct.count(path) - before; n != 1 {
		t.Errorf("the Gadget miss asked %s %d times, want once", path, n)
	}

	late := schema.GroupVersion{Group: "late.obs.tether.dev", Version: "v1"}
	if _, err := m.Map(ctx, late.WithKind("Thing")); !errors.Is(err, observe.ErrNoMatch) {
		t.Fatalf("Map of a group-version not served yet: %v, want ErrNoMatch", err)
	}
	applyIn(t, c, "", crd(late.Group, "Thing", "things", "Namespaced"))
	servedBy(t, c, late, "things")
	if mp, err := m.Map(ctx, late.WithKind("Thing")); err != nil || mp.Resource != late.WithResource("things") {
		t.Fatalf("Map Thing after its CRD = %+v, %v", mp, err)
	}

	ns := newNamespace(t, c, "mapper")
	manifest := "apiVersion: obs.tether.dev/v1\nkind: Gadget\nmetadata:\n  name: g1\nspec: {size: 3}\n" +
		"---\napiVersion: obs.tether.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec: {color: red}\n"
	applyIn(t, c, ns, manifest)
	if d, err := o.Drift(ctx, manifest, ns, nil); err != nil || d.Drifted {
		t.Fatalf("Drift of custom resources just applied = %+v, %v", d, err)
	}
	patch := []byte(`{"spec":{"size":4}}`)
	dc, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Resource(gv.WithResource("gadgets")).Patch(ctx, "g1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if d, err := o.Drift(ctx, manifest, ns, nil); err != nil || !slices.Equal(d.Reasons, []string{"Gadget g1: spec.size is 4, want 3"}) {
		t.Fatalf("Drift of a changed cluster-scoped custom resource = %q, %v", d.Reasons, err)
	}
}
