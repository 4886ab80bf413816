// Package ocicharts is the end-to-end scenario of a chart from an OCI
// registry: a real registry on loopback behind basic auth and TLS with a
// private CA, a Flux HelmRepository of type oci with secretRef and
// certSecretRef, and a ServiceTemplate that deploys on a real cluster
// through a real hub and agent (which gets the chart from the hub by
// digest, never from the registry), then is removed cleanly.
package ocicharts

import (
	"context"
	"encoding/base64"
	"fmt"
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
