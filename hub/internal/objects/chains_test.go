package objects

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// chainYAML is k0rdent's documented chain, in kcm-system: 4-11-3 may go to
// 4-11-5 only.
const chainYAML = `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplateChain
metadata: {name: ingress-nginx-chain, namespace: kcm-system}
spec:
  supportedTemplates:
    - name: ingress-nginx-4-11-3
      availableUpgrades: [{name: ingress-nginx-4-11-5}]
    - name: ingress-nginx-4-11-5
`

// ingressTemplates are the templates the chain names and one it does not,
// in kcm-system.
func ingressTemplates() string {
	var b strings.Builder
	for _, v := range []string{"4-11-3", "4-11-5", "4-12-0"} {
		fmt.Fprintf(&b, "apiVersion: tether.dev/v1alpha1\nkind: ServiceTemplate\nmetadata: {name: ingress-nginx-%s, namespace: kcm-system}\nspec: {helm: {chartSpec: {chart: ingress-nginx, version: %s, sourceRef: {name: tether-local}}}}\n---\n", v, strings.ReplaceAll(v, "-", "."))
	}
	return b.String()
}

func chainedCD(kind, template, chain string) string {
	sel := ""
	if kind == KindMultiClusterService {
		sel = "clusterSelector: {matchLabels: {env: prod}}, "
	} else {
		sel = "template: adopted, "
	}
	return fmt.Sprintf("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: %s\nmetadata: {name: edge-1, namespace: acme}\nspec: {%sserviceSpec: {services: [{template: %s, name: ingress, namespace: ingress, templateChain: %s}]}}\n", kind, sel, template, chain)
}

// refusedUnchanged applies doc, wants an ErrInvalid error containing want, and
// checks the store revision did not move.
func refusedUnchanged(t *testing.T, r *Repo, s interface {
	Revision(context.Context) (uint64, error)
}, doc, want string) {
	t.Helper()
	ctx := context.Background()
	before, _ := s.Revision(ctx)
	_, err := r.Apply(ctx, mustDecode(t, doc))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
		t.Fatalf("apply error = %v; want ErrInvalid containing %q", err, want)
	}
	if after, _ := s.Revision(ctx); after != before {
		t.Fatalf("a refused apply moved the store revision %d -> %d", before, after)
	}
}

func TestServiceTemplateChainUpgradeOutsideChainIsRefused(t *testing.T) {
	for _, kind := range []string{KindClusterDeployment, KindMultiClusterService} {
		t.Run(kind, func(t *testing.T) {
			r, s := newRepo(t)
			ctx := context.Background()
			if _, err := r.Apply(ctx, mustDecode(t, ingressTemplates()+chainYAML)); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Apply(ctx, mustDecode(t, chainedCD(kind, "ingress-nginx-4-11-3", "ingress-nginx-chain"))); err != nil {
				t.Fatalf("a chain template from a system namespace chain: %v", err)
			}
			refusedUnchanged(t, r, s, chainedCD(kind, "ingress-nginx-4-12-0", "ingress-nginx-chain"),
				"spec.serviceSpec.services[0].template: ServiceTemplate ingress-nginx-4-12-0 is not in ServiceTemplateChain kcm-system/ingress-nginx-chain (its templates: ingress-nginx-4-11-3, ingress-nginx-4-11-5)")

			// A chain that also lists 4-12-0, but not as an upgrade of 4-11-3.
			wider := strings.Replace(chainYAML, "    - name: ingress-nginx-4-11-5\n", "    - name: ingress-nginx-4-11-5\n      availableUpgrades: [{name: ingress-nginx-4-12-0}]\n    - name: ingress-nginx-4-12-0\n", 1)
			if _, err := r.Apply(ctx, mustDecode(t, wider)); err != nil {
				t.Fatal(err)
			}
			refusedUnchanged(t, r, s, chainedCD(kind, "ingress-nginx-4-12-0", "ingress-nginx-chain"),
				"spec.serviceSpec.services[0].template: upgrade from ingress-nginx-4-11-3 to ingress-nginx-4-12-0 is not allowed by ServiceTemplateChain kcm-system/ingress-nginx-chain (allowed: ingress-nginx-4-11-5)")

			// Along the chain: 4-11-3 -> 4-11-5 -> 4-12-0.
			for _, tmpl := range []string{"ingress-nginx-4-11-5", "ingress-nginx-4-12-0"} {
				res, err := r.Apply(ctx, mustDecode(t, chainedCD(kind, tmpl, "ingress-nginx-chain")))
				if err != nil || res[0].Action != Configured {
					t.Fatalf("upgrade to %s along the chain: %+v, %v", tmpl, res, err)
				}
			}
			o, err := r.Get(ctx, kind, "acme", "edge-1")
			if err != nil {
				t.Fatal(err)
			}
			ss, _ := r.Kinds().Get(kind).Services(o)
			if got := ss.Services[0].Template; got != "ingress-nginx-4-12-0" {
				t.Errorf("stored template %s", got)
			}
			if w := strings.Join(r.Kinds().Warnings(o), "\n"); strings.Contains(w, "templateChain") {
				t.Errorf("an enforced templateChain still warns: %q", w)
			}
			// The chain is in use: not deleted.
			if err := r.Delete(ctx, KindServiceTemplateChain, "kcm-system", "ingress-nginx-chain"); !errors.Is(err, ErrInUse) {
				t.Errorf("delete a chain in use: %v; want ErrInUse", err)
			}
		})
	}
}

func TestServiceTemplateChainMissingIsRefused(t *testing.T) {
	r, s := newRepo(t)
	ctx := context.Background()
	if _, err := r.Apply(ctx, mustDecode(t, ingressTemplates())); err != nil {
		t.Fatal(err)
	}
	refusedUnchanged(t, r, s, chainedCD(KindClusterDeployment, "ingress-nginx-4-11-3", "ingress-nginx-chain"),
		"spec.serviceSpec.services[0].templateChain: ServiceTemplateChain ingress-nginx-chain not found in namespace acme or the system namespaces")
	// The chain in the same batch is found, and checked.
	if _, err := r.Apply(ctx, mustDecode(t, chainYAML+"---\n"+chainedCD(KindClusterDeployment, "ingress-nginx-4-11-3", "ingress-nginx-chain"))); err != nil {
		t.Fatalf("chain and its user in one batch: %v", err)
	}
	// A chain in the object's own namespace comes first.
	own := strings.Replace(strings.Replace(chainYAML, "namespace: kcm-system", "namespace: acme", 1), "availableUpgrades: [{name: ingress-nginx-4-11-5}]", "availableUpgrades: []", 1)
	if _, err := r.Apply(ctx, mustDecode(t, own)); err != nil {
		t.Fatal(err)
	}
	refusedUnchanged(t, r, s, chainedCD(KindClusterDeployment, "ingress-nginx-4-11-5", "ingress-nginx-chain"),
		"upgrade from ingress-nginx-4-11-3 to ingress-nginx-4-11-5 is not allowed by ServiceTemplateChain acme/ingress-nginx-chain (allowed: <none>)")
}

func TestServiceWithoutChainIsNotChecked(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	if _, err := r.Apply(ctx, mustDecode(t, ingressTemplates()+chainYAML)); err != nil {
		t.Fatal(err)
	}
	noChain := strings.Replace(chainedCD(KindClusterDeployment, "ingress-nginx-4-11-3", "x"), ", templateChain: x", "", 1)
	if _, err := r.Apply(ctx, mustDecode(t, noChain)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(ctx, mustDecode(t, strings.Replace(noChain, "4-11-3", "4-12-0", 1))); err != nil {
		t.Fatalf("a service without templateChain moves freely: %v", err)
	}
}

func TestDryRunApplyStoresNothing(t *testing.T) {
	r, s := newRepo(t)
	ctx := context.Background()
	if _, err := r.Apply(ctx, mustDecode(t, repoYAML)); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Revision(ctx)
	changed := strings.Replace(repoYAML, "charts.example.com", "charts2.example.com", 1)
	res, err := r.ApplyWith(ctx, mustDecode(t, changed+"---\n"+tmplYAML+"---\n"+cdYAML), ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 || res[0].Action != Configured || res[1].Action != Created || res[2].Action != Created {
		t.Fatalf("dry run results %+v; want configured, created, created", res)
	}
	if res[0].Live == nil || res[0].Live.(*HelmRepository).Spec.URL != "https://charts.example.com" ||
		res[0].Object.(*HelmRepository).Spec.URL != "https://charts2.example.com" || res[1].Live != nil {
		t.Errorf("dry run Live/Object: %+v", res)
	}
	if res[2].Object.(*ClusterDeployment).Spec.ServiceSpec.Services[0].Namespace != DefaultNamespace {
		t.Errorf("dry run object is not defaulted: %+v", res[2].Object)
	}
	if after, _ := s.Revision(ctx); after != before {
		t.Errorf("dry run moved the store revision %d -> %d", before, after)
	}
	if _, err := r.Get(ctx, KindServiceTemplate, "acme", "nginx"); err == nil {
		t.Error("dry run created a ServiceTemplate")
	}
	hr, err := r.Get(ctx, KindHelmRepository, "acme", "public")
	if err != nil || hr.(*HelmRepository).Spec.URL != "https://charts.example.com" {
		t.Errorf("dry run changed the HelmRepository: %+v %v", hr, err)
	}
	// Errors are the ones apply would give, and a dry run of the same
	// input as stored is unchanged.
	if _, err := r.ApplyWith(ctx, mustDecode(t, cdYAML), ApplyOptions{DryRun: true}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "ServiceTemplate nginx not found") {
		t.Errorf("dry run of a dangling reference: %v", err)
	}
	if res, err := r.ApplyWith(ctx, mustDecode(t, repoYAML), ApplyOptions{DryRun: true}); err != nil || res[0].Action != Unchanged {
		t.Errorf("dry run of the stored object: %+v %v", res, err)
	}
}
