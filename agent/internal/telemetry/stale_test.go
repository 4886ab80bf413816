package telemetry_test

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/value"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/tetherfleet/tether/agent/internal/telemetry"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

func isStale(v float64) bool { return math.Float64bits(v) == value.StaleNaN }

// fakeAPI serves the lists the inventory reads, from pods it can change
// and with a failure it can turn on (a stand-in for a kube-apiserver in
// tests that run without the e2e harness).
type fakeAPI struct {
	mu      sync.Mutex
	pods    []string // names, in namespace "web", on node "n1"
	failing string   // a path answered with 500
	// kubelets: the resource metrics of each node (default: node n1
	// only, serving none).
	kubelets map[string]string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path == f.failing {
		http.Error(w, "etcdserver: request timed out", http.StatusInternalServerError)
		return
	}
	var items []any
	switch r.URL.Path {
	case "/api/v1/nodes":
		if len(f.kubelets) == 0 {
			items = append(items, map[string]any{"metadata": map[string]any{"name": "n1"}})
		}
		for _, n := range sortedNames(f.kubelets) {
			items = append(items, map[string]any{"metadata": map[string]any{"name": n}})
		}
	case "/api/v1/pods":
		for _, p := range f.pods {
			items = append(items, map[string]any{"metadata": map[string]any{"name": p, "namespace": "web", "uid": "uid-" + p},
				"spec": map[string]any{"nodeName": "n1"}, "status": map[string]any{"phase": "Running"}})
		}
	case "/api/v1/namespaces":
		items = append(items, map[string]any{"metadata": map[string]any{"name": "web"}, "status": map[string]any{"phase": "Active"}})
	case "/api/v1/persistentvolumeclaims":
	default:
		if n, ok := strings.CutPrefix(r.URL.Path, "/api/v1/nodes/"); ok && strings.HasSuffix(n, "/proxy/metrics/resource") {
			if body, ok := f.kubelets[strings.TrimSuffix(n, "/proxy/metrics/resource")]; ok {
				w.Header().Set("Content-Type", "text/plain; version=0.0.4")
				_, _ = io.WriteString(w, body)
				return
			}
		}
		http.NotFound(w, r) // metrics.k8s.io too: the kubelets serve usage
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"metadata": map[string]any{}, "items": items})
}

func sortedNames(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}

func (f *fakeAPI) set(failing string, pods ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.failing, f.pods = failing, pods
}

// TestCollectorStalenessMarkers: a pod gone from a collection has each
// of its series marked stale (a StaleNaN sample at that collection's
// timestamp, shipped with the cluster label like any series), once; a
// collection that fails to list pods marks nothing, and a pod it could
// not see that is back in the next one is never marked.
func TestCollectorStalenessMarkers(t *testing.T) {
	api := &fakeAPI{}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	ob := openCache(t, 0)
	now := time.Unix(1_800_000_000, 0)
	col, err := telemetry.New(telemetry.Config{RESTConfig: &rest.Config{Host: srv.URL}, Emitter: newShipper(t, ob, 0), Interval: 15 * time.Second,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	// collect runs one collection at the next timestamp and returns its
	// markers by metric and pod, with the error of Collect.
	collect := func(failing string, pods ...string) (map[string]int64, int64, error) {
		t.Helper()
		api.set(failing, pods...)
		now = now.Add(15 * time.Second)
		err := col.Collect(t.Context())
		markers := map[string]int64{}
		for _, s := range samples(drainMetrics(t, ob)) {
			if isStale(s.value) {
				if s.labels["cluster"] != clusterName {
					t.Errorf("marker without the cluster label: %v", s)
				}
				markers[s.labels["__name__"]+"/"+s.labels["pod"]] = s.ts
			}
		}
		return markers, now.UnixMilli(), err
	}
	if m, _, err := collect("", "web-0", "web-1"); err != nil || len(m) != 0 {
		t.Fatalf("first collection: %v, markers %v", err, m)
	}
	m, ms, err := collect("", "web-0")
	if err != nil {
		t.Fatal(err)
	}
	// kube_pod_info, kube_pod_owner, kube_pod_status_phase (one per phase:
	// the same name, so one key here).
	for _, k := range []string{"kube_pod_info/web-1", "kube_pod_owner/web-1", "kube_pod_status_phase/web-1"} {
		if m[k] != ms {
			t.Errorf("marker %s at %d, want at %d; markers %v", k, m[k], ms, m)
		}
	}
	for k := range m {
		if k[len(k)-len("web-1"):] != "web-1" {
			t.Errorf("marker %s of a series still there", k)
		}
	}
	if st := col.Stats(); st.StaleMarkers == 0 || st.UntrackedSeries != 0 {
		t.Fatalf("stats %+v", st)
	}
	marked := col.Stats().StaleMarkers
	// The API server fails the pod list: nothing is marked, though no
	// pod series went out.
	if m, _, err := collect("/api/v1/pods", "web-0"); err == nil || len(m) != 0 {
		t.Fatalf("failed collection: %v, markers %v", err, m)
	}
	if m, _, err := collect("", "web-0"); err != nil || len(m) != 0 {
		t.Fatalf("collection after the failure: %v, markers %v", err, m)
	}
	// Failed again, and web-0 is gone when the lists work again: marked
	// then.
	if _, _, err := collect("/api/v1/namespaces", "web-0"); err == nil {
		t.Fatal("failed collection did not fail")
	}
	m, ms, err = collect("")
	if err != nil || m["kube_pod_info/web-0"] != ms {
		t.Fatalf("pod gone after a failure: %v, markers %v", err, m)
	}
	if st := col.Stats(); st.StaleMarkers <= marked {
		t.Fatalf("stats %+v", st)
	}
}

// TestCollectorStalenessPartialUsage: one kubelet of two failing does not
// fail the collection, and does not mark its node's usage series stale
// (they are missing, not gone); a container gone from a kubelet that
// answers is marked.
func TestCollectorStalenessPartialUsage(t *testing.T) {
	usage := func(node string, containers ...string) string {
		b := "node_memory_working_set_bytes 1e9\n"
		for _, c := range containers {
			b += `container_memory_working_set_bytes{namespace="web",pod="web-0",container="` + c + `"} 1e6` + "\n"
		}
		return b
	}
	api := &fakeAPI{kubelets: map[string]string{"n1": usage("n1", "app"), "n2": usage("n2", "app", "sidecar")}}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	ob := openCache(t, 0)
	now := time.Unix(1_800_000_000, 0)
	col, err := telemetry.New(telemetry.Config{RESTConfig: &rest.Config{Host: srv.URL}, Emitter: newShipper(t, ob, 0), Interval: 15 * time.Second,
		Usage: true, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	collect := func(failing string) map[string]bool {
		t.Helper()
		api.set(failing, "web-0")
		now = now.Add(15 * time.Second)
		if err := col.Collect(t.Context()); err != nil {
			t.Fatal(err)
		}
		markers := map[string]bool{}
		for _, s := range samples(drainMetrics(t, ob)) {
			if isStale(s.value) {
				markers[s.labels["__name__"]+"/"+s.labels["node"]+"/"+s.labels["container"]] = true
			}
		}
		return markers
	}
	if m := collect(""); len(m) != 0 {
		t.Fatalf("first collection markers %v", m)
	}
	if m := collect("/api/v1/nodes/n2/proxy/metrics/resource"); len(m) != 0 {
		t.Fatalf("one kubelet failing: markers %v", m)
	}
	api.mu.Lock()
	api.kubelets["n2"] = usage("n2", "app")
	api.mu.Unlock()
	if m := collect(""); len(m) != 1 || !m["container_memory_working_set_bytes/n2/sidecar"] {
		t.Fatalf("markers %v; want the sidecar's memory on n2", m)
	}
}

// TestInventoryStalenessOnPodDelete (needs the e2e harness binaries): a
// deleted pod's series are marked stale by the next collection, so they
// leave instant queries at once (its ReplicaSet's new pod has another
// name and its own series).
func TestInventoryStalenessOnPodDelete(t *testing.T) {
	c := shared.Get(t)
	ns := "stale"
	setupInventory(t, c, ns, 2)
	ob := openCache(t, 0)
	col := newCollector(t, c, newShipper(t, ob, 0), func(cfg *telemetry.Config) { cfg.Usage = false })
	if err := col.Collect(t.Context()); err != nil {
		t.Fatal(err)
	}
	pods := find(samples(drainMetrics(t, ob)), "kube_pod_info", map[string]string{"namespace": ns})
	if len(pods) != 2 {
		t.Fatalf("%d kube_pod_info samples, want 2", len(pods))
	}
	gone := pods[0].labels["pod"]
	if err := c.Clientset.CoreV1().Pods(ns).Delete(t.Context(), gone, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	e2etest.Eventually(t, "pod "+gone+" deleted", time.Minute, func() (bool, string) {
		_, err := c.Clientset.CoreV1().Pods(ns).Get(t.Context(), gone, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	if err := col.Collect(t.Context()); err != nil {
		t.Fatal(err)
	}
	all := samples(drainMetrics(t, ob))
	if got := find(all, "kube_pod_info", map[string]string{"namespace": ns, "pod": gone}); len(got) != 1 || !isStale(got[0].value) {
		t.Fatalf("kube_pod_info of deleted pod %s: %v, want one StaleNaN sample", gone, got)
	}
	if got := find(all, "kube_pod_info", map[string]string{"namespace": ns, "pod": pods[1].labels["pod"]}); len(got) != 1 || got[0].value != 1 {
		t.Fatalf("kube_pod_info of the pod kept: %v", got)
	}
}
