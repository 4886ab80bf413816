package observe

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/releaseutil"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// helmParseManifest is how the apply package split manifests before the
// read side left Helm (with Helm's releaseutil): the oracle ParseManifest
// must agree with.
func helmParseManifest(manifest string) ([]Object, error) {
	docs := releaseutil.SplitManifests(manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	var out []Object
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

func TestParseManifest(t *testing.T) {
	objs, err := ParseManifest("---\n# Source: web/templates/a.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: other}\n" +
		"---\n\n---\n# Source: web/templates/b.yaml\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: b}\n" +
		"---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s}}\n")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.GVK.GroupKind().String()+" "+o.Ref(o.Namespace))
	}
	want := []string{"ConfigMap ConfigMap other/a", "ClusterRole.rbac.authorization.k8s.io ClusterRole b", "Secret Secret s"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("objects = %q, want %q", got, want)
	}
	if _, err := ParseManifest("kind: ConfigMap\n---\nkind: Secret\nmetadata: {name: x}\n"); err == nil || !strings.Contains(err.Error(), "manifest document manifest-0") {
		t.Errorf("a document without a name: %v, want an error naming manifest-0", err)
	}
}

// FuzzParseManifest: ParseManifest splits and decodes any manifest as the
// Helm-based parser it replaced does (same objects in the same order, or
// an error for the same document), and never panics.
func FuzzParseManifest(f *testing.F) {
	f.Add("---\n# Source: a/templates/x.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
	f.Add("kind: List\nitems:\n- kind: Secret\n  metadata: {name: s}\n")
	f.Add("a: 1\n---   \n\n  ---\nkind: X\nmetadata: {name: y}\n---")
	f.Add("kind: A\nmetadata: {name: b}\nx: .nan\n")
	f.Add("--- kind: A\n---\n---\nkind: B\nmetadata: {name: b}\n---kind: C")
	f.Fuzz(func(t *testing.T, s string) {
		objs, err := ParseManifest(s)
		want, werr := helmParseManifest(s)
		if (err == nil) != (werr == nil) || (err != nil && err.Error() != werr.Error()) {
			t.Fatalf("ParseManifest error %v, Helm-based parser %v", err, werr)
		}
		if err != nil {
			return
		}
		if fmt.Sprintf("%#v", objs) != fmt.Sprintf("%#v", want) { // not DeepEqual: .nan decodes to NaN
			t.Fatalf("ParseManifest = %+v\nHelm-based parser = %+v", objs, want)
		}
		for _, o := range objs {
			_ = o.Ref("ns")
		}
	})
}
