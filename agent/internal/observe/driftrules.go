package observe

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/agent/internal/engine"
)

// DriftFilter is engine.DriftRules compiled: which objects drift
// detection skips and which of their fields it does not compare (see
// "Drift rules" in the package doc). The nil filter skips nothing.
type DriftFilter struct {
	ignore  []selector
	exclude []exclusion
}

type selector struct {
	group, version, kind string
	name, namespace      *regexp.Regexp
	labels, annotations  labels.Selector
}

type exclusion struct {
	target *selector // nil: every object
	paths  [][]string
}

// CompileDriftRules checks and compiles r. An empty r gives a nil filter.
func CompileDriftRules(r engine.DriftRules) (*DriftFilter, error) {
	if r.Empty() {
		return nil, nil
	}
	f := &DriftFilter{}
	for i, s := range r.Ignore {
		c, err := compileSelector(s)
		if err != nil {
			return nil, fmt.Errorf("driftIgnore[%d]: %w", i, err)
		}
		f.ignore = append(f.ignore, c)
	}
	for i, x := range r.Exclude {
		var ex exclusion
		if x.Target != nil {
			c, err := compileSelector(*x.Target)
			if err != nil {
				return nil, fmt.Errorf("driftExclusions[%d].target: %w", i, err)
			}
			ex.target = &c
		}
		if len(x.Paths) == 0 {
			return nil, fmt.Errorf("driftExclusions[%d].paths: empty", i)
		}
		for j, p := range x.Paths {
			segs, err := ParsePath(p)
			if err != nil {
				return nil, fmt.Errorf("driftExclusions[%d].paths[%d]: %w", i, j, err)
			}
			ex.paths = append(ex.paths, segs)
		}
		f.exclude = append(f.exclude, ex)
	}
	return f, nil
}

// ParsePath splits a JSON 6902 path ("/spec/replicas", "~1" for "/" and
// "~0" for "~" in a segment) into its segments. A path without the
// leading "/" is read as dotted ("spec.replicas"), as Sveltos' docs also
// write them. The path of the whole object ("" or "/") is refused.
func ParsePath(p string) ([]string, error) {
	var segs []string
	if strings.HasPrefix(p, "/") {
		segs = strings.Split(p[1:], "/")
		for i, s := range segs {
			segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
		}
	} else {
		segs = strings.Split(p, ".")
	}
	if len(segs) == 0 || (len(segs) == 1 && segs[0] == "") {
		return nil, fmt.Errorf("path %q names the whole object", p)
	}
	for _, s := range segs {
		if s == "" {
			return nil, fmt.Errorf("path %q has an empty segment", p)
		}
	}
	switch segs[0] {
	case "apiVersion", "kind":
		return nil, fmt.Errorf("path %q: %s is the object's identity", p, segs[0])
	}
	if segs[0] == "metadata" && (len(segs) == 1 || segs[1] == "name" || segs[1] == "namespace") {
		return nil, fmt.Errorf("path %q: metadata.name and namespace are the object's identity", p)
	}
	return segs, nil
}

func compileSelector(s engine.ObjectSelector) (selector, error) {
	c := selector{group: s.Group, version: s.Version, kind: s.Kind}
	var err error
	if c.name, err = anchored(s.Name); err != nil {
		return c, fmt.Errorf("name: %w", err)
	}
	if c.namespace, err = anchored(s.Namespace); err != nil {
		return c, fmt.Errorf("namespace: %w", err)
	}
	if s.LabelSelector != "" {
		if c.labels, err = labels.Parse(s.LabelSelector); err != nil {
			return c, fmt.Errorf("labelSelector: %w", err)
		}
	}
	if s.AnnotationSelector != "" {
		if c.annotations, err = labels.Parse(s.AnnotationSelector); err != nil {
			return c, fmt.Errorf("annotationSelector: %w", err)
		}
	}
	return c, nil
}

// anchored compiles a name pattern the way kustomize's selectors (which
// Sveltos' PatchSelector copies) do: the whole name must match.
func anchored(p string) (*regexp.Regexp, error) {
	if p == "" {
		return nil, nil
	}
	return regexp.Compile("^(?:" + p + ")$")
}

func (s *selector) matches(obj Object, ns string) bool {
	switch {
	case s.group != "" && s.group != obj.GVK.Group,
		s.version != "" && s.version != obj.GVK.Version,
		s.kind != "" && s.kind != obj.GVK.Kind,
		s.name != nil && !s.name.MatchString(obj.Name),
		s.namespace != nil && !s.namespace.MatchString(ns):
		return false
	}
	meta, _ := obj.Content["metadata"].(map[string]any)
	if s.labels != nil && !s.labels.Matches(labels.Set(stringMap(meta["labels"]))) {
		return false
	}
	if s.annotations != nil && !s.annotations.Matches(labels.Set(stringMap(meta["annotations"]))) {
		return false
	}
	return true
}

func stringMap(v any) map[string]string {
	m, _ := v.(map[string]any)
	out := make(map[string]string, len(m))
	for k, x := range m {
		out[k] = scalarString(x)
	}
	return out
}

// Ignored reports whether obj (in namespace ns, the release's when the
// manifest leaves it out) is not checked for drift.
func (f *DriftFilter) Ignored(obj Object, ns string) bool {
	if f == nil {
		return false
	}
	for i := range f.ignore {
		if f.ignore[i].matches(obj, ns) {
			return true
		}
	}
	return false
}

// Excluded returns the excluded paths of obj, nil when none.
func (f *DriftFilter) Excluded(obj Object, ns string) [][]string {
	if f == nil {
		return nil
	}
	var out [][]string
	for _, x := range f.exclude {
		if x.target == nil || x.target.matches(obj, ns) {
			out = append(out, x.paths...)
		}
	}
	return out
}

// Prune clears the excluded paths in want (a manifest object), so the
// comparison skips them: a map key is deleted, a list item becomes null
// (which sets nothing), so later items keep their indexes.
func Prune(want map[string]any, paths [][]string) {
	for _, p := range paths {
		prune(want, p)
	}
}

func prune(v any, segs []string) {
	last := len(segs) == 1
	switch x := v.(type) {
	case map[string]any:
		for _, k := range keysFor(x, segs[0]) {
			if last {
				delete(x, k)
			} else {
				prune(x[k], segs[1:])
			}
		}
	case []any:
		for _, i := range indexesFor(len(x), segs[0]) {
			if last {
				x[i] = nil
			} else {
				prune(x[i], segs[1:])
			}
		}
	}
}

// KeepLive sets each excluded path of want (a rendered object) that the
// live object also has to the live value, so an upgrade or repair writes
// back what the cluster holds there; paths live lacks keep want's value.
func KeepLive(want, live map[string]any, paths [][]string) {
	for _, p := range paths {
		keepLive(want, live, p)
	}
}

func keepLive(want, live any, segs []string) {
	last := len(segs) == 1
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return
		}
		keys := keysFor(l, segs[0])
		for _, k := range keys {
			lv, ok := l[k]
			if !ok {
				continue
			}
			if last {
				w[k] = runtime.DeepCopyJSONValue(lv)
			} else if wv, ok := w[k]; ok {
				keepLive(wv, lv, segs[1:])
			}
		}
	case []any:
		l, ok := live.([]any)
		if !ok {
			return
		}
		for _, i := range indexesFor(min(len(w), len(l)), segs[0]) {
			if last {
				w[i] = runtime.DeepCopyJSONValue(l[i])
			} else {
				keepLive(w[i], l[i], segs[1:])
			}
		}
	}
}

func keysFor(m map[string]any, seg string) []string {
	if seg == "*" {
		return sortedKeys(m)
	}
	return []string{seg}
}

func indexesFor(n int, seg string) []int {
	if seg == "*" {
		out := make([]int, n)
		for i := range out {
			out[i] = i
		}
		return out
	}
	i, err := strconv.Atoi(seg)
	if err != nil || i < 0 || i >= n {
		return nil
	}
	return []int{i}
}

// KeepExcluded returns manifest (a rendered release, as Helm hands it to a
// post-renderer) with every excluded path of each object that exists on
// the cluster set to its live value; documents without exclusions are
// passed on byte for byte. namespace is the release's.
func (o *Observer) KeepExcluded(ctx context.Context, manifest []byte, namespace string, f *DriftFilter) ([]byte, error) {
	if f == nil || len(f.exclude) == 0 {
		return manifest, nil
	}
	var out bytes.Buffer
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(manifest)))
	for n := 0; ; n++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("manifest document %d: %w", n, err)
		}
		doc, err := o.keepExcludedDoc(ctx, raw, namespace, f)
		if err != nil {
			return nil, err
		}
		if out.Len() > 0 {
			out.WriteString("---\n")
		}
		out.Write(doc)
	}
	return out.Bytes(), nil
}

func (o *Observer) keepExcludedDoc(ctx context.Context, raw []byte, releaseNS string, f *DriftFilter) ([]byte, error) {
	objs, err := ParseManifest(string(raw))
	if err != nil || len(objs) != 1 {
		return raw, nil // not one object (empty, a List): left to Helm as it is
	}
	obj := objs[0]
	mapping, err := o.mapper.Map(ctx, obj.GVK)
	if errors.Is(err, ErrNoMatch) {
		return raw, nil // its API comes with this release: nothing live yet
	}
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", obj.GVK, err)
	}
	ns := ""
	if mapping.Namespaced {
		ns = cmpOr(obj.Namespace, releaseNS)
	}
	paths := f.Excluded(obj, ns)
	if len(paths) == 0 {
		return raw, nil
	}
	live, err := o.dynamic.Resource(mapping.Resource).Namespace(ns).Get(ctx, obj.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return raw, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", obj.Ref(ns), err)
	}
	KeepLive(obj.Content, live.Object, paths)
	b, err := yaml.Marshal(obj.Content)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", obj.Ref(ns), err)
	}
	// Keep the "# Source:" comment lines Helm puts before the object.
	var head []byte
	for line := range bytes.Lines(raw) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			break
		}
		head = append(head, line...)
	}
	return append(head, b...), nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
