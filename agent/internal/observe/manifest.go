package observe

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Object is one object of a release manifest.
type Object struct {
	GVK       schema.GroupVersionKind
	Namespace string // as written; may be empty for namespaced kinds
	Name      string
	Content   map[string]any
}

// Ref names the object in messages: "Deployment ns/name" or "ClusterRole
// name".
func (o Object) Ref(namespace string) string {
	if namespace == "" {
		return o.GVK.Kind + " " + o.Name
	}
	return o.GVK.Kind + " " + namespace + "/" + o.Name
}

// ParseManifest splits a stored release manifest into objects, in Helm's
// install order (the order of the documents). A List is expanded into
// its items.
//
// Documents are split as Helm's kube client splits the manifest it
// applies (apimachinery's YAML reader: a "---" line ends a document), not
// as Helm's releaseutil.SplitManifests does: that one also eats the line
// break before each "---", so a block scalar ending a document ("data:
// {config.yaml: |...}") would lose the final newline the applied object
// has, and look drifted forever.
func ParseManifest(manifest string) ([]Object, error) {
	var out []Object
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for n := 0; ; {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("manifest document manifest-%d: %w", n, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}
		k := fmt.Sprintf("manifest-%d", n)
		n++
		var m map[string]any
		if err := yaml.Unmarshal(raw, &m); err != nil {
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
				out = append(out, Object{GVK: iu.GroupVersionKind(), Namespace: iu.GetNamespace(), Name: iu.GetName(), Content: im})
			}
			continue
		}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("manifest document %s: kind and metadata.name are required", k)
		}
		out = append(out, Object{GVK: u.GroupVersionKind(), Namespace: u.GetNamespace(), Name: u.GetName(), Content: m})
	}
	return out, nil
}
