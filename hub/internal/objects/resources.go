package objects

import (
	"encoding/base64"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"

	"k8s.io/apimachinery/pkg/util/validation"
)

// getResource over templateResourceRefs
//
// A serviceSpec's templateResourceRefs name ConfigMaps and Secrets in the
// hub's store; a values template reads one as
// {{ (getResource "IDENTIFIER").data.key }} (or, as older Sveltos
// templates do, {{ (index .MgmtResources "IDENTIFIER").data.key }}). The
// object is what Kubernetes would return for it, as an unstructured map:
// apiVersion, kind, metadata{name, namespace, labels, annotations}, and
// data; a Secret's data values are base64, as in Kubernetes (decode with
// sprig's b64dec), and it has type. resource.name and resource.namespace
// may hold template actions over the cluster; the namespace defaults to
// the referencing object's. A missing resource fails the cluster's compile
// unless the ref is optional, when getResource returns an empty map.

// TemplateResourceKinds are the kinds a templateResourceRef may name.
var TemplateResourceKinds = []string{KindConfigMap, KindSecret}

// TemplateResources maps a templateResourceRef's identifier to the object
// it names (empty for an optional ref whose object is missing).
type TemplateResources map[string]map[string]any

// ConfigMapResource is a ConfigMap as getResource returns it.
func ConfigMapResource(cm *ConfigMap) map[string]any {
	data := make(map[string]any, len(cm.Data))
	for k, v := range cm.Data {
		data[k] = v
	}
	return map[string]any{
		"apiVersion": CoreAPIVersion, "kind": KindConfigMap,
		"metadata": resourceMetadata(&cm.Metadata),
		"data":     data,
	}
}

// SecretResource is a Secret as getResource returns it: data base64.
func SecretResource(s *Secret) map[string]any {
	data := make(map[string]any, len(s.Data))
	for k, v := range s.Data {
		data[k] = base64.StdEncoding.EncodeToString(v)
	}
	return map[string]any{
		"apiVersion": CoreAPIVersion, "kind": KindSecret,
		"metadata": resourceMetadata(&s.Metadata),
		"type":     s.Type,
		"data":     data,
	}
}

// resourceMetadata leaves out what changes without the object changing
// (resourceVersion, generation, timestamps, uid), so values rendered from
// an object change only when its content does.
func resourceMetadata(m *Metadata) map[string]any {
	return map[string]any{"name": m.Name, "namespace": m.Namespace, "labels": anyMap(m.Labels), "annotations": anyMap(m.Annotations)}
}

// ResourceFinder returns the getResource form of the hub object of kind
// (ConfigMap or Secret) namespace/name, false when there is none.
type ResourceFinder func(kind, namespace, name string) (map[string]any, bool)

// ResolveTemplateResources renders each ref's name and namespace for
// cluster c (namespace defaulting to defaultNamespace) and finds its
// object. A missing object of a ref that is not optional is an error
// naming the ref and what it looked for.
func ResolveTemplateResources(refs []TemplateResourceRef, c TemplateCluster, defaultNamespace string, find ResourceFinder) (TemplateResources, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	out := make(TemplateResources, len(refs))
	for i, r := range refs {
		where := fmt.Sprintf("templateResourceRefs[%d] (%s)", i, r.Identifier)
		name, err := renderRefField(r.Resource.Name, c)
		if err == nil && name != "" {
			if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
				err = fmt.Errorf("%q: %s", name, strings.Join(msgs, "; "))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: resource.name: %w", where, err)
		}
		ns, err := renderRefField(r.Resource.Namespace, c)
		if err == nil && ns != "" {
			if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
				err = fmt.Errorf("%q: %s", ns, strings.Join(msgs, "; "))
			}
		}
		if err != nil {
			return nil, fmt.Errorf("%s: resource.namespace: %w", where, err)
		}
		if ns == "" {
			ns = defaultNamespace
		}
		if name == "" {
			return nil, fmt.Errorf("%s: resource.name renders empty", where)
		}
		obj, ok := find(r.Resource.Kind, ns, name)
		switch {
		case ok:
			out[r.Identifier] = obj
		case r.Optional:
			out[r.Identifier] = map[string]any{}
		default:
			return nil, fmt.Errorf("%s: %s %s/%s not found (set optional: true to render without it)", where, r.Resource.Kind, ns, name)
		}
	}
	return out, nil
}

// renderRefField renders a ref's name or namespace for cluster c.
func renderRefField(text string, c TemplateCluster) (string, error) {
	if !HasTemplate(text) {
		return text, nil
	}
	t, err := ParseValuesTemplate(text)
	if err != nil {
		return "", err
	}
	out, err := RenderValues(t, c)
	return strings.TrimSpace(out), err
}

// getResourceFunc is getResource over res; res nil means the serviceSpec
// has no templateResourceRefs.
func getResourceFunc(res TemplateResources) func(string) (map[string]any, error) {
	return func(id string) (map[string]any, error) {
		if obj, ok := res[id]; ok {
			return obj, nil
		}
		if len(res) == 0 {
			return nil, fmt.Errorf("getResource %q: the serviceSpec has no templateResourceRefs", id)
		}
		return nil, fmt.Errorf("getResource %q: no templateResourceRefs entry has that identifier (have: %s)",
			id, strings.Join(slices.Sorted(maps.Keys(res)), ", "))
	}
}

// RenderValuesWith executes a parsed values template for one cluster, with
// getResource and .MgmtResources reading res.
func RenderValuesWith(t *template.Template, c TemplateCluster, res TemplateResources) (string, error) {
	if res != nil {
		clone, err := t.Clone()
		if err != nil {
			return "", fmt.Errorf("template: %w", err)
		}
		t = clone.Funcs(template.FuncMap{"getResource": getResourceFunc(res)})
	}
	return execValues(t, TemplateData{Cluster: c.Data(), InfrastructureProvider: c.InfrastructureProvider, MgmtResources: res})
}

// validateTemplateResourceRefs checks refs under p.
func validateTemplateResourceRefs(refs []TemplateResourceRef, p path, errs *FieldErrors) {
	ids := map[string]int{}
	for i, r := range refs {
		rp := p.index(i)
		if r.Identifier == "" {
			errs.add(rp.child("identifier"), "required")
		} else if j, dup := ids[r.Identifier]; dup {
			errs.add(rp.child("identifier"), "%q is also the identifier of templateResourceRefs[%d]", r.Identifier, j)
		} else {
			ids[r.Identifier] = i
		}
		res := rp.child("resource")
		if !slices.Contains(TemplateResourceKinds, r.Resource.Kind) {
			if r.Resource.Kind == "" {
				errs.add(res.child("kind"), "required (supported: %s)", strings.Join(TemplateResourceKinds, ", "))
			} else {
				errs.add(res.child("kind"), "%q is not supported: getResource reads objects of the hub's store, of kind %s", r.Resource.Kind, strings.Join(TemplateResourceKinds, " or "))
			}
		}
		if v := r.Resource.APIVersion; v != "" && v != CoreAPIVersion {
			errs.add(res.child("apiVersion"), "%q: want %s for %s", v, CoreAPIVersion, r.Resource.Kind)
		}
		checkRefField(r.Resource.Name, true, validation.IsDNS1123Subdomain, res.child("name"), errs)
		checkRefField(r.Resource.Namespace, false, validation.IsDNS1123Label, res.child("namespace"), errs)
	}
}

// checkRefField validates a ref's name or namespace: a template must parse
// (its result is checked per cluster); plain text must be a valid name.
func checkRefField(text string, required bool, valid func(string) []string, p path, errs *FieldErrors) {
	switch {
	case text == "":
		if required {
			errs.add(p, "required")
		}
	case HasTemplate(text):
		if _, err := ParseValuesTemplate(text); err != nil {
			errs.add(p, "%v", err)
		}
	default:
		for _, msg := range valid(text) {
			errs.add(p, "%q: %s", text, msg)
		}
	}
}

// getResourceIDs returns the constant identifiers t passes to getResource.
func getResourceIDs(n parse.Node, out *[]string) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			getResourceIDs(c, out)
		}
	case *parse.ActionNode:
		getResourceIDs(n.Pipe, out)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			getResourceIDs(c, out)
		}
	case *parse.CommandNode:
		if len(n.Args) == 2 {
			if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "getResource" {
				if s, ok := n.Args[1].(*parse.StringNode); ok {
					*out = append(*out, s.Text)
				}
			}
		}
		for _, a := range n.Args {
			getResourceIDs(a, out)
		}
	case *parse.ChainNode:
		getResourceIDs(n.Node, out)
	case *parse.IfNode:
		getResourceIDs(&n.BranchNode, out)
	case *parse.RangeNode:
		getResourceIDs(&n.BranchNode, out)
	case *parse.WithNode:
		getResourceIDs(&n.BranchNode, out)
	case *parse.BranchNode:
		getResourceIDs(n.Pipe, out)
		getResourceIDs(n.List, out)
		getResourceIDs(n.ElseList, out)
	}
}

// checkGetResourceIDs refuses values whose getResource calls name an
// identifier no templateResourceRef has.
func checkGetResourceIDs(values string, refs []TemplateResourceRef) error {
	if !HasTemplate(values) {
		return nil
	}
	t, err := ParseValuesTemplate(values)
	if err != nil || t.Tree == nil {
		return nil // CheckValues reports it
	}
	var ids []string
	getResourceIDs(t.Tree.Root, &ids)
	for _, id := range ids {
		if !slices.ContainsFunc(refs, func(r TemplateResourceRef) bool { return r.Identifier == id }) {
			have := make([]string, 0, len(refs))
			for _, r := range refs {
				have = append(have, r.Identifier)
			}
			if len(have) == 0 {
				return fmt.Errorf("getResource %q: the serviceSpec has no templateResourceRefs", id)
			}
			return fmt.Errorf("getResource %q: no templateResourceRefs entry has that identifier (have: %s)", id, strings.Join(have, ", "))
		}
	}
	return nil
}
