package objects

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// Toy kinds, registered in a test registry only: a Widget (namespaced)
// refers to a Gadget in its namespace and, optionally, to a Site
// (cluster-scoped).

type Gadget struct {
	Header `json:",inline"`
	Spec   struct {
		Size int `json:"size"`
	} `json:"spec"`
}

type Site struct {
	Header `json:",inline"`
	Spec   struct {
		Region string `json:"region"`
	} `json:"spec"`
}

type Widget struct {
	Header `json:",inline"`
	Spec   WidgetSpec   `json:"spec"`
	Status WidgetStatus `json:"status,omitzero"`
}

type WidgetSpec struct {
	Gadget string `json:"gadget"`
	Site   string `json:"site,omitempty"`
	Color  string `json:"color,omitempty"`
}

type WidgetStatus struct {
	Phase    string   `json:"phase,omitempty"`
	Warnings []string `json:"warnings,omitempty"`
}

func (s *WidgetStatus) SetWarnings(w []string) { s.Warnings = w }

const toyGroup = "toys.example.com/v1"

// toyKinds returns the default kinds plus the toys: one registration each,
// nothing else.
func toyKinds(t testing.TB) *Registry {
	t.Helper()
	r := DefaultKinds()
	if err := Register(r, KindDef[*Gadget]{
		Kind: "Gadget", New: func() *Gadget { return &Gadget{} }, APIVersion: toyGroup,
		Short: []string{"gd"},
		Spec:  func(o *Gadget) any { return &o.Spec },
		Validate: func(o *Gadget) FieldErrors {
			var errs FieldErrors
			if o.Spec.Size <= 0 {
				errs.Add("spec.size", "%d: want a positive size", o.Spec.Size)
			}
			return errs
		},
	}); err != nil {
		t.Fatal(err)
	}
	if err := Register(r, KindDef[*Site]{
		Kind: "Site", New: func() *Site { return &Site{} }, APIVersion: toyGroup, ClusterScoped: true,
		Spec: func(o *Site) any { return &o.Spec },
	}); err != nil {
		t.Fatal(err)
	}
	if err := Register(r, KindDef[*Widget]{
		Kind: "Widget", New: func() *Widget { return &Widget{} }, APIVersion: toyGroup,
		Accepts: []string{"toys.example.com/v1beta1"}, Short: []string{"wd"}, Aliases: []string{"wdg"},
		Spec:   func(o *Widget) any { return &o.Spec },
		Status: func(o *Widget) any { return &o.Status },
		Default: func(o *Widget) {
			if o.Spec.Color == "" {
				o.Spec.Color = "blue"
			}
		},
		Validate: func(o *Widget) FieldErrors {
			var errs FieldErrors
			switch o.Spec.Color {
			case "blue", "red", "ultraviolet":
			default:
				errs.Add("spec.color", "%q: want blue, red or ultraviolet", o.Spec.Color)
			}
			return errs
		},
		References: []string{"Gadget", "Site"},
		Refs: func(o *Widget) []Ref {
			refs := []Ref{{Kind: "Gadget", Name: o.Spec.Gadget, Field: "spec.gadget"}}
			if o.Spec.Site != "" {
				refs = append(refs, Ref{Kind: "Site", Name: o.Spec.Site, Field: "spec.site", Use: "site"})
			}
			return refs
		},
		Warnings: func(o *Widget) []string {
			if o.Spec.Color == "ultraviolet" {
				return []string{"spec.color: ultraviolet is not visible yet"}
			}
			return nil
		},
	}); err != nil {
		t.Fatal(err)
	}
	return r
}

func toyRepo(t *testing.T) *Repo {
	t.Helper()
	r, err := NewRepo(RepoConfig{Store: openStore(t), Kinds: toyKinds(t), Now: func() time.Time { return time.Unix(1e9, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegisteredToyKindAppliesGetsAndDeletesWithReferenceChecks(t *testing.T) {
	ctx := context.Background()
	r := toyRepo(t)
	kinds := r.Kinds()
	decode := func(y string) []Object {
		t.Helper()
		objs, err := kinds.Decode([]byte(y), "toys.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	const (
		gadget = "apiVersion: toys.example.com/v1\nkind: Gadget\nmetadata: {name: g1, namespace: acme}\nspec: {size: 3}\n"
		site   = "apiVersion: toys.example.com/v1\nkind: Site\nmetadata: {name: paris, namespace: ignored}\nspec: {region: eu}\n"
		widget = "apiVersion: toys.example.com/v1beta1\nkind: Widget\nmetadata: {name: w1, namespace: acme}\nspec: {gadget: g1, site: paris, color: ultraviolet}\n"
	)

	// Decode: strict, defaulted, validated, aliases accepted and stored
	// under the kind's apiVersion.
	if _, err := kinds.Decode([]byte(strings.Replace(gadget, "size: 3", "size: 3, colour: red", 1)), "toys.yaml"); err == nil ||
		!strings.Contains(err.Error(), "toys.yaml: document 1 (Gadget acme/g1): spec.colour: unknown field") {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := kinds.Decode([]byte(strings.Replace(gadget, "size: 3", "size: 0", 1)), "toys.yaml"); err == nil ||
		!strings.Contains(err.Error(), "spec.size: 0: want a positive size") {
		t.Fatalf("validation: %v", err)
	}
	if _, err := kinds.Decode([]byte(strings.Replace(gadget, "toys.example.com/v1", "v1", 1)), "toys.yaml"); err == nil ||
		!strings.Contains(err.Error(), `apiVersion: "v1" is not accepted for Gadget (want toys.example.com/v1)`) {
		t.Fatalf("apiVersion: %v", err)
	}
	if _, err := Decode([]byte(gadget), "toys.yaml"); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("the default registry must not know the toy kind: %v", err)
	}
	w := decode(widget)[0].(*Widget)
	if w.APIVersion != toyGroup || w.Spec.Color != "ultraviolet" {
		t.Fatalf("decoded widget: %+v", w)
	}
	if got := kinds.Warnings(w); len(got) != 1 || !strings.HasPrefix(got[0], "spec.color:") {
		t.Fatalf("warnings: %v", got)
	}

	// Apply: the widget's references must exist, in the batch or the store.
	_, err := r.Apply(ctx, decode(widget))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "Widget acme/w1: spec.gadget: Gadget acme/g1 not found") ||
		!strings.Contains(err.Error(), "Widget acme/w1: spec.site: Site paris not found") {
		t.Fatalf("apply with missing references: %v", err)
	}
	res, err := r.Apply(ctx, decode(gadget+"---\n"+site+"---\n"+widget))
	if err != nil {
		t.Fatal(err)
	}
	if got := res[2].String(); got != "widget/w1 created" {
		t.Fatalf("result: %q", got)
	}
	if res[1].Namespace != "" {
		t.Fatalf("a cluster-scoped object kept a namespace: %+v", res[1])
	}

	// Get, List, UpdateStatus.
	o, err := r.Get(ctx, "Widget", "acme", "w1")
	if err != nil {
		t.Fatal(err)
	}
	if got := o.(*Widget); got.Spec.Gadget != "g1" || got.Metadata.Generation != 1 {
		t.Fatalf("get: %+v", got)
	}
	if _, err := r.Get(ctx, "Site", "any-namespace", "paris"); err != nil {
		t.Fatalf("a cluster-scoped object is found whatever namespace is given: %v", err)
	}
	if _, err := r.UpdateStatus(ctx, "Widget", "acme", "w1", func(o Object) error {
		o.(*Widget).Status.Phase = "Spinning"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	res, err = r.Apply(ctx, decode(strings.Replace(widget, "ultraviolet", "red", 1)))
	if err != nil || res[0].Action != Configured || res[0].Generation != 2 {
		t.Fatalf("re-apply: %+v, %v", res, err)
	}
	objs, err := r.List(ctx, "Widget", "")
	if err != nil || len(objs) != 1 || objs[0].(*Widget).Status.Phase != "Spinning" {
		t.Fatalf("apply must keep the status: %+v, %v", objs, err)
	}
	kinds.WithWarnings(objs[0])
	if objs[0].(*Widget).Status.Warnings != nil {
		t.Fatalf("a red widget has no warnings: %v", objs[0].(*Widget).Status.Warnings)
	}

	// Delete: what a widget uses is in use; the widget itself is not.
	if err := r.Delete(ctx, "Gadget", "acme", "g1"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "in use by Widget acme/w1") {
		t.Fatalf("delete used gadget: %v", err)
	}
	if err := r.Delete(ctx, "Site", "", "paris"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "in use by Widget acme/w1 (site)") {
		t.Fatalf("delete used site: %v", err)
	}
	for _, k := range []struct{ kind, ns, name string }{{"Widget", "acme", "w1"}, {"Gadget", "acme", "g1"}, {"Site", "", "paris"}} {
		if err := r.Delete(ctx, k.kind, k.ns, k.name); err != nil {
			t.Fatalf("delete %v: %v", k, err)
		}
		if _, err := r.Get(ctx, k.kind, k.ns, k.name); !errors.Is(err, ErrNotFound) {
			t.Fatalf("get %v after delete: %v", k, err)
		}
	}
}

func TestRegisterRefusesTakenNamesAndBadColumns(t *testing.T) {
	r := DefaultKinds()
	for _, tt := range []struct {
		def  KindDef[*Gadget]
		want string
	}{
		{KindDef[*Gadget]{Kind: "Gadget", New: func() *Gadget { return &Gadget{} }, APIVersion: toyGroup, Spec: func(o *Gadget) any { return &o.Spec }, Short: []string{"st"}},
			`name "st" is taken by ServiceTemplate`},
		{KindDef[*Gadget]{Kind: "ServiceTemplate", New: func() *Gadget { return &Gadget{} }, APIVersion: toyGroup, Spec: func(o *Gadget) any { return &o.Spec }},
			"already registered"},
		{KindDef[*Gadget]{Kind: "Gadget", New: func() *Gadget { return &Gadget{} }, Spec: func(o *Gadget) any { return &o.Spec }},
			"APIVersion is required"},
		{KindDef[*Gadget]{Kind: "Gadget", New: func() *Gadget { return &Gadget{} }, APIVersion: toyGroup, Spec: func(o *Gadget) any { return &o.Spec },
			Columns: []Column[*Gadget]{{Header: "W", Wide: true, Value: func(*Gadget) string { return "" }}, AgeColumn[*Gadget]()}},
			"wide columns must come last"},
	} {
		if err := Register(r, tt.def); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Register(%s) = %v; want %q", tt.def.Kind, err, tt.want)
		}
	}
	if r.Lookup("gadgets") != nil {
		t.Fatal("a refused registration left a name behind")
	}
}

func TestKindNamesListReferencedKindsFirst(t *testing.T) {
	got := strings.Join(DefaultKinds().Names(), ", ")
	if want := "HelmRepository, ConfigMap, Secret, ServiceTemplateChain, AccessManagement, GitRepository, OCIRepository, HelmChart, Bucket, ScrapeConfig, PrometheusRule, Credential, ClusterTemplate, ClusterTemplateChain, ClusterAuthentication, ClusterAuditPolicy, ClusterIPAM, ClusterIPAMClaim, DataSource, ClusterDataSource, ServiceTemplate, NotificationPolicy, ClusterDeployment, MultiClusterService"; got != want {
		t.Fatalf("Names() = %s; want %s", got, want)
	}
	for _, name := range []string{"servicetemplates", "servicetemplate", "st", "svctmpl", "ServiceTemplate"} {
		if k := DefaultKinds().Lookup(name); k == nil || k.Name() != KindServiceTemplate {
			t.Errorf("Lookup(%q) = %v", name, k)
		}
	}
}
