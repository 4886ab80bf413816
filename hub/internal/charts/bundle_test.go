package charts

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

func simpleNginxDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(e2etest.RepoRoot(t), "bundles", "services", "simple-nginx")
}

// TestSimpleNginx packages the shipped chart, loads it back and renders it
// the way the seed example deploys it: release nginx-web in
// applications-web with replicaCount 2.
func TestSimpleNginx(t *testing.T) {
	dir := simpleNginxDir(t)
	lintResult := lint.All(dir, nil, "applications-web", false)
	for _, m := range lintResult.Messages {
		if m.Severity >= support.WarningSev {
			t.Errorf("helm lint: %s", m)
		}
	}

	archive, err := PackageDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := loadChart(archive)
	if err != nil {
		t.Fatal(err)
	}
	if md := ch.Metadata; md.Name != "simple-nginx" || md.Version != "1.0.0" || md.AppVersion != "1.27" || md.APIVersion != "v2" {
		t.Errorf("metadata = %+v", md)
	}

	vals, err := chartutil.ReadValues([]byte("replicaCount: 2\n"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: "nginx-web", Namespace: "applications-web", Revision: 1, IsInstall: true,
	}, chartutil.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, top)
	if err != nil {
		t.Fatal(err)
	}

	var dep appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(out["simple-nginx/templates/deployment.yaml"]), &dep); err != nil {
		t.Fatalf("deployment: %v\n%s", err, out["simple-nginx/templates/deployment.yaml"])
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
		t.Errorf("deployment replicas = %v, want 2", dep.Spec.Replicas)
	}
	if dep.Name != "nginx-web-simple-nginx" {
		t.Errorf("deployment name = %q", dep.Name)
	}
	cs := dep.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Image != "nginx:1.27-alpine" {
		t.Fatalf("containers = %+v", cs)
	}
	if p := cs[0].ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/" || p.HTTPGet.Port.String() != "http" {
		t.Errorf("readiness probe = %+v", p)
	}
	if cs[0].Resources.Requests.Cpu().IsZero() || cs[0].Resources.Requests.Memory().IsZero() {
		t.Errorf("resources = %+v, want requests set", cs[0].Resources)
	}
	for k, v := range dep.Spec.Selector.MatchLabels {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("pod template lacks selector label %s=%s", k, v)
		}
	}

	var svc corev1.Service
	if err := yaml.UnmarshalStrict([]byte(out["simple-nginx/templates/service.yaml"]), &svc); err != nil {
		t.Fatalf("service: %v", err)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 80 || svc.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("service ports = %+v", svc.Spec.Ports)
	}
	if notes := out["simple-nginx/templates/NOTES.txt"]; !strings.Contains(notes, "nginx-web-simple-nginx.applications-web.svc:80") || !strings.Contains(notes, "2 replicas") {
		t.Errorf("NOTES.txt = %q", notes)
	}
}

// TestPackageDirDeterministic: the digest of a packaged directory depends
// only on its content, so pushing it again is a no-op.
func TestPackageDirDeterministic(t *testing.T) {
	for _, dir := range []string{simpleNginxDir(t), testChart(t, "podinfo")} {
		a, err := PackageDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		b, err := PackageDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two packagings differ", dir)
		}
		ch, err := loadChart(a)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := helmPackage(dir, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		refCh, err := loadChartFile(ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.Templates) != len(refCh.Templates) || len(ch.Files) != len(refCh.Files) || ch.Metadata.Version != refCh.Metadata.Version {
			t.Errorf("%s: PackageDir has %d templates, %d files; helm package %d, %d",
				dir, len(ch.Templates), len(ch.Files), len(refCh.Templates), len(refCh.Files))
		}
	}
}

func TestPackageDirErrors(t *testing.T) {
	if _, err := PackageDir(t.TempDir()); err == nil {
		t.Error("PackageDir of an empty directory succeeded")
	}
	if _, err := PackageDir(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("PackageDir of a missing directory succeeded")
	}
}
