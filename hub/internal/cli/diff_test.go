package cli

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	cmA  = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: apps}\ndata: {k: v}\n"
	cmA2 = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: apps}\ndata: {k: w}\n"
	cmB  = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: apps}\ndata: {x: z}\n"
)

// resourceVersion reads an object's metadata.resourceVersion with get.
func resourceVersion(t *testing.T, admin, kind, ns, name string) int64 {
	t.Helper()
	var o struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal([]byte(mustRun(t, "", "--config", admin, "get", kind, name, "-n", ns, "-o", "yaml")), &o); err != nil {
		t.Fatal(err)
	}
	rv, err := strconv.ParseInt(o.Metadata.ResourceVersion, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return rv
}

func TestApplyDryRunServerStoresNothing(t *testing.T) {
	h := startHub(t)
	mustRun(t, cmA, "--config", h.admin, "apply", "-f", "-")
	rv := resourceVersion(t, h.admin, "configmap", "apps", "a")

	out := mustRun(t, cmA2+"---\n"+cmB, "--config", h.admin, "apply", "-f", "-", "--dry-run=server")
	if want := "configmap/a configured (server dry run)\nconfigmap/b created (server dry run)\n"; out != want {
		t.Fatalf("dry run output %q; want %q", out, want)
	}
	if out := mustRun(t, cmA, "--config", h.admin, "apply", "-f", "-", "--dry-run=server"); out != "configmap/a unchanged (server dry run)\n" {
		t.Fatalf("dry run of the stored object: %q", out)
	}
	if code, _, errs := run(t, "", "--config", h.admin, "get", "configmap", "b", "-n", "apps"); code != exitNotFound {
		t.Fatalf("after a dry run, get b: exit %d %s; want not found", code, errs)
	}
	if y := mustRun(t, "", "--config", h.admin, "get", "configmap", "a", "-n", "apps", "-o", "yaml"); !strings.Contains(y, "k: v") {
		t.Fatalf("a dry run changed a:\n%s", y)
	}
	// -o yaml shows the objects as they would be stored.
	if y := mustRun(t, cmB, "--config", h.admin, "apply", "-f", "-", "--dry-run=server", "-o", "yaml"); !strings.Contains(y, "dryRun: true") || !strings.Contains(y, "x: z") {
		t.Fatalf("dry run -o yaml:\n%s", y)
	}
	// Refused as apply would refuse it, and nothing changes.
	bad := strings.Replace(cmB, "{x: z}", "{x: [1]}", 1)
	if code, _, errs := run(t, bad, "--config", h.admin, "apply", "-f", "-", "--dry-run=server"); code != exitError || !strings.Contains(errs, "data[x]") {
		t.Fatalf("invalid dry run: exit %d %s", code, errs)
	}
	dangling := "apiVersion: tether.dev/v1alpha1\nkind: ServiceTemplate\nmetadata: {name: t, namespace: apps}\nspec: {helm: {chartSpec: {chart: c, version: 1.0.0, sourceRef: {name: nope}}}}\n"
	if code, _, errs := run(t, cmB+"---\n"+dangling, "--config", h.admin, "apply", "-f", "-", "--dry-run=server"); code != exitError || !strings.Contains(errs, "HelmRepository apps/nope not found") {
		t.Fatalf("dry run with a dangling reference: exit %d %s", code, errs)
	}
	if code, _, errs := run(t, cmB, "--config", h.admin, "apply", "-f", "-", "--dry-run=maybe"); code != exitUsage || !strings.Contains(errs, `--dry-run "maybe"`) {
		t.Fatalf("--dry-run=maybe: exit %d %s", code, errs)
	}
	// The store revision did not move: the next write is the one after a's.
	mustRun(t, cmB, "--config", h.admin, "apply", "-f", "-")
	if got := resourceVersion(t, h.admin, "configmap", "apps", "b"); got != rv+1 {
		t.Fatalf("b's resourceVersion %d after dry runs; want %d (a's + 1): a dry run moved the store revision", got, rv+1)
	}
	// Viewers may not dry-run (as they may not apply).
	viewer := h.userConfig(t, "vic", "viewer")
	if code, _, errs := run(t, cmA2, "--config", viewer, "apply", "-f", "-", "--dry-run=server"); code == 0 || !strings.Contains(errs, "admin") {
		t.Fatalf("viewer dry run: exit %d %s", code, errs)
	}
}

func TestApplyDryRunClientNeedsNoHub(t *testing.T) {
	noHub := filepath.Join(t.TempDir(), "missing.yaml")
	out := mustRun(t, cmA+"---\n"+cmB, "--config", noHub, "apply", "-f", "-", "--dry-run=client")
	if want := "configmap/a valid (client dry run)\nconfigmap/b valid (client dry run)\n"; out != want {
		t.Fatalf("client dry run %q; want %q", out, want)
	}
	bad := strings.Replace(cmB, "data:", "dta:", 1)
	if code, _, errs := run(t, bad, "--config", noHub, "apply", "-f", "-", "--dry-run=client"); code != exitError || !strings.Contains(errs, "dta: unknown field") {
		t.Fatalf("invalid client dry run: exit %d %s", code, errs)
	}
	chain := "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: MultiClusterService\nmetadata: {name: m}\nspec: {serviceSpec: {services: [{template: t, name: s, templateChain: c}]}}\n"
	_, _, errs := run(t, chain, "--config", noHub, "apply", "-f", "-", "--dry-run=client")
	if strings.Contains(errs, "templateChain") {
		t.Errorf("templateChain still warns: %s", errs)
	}
}

func TestDiffShowsWhatApplyWouldChange(t *testing.T) {
	h := startHub(t)
	// Without a namespace: the default is applied before comparing.
	noNS := strings.Replace(cmA, ", namespace: apps", "", 1)
	mustRun(t, cmA+"---\n"+noNS, "--config", h.admin, "apply", "-f", "-")

	if code, out, errs := run(t, cmA+"---\n"+noNS, "--config", h.admin, "diff", "-f", "-"); code != 0 || out != "" {
		t.Fatalf("diff of the stored objects: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs := run(t, cmA2+"---\n"+cmB, "--config", h.admin, "diff", "-f", "-")
	if code != 1 {
		t.Fatalf("diff with changes: exit %d %s; want 1", code, errs)
	}
	want := `--- live/ConfigMap/apps/a
+++ merged/ConfigMap/apps/a
@@ -1,6 +1,6 @@
 apiVersion: v1
 data:
-  k: v
+  k: w
 kind: ConfigMap
 metadata:
   name: a
--- /dev/null
+++ merged/ConfigMap/apps/b
@@ -0,0 +1,7 @@
+apiVersion: v1
+data:
+  x: z
+kind: ConfigMap
+metadata:
+  name: b
+  namespace: apps
`
	if out != want {
		t.Fatalf("diff output:\n%s\nwant:\n%s", out, want)
	}
	if strings.Contains(out, "resourceVersion") || strings.Contains(out, "creationTimestamp") || strings.Contains(out, "uid:") {
		t.Errorf("diff shows server-set metadata:\n%s", out)
	}
	// Nothing was stored.
	if code, _, _ := run(t, "", "--config", h.admin, "get", "configmap", "b", "-n", "apps"); code != exitNotFound {
		t.Fatalf("diff created b: get exit %d", code)
	}
	// Errors are > 1, and print no diff.
	bad := cmA2 + "---\n" + strings.Replace(cmB, "data:", "dta:", 1)
	if code, out, errs := run(t, bad, "--config", h.admin, "diff", "-f", "-"); code <= 1 || out != "" || !strings.Contains(errs, "dta: unknown field") {
		t.Fatalf("diff of invalid input: exit %d, stdout %q, stderr %q; want >1", code, out, errs)
	}
	if code, _, _ := run(t, "", "--config", h.admin, "diff", "-f", filepath.Join(t.TempDir(), "none.yaml")); code <= 1 {
		t.Fatalf("diff of a missing file: exit %d; want >1", code)
	}
	if help := mustRun(t, "", "diff", "--help"); !strings.Contains(help, "1  differences found") {
		t.Errorf("diff --help does not document the exit status:\n%s", help)
	}
}

func TestDiffHidesSecretValues(t *testing.T) {
	h := startHub(t)
	sec := "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: apps, annotations: {kubectl.kubernetes.io/last-applied-configuration: '{\"password\":\"hunter2\"}', note: visible}}\nstringData: {user: alice, password: hunter2}\n"
	mustRun(t, sec, "--config", h.admin, "apply", "-f", "-")
	changed := strings.ReplaceAll(sec, "hunter2", "swordfish")
	code, out, errs := run(t, changed, "--config", h.admin, "diff", "-f", "-")
	if code != 1 {
		t.Fatalf("diff of a changed secret: exit %d %s", code, errs)
	}
	for _, secret := range []string{"hunter2", "swordfish", "alice", "aHVudGVyMg", "c3dvcmRmaXNo"} {
		if strings.Contains(out, secret) {
			t.Errorf("diff shows secret value %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, "-  password: '*** (before)'") || !strings.Contains(out, "+  password: '*** (after)'") || !strings.Contains(out, "  user: '***'") ||
		!strings.Contains(out, "kubectl.kubernetes.io/last-applied-configuration: '*** (after)'") || !strings.Contains(out, "note: visible") {
		t.Errorf("diff of a secret:\n%s", out)
	}
}

func TestServiceTemplateChainRefusesUpgradeThroughCLI(t *testing.T) {
	h := startHub(t)
	var tmpl strings.Builder
	for _, v := range []string{"4-11-3", "4-11-5", "4-12-0"} {
		tmpl.WriteString("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplate\nmetadata: {name: ingress-nginx-" + v + ", namespace: kcm-system}\nspec: {helm: {chartSpec: {chart: ingress-nginx, version: " + strings.ReplaceAll(v, "-", ".") + ", sourceRef: {name: tether-local}}}}\n---\n")
	}
	chain := "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplateChain\nmetadata: {name: ingress-nginx-chain, namespace: kcm-system}\nspec:\n  supportedTemplates:\n    - name: ingress-nginx-4-11-3\n      availableUpgrades: [{name: ingress-nginx-4-11-5}]\n    - name: ingress-nginx-4-11-5\n      availableUpgrades: [{name: ingress-nginx-4-12-0}]\n    - name: ingress-nginx-4-12-0\n"
	out := mustRun(t, tmpl.String()+chain, "--config", h.admin, "apply", "-f", "-")
	if strings.Contains(out, "upgrade paths") {
		t.Errorf("the chain still warns: %s", out)
	}
	cd := func(tmpl string) string {
		return "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ClusterDeployment\nmetadata: {name: edge-1, namespace: acme}\nspec: {template: adopted, serviceSpec: {services: [{template: " + tmpl + ", name: ingress, namespace: ingress, templateChain: ingress-nginx-chain}]}}\n"
	}
	mustRun(t, cd("ingress-nginx-4-11-3"), "--config", h.admin, "apply", "-f", "-")
	for _, dry := range []string{"--dry-run=server", "--dry-run=none"} {
		code, _, errs := run(t, cd("ingress-nginx-4-12-0"), "--config", h.admin, "apply", "-f", "-", dry)
		if code != exitError || !strings.Contains(errs, "spec.serviceSpec.services[0].template: upgrade from ingress-nginx-4-11-3 to ingress-nginx-4-12-0 is not allowed by ServiceTemplateChain kcm-system/ingress-nginx-chain (allowed: ingress-nginx-4-11-5)") {
			t.Fatalf("apply %s of an upgrade outside the chain: exit %d %s", dry, code, errs)
		}
	}
	if code, _, errs := run(t, cd("ingress-nginx-4-12-0"), "--config", h.admin, "diff", "-f", "-"); code <= 1 || !strings.Contains(errs, "is not allowed by ServiceTemplateChain") {
		t.Fatalf("diff of an upgrade outside the chain: exit %d %s", code, errs)
	}
	if out := mustRun(t, cd("ingress-nginx-4-11-5"), "--config", h.admin, "apply", "-f", "-"); out != "clusterdeployment/edge-1 configured\n" {
		t.Fatalf("upgrade along the chain: %q", out)
	}
	wide := mustRun(t, "", "--config", h.admin, "get", "stc", "-n", "kcm-system", "-o", "wide")
	if !strings.Contains(wide, "UPGRADES") || !strings.Contains(wide, "ingress-nginx-4-11-3->ingress-nginx-4-11-5, ingress-nginx-4-11-5->ingress-nginx-4-12-0") {
		t.Errorf("get stc -o wide:\n%s", wide)
	}
}
