package cli

import (
	"strings"
	"testing"
)

// TestAccessManagementThroughTheCLI: an AccessManagement applied with
// `tether apply` makes its target namespace see only the templates of
// the chains it distributes; `tether get` shows what was distributed,
// and an apply that names another system template there is refused
// with the reason.
func TestAccessManagementThroughTheCLI(t *testing.T) {
	h := startHub(t)
	mustRun(t, `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: ingress-nginx-4-11-0, namespace: kcm-system}
spec: {helm: {chartSpec: {chart: ingress-nginx, version: 4.11.0, sourceRef: {name: tether-local}}}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: kyverno-3-2-6, namespace: kcm-system}
spec: {helm: {chartSpec: {chart: kyverno, version: 3.2.6, sourceRef: {name: tether-local}}}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplateChain
metadata: {name: ingress-chain, namespace: kcm-system}
spec: {supportedTemplates: [{name: ingress-nginx-4-11-0}]}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: AccessManagement
metadata: {name: kcm}
spec:
  accessRules:
  - targetNamespaces: {list: [team-a]}
    serviceTemplateChains: [ingress-chain]
`, "--config", h.admin, "apply", "-f", "-")
	out := mustRun(t, "", "--config", h.admin, "get", "accessmanagement", "kcm", "-o", "yaml")
	for _, want := range []string{"targetNamespaces: team-a", "- kcm-system/ingress-chain", "- ingress-nginx-4-11-0"} {
		if !strings.Contains(out, want) {
			t.Errorf("tether get accessmanagement -o yaml:\n%s\nwant %q", out, want)
		}
	}
	code, _, errs := run(t, `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata: {name: edge-a, namespace: team-a}
spec: {template: adopted, serviceSpec: {services: [{template: kyverno-3-2-6, name: kyverno}]}}
`, "--config", h.admin, "apply", "-f", "-")
	if code == 0 || !strings.Contains(errs, "ServiceTemplate kyverno-3-2-6 is not distributed to it (its ServiceTemplateChains: ingress-chain)") {
		t.Errorf("apply a ClusterDeployment naming an undistributed template: exit %d, %s", code, errs)
	}
	mustRun(t, `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata: {name: edge-b, namespace: team-b}
spec: {template: adopted, serviceSpec: {services: [{template: kyverno-3-2-6, name: kyverno}]}}
`, "--config", h.admin, "apply", "-f", "-")
}
