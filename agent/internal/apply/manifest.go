package apply

import (
	"fmt"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"
)

// object is one document of a release manifest.
type object struct {
	gvk       schema.GroupVersionKind
	namespace string // as written; may be empty for namespaced kinds
	name      string
	content   map[string]any
}

// ref names the object in messages: "Deployment ns/name" or "ClusterRole
// name".
func (o object) ref(namespace string) string {
	if namespace == "" {
		return o.gvk.Kind + " " + o.name
	}
	return o.gvk.Kind + " " + namespace + "/" + o.name
}

// parseManifest splits a stored release manifest into objects, in Helm's
// install order.
func parseManifest(manifest string) ([]object, error) {
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	var out []object
	for _, k := range keys {
		doc := docs[k]
		if strings.TrimSpace(doc) == "" {
			continue
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			return nil, fmt.Errorf("manifest document %s: %w", k, err)
		}
		if len(m) == 0 {
			continue
		}
		u := unstructured.Unstructured{Object: m}
		if strings.HasSuffix(u.GetKind(), "List") && u.Object["items"] != nil {
			items, _ := u.Object["items"].([]any)
			for i, it := range items {
				im, ok := it.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("manifest document %s: items[%d] is not an object", k, i)
				}
				iu := unstructured.Unstructured{Object: im}
				out = append(out, object{gvk: iu.GroupVersionKind(), namespace: iu.GetNamespace(), name: iu.GetName(), content: im})
			}
			continue
		}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("manifest document %s: kind and metadata.name are required", k)
		}
		out = append(out, object{gvk: u.GroupVersionKind(), namespace: u.GetNamespace(), name: u.GetName(), content: m})
	}
	return out, nil
}
