package cluster_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// inMemoryCluster is a plain (no ClusterClass) workload cluster on CAPD's
// in-memory backend: one kubeadm control plane machine whose VM, node,
// etcd and API server are simulated by CAPD. Written for Tether after
// reading CAPD's in-memory templates; the short start-up durations keep the
// test quick.
const inMemoryCluster = `
apiVersion: v1
kind: Namespace
metadata:
  name: {{NS}}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevCluster
metadata:
  name: {{NAME}}
  namespace: {{NS}}
  # CAPD v1.14.2's in-memory backend writes an annotation into a nil map
  # and panics when the DevCluster has none (ClusterClass-made ones always
  # have some), so give it one.
  annotations:
    tether.dev/e2e: in-memory
spec:
  backend:
    inMemory: {}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevMachineTemplate
metadata:
  name: {{NAME}}-control-plane
  namespace: {{NS}}
spec:
  template:
    spec:
      backend:
        inMemory:
          vm:
            provisioning:
              startupDuration: 2s
          node:
            provisioning:
              startupDuration: 1s
          apiServer:
            provisioning:
              startupDuration: 1s
          etcd:
            provisioning:
              startupDuration: 1s
---
apiVersion: controlplane.cluster.x-k8s.io/v1beta2
kind: KubeadmControlPlane
metadata:
  name: {{NAME}}-control-plane
  namespace: {{NS}}
spec:
  replicas: 1
  version: v1.37.0
  machineTemplate:
    spec:
      infrastructureRef:
        apiGroup: infrastructure.cluster.x-k8s.io
        kind: DevMachineTemplate
        name: {{NAME}}-control-plane
  kubeadmConfigSpec:
    clusterConfiguration:
      apiServer:
        certSANs: [localhost, 127.0.0.1]
---
apiVersion: cluster.x-k8s.io/v1beta2
kind: Cluster
metadata:
  name: {{NAME}}
  namespace: {{NS}}
spec:
  clusterNetwork:
    services:
      cidrBlocks: [10.128.0.0/12]
    pods:
      cidrBlocks: [192.168.0.0/16]
    serviceDomain: cluster.local
  controlPlaneRef:
    apiGroup: controlplane.cluster.x-k8s.io
    kind: KubeadmControlPlane
    name: {{NAME}}-control-plane
  infrastructureRef:
    apiGroup: infrastructure.cluster.x-k8s.io
    kind: DevCluster
    name: {{NAME}}
`

func TestManagementClusterProvisionsInMemoryCluster(t *testing.T) {
	mgmt := cluster.Start(t, cluster.Options{Management: true})
	ctx := t.Context()

	// Webhooks are registered with failurePolicy Fail, so the apply below
	// succeeding also proves every manager serves its webhooks.
	var hooks admissionv1.ValidatingWebhookConfigurationList
	if err := mgmt.Client.List(ctx, &hooks); err != nil {
		t.Fatal(err)
	}
	if len(hooks.Items) != 4 {
		t.Errorf("validating webhook configurations = %d, want one per provider (4)", len(hooks.Items))
	}
	const ns, name = "fleet", "edge-1"
	manifest := strings.NewReplacer("{{NS}}", ns, "{{NAME}}", name).Replace(inMemoryCluster)
	if err := mgmt.Apply(ctx, []byte(manifest)); err != nil {
		t.Fatal(err)
	}

	key := client.ObjectKey{Namespace: ns, Name: name}
	eventually(t, "cluster fleet/edge-1 Provisioned with ControlPlaneAvailable", 4*time.Minute, func(ctx context.Context) (bool, string) {
		var c clusterv1.Cluster
		if err := mgmt.Client.Get(ctx, key, &c); err != nil {
			return false, err.Error()
		}
		cpAvailable := meta.IsStatusConditionTrue(c.Status.Conditions, clusterv1.ClusterControlPlaneAvailableCondition)
		return c.Status.Phase == string(clusterv1.ClusterPhaseProvisioned) && cpAvailable,
			fmt.Sprintf("phase %q, conditions %s", c.Status.Phase, conditionSummary(c.Status.Conditions))
	})

	var secret corev1.Secret
	eventually(t, "secret fleet/edge-1-kubeconfig", time.Minute, func(ctx context.Context) (bool, string) {
		err := mgmt.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name + "-kubeconfig"}, &secret)
		if err != nil {
			return false, err.Error()
		}
		return len(secret.Data["value"]) > 0, "secret has no data.value"
	})

	// The workload cluster's simulated API server answers with that
	// kubeconfig, as an agent installer would use it.
	kc := filepath.Join(t.TempDir(), "edge-1.kubeconfig")
	if err := os.WriteFile(kc, secret.Data["value"], 0o600); err != nil {
		t.Fatal(err)
	}
	var out []byte
	eventually(t, "kubectl get nodes on the workload cluster", time.Minute, func(ctx context.Context) (bool, string) {
		var err error
		// The simulated API server has no table printer for nodes, so
		// ask for name=Ready-status pairs.
		out, err = exec.CommandContext(ctx, "kubectl", "--kubeconfig", kc, "get", "nodes", "--request-timeout=5s",
			"-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`).CombinedOutput()
		return err == nil && strings.Contains(string(out), "=True"), fmt.Sprintf("%v: %s", err, out)
	})
	t.Logf("workload cluster nodes:\n%s", out)
}

func conditionSummary(conds []metav1.Condition) string {
	var parts []string
	for _, c := range conds {
		parts = append(parts, fmt.Sprintf("%s=%s(%s)", c.Type, c.Status, c.Reason))
	}
	return strings.Join(parts, " ")
}
