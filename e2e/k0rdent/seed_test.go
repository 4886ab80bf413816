// Package k0rdent is the end-to-end scenario of k0rdent manifests applied
// unchanged: the seed article's example exactly as written, with the Flux
// HelmRepository it names, deploys nginx-web on a real cluster through a
// real hub and agent.
package k0rdent

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

var bins *e2etest.Bins

func TestMain(m *testing.M) { e2etest.Main(m, &bins) }

func TestSeedExampleDeploysAsWritten(t *testing.T) {
	root := e2etest.RepoRoot(t)
	seed, err := os.ReadFile(filepath.Join(root, "deploy", "demo", "seed-k0rdent.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if orig, err := os.ReadFile(filepath.Join(root, "..", "shared", "seed", "example.yaml")); err == nil && !bytes.Equal(orig, seed) {
		t.Fatal("deploy/demo/seed-k0rdent.yaml is not the seed's text as written")
	}
	repoDoc, err := os.ReadFile(filepath.Join(root, "deploy", "demo", "k0rdent-public-charts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	repoURL := e2etest.HelmRepo(t, filepath.Join(root, "bundles", "services", "simple-nginx"))
	repoDoc = bytes.ReplaceAll(repoDoc, []byte("${CHARTS_URL}"), []byte(repoURL))

	hub := bins.StartHub(t, "--heartbeat", "2s")
	// The seed's ClusterDeployment is mon-cluster-web: an agent enrolled
	// under that name runs on a real cluster.
	kube := cluster.Start(t, cluster.Options{Name: "mon-cluster-web", NodeCount: 2})
	bins.Start(t, "mon-cluster-web", nil, "tether-agent", "run", "--data-dir", t.TempDir(), "--hub", hub.AgentAddr,
		"--kubeconfig", kube.KubeconfigPath, "--max-backoff", "2s", "--health-timeout", "45s",
		"--token", hub.Token(t, "mon-cluster-web"))

	for _, doc := range [][]byte{repoDoc, seed} {
		out, errOut, code := bins.RunStdin(t, hub.Env, doc, "tether", "apply", "-f", "-")
		if code != 0 {
			t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
		}
	}

	hub.WaitServices(t, 5*time.Minute, map[string]string{"mon-cluster-web/applications-web/nginx-web": "Deployed"})
	// The seed names k0rdent's AWS template, which this hub does not hold
	// (and it has no management cluster): the ClusterDeployment says so in
	// its conditions, and its services still go to the enrolled cluster of
	// that name.
	cd := bins.MustRun(t, hub.Env, "tether", "get", "clusterdeployment", "mon-cluster-web", "-n", "mon-organisation", "-o", "json")
	if !strings.Contains(cd, "aws-standalone-cp-0-1-0") || !(strings.Contains(cd, "TemplateNotFound") || strings.Contains(cd, "NoManagementCluster")) {
		t.Errorf("the seed's ClusterDeployment does not say its template cannot be provisioned here:\n%s", cd)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	pods, err := kube.Clientset.CoreV1().Pods("applications-web").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	running := 0
	for _, p := range pods.Items {
		if p.Status.Phase == "Running" {
			running++
		}
	}
	if running < 1 {
		t.Fatalf("nginx-web pods Running = %d of %d", running, len(pods.Items))
	}

	// Sveltos-style values: .Cluster is a CAPI Cluster-shaped object whose
	// controlPlaneEndpoint comes from the API server the agent reported.
	mcs := `apiVersion: k0rdent.mirantis.com/v1beta1
kind: MultiClusterService
metadata: {name: templated}
spec:
  clusterSelector: {}
  serviceSpec:
    services:
      - template: simple-nginx-template-1.0.0
        name: templated
        namespace: templated
        values: |
          podAnnotations:
            cluster-name: "{{ .Cluster.metadata.name }}"
            api-host: "{{ .Cluster.spec.controlPlaneEndpoint.host }}"
            api-port: "{{ .Cluster.spec.controlPlaneEndpoint.port }}"
            short: "{{ .Cluster.metadata.name | trunc 3 | upper }}"
`
	if out, errOut, code := bins.RunStdin(t, hub.Env, []byte(mcs), "tether", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply MultiClusterService: exit %d: %s%s", code, out, errOut)
	}
	server, err := url.Parse(kube.Server)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"cluster-name": "mon-cluster-web", "api-host": server.Hostname(), "api-port": server.Port(), "short": "MON"}
	e2etest.Eventually(t, "templated values rendered on the cluster", 5*time.Minute, func() (bool, string) {
		ds, err := kube.Clientset.AppsV1().Deployments("templated").List(ctx, metav1.ListOptions{})
		if err != nil || len(ds.Items) != 1 {
			return false, fmt.Sprint(len(ds.Items), err)
		}
		got := ds.Items[0].Spec.Template.Annotations
		for k, v := range want {
			if got[k] != v {
				return false, fmt.Sprintf("annotations %v; want %v", got, want)
			}
		}
		return true, ""
	})
}
