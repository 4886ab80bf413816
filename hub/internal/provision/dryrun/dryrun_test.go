// Package dryrun proves the real-provider ClusterTemplates in
// bundles/cluster-templates (AWS, Azure, vSphere, OpenStack, each with a
// kubeadm control plane) against those providers' real CRDs: each chart is
// rendered as the hub renders it (provision.Render, Helm SDK, values
// schema) and every object is server-side applied as a dry run with strict
// field validation on a harness API server that has the Cluster API core,
// kubeadm and provider CRDs (from the providers' Go modules, copied by
// e2e/tools/build.sh as provider-crds). No provider controllers or
// webhooks run: that is as far as a machine without cloud accounts goes.
package dryrun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/provision"
)

// providerTemplate is one real-provider chart, the provider-crds folder
// whose CRDs it needs, a ClusterDeployment spec.config that a user of
// that provider would write, and a config its schema must refuse.
type providerTemplate struct {
	chart   string
	crds    string
	config  string
	bad     string
	badWhat string // a word the schema error must name
	kinds   []string
}

var templates = []providerTemplate{
	{
		chart: "aws-kubeadm", crds: "aws",
		config: `{"region": "eu-west-1", "sshKeyName": "ops", "workersNumber": 3,
			"clusterIdentity": {"kind": "AWSClusterStaticIdentity", "name": "aws-prod"},
			"controlPlane": {"instanceType": "m6i.large", "amiID": "ami-0123456789abcdef0", "rootVolumeSize": 40},
			"worker": {"instanceType": "m6i.xlarge"}}`,
		bad:     `{"region": "eu-west-1", "clusterIdentity": {"kind": "AWSClusterStaticIdentity", "name": "aws-prod"}, "controlPlaneNumber": 2}`,
		badWhat: "controlPlaneNumber",
		kinds:   []string{"AWSCluster", "AWSMachineTemplate"},
	},
	{
		chart: "azure-kubeadm", crds: "azure",
		config: `{"location": "westeurope", "subscriptionID": "00000000-0000-0000-0000-000000000001",
			"clusterIdentity": {"name": "azure-prod", "namespace": "fleet"},
			"sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example.com",
			"controlPlane": {"vmSize": "Standard_D4s_v5"}, "worker": {"vmSize": "Standard_D8s_v5", "rootVolumeSize": 128}}`,
		bad:     `{"location": "westeurope", "subscriptionID": "not-a-uuid", "clusterIdentity": {"name": "azure-prod", "namespace": "fleet"}}`,
		badWhat: "subscriptionID",
		kinds:   []string{"AzureCluster", "AzureMachineTemplate"},
	},
	{
		chart: "vsphere-kubeadm", crds: "vsphere",
		config: `{"controlPlaneEndpointIP": "10.0.0.10",
			"clusterIdentity": {"kind": "Secret", "name": "vsphere-prod"},
			"vsphere": {"server": "vcenter.example.com", "thumbprint": "AA:BB:CC", "datacenter": "dc1", "datastore": "ds1",
				"network": "VM Network", "resourcePool": "*/Resources", "folder": "tether"},
			"sshPublicKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example.com",
			"controlPlane": {"template": "ubuntu-2404-kube-v1.34.2", "numCPUs": 4, "memoryMiB": 8192},
			"worker": {"template": "ubuntu-2404-kube-v1.34.2"}}`,
		bad: `{"controlPlaneEndpointIP": "not-an-ip", "clusterIdentity": {"kind": "Secret", "name": "vsphere-prod"},
			"vsphere": {"server": "vcenter.example.com", "datacenter": "dc1", "datastore": "ds1", "network": "VM Network"},
			"controlPlane": {"template": "t"}, "worker": {"template": "t"}}`,
		badWhat: "controlPlaneEndpointIP",
		kinds:   []string{"VSphereCluster", "VSphereMachineTemplate"},
	},
	{
		chart: "openstack-kubeadm", crds: "openstack",
		config: `{"identityRef": {"name": "openstack-prod", "cloudName": "openstack", "region": "RegionOne"},
			"externalNetworkID": "6c90b532-7ba0-418a-a276-5ae55060b5b0", "sshKeyName": "ops",
			"controlPlane": {"flavor": "m1.large", "image": "ubuntu-2404-kube-v1.34.2"},
			"worker": {"flavor": "m1.xlarge", "image": "ubuntu-2404-kube-v1.34.2", "rootVolumeSize": 50}}`,
		bad:     `{"identityRef": {"name": "openstack-prod", "cloudName": "openstack"}, "controlPlane": {"flavor": "m1.large"}, "worker": {"flavor": "m1.large", "image": "x"}}`,
		badWhat: "image",
		kinds:   []string{"OpenStackCluster", "OpenStackMachineTemplate"},
	},
}

// capiCRDs are the capi-manifests folders whose CRDs every template needs.
var capiCRDs = []string{"core", "bootstrap-kubeadm", "controlplane-kubeadm"}

const ns = "fleet"

func chartArchive(t *testing.T, name string) []byte {
	t.Helper()
	archive, err := charts.PackageDir(filepath.Join("..", "..", "..", "..", "bundles", "cluster-templates", name))
	if err != nil {
		t.Fatal(err)
	}
	return archive
}

// TestRealProviderTemplatesDryRun renders each real-provider template with
// its example config and server-side applies every object as a dry run
// against the providers' real CRDs: zero errors, nothing created.
func TestRealProviderTemplatesDryRun(t *testing.T) {
	c, dyn := crdCluster(t)
	for _, tc := range templates {
		t.Run(tc.chart, func(t *testing.T) {
			r, err := provision.Render(chartArchive(t, tc.chart), "edge-"+tc.crds, ns, json.RawMessage(tc.config))
			if err != nil {
				t.Fatalf("render %s with its example config: %v", tc.chart, err)
			}
			if !strings.HasPrefix(r.KubernetesVersion, "v1.") {
				t.Errorf("KubernetesVersion = %q, want the chart's tether.dev/k8s-version annotation", r.KubernetesVersion)
			}
			infra := "infrastructure-" + tc.crds
			if !slices.Contains(r.Providers, infra) || r.ProviderContracts[infra] != "v1beta1" || r.ProviderContracts["control-plane-kubeadm"] != "v1beta2" {
				t.Errorf("providers %v contracts %v, want %s (v1beta1) and the kubeadm providers (v1beta2)", r.Providers, r.ProviderContracts, infra)
			}
			kinds := map[string]bool{}
			for _, u := range r.Objects {
				kinds[u.GetKind()] = true
				if err := dryRunApply(t.Context(), c, dyn, u); err != nil {
					t.Errorf("dry-run %s %s: %v", u.GetKind(), u.GetName(), err)
				}
			}
			for _, k := range append([]string{"Cluster", "KubeadmControlPlane", "KubeadmConfigTemplate", "MachineDeployment"}, tc.kinds...) {
				if !kinds[k] {
					t.Errorf("%s renders no %s (kinds: %v)", tc.chart, k, kinds)
				}
			}
			assertNothingApplied(t, c, r.Objects)
		})
	}
}

// TestDryRunRefusesUnknownFields shows the dry run checks the objects
// against the CRDs' schemas: a field no provider knows, or a value its
// enum refuses, is an error.
func TestDryRunRefusesUnknownFields(t *testing.T) {
	c, dyn := crdCluster(t)
	tc := templates[0]
	r, err := provision.Render(chartArchive(t, tc.chart), "edge-bad", ns, json.RawMessage(tc.config))
	if err != nil {
		t.Fatal(err)
	}
	checked := map[string]bool{}
	for _, u := range r.Objects {
		switch u.GetKind() {
		case "AWSMachineTemplate":
			bad := u.DeepCopy()
			if err := unstructured.SetNestedField(bad.Object, "m6i.large", "spec", "template", "spec", "instanceSize"); err != nil {
				t.Fatal(err)
			}
			err := dryRunApply(t.Context(), c, dyn, bad)
			if err == nil || !strings.Contains(err.Error(), "instanceSize") {
				t.Errorf("dry-run of an AWSMachineTemplate with an unknown field: err %v, want one naming instanceSize", err)
			}
			checked[u.GetKind()] = true
		case "AWSCluster":
			bad := u.DeepCopy()
			if err := unstructured.SetNestedField(bad.Object, "gateway", "spec", "controlPlaneLoadBalancer", "loadBalancerType"); err != nil {
				t.Fatal(err)
			}
			err := dryRunApply(t.Context(), c, dyn, bad)
			if !apierrors.IsInvalid(err) {
				t.Errorf("dry-run of an AWSCluster with loadBalancerType gateway: err %v, want Invalid", err)
			}
			checked[u.GetKind()] = true
		}
	}
	if len(checked) != 2 {
		t.Fatalf("checked %v, want an AWSMachineTemplate and an AWSCluster", checked)
	}
}

// TestRealProviderTemplatesRefuseBadConfig: a value the chart's schema
// refuses is a clear error (ErrInvalidConfig naming the value) before
// anything is rendered, so the hub applies nothing.
func TestRealProviderTemplatesRefuseBadConfig(t *testing.T) {
	for _, tc := range templates {
		t.Run(tc.chart, func(t *testing.T) {
			_, err := provision.Render(chartArchive(t, tc.chart), "edge-"+tc.crds, ns, json.RawMessage(tc.bad))
			if !errors.Is(err, provision.ErrInvalidConfig) {
				t.Fatalf("render with %s: err %v, want ErrInvalidConfig", tc.bad, err)
			}
			if !strings.Contains(err.Error(), tc.badWhat) {
				t.Errorf("error %q does not name %s", err, tc.badWhat)
			}
			// No config at all: the required provider values are missing.
			if _, err := provision.Render(chartArchive(t, tc.chart), "edge-"+tc.crds, ns, nil); !errors.Is(err, provision.ErrInvalidConfig) {
				t.Errorf("render without config: err %v, want ErrInvalidConfig (required values)", err)
			}
		})
	}
}

// shared is one bare harness API server for the package's tests; the
// CRDs go in once (crdsOnce).
var (
	shared   = cluster.Shared{Options: cluster.Options{Name: "dryrun"}}
	crdsOnce sync.Once
	crdsErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Stop()
	os.Exit(code)
}

// crdCluster returns the shared API server with the CAPI core and kubeadm
// CRDs, every provider's CRDs and the namespace installed.
func crdCluster(t *testing.T) (*cluster.Cluster, *dynamic.DynamicClient) {
	t.Helper()
	c := shared.Get(t)
	crdsOnce.Do(func() { crdsErr = installCRDs(c) })
	if crdsErr != nil {
		t.Fatal(crdsErr)
	}
	dyn, err := dynamic.NewForConfig(c.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	return c, dyn
}

func installCRDs(c *cluster.Cluster) error {
	binDir, err := cluster.BinDir("")
	if err != nil {
		return err
	}
	var dirs []string
	for _, d := range capiCRDs {
		dirs = append(dirs, filepath.Join(binDir, "capi-manifests", d, "crd"))
	}
	for _, tc := range templates {
		dirs = append(dirs, filepath.Join(binDir, "provider-crds", tc.crds))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var names []string
	for _, d := range dirs {
		files, err := filepath.Glob(filepath.Join(d, "*.yaml"))
		if err != nil || len(files) == 0 {
			return fmt.Errorf("no CRDs in %s: %v (run `make e2e-bins`: capi-manifests, provider-crds)", d, err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			objs, err := cluster.DecodeObjects(bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("CRD %s: %w", f, err)
			}
			for _, u := range objs {
				if u.GetKind() == "CustomResourceDefinition" {
					names = append(names, u.GetName())
				}
			}
			if err := c.ApplyObjects(ctx, objs...); err != nil {
				return fmt.Errorf("apply %s: %w", f, err)
			}
		}
	}
	for _, name := range names {
		if err := waitEstablished(ctx, c, name); err != nil {
			return err
		}
	}
	return c.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
}

func waitEstablished(ctx context.Context, c *cluster.Cluster, name string) error {
	for {
		var crd apiextensionsv1.CustomResourceDefinition
		err := c.Client.Get(ctx, client.ObjectKey{Name: name}, &crd)
		if err == nil {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CRD %s not Established: %w (last error %v)", name, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// dryRunApply server-side applies u as the hub does (field owner
// tether-hub, forced), as a dry run with strict field validation.
func dryRunApply(ctx context.Context, c *cluster.Cluster, dyn *dynamic.DynamicClient, u *unstructured.Unstructured) error {
	gvk := u.GroupVersionKind()
	m, err := c.Client.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("no resource for %s: %w", gvk, err)
	}
	body, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = dyn.Resource(m.Resource).Namespace(u.GetNamespace()).Patch(ctx, u.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		DryRun:          []string{metav1.DryRunAll},
		FieldManager:    "tether-hub",
		Force:           &force,
		FieldValidation: "Strict",
	})
	return err
}

// assertNothingApplied checks that the dry run created none of objs.
func assertNothingApplied(t *testing.T, c *cluster.Cluster, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, u := range objs {
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(u.GroupVersionKind())
		err := c.Client.Get(t.Context(), client.ObjectKeyFromObject(u), got)
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s %s after the dry run: err %v, want NotFound", u.GetKind(), u.GetName(), err)
		}
	}
}
