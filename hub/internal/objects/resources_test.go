package objects

import (
	"strings"
	"testing"
)

// storeOf is a ResourceFinder over a few objects.
func storeOf(objs ...Object) ResourceFinder {
	return func(kind, ns, name string) (map[string]any, bool) {
		for _, o := range objs {
			h := o.GetHeader()
			if h.Kind != kind || h.Metadata.Namespace != ns || h.Metadata.Name != name {
				continue
			}
			switch o := o.(type) {
			case *ConfigMap:
				return ConfigMapResource(o), true
			case *Secret:
				return SecretResource(o), true
			}
		}
		return nil, false
	}
}

func testConfigMap(ns, name string, data map[string]string) *ConfigMap {
	o := New(KindConfigMap).(*ConfigMap)
	o.Metadata.Namespace, o.Metadata.Name, o.Data = ns, name, data
	return o
}

func testSecret(ns, name string, data map[string][]byte) *Secret {
	o := New(KindSecret).(*Secret)
	o.Metadata.Namespace, o.Metadata.Name, o.Type, o.Data = ns, name, "Opaque", data
	return o
}

func TestGetResourceReadsTemplateResourceRefs(t *testing.T) {
	find := storeOf(
		testConfigMap("acme", "edge-1-config", map[string]string{"endpoint": "https://edge-1.example"}),
		testConfigMap("shared", "global", map[string]string{"tier": "gold"}),
		testSecret("acme", "token", map[string][]byte{"token": []byte("s3cret")}),
	)
	refs := []TemplateResourceRef{
		{Identifier: "Cfg", Resource: TemplateResource{Kind: KindConfigMap, Name: "{{ .Cluster.metadata.name }}-config"}},
		{Identifier: "Global", Resource: TemplateResource{APIVersion: "v1", Kind: KindConfigMap, Name: "global", Namespace: "shared"}},
		{Identifier: "Tok", Resource: TemplateResource{Kind: KindSecret, Name: "token"}},
		{Identifier: "Maybe", Optional: true, Resource: TemplateResource{Kind: KindConfigMap, Name: "absent"}},
	}
	c := NewTemplateCluster("edge-1", nil)
	res, err := ResolveTemplateResources(refs, c, "acme", find)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ values, want string }{
		{`url: {{ (getResource "Cfg").data.endpoint }}`, "url: https://edge-1.example"},
		{`tier: {{ (getResource "Global").data.tier }}`, "tier: gold"},
		{`ns: {{ (getResource "Cfg").metadata.namespace }}`, "ns: acme"},
		{`kind: {{ (getResource "Tok").kind }}`, "kind: Secret"},
		// As Kubernetes returns a Secret: data base64.
		{`raw: {{ (getResource "Tok").data.token }}`, "raw: czNjcmV0"},
		{`token: {{ (getResource "Tok").data.token | b64dec }}`, "token: s3cret"},
		{`type: {{ (getResource "Tok").type }}`, "type: Opaque"},
		{`missing: {{ len (getResource "Maybe") }}`, "missing: 0"},
		{`has: {{ hasKey (getResource "Maybe") "data" }}`, "has: false"},
		// Sveltos' older form.
		{`url: {{ (index .MgmtResources "Cfg").data.endpoint }}`, "url: https://edge-1.example"},
	} {
		tpl, err := ParseValuesTemplate(tc.values)
		if err != nil {
			t.Fatalf("%s: %v", tc.values, err)
		}
		got, err := RenderValuesWith(tpl, c, res)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q", tc.values, got, err, tc.want)
		}
	}
	// The parsed template keeps no resources of its own: rendering it
	// without refs says so.
	tpl, _ := ParseValuesTemplate(`url: {{ (getResource "Cfg").data.endpoint }}`)
	if _, err := RenderValues(tpl, c); err == nil || !strings.Contains(err.Error(), `getResource "Cfg": the serviceSpec has no templateResourceRefs`) {
		t.Errorf("render without refs: %v", err)
	}
	if _, err := RenderValuesWith(tpl, c, TemplateResources{"Other": {}}); err == nil || !strings.Contains(err.Error(), `no templateResourceRefs entry has that identifier (have: Other)`) {
		t.Errorf("render with another identifier: %v", err)
	}
}

func TestMissingTemplateResourceIsAClearError(t *testing.T) {
	find := storeOf(testConfigMap("acme", "edge-1-config", map[string]string{"a": "b"}))
	c := NewTemplateCluster("edge-2", nil)
	_, err := ResolveTemplateResources([]TemplateResourceRef{
		{Identifier: "Cfg", Resource: TemplateResource{Kind: KindConfigMap, Name: "{{ .Cluster.metadata.name }}-config"}},
	}, c, "acme", find)
	want := "templateResourceRefs[0] (Cfg): ConfigMap acme/edge-2-config not found (set optional: true to render without it)"
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v; want %q", err, want)
	}
	// A Secret is not found by a ConfigMap ref of the same name.
	find = storeOf(testSecret("acme", "x", nil))
	if _, err := ResolveTemplateResources([]TemplateResourceRef{{Identifier: "X", Resource: TemplateResource{Kind: KindConfigMap, Name: "x"}}}, c, "acme", find); err == nil {
		t.Fatal("a ConfigMap ref found a Secret")
	}
	// A name template that renders an invalid name.
	_, err = ResolveTemplateResources([]TemplateResourceRef{{Identifier: "X", Resource: TemplateResource{Kind: KindConfigMap, Name: "{{ .Cluster.metadata.name | upper }}"}}}, c, "acme", find)
	if err == nil || !strings.Contains(err.Error(), `resource.name: "EDGE-2"`) {
		t.Fatalf("invalid rendered name: %v", err)
	}
}

func TestTemplateResourceRefsValidatedStrictly(t *testing.T) {
	head := "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ClusterDeployment\nmetadata: {name: edge-1, namespace: acme}\nspec:\n  template: adopted\n  serviceSpec:\n    services: [{template: t, name: a}]\n    templateResourceRefs:\n"
	for _, tc := range []struct{ name, refs, want string }{
		{"unknown key", `    - {identifier: A, resource: {kind: ConfigMap, name: a}, optinal: true}`, "templateResourceRefs[0].optinal: unknown field"},
		{"unknown resource key", `    - {identifier: A, resource: {kind: ConfigMap, name: a, nmae: b}}`, "templateResourceRefs[0].resource.nmae: unknown field"},
		{"identifier required", `    - {resource: {kind: ConfigMap, name: a}}`, "templateResourceRefs[0].identifier: required"},
		{"identifier unique", "    - {identifier: A, resource: {kind: ConfigMap, name: a}}\n    - {identifier: A, resource: {kind: Secret, name: b}}", `templateResourceRefs[1].identifier: "A" is also the identifier of templateResourceRefs[0]`},
		{"kind supported", `    - {identifier: A, resource: {apiVersion: cluster.x-k8s.io/v1beta1, kind: Cluster, name: a}}`, `templateResourceRefs[0].resource.kind: "Cluster" is not supported: getResource reads objects of the hub's store, of kind ConfigMap or Secret`},
		{"kind required", `    - {identifier: A, resource: {name: a}}`, "templateResourceRefs[0].resource.kind: required (supported: ConfigMap, Secret)"},
		{"apiVersion", `    - {identifier: A, resource: {apiVersion: v2, kind: ConfigMap, name: a}}`, `templateResourceRefs[0].resource.apiVersion: "v2": want v1`},
		{"name required", `    - {identifier: A, resource: {kind: ConfigMap}}`, "templateResourceRefs[0].resource.name: required"},
		{"name invalid", `    - {identifier: A, resource: {kind: ConfigMap, name: Not_A_Name}}`, `templateResourceRefs[0].resource.name: "Not_A_Name"`},
		{"name template broken", `    - {identifier: A, resource: {kind: ConfigMap, name: "{{ .Cluster.metadata.name "}}`, "templateResourceRefs[0].resource.name: template:"},
		{"namespace invalid", `    - {identifier: A, resource: {kind: ConfigMap, name: a, namespace: a.b}}`, `templateResourceRefs[0].resource.namespace: "a.b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(head+tc.refs+"\n"), "x.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode error = %v; want it to contain %q", err, tc.want)
			}
		})
	}
	// k0rdent's full shape is accepted; the fields without effect warn,
	// and templateResourceRefs itself no longer does.
	objs := mustDecode(t, head+`    - identifier: Cfg
      optional: true
      ignoreStatusChanges: true
      watchFields: [data.a]
      resource: {apiVersion: v1, kind: ConfigMap, name: "{{ .Cluster.metadata.name }}-cfg", namespace: acme, uid: u, resourceVersion: "1", fieldPath: data}
    - {identifier: Tok, resource: {kind: Secret, name: tok}}
`)
	w := strings.Join(Warnings(objs[0]), "\n")
	for _, want := range []string{"templateResourceRefs[0].resource.uid", "templateResourceRefs[0].resource.resourceVersion", "templateResourceRefs[0].resource.fieldPath", "templateResourceRefs[0].watchFields"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q do not name %s", w, want)
		}
	}
	if strings.Contains(w, "serviceSpec.templateResourceRefs:") || strings.Contains(w, "templateResourceRefs[1]") || strings.Contains(w, "ignoreStatusChanges") {
		t.Errorf("warnings %q name templateResourceRefs fields that work", w)
	}
	refs := objs[0].(*ClusterDeployment).Spec.ServiceSpec.TemplateResourceRefs
	if len(refs) != 2 || refs[0].Identifier != "Cfg" || !refs[0].Optional || refs[1].Resource.Kind != KindSecret {
		t.Errorf("decoded refs = %+v", refs)
	}
}

func TestGetResourceOfUndeclaredIdentifierIsRefusedAtApply(t *testing.T) {
	doc := func(refs, values string) string {
		return "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: MultiClusterService\nmetadata: {name: m, namespace: acme}\nspec:\n  serviceSpec:\n" + refs +
			"    services:\n    - template: t\n      name: a\n      values: |\n        " + values + "\n"
	}
	refs := "    templateResourceRefs:\n    - {identifier: Cfg, resource: {kind: ConfigMap, name: c}}\n"
	for _, tc := range []struct{ refs, values, want string }{
		{refs, `x: {{ (getResource "Cgf").data.a }}`, `services[0].values: getResource "Cgf": no templateResourceRefs entry has that identifier (have: Cfg)`},
		{refs, `x: {{ if true }}{{ with getResource "Nope" }}{{ .data }}{{ end }}{{ end }}`, `getResource "Nope": no templateResourceRefs`},
		{"", `x: {{ (getResource "Cfg").data.a }}`, `getResource "Cfg": the serviceSpec has no templateResourceRefs`},
	} {
		if _, err := Decode([]byte(doc(tc.refs, tc.values)), "x.yaml"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want %q", tc.values, err, tc.want)
		}
	}
	if _, err := Decode([]byte(doc(refs, `x: {{ (getResource "Cfg").data.a | default "none" }}`)), "x.yaml"); err != nil {
		t.Errorf("declared identifier: %v", err)
	}
}
