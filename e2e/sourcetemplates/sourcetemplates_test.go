// Package sourcetemplates is the end-to-end scenario of ServiceTemplates
// that are not repository charts: plain manifests (spec.resources) and a
// kustomization (spec.kustomize), both from objects in the hub, turned
// into charts by the hub and installed, then removed, by a real agent on a
// real cluster.
package sourcetemplates

import (
	"context"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

const manifests = `apiVersion: v1
kind: ConfigMap
metadata: {name: plain-manifests, namespace: apps}
data:
  config.yaml: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: site-config}
    data: {greeting: "hello {{ not a template }}"}
  sa.yaml: |
    apiVersion: v1
    kind: ServiceAccount
    metadata: {name: site-agent}
---
apiVersion: v1
kind: Secret
metadata: {name: web-kustomization, namespace: apps}
stringData:
  kustomization.yaml: |
    namePrefix: edge-
    commonLabels: {app: web}
    resources: [cm.yaml]
  cm.yaml: |
    apiVersion: v1
    kind: ConfigMap
    metadata: {name: web}
    data: {port: "8080"}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: plain-1.0.0, namespace: apps}
spec:
  version: 1.0.0
  resources:
    deploymentType: Remote
    localSourceRef: {kind: ConfigMap, name: plain-manifests}
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: web-kustomize, namespace: apps}
spec:
  kustomize:
    deploymentType: Remote
    localSourceRef: {kind: Secret, name: web-kustomization}
`

const deployment = `apiVersion: k0rdent.mirantis.com/v1beta1
kind: ClusterDeployment
metadata: {name: edge-src, namespace: apps}
spec:
  template: adopted
  serviceSpec:
    services:
%s`

const bothServices = `      - {template: plain-1.0.0, name: plain, namespace: site}
      - {template: web-kustomize, name: web, namespace: web}
`

func TestResourcesAndKustomizeTemplatesDeployAndAreRemoved(t *testing.T) {
	hub := bins.StartHub(t, "--heartbeat", "2s")
	kube := cluster.Start(t, cluster.Options{Name: "edge-src", NodeCount: 1})
	bins.Start(t, "edge-src", nil, "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", hub.AgentAddr,
		"--kubeconfig", kube.KubeconfigPath, "--max-backoff", "2s", "--health-timeout", "45s",
		"--token", hub.Token(t, "edge-src"))
	apply := func(doc string) {
		t.Helper()
		if out, errOut, code := bins.RunStdin(t, hub.Env, []byte(doc), "tether", "apply", "-f", "-"); code != 0 {
			t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
		}
	}
	apply(manifests)
	apply(fmt.Sprintf(deployment, bothServices))
	hub.WaitServices(t, 5*time.Minute, map[string]string{"edge-src/site/plain": "Deployed", "edge-src/web/web": "Deployed"})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs := kube.Clientset.CoreV1()
	cm, err := cs.ConfigMaps("site").Get(ctx, "site-config", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("resources template: %v", err)
	}
	if got := cm.Data["greeting"]; got != "hello {{ not a template }}" {
		t.Errorf("site-config greeting = %q; the manifest's braces must reach the cluster as written", got)
	}
	if _, err := cs.ServiceAccounts("site").Get(ctx, "site-agent", metav1.GetOptions{}); err != nil {
		t.Errorf("resources template service account: %v", err)
	}
	web, err := cs.ConfigMaps("web").Get(ctx, "edge-web", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("kustomize template: %v", err)
	}
	if web.Labels["app"] != "web" || web.Data["port"] != "8080" {
		t.Errorf("kustomize build not applied as built: labels %v data %v", web.Labels, web.Data)
	}

	// Removing a service uninstalls what its generated chart installed.
	apply(fmt.Sprintf(deployment, "      - {template: web-kustomize, name: web, namespace: web}\n"))
	e2etest.Eventually(t, "plain service's objects removed", 5*time.Minute, func() (bool, string) {
		_, err := cs.ConfigMaps("site").Get(ctx, "site-config", metav1.GetOptions{})
		_, saErr := cs.ServiceAccounts("site").Get(ctx, "site-agent", metav1.GetOptions{})
		return apierrors.IsNotFound(err) && apierrors.IsNotFound(saErr), fmt.Sprint(err, saErr)
	})
	if st := hub.Services(t)["edge-src/web/web"]; st.State != "Deployed" {
		t.Errorf("the kustomize service should stay Deployed: %+v", st)
	}
}
