package observe

import (
	"encoding/json"
	"slices"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/agent/internal/engine"
)

func TestParsePath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		bad  bool
	}{
		{in: "/spec/replicas", want: []string{"spec", "replicas"}},
		{in: "spec.replicas", want: []string{"spec", "replicas"}},
		{in: "/metadata/annotations/a.b~1c~0d", want: []string{"metadata", "annotations", "a.b/c~d"}},
		{in: "/spec/template/spec/containers/*/image", want: []string{"spec", "template", "spec", "containers", "*", "image"}},
		{in: "", bad: true},
		{in: "/", bad: true},
		{in: "/spec//replicas", bad: true},
		{in: "/kind", bad: true},
		{in: "/metadata/name", bad: true},
		{in: "/metadata", bad: true},
	} {
		got, err := ParsePath(tc.in)
		if (err != nil) != tc.bad || !slices.Equal(got, tc.want) {
			t.Errorf("ParsePath(%q) = %q, %v; want %q, bad %v", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func obj(t *testing.T, y string) Object {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(y), &m); err != nil {
		t.Fatal(err)
	}
	objs, err := ParseManifest(y)
	if err != nil || len(objs) != 1 {
		t.Fatalf("%v %v", objs, err)
	}
	return objs[0]
}

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web-1, labels: {tier: front}, annotations: {owner: hpa}}
spec:
  replicas: 2
  template:
    spec:
      containers: [{name: a, image: a:1, resources: {limits: {cpu: "1"}}}, {name: b, image: b:1}]
`

// TestDriftRulesSelectAndExclude: selectors match as Sveltos' do (kind,
// group, anchored name regex, namespace, label and annotation
// selectors); excluded paths drop out of the comparison.
func TestDriftRulesSelectAndExclude(t *testing.T) {
	d := obj(t, deployment)
	for _, tc := range []struct {
		name string
		sel  engine.ObjectSelector
		ns   string
		want bool
	}{
		{"empty matches all", engine.ObjectSelector{}, "x", true},
		{"kind and group", engine.ObjectSelector{Group: "apps", Version: "v1", Kind: "Deployment"}, "x", true},
		{"other kind", engine.ObjectSelector{Kind: "StatefulSet"}, "x", false},
		{"core group is not apps", engine.ObjectSelector{Group: "", Kind: "Deployment"}, "x", true},
		{"name regex anchored", engine.ObjectSelector{Name: "web-.*"}, "x", true},
		{"name regex must match whole", engine.ObjectSelector{Name: "web"}, "x", false},
		{"namespace", engine.ObjectSelector{Namespace: "team-a"}, "team-a", true},
		{"other namespace", engine.ObjectSelector{Namespace: "team-a"}, "team-b", false},
		{"labels", engine.ObjectSelector{LabelSelector: "tier=front"}, "x", true},
		{"labels not", engine.ObjectSelector{LabelSelector: "tier in (back)"}, "x", false},
		{"annotations", engine.ObjectSelector{AnnotationSelector: "owner=hpa"}, "x", true},
	} {
		f, err := CompileDriftRules(engine.DriftRules{Ignore: []engine.ObjectSelector{tc.sel}})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := f.Ignored(d, tc.ns); got != tc.want {
			t.Errorf("%s: Ignored = %v, want %v", tc.name, got, tc.want)
		}
	}

	f, err := CompileDriftRules(engine.DriftRules{Exclude: []engine.DriftExclusion{
		{Paths: []string{"/spec/replicas"}, Target: &engine.ObjectSelector{Kind: "Deployment"}},
		{Paths: []string{"/spec/template/spec/containers/*/image"}},
		{Paths: []string{"/spec/replicas"}, Target: &engine.ObjectSelector{Kind: "StatefulSet"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(f.Excluded(d, "x")); got != 2 {
		t.Fatalf("%d excluded paths, want 2", got)
	}
	live := obj(t, `apiVersion: apps/v1
kind: Deployment
metadata: {name: web-1, labels: {tier: front}, annotations: {owner: hpa}}
spec:
  replicas: 5
  template:
    spec:
      containers: [{name: a, image: a:2, resources: {limits: {cpu: "2"}}}, {name: b, image: b:2}]
`).Content
	want := d.Content
	Prune(want, f.Excluded(d, "x"))
	var diffs []string
	compareObject("Deployment", want, live, &diffs)
	if !slices.Equal(diffs, []string{"spec.template.spec.containers[0].resources.limits.cpu is 2, want 1"}) {
		t.Fatalf("diffs %q", diffs)
	}
}

// TestKeepLive: excluded paths the live object has take its value (also
// through list wildcards); the rest of the rendered object is untouched,
// and a path live lacks keeps the rendered value.
func TestKeepLive(t *testing.T) {
	want := obj(t, deployment).Content
	live := obj(t, `apiVersion: apps/v1
kind: Deployment
metadata: {name: web-1}
spec:
  replicas: 7
  template:
    spec:
      containers: [{name: a, image: a:live}]
`).Content
	var paths [][]string
	for _, p := range []string{"/spec/replicas", "/spec/template/spec/containers/*/image", "/spec/paused"} {
		s, err := ParsePath(p)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, s)
	}
	KeepLive(want, live, paths)
	got, _ := json.Marshal(want["spec"])
	const exp = `{"replicas":7,"template":{"spec":{"containers":[{"image":"a:live","name":"a","resources":{"limits":{"cpu":"1"}}},{"image":"b:1","name":"b"}]}}}`
	if string(got) != exp {
		t.Fatalf("spec after KeepLive:\n%s\nwant\n%s", got, exp)
	}
}

func TestCompileDriftRulesRefusesBadInput(t *testing.T) {
	for _, r := range []engine.DriftRules{
		{Ignore: []engine.ObjectSelector{{Name: "("}}},
		{Ignore: []engine.ObjectSelector{{LabelSelector: "a in ("}}},
		{Exclude: []engine.DriftExclusion{{}}},
		{Exclude: []engine.DriftExclusion{{Paths: []string{"/"}}}},
		{Exclude: []engine.DriftExclusion{{Paths: []string{"/spec"}, Target: &engine.ObjectSelector{Namespace: "["}}}},
	} {
		if _, err := CompileDriftRules(r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	if f, err := CompileDriftRules(engine.DriftRules{}); f != nil || err != nil {
		t.Errorf("empty rules: %v, %v; want nil, nil", f, err)
	}
	var nilFilter *DriftFilter
	if nilFilter.Ignored(Object{GVK: schema.GroupVersionKind{Kind: "X"}}, "") || nilFilter.Excluded(Object{}, "") != nil {
		t.Error("the nil filter skips something")
	}
}

// FuzzDriftRules: rules from the hub (through the Helm worker as JSON)
// never panic compiling, pruning or keeping live values.
func FuzzDriftRules(f *testing.F) {
	f.Add([]byte(`{"exclude":[{"paths":["/spec/replicas"],"target":{"kind":"Deployment","name":"web-.*"}}]}`), []byte(deployment))
	f.Add([]byte(`{"ignore":[{"labelSelector":"tier=front"}],"exclude":[{"paths":["spec.template.spec.containers.*.image","/a/0/b/~1"]}]}`), []byte(deployment))
	f.Add([]byte(`{"exclude":[{"paths":["/spec/*/*/*/*/*"]}]}`), []byte("kind: X\nmetadata: {name: a}\nspec: [1, [2, {a: 3}]]\n"))
	f.Fuzz(func(t *testing.T, rules, manifest []byte) {
		var r engine.DriftRules
		if json.Unmarshal(rules, &r) != nil {
			return
		}
		filter, err := CompileDriftRules(r)
		if err != nil {
			return
		}
		objs, err := ParseManifest(string(manifest))
		if err != nil {
			return
		}
		for _, o := range objs {
			_ = filter.Ignored(o, "ns")
			paths := filter.Excluded(o, "ns")
			live, _ := ParseManifest(string(manifest))
			KeepLive(o.Content, live[0].Content, paths)
			Prune(o.Content, paths)
		}
	})
}
