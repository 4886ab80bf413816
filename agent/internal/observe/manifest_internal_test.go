package observe

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// appliedObjects decodes a manifest the way Helm's kube client does when
// it applies one (the resource builder's YAML-or-JSON stream decoder):
// the oracle of what ParseManifest must find, since drift compares the
// live objects with what Helm sent.
func appliedObjects(manifest string) ([]map[string]any, error) {
	d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var out []map[string]any
	for {
		var m map[string]any
		err := d.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := unstructured.Unstructured{Object: m}
		if strings.HasSuffix(u.GetKind(), "List") && m["items"] != nil { // Lists as ParseManifest expands them
			items, _ := m["items"].([]any)
			for _, it := range items {
				im, _ := it.(map[string]any)
				out = append(out, im)
			}
			continue
		}
		out = append(out, m)
	}
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
	// A block scalar that ends a document keeps its final newline, as in
	// the object Helm applied; a "---" inside it ends nothing.
	objs, err = ParseManifest("---\n# Source: web/templates/cm.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  run.sh: |\n    echo ---\n---\n---\n# Source: web/templates/b.yaml\nkind: ConfigMap\nmetadata: {name: b}\ndata:\n  c: |\n    x\n")
	if err != nil || len(objs) != 2 {
		t.Fatalf("ParseManifest of block scalars = %+v, %v", objs, err)
	}
	if got := objs[0].Content["data"].(map[string]any)["run.sh"]; got != "echo ---\n" {
		t.Errorf("block scalar before a separator = %q, want %q", got, "echo ---\n")
	}
	if got := objs[1].Content["data"].(map[string]any)["c"]; got != "x\n" {
		t.Errorf("block scalar at the end = %q, want %q", got, "x\n")
	}
	if _, err := ParseManifest("kind: ConfigMap\n---\nkind: Secret\nmetadata: {name: x}\n"); err == nil || !strings.Contains(err.Error(), "manifest document manifest-0") {
		t.Errorf("a document without a name: %v, want an error naming manifest-0", err)
	}
}

// FuzzParseManifest: ParseManifest never panics, and whenever it parses
// a manifest it finds exactly the objects Helm's kube client would apply
// from it, in the same order.
func FuzzParseManifest(f *testing.F) {
	f.Add("---\n# Source: a/templates/x.yaml\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: |\n    b\n---\n# Source: a/templates/y.yaml\nkind: Secret\nmetadata: {name: y}\n")
	f.Add("kind: List\nitems:\n- kind: Secret\n  metadata: {name: s}\n")
	f.Add("a: 1\n---   \n\n  ---\nkind: X\nmetadata: {name: y}\n---")
	f.Add("kind: A\nmetadata: {name: b}\nx: .nan\n")
	f.Add("--- # c\nkind: A\nmetadata: {name: a}\n---\n---\nkind: B\nmetadata: {name: b}\n---kind: C")
	f.Fuzz(func(t *testing.T, s string) {
		objs, err := ParseManifest(s)
		if err != nil {
			return
		}
		for _, o := range objs {
			_ = o.Ref("ns")
		}
		want, werr := appliedObjects(s)
		if werr != nil && len(objs) > 0 {
			t.Fatalf("ParseManifest parsed %d objects from a manifest Helm could not apply: %v", len(objs), werr)
		}
		if werr != nil {
			return // blank but for characters YAML refuses: nothing to apply either way
		}
		var got []map[string]any
		for _, o := range objs {
			got = append(got, o.Content)
		}
		if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) { // not DeepEqual: .nan decodes to NaN
			t.Fatalf("ParseManifest = %#v\nHelm applies %#v", got, want)
		}
	})
}
