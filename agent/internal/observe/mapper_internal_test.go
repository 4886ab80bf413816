package observe

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
)

// fakeDiscovery serves the discovery documents of an API server: one
// APIResourceList per group-version, a metav1.Status 404 for the rest. It
// counts the requests per path.
type fakeDiscovery struct {
	mu    sync.Mutex
	lists map[string][]metav1.APIResource // by path
	asked map[string]int
}

func (f *fakeDiscovery) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.asked[r.URL.Path]++
	w.Header().Set("Content-Type", "application/json")
	res, ok := f.lists[r.URL.Path]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound, Message: "the server could not find the requested resource"})
		return
	}
	json.NewEncoder(w).Encode(metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, APIResources: res})
}

func (f *fakeDiscovery) set(path string, res ...metav1.APIResource) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists[path] = res
}

func (f *fakeDiscovery) requests() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]int{}
	for k, v := range f.asked {
		out[k] = v
	}
	return out
}

func newFakeMapper(t *testing.T, maxGV int) (*Mapper, *fakeDiscovery) {
	t.Helper()
	f := &fakeDiscovery{lists: map[string][]metav1.APIResource{}, asked: map[string]int{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	o, err := New(Config{RESTConfig: &rest.Config{Host: srv.URL}, MaxGroupVersions: maxGV})
	if err != nil {
		t.Fatal(err)
	}
	return o.Mapper(), f
}

// TestMapperAsksOncePerMiss: a kind found costs one request for its
// group-version and then none; a kind the cached answer lacks costs
// exactly one more (and is found once the server serves it); an absent
// group-version is not an error but no match; subresources and names
// that are no group or version never reach the server.
func TestMapperAsksOncePerMiss(t *testing.T) {
	m, f := newFakeMapper(t, 0)
	ctx := t.Context()
	f.set("/api/v1",
		metav1.APIResource{Name: "pods", Kind: "Pod", Namespaced: true},
		metav1.APIResource{Name: "pods/status", Kind: "Pod", Namespaced: true},
		metav1.APIResource{Name: "namespaces", Kind: "Namespace"},
		metav1.APIResource{Name: "bindings", Kind: "Binding", Namespaced: true},
		metav1.APIResource{Name: "pods/binding", Kind: "Binding", Namespaced: true})
	f.set("/apis/example.dev/v1", metav1.APIResource{Name: "widgets", Kind: "Widget", Namespaced: true})

	for range 3 {
		mp, err := m.Map(ctx, schema.GroupVersionKind{Version: "v1", Kind: "Pod"})
		if err != nil || mp.Resource != (schema.GroupVersionResource{Version: "v1", Resource: "pods"}) || !mp.Namespaced {
			t.Fatalf("Map Pod = %+v, %v", mp, err)
		}
	}
	if mp, err := m.Map(ctx, schema.GroupVersionKind{Version: "v1", Kind: "Namespace"}); err != nil || mp.Namespaced || mp.Resource.Resource != "namespaces" {
		t.Errorf("Map Namespace = %+v, %v", mp, err)
	}
	if mp, err := m.Map(ctx, schema.GroupVersionKind{Version: "v1", Kind: "Binding"}); err != nil || mp.Resource.Resource != "bindings" {
		t.Errorf("Map Binding = %+v, %v; want the resource, not the subresource", mp, err)
	}
	if got := f.requests()["/api/v1"]; got != 1 {
		t.Errorf("/api/v1 asked %d times for kinds it serves, want 1", got)
	}

	gadget := schema.GroupVersionKind{Group: "example.dev", Version: "v1", Kind: "Gadget"}
	if _, err := m.Map(ctx, schema.GroupVersionKind{Group: "example.dev", Version: "v1", Kind: "Widget"}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Map(ctx, gadget); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("Map Gadget before its CRD: %v, want ErrNoMatch", err)
	}
	if got := f.requests()["/apis/example.dev/v1"]; got != 2 {
		t.Errorf("/apis/example.dev/v1 asked %d times (Widget, then the Gadget miss), want 2", got)
	}
	f.set("/apis/example.dev/v1", metav1.APIResource{Name: "widgets", Kind: "Widget", Namespaced: true},
		metav1.APIResource{Name: "gadgets", Kind: "Gadget"})
	if mp, err := m.Map(ctx, gadget); err != nil || mp.Resource.Resource != "gadgets" || mp.Namespaced {
		t.Fatalf("Map Gadget after its CRD: %+v, %v", mp, err)
	}
	if got := f.requests()["/apis/example.dev/v1"]; got != 3 {
		t.Errorf("/apis/example.dev/v1 asked %d times, want 3 (one per miss)", got)
	}

	late := schema.GroupVersionKind{Group: "late.example.dev", Version: "v1alpha1", Kind: "Thing"}
	if _, err := m.Map(ctx, late); !errors.Is(err, ErrNoMatch) {
		t.Fatalf("Map of a group-version not served: %v, want ErrNoMatch", err)
	}
	f.set("/apis/late.example.dev/v1alpha1", metav1.APIResource{Name: "things", Kind: "Thing", Namespaced: true})
	if _, err := m.Map(ctx, late); err != nil {
		t.Fatalf("Map after the group-version appeared: %v", err)
	}

	before := len(f.requests())
	for _, gvk := range []schema.GroupVersionKind{
		{Group: "", Version: "v2", Kind: "Pod"},
		{Group: "a/../../api", Version: "v1", Kind: "X"},
		{Group: "example.dev", Version: "v1/../v2", Kind: "X"},
		{Group: "example.dev", Version: "", Kind: "X"},
		{Group: "Example.dev", Version: "v1", Kind: "X"},
	} {
		if _, err := m.Map(ctx, gvk); !errors.Is(err, ErrNoMatch) {
			t.Errorf("Map %v: %v, want ErrNoMatch", gvk, err)
		}
	}
	if got := f.requests(); len(got) != before {
		t.Errorf("malformed group-versions reached the server: %v", got)
	}
}

// TestMapperCacheIsBounded: a manifest naming many group-versions keeps
// at most MaxGroupVersions of them cached; the mapper still answers.
func TestMapperCacheIsBounded(t *testing.T) {
	m, f := newFakeMapper(t, 2)
	ctx := t.Context()
	for _, g := range []string{"a.dev", "b.dev", "c.dev", "d.dev"} {
		f.set("/apis/"+g+"/v1", metav1.APIResource{Name: "things", Kind: "Thing"})
	}
	for range 2 {
		for _, g := range []string{"a.dev", "b.dev", "c.dev", "d.dev"} {
			if _, err := m.Map(ctx, schema.GroupVersionKind{Group: g, Version: "v1", Kind: "Thing"}); err != nil {
				t.Fatalf("Map %s: %v", g, err)
			}
			m.mu.Lock()
			n := len(m.gv)
			m.mu.Unlock()
			if n > 2 {
				t.Fatalf("%d group-versions cached, bound 2", n)
			}
		}
	}
	total := 0
	for _, n := range f.requests() {
		total += n
	}
	if total <= 4 {
		t.Errorf("%d requests for 8 lookups over 4 group-versions with room for 2: the bound did not evict", total)
	}
}

// TestMapperServerError: an API server error other than 404 is an error,
// not "no match" (the drift check must not call an object missing when
// it could not look).
func TestMapperServerError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status: metav1.StatusFailure, Reason: metav1.StatusReasonForbidden, Code: http.StatusForbidden, Message: "no"})
	}))
	t.Cleanup(srv.Close)
	o, err := New(Config{RESTConfig: &rest.Config{Host: srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = o.Mapper().Map(t.Context(), schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"})
	if err == nil || errors.Is(err, ErrNoMatch) || !strings.Contains(err.Error(), "apps/v1") {
		t.Fatalf("Map against a server that refuses: %v; want an error naming apps/v1, not ErrNoMatch", err)
	}
}

// FuzzDecodeResources: whatever a server sends as an APIResourceList
// decodes to mappings or an error, never a panic; no subresource is
// mapped.
func FuzzDecodeResources(f *testing.F) {
	f.Add([]byte(`{"kind":"APIResourceList","groupVersion":"v1","resources":[{"name":"pods","kind":"Pod","namespaced":true},{"name":"pods/log","kind":"Pod"}]}`))
	f.Add([]byte(`{"resources":[{"name":"","kind":"X"},{"name":"x","kind":""}]}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		kinds, err := decodeResources(schema.GroupVersion{Group: "g", Version: "v1"}, raw)
		if err != nil {
			return
		}
		for k, mp := range kinds {
			if k == "" || mp.Resource.Resource == "" || strings.Contains(mp.Resource.Resource, "/") {
				t.Fatalf("mapping %q → %+v", k, mp)
			}
		}
	})
}
