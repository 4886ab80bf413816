package observe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
)

// ErrNoMatch: the cluster serves no resource of that kind in that group
// and version (a CRD not installed, or removed).
var ErrNoMatch = errors.New("no API for that kind")

// Mapping is where the API server serves a kind.
type Mapping struct {
	Resource   schema.GroupVersionResource
	Namespaced bool
}

// Mapper maps a kind to its resource by asking the API server for the
// resources of the kind's group and version (GET /api/v1 or
// /apis/GROUP/VERSION), the part of discovery a manifest needs, without
// client-go's discovery client and its OpenAPI dependencies.
//
// Each group-version is asked once and cached; a kind the cached answer
// lacks (a CRD the chart installed a moment ago) makes it ask that
// group-version once more, so a lookup costs at most one request. At most
// maxGroupVersions group-versions are cached; a manifest naming more only
// makes the mapper ask again.
type Mapper struct {
	client *rest.RESTClient
	max    int

	mu sync.Mutex
	gv map[schema.GroupVersion]map[string]Mapping // kind → mapping; empty: the group-version is not served
}

// newMapper returns a mapper asking through client, a REST client of the
// API server's root (no API path, no group-version).
func newMapper(client *rest.RESTClient, maxGroupVersions int) *Mapper {
	return &Mapper{client: client, max: maxGroupVersions, gv: map[schema.GroupVersion]map[string]Mapping{}}
}

// Map returns where the API server serves gvk. The error wraps ErrNoMatch
// when it serves no such kind.
func (m *Mapper) Map(ctx context.Context, gvk schema.GroupVersionKind) (Mapping, error) {
	gv := gvk.GroupVersion()
	m.mu.Lock()
	kinds, ok := m.gv[gv]
	m.mu.Unlock()
	if ok {
		if mp, ok := kinds[gvk.Kind]; ok {
			return mp, nil
		}
	}
	kinds, err := m.fetch(ctx, gv)
	if err != nil {
		return Mapping{}, err
	}
	m.mu.Lock()
	if _, ok := m.gv[gv]; !ok && len(m.gv) >= m.max {
		for k := range m.gv { // evict one, any
			delete(m.gv, k)
			break
		}
	}
	m.gv[gv] = kinds
	m.mu.Unlock()
	if mp, ok := kinds[gvk.Kind]; ok {
		return mp, nil
	}
	return Mapping{}, fmt.Errorf("%w: %s", ErrNoMatch, gvk)
}

// fetch asks the API server for the resources of gv. A group-version it
// does not serve is an empty map, not an error.
func (m *Mapper) fetch(ctx context.Context, gv schema.GroupVersion) (map[string]Mapping, error) {
	path, ok := resourcesPath(gv)
	if !ok {
		return map[string]Mapping{}, nil // not a name the server could serve
	}
	raw, err := m.client.Get().AbsPath(path).Do(ctx).Raw()
	if apierrors.IsNotFound(err) {
		return map[string]Mapping{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("discover the resources of %s: %w", gvString(gv), err)
	}
	kinds, err := decodeResources(gv, raw)
	if err != nil {
		return nil, fmt.Errorf("discover the resources of %s: %w", gvString(gv), err)
	}
	return kinds, nil
}

// resourcesPath is the discovery path of gv, when gv is a well-formed
// group and version (both come from a manifest).
func resourcesPath(gv schema.GroupVersion) (string, bool) {
	if len(validation.IsDNS1035Label(gv.Version)) > 0 {
		return "", false
	}
	if gv.Group == "" {
		if gv.Version != "v1" {
			return "", false // the core group has only v1
		}
		return "/api/v1", true
	}
	if len(validation.IsDNS1123Subdomain(gv.Group)) > 0 {
		return "", false
	}
	return "/apis/" + gv.Group + "/" + gv.Version, true
}

// decodeResources reads an APIResourceList, keeping resources (not
// subresources) by kind; the first resource of a kind wins.
func decodeResources(gv schema.GroupVersion, raw []byte) (map[string]Mapping, error) {
	var list metav1.APIResourceList
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("decode APIResourceList: %w", err)
	}
	kinds := make(map[string]Mapping, len(list.APIResources))
	for _, r := range list.APIResources {
		if r.Name == "" || r.Kind == "" || strings.Contains(r.Name, "/") {
			continue
		}
		if _, dup := kinds[r.Kind]; dup {
			continue
		}
		kinds[r.Kind] = Mapping{Resource: gv.WithResource(r.Name), Namespaced: r.Namespaced}
	}
	return kinds, nil
}

func gvString(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return gv.Version
	}
	return gv.String()
}
