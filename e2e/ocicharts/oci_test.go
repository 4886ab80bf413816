// Package ocicharts is the end-to-end scenario of charts the hub gets
// from sources: a real registry on loopback behind basic auth and TLS
// with a private CA, reached through a Flux HelmRepository of type oci
// (secretRef, certSecretRef) or a Flux OCIRepository as a template's
// chartRef, and a chart directory in a git repository as a chartSource;
// each ServiceTemplate deploys on a real cluster through a real hub and
// agent (which gets the chart from the hub by digest, never from the
// registry or the git server), then is removed cleanly.
package ocicharts

import (
	"context"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/e2e/ociregistry"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

const manifests = `
apiVersion: v1
kind: Secret
metadata: {name: registry-creds, namespace: kcm-system}
stringData: {username: %s, password: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: registry-ca, namespace: kcm-system}
data: {ca.crt: %s}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: private-catalog, namespace: kcm-system}
spec:
  type: oci
  url: %s
  interval: 1m
  secretRef: {name: registry-creds}
  certSecretRef: {name: registry-ca}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: podinfo-6-14-1, namespace: kcm-system}
spec:
  helm:
    chartSpec:
      chart: podinfo
      version: 6.14.1
      sourceRef: {kind: HelmRepository, name: private-catalog}
`

const deployment = `
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata: {name: edge-oci, namespace: apps}
spec:
  template: adopted
  serviceSpec:
    services:
      - {template: podinfo-6-14-1, name: podinfo, namespace: web}
`

func TestOCIChartWithCredentialsDeploysAndIsRemoved(t *testing.T) {
	const user, pass = "catalog-reader", "oci-e2e-pass-7731"
	reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass, TLS: true})
	reg.PushChart(t, e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo")), "catalog/charts")

	hub := bins.StartHub(t, "--heartbeat", "2s")
	kube := cluster.Start(t, cluster.Options{Name: "edge-oci", NodeCount: 1})
	bins.Start(t, "edge-oci", nil, "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", hub.AgentAddr,
		"--kubeconfig", kube.KubeconfigPath, "--max-backoff", "2s", "--health-timeout", "45s",
		"--token", hub.Token(t, "edge-oci"))

	run := func(stdin string, args ...string) (string, string) {
		t.Helper()
		out, errOut, code := bins.RunStdin(t, hub.Env, []byte(stdin), args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s%s", args, code, out, errOut)
		}
		return out, errOut
	}
	_, warn := run(fmt.Sprintf(manifests, user, pass, base64.StdEncoding.EncodeToString(reg.CAPEM), reg.URL("catalog/charts")), "tether", "apply", "-f", "-")
	if strings.Contains(warn, "secretRef") || strings.Contains(warn, "certSecretRef") {
		t.Errorf("apply warned about fields that work:\n%s", warn)
	}
	run(deployment, "tether", "apply", "-f", "-")

	hub.WaitServices(t, 5*time.Minute, map[string]string{"edge-oci/web/podinfo": "Deployed"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := kube.Clientset.AppsV1().Deployments("web").Get(ctx, "podinfo", metav1.GetOptions{}); err != nil {
		t.Fatalf("podinfo deployment: %v", err)
	}
	// The template's status and the hub's output never show the password.
	out, _ := run("", "tether", "get", "servicetemplates", "-A", "-o", "yaml")
	if strings.Contains(out, pass) {
		t.Errorf("tether get shows the password:\n%s", out)
	}

	run(deployment, "tether", "delete", "-f", "-")
	e2etest.Eventually(t, "podinfo uninstalled", 3*time.Minute, func() (bool, string) {
		_, err := kube.Clientset.AppsV1().Deployments("web").Get(ctx, "podinfo", metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
}

// chartRefManifests: the same chart as a k0rdent v1beta1 ServiceTemplate
// whose chartRef is a Flux OCIRepository (a docker config Secret for the
// login, the registry's CA), and one whose chartSource is the chart
// directory in a git repository.
const chartRefManifests = `
apiVersion: v1
kind: Secret
metadata: {name: registry-login, namespace: kcm-system}
type: kubernetes.io/dockerconfigjson
stringData: {.dockerconfigjson: '%s'}
---
apiVersion: v1
kind: Secret
metadata: {name: registry-ca, namespace: kcm-system}
data: {ca.crt: %s}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {name: podinfo, namespace: kcm-system}
spec:
  url: %s
  interval: 1m
  ref: {semver: ">=6.0.0 <7.0.0"}
  secretRef: {name: registry-login}
  certSecretRef: {name: registry-ca}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: podinfo-oci, namespace: kcm-system}
spec:
  helm:
    chartRef: {kind: OCIRepository, name: podinfo}
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: charts, namespace: kcm-system}
spec: {url: %s, interval: 1m, ref: {branch: main}}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: podinfo-git, namespace: kcm-system}
spec:
  helm:
    chartSource:
      localSourceRef: {kind: GitRepository, name: charts}
      path: charts/podinfo
`

const chartRefDeployment = `
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata: {name: edge-ref, namespace: apps}
spec:
  template: adopted
  serviceSpec:
    services:
      - {template: podinfo-oci, name: podinfo-oci, namespace: oci}
      - {template: podinfo-git, name: podinfo-git, namespace: git}
`

// TestChartRefAndChartSourceDeployAndAreRemoved: a chart pulled by the
// hub through a Flux OCIRepository (registry behind basic auth and a
// private CA) and one packaged by the hub from a git repository deploy
// on a real cluster through a real agent, which gets both from the hub
// by digest, and are removed cleanly.
func TestChartRefAndChartSourceDeployAndAreRemoved(t *testing.T) {
	const user, pass = "catalog-reader", "oci-e2e-pass-4417"
	reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass, TLS: true})
	podinfo := e2etest.SharedChart(t, "podinfo")
	reg.PushChart(t, e2etest.PackageChart(t, podinfo), "catalog/charts")
	g := e2etest.NewGitServer(t, "", "")
	files := map[string]string{}
	err := filepath.WalkDir(podinfo, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(podinfo, p)
		files["charts/podinfo/"+filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	g.Commit(files)

	hub := bins.StartHub(t, "--heartbeat", "2s")
	kube := cluster.Start(t, cluster.Options{Name: "edge-ref", NodeCount: 1})
	bins.Start(t, "edge-ref", nil, "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", hub.AgentAddr,
		"--kubeconfig", kube.KubeconfigPath, "--max-backoff", "2s", "--health-timeout", "45s",
		"--token", hub.Token(t, "edge-ref"))
	run := func(stdin string, args ...string) (string, string) {
		t.Helper()
		out, errOut, code := bins.RunStdin(t, hub.Env, []byte(stdin), args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s%s", args, code, out, errOut)
		}
		return out, errOut
	}
	login := fmt.Sprintf(`{"auths": {%q: {"username": %q, "password": %q}}}`, reg.Host, user, pass)
	_, warn := run(fmt.Sprintf(chartRefManifests, login, base64.StdEncoding.EncodeToString(reg.CAPEM), reg.URL("catalog/charts/podinfo"), g.URL), "tether", "apply", "-f", "-")
	if strings.Contains(warn, "Warning") {
		t.Errorf("apply warned about fields that work:\n%s", warn)
	}
	run(chartRefDeployment, "tether", "apply", "-f", "-")

	hub.WaitServices(t, 5*time.Minute, map[string]string{"edge-ref/oci/podinfo-oci": "Deployed", "edge-ref/git/podinfo-git": "Deployed"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, ns := range []string{"oci", "git"} {
		if _, err := kube.Clientset.AppsV1().Deployments(ns).Get(ctx, "podinfo-"+ns, metav1.GetOptions{}); err != nil {
			t.Errorf("podinfo deployment in %s: %v", ns, err)
		}
	}
	if out, _ := run("", "tether", "get", "servicetemplates", "-A", "-o", "yaml"); strings.Contains(out, pass) {
		t.Errorf("tether get shows the password:\n%s", out)
	}

	run(chartRefDeployment, "tether", "delete", "-f", "-")
	e2etest.Eventually(t, "both podinfos uninstalled", 3*time.Minute, func() (bool, string) {
		_, errOCI := kube.Clientset.AppsV1().Deployments("oci").Get(ctx, "podinfo-oci", metav1.GetOptions{})
		_, errGit := kube.Clientset.AppsV1().Deployments("git").Get(ctx, "podinfo-git", metav1.GetOptions{})
		return apierrors.IsNotFound(errOCI) && apierrors.IsNotFound(errGit), fmt.Sprint(errOCI, errGit)
	})
}
