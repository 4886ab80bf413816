package objects

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// repoRoot is the repository root, from this file's location.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// seedExample is the seed article's k0rdent example exactly as written,
// kept in deploy/demo/seed-k0rdent.yaml, and the HelmRepository it says is
// defined elsewhere (deploy/demo/k0rdent-public-charts.yaml).
func seedExample(t *testing.T) (seed, repo []byte) {
	t.Helper()
	root := repoRoot(t)
	seed, err := os.ReadFile(filepath.Join(root, "deploy", "demo", "seed-k0rdent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// The copy must stay the seed's text: compare with the original when
	// the shared folder is beside the checkout (as in CI).
	if orig, err := os.ReadFile(filepath.Join(root, "..", "shared", "seed", "example.yaml")); err == nil && !bytes.Equal(orig, seed) {
		t.Fatal("deploy/demo/seed-k0rdent.yaml differs from shared/seed/example.yaml: keep the seed's text as written")
	}
	repo, err = os.ReadFile(filepath.Join(root, "deploy", "demo", "k0rdent-public-charts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return seed, bytes.ReplaceAll(repo, []byte("${CHARTS_URL}"), []byte("http://127.0.0.1:8879"))
}

func TestSeedExampleAppliesAsWritten(t *testing.T) {
	seed, repoDoc := seedExample(t)
	r, _ := newRepo(t)
	ctx := context.Background()
	repos := mustDecode(t, string(repoDoc))
	objs, err := Decode(seed, "seed-k0rdent.yaml")
	if err != nil {
		t.Fatalf("the seed example as written is refused:\n%v", err)
	}
	if _, err := r.Apply(ctx, repos); err != nil {
		t.Fatalf("Flux HelmRepository: %v", err)
	}
	res, err := r.Apply(ctx, objs)
	if err != nil {
		t.Fatalf("apply the seed example: %v", err)
	}
	if len(res) != 2 || res[0].Action != Created || res[1].Action != Created {
		t.Fatalf("results = %+v; want the ServiceTemplate and ClusterDeployment created", res)
	}

	st, err := r.Get(ctx, KindServiceTemplate, "k0rdent-system", "simple-nginx-template-1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	if s := st.(*ServiceTemplate).Spec; s.DisplayName != "Nginx Web Server Simple" || s.Description != "Déploie un serveur web Nginx basique." {
		t.Errorf("displayName/description not kept: %+v", s)
	}
	hr, err := r.Get(ctx, KindHelmRepository, "k0rdent-system", "k0rdent-public-charts")
	if err != nil {
		t.Fatal(err)
	}
	if iv := hr.(*HelmRepository).Spec.Interval.Std(); iv.Minutes() != 10 {
		t.Errorf("interval = %v; want 10m", iv)
	}

	// The ClusterDeployment names a CAPI template: accepted without a
	// warning, the provisioning controller follows it (its status says
	// what is missing).
	cd, err := r.Get(ctx, KindClusterDeployment, "mon-organisation", "mon-cluster-web")
	if err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(Warnings(cd), "\n"); strings.Contains(w, "spec.template") || strings.Contains(w, "spec.credential") {
		t.Errorf("warnings = %q; want none on spec.template and spec.credential", w)
	}
	if w := Warnings(st); len(w) != 0 {
		t.Errorf("ServiceTemplate warnings = %q; want none", w)
	}

	// The template in k0rdent-system serves mon-organisation, so it is in
	// use there.
	if err := r.Delete(ctx, KindServiceTemplate, "k0rdent-system", "simple-nginx-template-1.0.0"); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete a k0rdent-system template in use: %v; want ErrInUse", err)
	}
}

func TestSystemNamespacesAreConfigurable(t *testing.T) {
	s := openStore(t)
	r, err := NewRepo(RepoConfig{Store: s, SystemNamespaces: []string{"platform"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tmpl := strings.Replace(strings.Replace(tmplYAML, "name: public", "name: tether-local", 1), "namespace: acme", "namespace: k0rdent-system", 1)
	if _, err := r.Apply(ctx, mustDecode(t, tmpl)); err != nil {
		t.Fatal(err)
	}
	// k0rdent-system is not a system namespace of this hub.
	_, err = r.Apply(ctx, mustDecode(t, cdYAML))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "system namespaces (platform)") {
		t.Fatalf("apply with the template only in a non-system namespace: %v", err)
	}
	platform := strings.Replace(tmpl, "namespace: k0rdent-system", "namespace: platform", 1)
	if _, err := r.Apply(ctx, mustDecode(t, platform+"---\n"+cdYAML)); err != nil {
		t.Fatalf("template from the configured system namespace: %v", err)
	}
}

func TestFluxFieldsValidatedAndMisspellingsRefused(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"misspelt ServiceTemplate field", `apiVersion: k0rdent.mirantis.com/v1alpha1
kind: ServiceTemplate
metadata: {name: t, namespace: k0rdent-system}
spec: {displayNme: x, helm: {chartSpec: {chart: c, version: 1.0.0, sourceRef: {name: r}}}}`, "spec.displayNme: unknown field"},
		{"bad interval", `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: r}
spec: {url: "https://x.example", interval: ten minutes}`, `spec.interval: "ten minutes": want a positive duration`},
		{"bad chart interval", `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: t}
spec: {helm: {chartSpec: {chart: c, version: 1.0.0, interval: -1s, sourceRef: {name: r}}}}`, `spec.helm.chartSpec.interval: "-1s"`},
		{"secretRef without name", `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: r}
spec: {url: "https://x.example", secretRef: {}}`, "spec.secretRef.name: required"},
		{"flux apiVersion on another kind", `apiVersion: source.toolkit.fluxcd.io/v1
kind: ServiceTemplate
metadata: {name: t}
spec: {helm: {chartSpec: {chart: c, version: 1.0.0, sourceRef: {name: r}}}}`, `apiVersion: "source.toolkit.fluxcd.io/v1" is not accepted for ServiceTemplate`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc), "x.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode error = %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestAcceptedFluxFieldsWarn(t *testing.T) {
	objs := mustDecode(t, `apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: r, namespace: kcm-system}
spec:
  url: oci://registry.example/charts
  type: oci
  interval: 1h
  provider: aws
  accessFrom: {namespaceSelectors: [{matchLabels: {team: a}}]}
  secretRef: {name: creds}
  certSecretRef: {name: tls}
  passCredentials: true
  insecure: true
`)
	w := strings.Join(Warnings(objs[0]), "\n")
	for _, want := range []string{"spec.accessFrom", "spec.provider"} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings %q do not name %s", w, want)
		}
	}
	// Fields that work do not warn.
	for _, works := range []string{"spec.secretRef", "spec.certSecretRef", "spec.passCredentials", "spec.insecure", "spec.type"} {
		if strings.Contains(w, works+":") {
			t.Errorf("warnings %q name %s, which works", w, works)
		}
	}
	WithWarnings(objs[0])
	if got := objs[0].(*HelmRepository).Status.Warnings; len(got) != 2 {
		t.Errorf("status.warnings = %q; want the 2 warnings", got)
	}
}

func TestK0rdentInternalKindsRefusedWithReason(t *testing.T) {
	for _, kind := range []string{"Release", "StateManagementProvider", "ServiceSet", "Management", "ProviderTemplate"} {
		t.Run(kind, func(t *testing.T) {
			doc := "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: " + kind + "\nmetadata: {name: x}\nspec: {}\n"
			_, err := Decode([]byte(doc), "x.yaml")
			if !errors.Is(err, ErrUnknownKind) || !strings.Contains(err.Error(), kind+" is one of k0rdent's internal kinds") {
				t.Fatalf("Decode(%s) = %v; want a refusal naming it as internal, with the reason", kind, err)
			}
		})
	}
}

// TestK0rdentV1beta1FieldsKept: what k0rdent v1beta1's fields of corpus
// files become once applied.
func TestK0rdentV1beta1FieldsKept(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	for _, f := range []string{"docs-ksm-multiclusterservice-4.yaml", "docs-ksm-multiclusterservice-5.yaml", "docs-ksm-multiclusterservice-6.yaml", "docs-ksm-self-management-1.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", "k0rdent", f))
		if err != nil {
			t.Fatal(err)
		}
		objs := mustDecode(t, string(b))
		if _, err := r.Apply(ctx, append(corpusFixtures(t, DefaultKinds(), objs), objs...)); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	get := func(kind, ns, name string) Object {
		t.Helper()
		o, err := r.Get(ctx, kind, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	mcs2 := get(KindMultiClusterService, DefaultNamespace, "mcs2").(*MultiClusterService)
	if d := mcs2.Spec.ServiceSpec.Services[1].DependsOn; len(d) != 1 || d[0] != "ingress-nginx/ingress-nginx" {
		t.Errorf("postgres-operator dependsOn = %q; want the {name, namespace} object kept", d)
	}
	if enc, err := Encode(mcs2, "yaml"); err != nil || !strings.Contains(string(enc), "- dependsOn:\n      - name: ingress-nginx\n        namespace: ingress-nginx\n") {
		t.Errorf("dependsOn not written back as k0rdent's object form:\n%s", enc)
	}
	for _, tc := range []struct {
		o    Object
		want string
	}{
		{mcs2, "spec.dependsOn: ordering between MultiClusterServices is not supported yet"},
		{get(KindMultiClusterService, DefaultNamespace, "global-ingress"), "spec.keepServicesOnSelectorMismatch"},
		{get(KindMultiClusterService, DefaultNamespace, "mgmt-mcs"), "spec.serviceSpec.provider: name and selfManagement have no effect"},
	} {
		if w := strings.Join(Warnings(tc.o), "\n"); !strings.Contains(w, tc.want) {
			t.Errorf("%s warnings %q; want %q", tc.o.GetHeader().Key(), w, tc.want)
		}
	}
}

func TestK0rdentV1beta1FieldsValidated(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"dependsOn object in another namespace", `apiVersion: k0rdent.mirantis.com/v1beta1
kind: MultiClusterService
metadata: {name: m}
spec:
  serviceSpec:
    services:
      - {template: t, name: a, namespace: web}
      - {template: t, name: b, dependsOn: [{name: a, namespace: db}]}`, `"db/a": service "a" of this spec is in namespace "web"`},
		{"dependsOn object without name", `apiVersion: k0rdent.mirantis.com/v1beta1
kind: MultiClusterService
metadata: {name: m}
spec: {serviceSpec: {services: [{template: t, name: b, dependsOn: [{namespace: db}]}]}}`, "dependsOn[0].name: required"},
		{"dependsOn object with a misspelt key", `apiVersion: k0rdent.mirantis.com/v1beta1
kind: MultiClusterService
metadata: {name: m}
spec: {serviceSpec: {services: [{template: t, name: b, dependsOn: [{name: a, namespce: db}]}]}}`, "dependsOn[0].namespce: unknown field"},
		{"unknown syncMode", `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata: {name: c}
spec: {template: adopted, serviceSpec: {syncMode: Sometimes}}`, `spec.serviceSpec.syncMode: "Sometimes": want OneTime`},
		{"chain entry without name", `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplateChain
metadata: {name: c}
spec: {supportedTemplates: [{availableUpgrades: [{name: x}]}]}`, "spec.supportedTemplates[0].name: required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.doc), "x.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Decode error = %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestChartRefAndChartSourceValidated: k0rdent's chartRef and
// chartSource, and the Flux sources they name, are checked as k0rdent's
// and Flux's schemas check them; a chartRef template is not ready
// before the hub has fetched its chart.
func TestChartRefAndChartSourceValidated(t *testing.T) {
	objs := mustDecode(t, `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: ref, namespace: kcm-system}
spec:
  helm:
    chartRef: {kind: HelmChart, name: chart}
`)
	st := objs[0].(*ServiceTemplate)
	if !st.Spec.Generated() || st.Spec.Mode() != ModeChartRef {
		t.Fatalf("Mode() = %q, Generated() = %v; want a chartRef template the hub resolves", st.Spec.Mode(), st.Spec.Generated())
	}
	if ok, why := st.Ready(); ok || !strings.Contains(why, "not resolved yet") {
		t.Errorf("Ready() = %v, %q; want not ready before the hub resolves it", ok, why)
	}
	if w := Warnings(st); len(w) != 0 {
		t.Errorf("warnings %q; want none (a chartRef is deployable)", w)
	}
	tmpl := "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplate\nmetadata: {name: x}\nspec: "
	for _, tc := range []struct{ doc, want string }{
		{tmpl + `{helm: {chartRef: {name: c}}}`, "spec.helm.chartRef.kind: required"},
		{tmpl + `{helm: {chartRef: {kind: GitRepository, name: c}}}`, `spec.helm.chartRef.kind: "GitRepository": want OCIRepository, HelmChart or ExternalArtifact`},
		{tmpl + `{helm: {chartRef: {kind: HelmChart, name: c}, chartSpec: {chart: a, version: 1.0.0, sourceRef: {name: r}}}}`, "spec: helm.chartSpec and helm.chartRef are mutually exclusive"},
		{tmpl + `{helm: {chartSource: {localSourceRef: {kind: ConfigMap, name: c}}}}`, "Secret and ConfigMap are not supported as Helm chart sources"},
		{tmpl + `{helm: {chartSource: {remoteSourceSpec: {git: {url: "https://h/r"}}}}}`, "spec.helm.chartSource.remoteSourceSpec.git.interval: required"},
		{tmpl + `{kustomize: {remoteSourceSpec: {oci: {url: "oci://h/r", interval: 1m, reference: x}}}}`, "spec.kustomize.remoteSourceSpec.oci.reference: unknown field"},
		{tmpl + `{kustomize: {remoteSourceSpec: {bucket: {url: x}}}}`, "spec.kustomize.remoteSourceSpec.bucket.url: unknown field"},
		{"apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {name: o}\nspec: {url: \"https://h/r\", interval: 1m}", `spec.url: "https://h/r": want an oci:// URL`},
		{"apiVersion: source.toolkit.fluxcd.io/v1beta2\nkind: OCIRepository\nmetadata: {name: o}\nspec: {url: \"oci://h/r\"}", "spec.interval: required"},
		{"apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata: {name: o}\nspec: {url: \"oci://h/r\", interval: 1m, ref: {digest: latest}}", `spec.ref.digest: "latest": want sha256:`},
		{"apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {name: h}\nspec: {chart: c, interval: 1m, version: \"not a range\", sourceRef: {kind: HelmRepository, name: r}}", `spec.version: "not a range" is not a semantic version or range`},
		{"apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {name: h}\nspec: {chart: ../c, interval: 1m, sourceRef: {kind: GitRepository, name: r}}", `spec.chart: "../c": must not leave the source`},
	} {
		_, err := Decode([]byte(tc.doc), "x.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%s) = %v; want %q", tc.doc, err, tc.want)
		}
	}
}

// TestKustomizeTemplateIsGeneratedNotWarned: a kustomize template is
// deployable (the hub generates its chart), so it has no "not
// deployable" warning, and it is not ready before the hub generated it.
func TestKustomizeTemplateIsGeneratedNotWarned(t *testing.T) {
	objs := mustDecode(t, `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: kust, namespace: kcm-system}
spec:
  kustomize:
    deploymentType: Remote
    localSourceRef: {kind: GitRepository, name: repo}
    path: ./deploy
`)
	st := objs[0].(*ServiceTemplate)
	if !st.Spec.Generated() {
		t.Fatal("Generated() = false for a kustomize template")
	}
	if ok, _ := st.Ready(); ok {
		t.Error("Ready() = true before the chart is generated")
	}
	if w := Warnings(st); len(w) != 0 {
		t.Errorf("warnings %q; want none", w)
	}
	for _, tc := range []struct{ doc, want string }{
		{`{kustomize: {localSourceRef: {kind: Bucket2, name: b}}}`, `spec.kustomize.localSourceRef.kind: "Bucket2"`},
		{`{resources: {path: x}}`, "spec.resources: one of localSourceRef or remoteSourceSpec is required"},
		{`{resources: {localSourceRef: {kind: ConfigMap, name: a}}, kustomize: {localSourceRef: {kind: ConfigMap, name: a}}}`, "mutually exclusive"},
		{`{kustomize: {remoteSourceSpec: {git: {url: "ssh://h/r", interval: 1m}}}}`, "spec.kustomize.remoteSourceSpec.git.url"},
		{`{kustomize: {localSourceRef: {kind: GitRepository, name: r}, path: ../etc}}`, "spec.kustomize.path"},
	} {
		_, err := Decode([]byte("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplate\nmetadata: {name: x}\nspec: "+tc.doc+"\n"), "x.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%s) = %v; want %q", tc.doc, err, tc.want)
		}
	}
}
