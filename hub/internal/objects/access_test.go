package objects

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// accessWorld is a repository with three templates in kcm-system, two of
// them in a chain.
func accessWorld(t *testing.T) *Repo {
	t.Helper()
	r, _ := newRepo(t)
	var b strings.Builder
	for _, name := range []string{"ingress-a", "ingress-b", "other-x"} {
		fmt.Fprintf(&b, "---\napiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplate\nmetadata: {name: %s, namespace: kcm-system, labels: {team: %s}}\nspec: {helm: {chartSpec: {chart: c, version: 1.0.0, sourceRef: {name: tether-local}}}}\n", name, strings.Split(name, "-")[0])
	}
	b.WriteString(`---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplateChain
metadata: {name: ingress-chain, namespace: kcm-system}
spec:
  supportedTemplates:
  - {name: ingress-a, availableUpgrades: [{name: ingress-b}]}
  - {name: ingress-b}
`)
	if _, err := r.Apply(context.Background(), mustDecode(t, b.String())); err != nil {
		t.Fatal(err)
	}
	return r
}

func cdUsing(ns, name, template string) string {
	return fmt.Sprintf("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ClusterDeployment\nmetadata: {name: %s, namespace: %s}\nspec: {template: adopted, serviceSpec: {services: [{template: %s, name: svc}]}}\n", name, ns, template)
}

const amDev = `apiVersion: k0rdent.mirantis.com/v1beta1
kind: AccessManagement
metadata: {name: kcm}
spec:
  accessRules:
  - targetNamespaces: {list: [dev]}
    serviceTemplateChains: [ingress-chain]
    credentials: [aws-cred]
`

// TestAccessManagementDistributesChainsToManagedNamespaces: without an
// AccessManagement every namespace sees the system templates (Tether's
// default); a rule that distributes a ServiceTemplateChain to namespace
// dev makes dev see only that chain and its templates (and its own), as
// in k0rdent, while other namespaces keep the default. Applying a rule
// that would take a template away from a stored ClusterDeployment, or
// deleting the chain that brings it, is refused with the user named.
func TestAccessManagementDistributesChainsToManagedNamespaces(t *testing.T) {
	r := accessWorld(t)
	ctx := context.Background()
	apply := func(doc string) error { _, err := r.Apply(ctx, mustDecode(t, doc)); return err }

	if err := apply(cdUsing("dev", "old-x", "other-x")); err != nil {
		t.Fatalf("without AccessManagement, dev uses a system template: %v", err)
	}
	err := apply(amDev)
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "AccessManagement kcm: spec: would take away from ClusterDeployment dev/old-x: spec.serviceSpec.services[0].template: namespace dev is managed by AccessManagement kcm spec.accessRules[0]: ServiceTemplate other-x is not distributed to it (its ServiceTemplateChains: ingress-chain)") {
		t.Fatalf("an AccessManagement hiding a template in use: %v", err)
	}
	if _, err := r.Get(ctx, KindAccessManagement, "", "kcm"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused AccessManagement was stored: %v", err)
	}
	if err := r.Delete(ctx, KindClusterDeployment, "dev", "old-x"); err != nil {
		t.Fatal(err)
	}
	if err := apply(amDev); err != nil {
		t.Fatalf("apply the AccessManagement: %v", err)
	}

	for _, tc := range []struct {
		ns, template, wantErr string
	}{
		{"dev", "ingress-a", ""},
		{"dev", "ingress-b", ""},
		{"dev", "other-x", "namespace dev is managed by AccessManagement kcm spec.accessRules[0]: ServiceTemplate other-x is not distributed to it"},
		{"prod", "other-x", ""}, // no rule manages prod
		{"kcm-system", "other-x", ""},
	} {
		err := apply(cdUsing(tc.ns, "edge-"+tc.template, tc.template))
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s using %s: %v", tc.ns, tc.template, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s using %s: %v; want %q", tc.ns, tc.template, err, tc.wantErr)
		}
	}
	// dev's own template of that name is dev's to use.
	own := cdUsing("dev", "x", "other-x")
	if err := apply("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplate\nmetadata: {name: other-x, namespace: dev}\nspec: {helm: {chartSpec: {chart: c, version: 1.0.0, sourceRef: {name: tether-local}}}}\n---\n" + own); err != nil {
		t.Errorf("dev's own template: %v", err)
	}
	// A service's templateChain resolves to the distributed chain.
	if err := apply("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: MultiClusterService\nmetadata: {name: m, namespace: dev}\nspec: {serviceSpec: {services: [{template: ingress-a, name: web, templateChain: ingress-chain}]}}\n"); err != nil {
		t.Errorf("a templateChain distributed to dev: %v", err)
	}

	// What was distributed shows in the status.
	o, err := r.Get(ctx, KindAccessManagement, "", "kcm")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.DeriveStatus(ctx, o); err != nil {
		t.Fatal(err)
	}
	got := o.(*AccessManagement).Status.Rules
	want := AccessRuleStatus{TargetNamespaces: "dev", Namespaces: []string{"dev"},
		ServiceTemplateChains: []string{"kcm-system/ingress-chain"}, ServiceTemplates: []string{"ingress-a", "ingress-b"}}
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(want) {
		t.Errorf("status.rules = %+v; want [%+v]", got, want)
	}
	if w := strings.Join(Warnings(o), "\n"); !strings.Contains(w, "spec.accessRules[0].credentials: stored; not distributed until provisioning") {
		t.Errorf("warnings %q; want credentials named", w)
	}

	// The chain that brings dev its templates cannot go while they are
	// used there (even by services that do not name the chain); a chain
	// template cannot be dropped from it either.
	if err := r.Delete(ctx, KindMultiClusterService, "dev", "m"); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(ctx, KindServiceTemplateChain, "kcm-system", "ingress-chain"); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "ClusterDeployment dev/edge-ingress-b") {
		t.Errorf("delete the distributed chain in use: %v", err)
	}
	err = apply("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplateChain\nmetadata: {name: ingress-chain, namespace: kcm-system}\nspec: {supportedTemplates: [{name: ingress-a}]}\n")
	if err == nil || !strings.Contains(err.Error(), "would take away from ClusterDeployment dev/edge-ingress-b") {
		t.Errorf("drop a used template from the distributed chain: %v", err)
	}
	// Deleting the AccessManagement gives dev the default back.
	if err := r.Delete(ctx, KindAccessManagement, "", "kcm"); err != nil {
		t.Fatal(err)
	}
	if err := apply(cdUsing("dev", "after", "other-x")); err != nil {
		t.Errorf("after the AccessManagement is gone: %v", err)
	}
}

// TestAccessRuleForms: targetNamespaces by list, label selector (on the
// namespace-name label) and string selector, and k0rdent's generic
// resources rules of ServiceTemplateChains (by labels) and
// ServiceTemplates (by names); a rule that distributes only credentials
// manages no namespace's services.
func TestAccessRuleForms(t *testing.T) {
	for _, tc := range []struct {
		name, rule      string
		visible, hidden []string // ns/template
	}{
		{"string selector", `{targetNamespaces: {stringSelector: "kubernetes.io/metadata.name in (dev, qa)"}, serviceTemplateChains: [ingress-chain]}`,
			[]string{"dev/ingress-a", "qa/ingress-b", "prod/other-x"}, []string{"dev/other-x", "qa/other-x"}},
		{"label selector", `{targetNamespaces: {selector: {matchLabels: {kubernetes.io/metadata.name: qa}}}, serviceTemplateChains: [ingress-chain]}`,
			[]string{"dev/other-x", "qa/ingress-a"}, []string{"qa/other-x"}},
		{"every namespace", `{serviceTemplateChains: [ingress-chain]}`,
			[]string{"dev/ingress-a", "kcm-system/other-x"}, []string{"dev/other-x", "prod/other-x"}},
		{"resources by labels and names", `{targetNamespaces: {list: [dev]}, resources: [{kind: ServiceTemplateChain, selector: {matchLabels: {team: net}}}, {kind: ServiceTemplate, names: [other-x]}]}`,
			[]string{"dev/ingress-a", "dev/other-x"}, nil},
		{"resources of templates by labels", `{targetNamespaces: {list: [dev]}, resources: [{kind: ServiceTemplate, stringSelector: "team=ingress"}]}`,
			[]string{"dev/ingress-a", "dev/ingress-b"}, []string{"dev/other-x"}},
		{"credentials only", `{targetNamespaces: {list: [dev]}, credentials: [c]}`,
			[]string{"dev/other-x"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := accessWorld(t)
			ctx := context.Background()
			if _, err := r.Apply(ctx, mustDecode(t, "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplateChain\nmetadata: {name: net-chain, namespace: kcm-system, labels: {team: net}}\nspec: {supportedTemplates: [{name: ingress-a}]}\n---\napiVersion: k0rdent.mirantis.com/v1beta1\nkind: AccessManagement\nmetadata: {name: kcm}\nspec: {accessRules: ["+tc.rule+"]}\n")); err != nil {
				t.Fatal(err)
			}
			for i, v := range append(tc.visible, tc.hidden...) {
				ns, tmpl, _ := strings.Cut(v, "/")
				_, err := r.Apply(ctx, mustDecode(t, cdUsing(ns, fmt.Sprintf("c%d", i), tmpl)))
				if hidden := i >= len(tc.visible); hidden != (err != nil) {
					t.Errorf("%s: hidden %v, apply error %v", v, hidden, err)
				}
			}
		})
	}
	for _, tc := range []struct{ rule, want string }{
		{`{targetNamespaces: {list: [a], stringSelector: x}}`, "spec.accessRules[0].targetNamespaces: only one of list, selector, stringSelector"},
		{`{targetNamespaces: {stringSelector: "a in ("}}`, "spec.accessRules[0].targetNamespaces.stringSelector"},
		{`{resources: [{names: [a]}]}`, "spec.accessRules[0].resources[0].kind: required"},
		{`{resources: [{kind: X, names: [a], stringSelector: b}]}`, "spec.accessRules[0].resources[0]: only one of names, selector, stringSelector"},
		{`{targetNamespaces: {lst: [a]}}`, "spec.accessRules[0].targetNamespaces.lst: unknown field"},
	} {
		_, err := Decode([]byte("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: AccessManagement\nmetadata: {name: kcm}\nspec: {accessRules: ["+tc.rule+"]}\n"), "am.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%s) = %v; want %q", tc.rule, err, tc.want)
		}
	}
	am := mustDecode(t, "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: AccessManagement\nmetadata: {name: kcm}\nspec: {accessRules: [{targetNamespaces: {selector: {matchLabels: {env: prod}}}, serviceTemplateChains: [c]}, {resources: [{kind: Credential, names: [x]}], credentials: [ycred]}]}\n")[0]
	w := strings.Join(Warnings(am), "\n")
	for _, want := range []string{"spec.accessRules[0].targetNamespaces: Tether's namespaces have no labels but kubernetes.io/metadata.name", "spec.accessRules[1]: resources is set", "spec.accessRules[1].resources[0]: Credential: stored; not distributed"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q; want %q", w, want)
		}
	}
}
