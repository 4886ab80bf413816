package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Simulated resource metrics (Options.ResourceMetrics).
//
// kwok serves a kubelet's /metrics/resource for each node at
// /metrics/nodes/NAME/metrics/resource when a Metric object says so, with
// usage from ClusterResourceUsage. The API server reaches a node's kubelet
// at its InternalIP and daemonEndpoints port over HTTPS, and refuses to
// proxy to loopback, so with this option kwok listens with TLS on a
// non-loopback address of this machine, gives every node that address and
// port, and each node carries metrics.k8s.io/resource-metrics-path (kwok's
// convention) naming its path. Clients then GET
// /api/v1/nodes/NAME/proxy/metrics/nodes/NAME/metrics/resource.

// AnnotationResourceMetricsPath names a simulated node's resource metrics
// path under its kubelet endpoint.
const AnnotationResourceMetricsPath = "metrics.k8s.io/resource-metrics-path"

// Annotations of a pod that set its simulated usage (per container), as
// quantities: "250m", "64Mi".
const (
	AnnotationUsageCPU    = "kwok.x-k8s.io/usage-cpu"
	AnnotationUsageMemory = "kwok.x-k8s.io/usage-memory"
)

var kwokGroup = "kwok.x-k8s.io"

// proxyableIP is an IPv4 address of this machine the API server proxies
// to: up, not loopback, not link-local.
func proxyableIP() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok || n.IP.To4() == nil || n.IP.IsLoopback() || n.IP.IsLinkLocalUnicast() {
			continue
		}
		return n.IP.String(), nil
	}
	return "", errors.New("no non-loopback IPv4 address on this machine for kwok's simulated kubelets")
}

func (c *Cluster) kubeletAddressTypes() string {
	if c.kwokIP != "" {
		return "InternalIP"
	}
	return "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"
}

// kwokServing returns kwok's serving flags for a port and its health URL
// and client: plain HTTP on loopback by default; with ResourceMetrics,
// HTTPS on the proxyable address, the Metric CRDs enabled (installed
// here first: kwok watches them from its start).
func (c *Cluster) kwokServing(ctx context.Context) (args func(port int) []string, health func(port int) (string, *http.Client), err error) {
	if c.kwokIP == "" {
		return func(port int) []string { return []string{"--server-address=" + hostPort(port)} },
			func(port int) (string, *http.Client) {
				return "http://" + hostPort(port) + "/healthz", http.DefaultClient
			}, nil
	}
	if err := c.installKwokCRDs(ctx); err != nil {
		return nil, nil, err
	}
	cert, key, err := c.ca.issueServing(filepath.Join(c.Dir, "pki", "kwok"), "kwok", c.kwokIP)
	if err != nil {
		return nil, nil, err
	}
	addr := func(port int) string { return net.JoinHostPort(c.kwokIP, itoa(port)) }
	// The API server does not verify kubelet serving certificates
	// without --kubelet-certificate-authority; nor does this probe.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // test harness probe
	return func(port int) []string {
			return []string{
				"--server-address=" + addr(port),
				"--node-ip=" + c.kwokIP,
				"--node-port=" + itoa(port),
				"--tls-cert-file=" + cert,
				"--tls-private-key-file=" + key,
				"--enable-crds=Metric,ClusterResourceUsage",
			}
		}, func(port int) (string, *http.Client) {
			return "https://" + addr(port) + "/healthz", hc
		}, nil
}

// installKwokCRDs installs the Metric and ClusterResourceUsage kinds
// (schema left open: kwok validates what it reads) and waits until served.
func (c *Cluster) installKwokCRDs(ctx context.Context) error {
	open := true
	for _, k := range []struct{ kind, plural string }{{"Metric", "metrics"}, {"ClusterResourceUsage", "clusterresourceusages"}} {
		crd := &apiextensionsv1.CustomResourceDefinition{
			ObjectMeta: metav1.ObjectMeta{Name: k.plural + "." + kwokGroup},
			Spec: apiextensionsv1.CustomResourceDefinitionSpec{
				Group: kwokGroup,
				Names: apiextensionsv1.CustomResourceDefinitionNames{Kind: k.kind, ListKind: k.kind + "List", Plural: k.plural, Singular: lower(k.kind)},
				Scope: apiextensionsv1.ClusterScoped,
				Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{
					Name: "v1alpha1", Served: true, Storage: true,
					Subresources: &apiextensionsv1.CustomResourceSubresources{Status: &apiextensionsv1.CustomResourceSubresourceStatus{}},
					Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{
						Type: "object", XPreserveUnknownFields: &open,
					}},
				}},
			},
		}
		if err := c.Client.Create(ctx, crd); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("install CRD %s: %w", crd.Name, err)
		}
		gvk := schema.GroupVersionKind{Group: kwokGroup, Version: "v1alpha1", Kind: k.kind + "List"}
		err := waitFor(ctx, "CRD "+crd.Name+" served", c.procByName("kube-apiserver"), 100*time.Millisecond, func(ctx context.Context) (bool, error) {
			l := &unstructured.UnstructuredList{}
			l.SetGroupVersionKind(gvk)
			return c.Client.List(ctx, l) == nil, nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// applyKwokMetrics creates the Metric that serves every node's resource
// metrics (the kubelet's metric names and labels) and the usage rule.
func (c *Cluster) applyKwokMetrics(ctx context.Context) error {
	ctr := []any{
		map[string]any{"name": "container", "value": "container.name"},
		map[string]any{"name": "namespace", "value": "pod.metadata.namespace"},
		map[string]any{"name": "pod", "value": "pod.metadata.name"},
	}
	metric := map[string]any{
		"apiVersion": kwokGroup + "/v1alpha1", "kind": "Metric",
		"metadata": map[string]any{"name": "tether-resource-metrics"},
		"spec": map[string]any{
			"path": "/metrics/nodes/{nodeName}/metrics/resource",
			"metrics": []any{
				map[string]any{"name": "node_cpu_usage_seconds_total", "dimension": "node", "kind": "counter",
					"help": "Cumulative cpu time consumed by the node in core-seconds", "value": `node.CumulativeUsage("cpu")`},
				map[string]any{"name": "node_memory_working_set_bytes", "dimension": "node", "kind": "gauge",
					"help": "Current working set of the node in bytes", "value": `node.Usage("memory")`},
				map[string]any{"name": "container_cpu_usage_seconds_total", "dimension": "container", "kind": "counter", "labels": ctr,
					"help": "Cumulative cpu time consumed by the container in core-seconds", "value": `pod.CumulativeUsage("cpu", container.name)`},
				map[string]any{"name": "container_memory_working_set_bytes", "dimension": "container", "kind": "gauge", "labels": ctr,
					"help": "Current working set of the container in bytes", "value": `pod.Usage("memory", container.name)`},
			},
		},
	}
	usage := map[string]any{
		"apiVersion": kwokGroup + "/v1alpha1", "kind": "ClusterResourceUsage",
		"metadata": map[string]any{"name": "tether-usage-from-annotations"},
		"spec": map[string]any{"usages": []any{map[string]any{"usage": map[string]any{
			"cpu":    map[string]any{"expression": fmt.Sprintf(`%q in pod.metadata.annotations ? Quantity(pod.metadata.annotations[%q]) : Quantity("1m")`, AnnotationUsageCPU, AnnotationUsageCPU)},
			"memory": map[string]any{"expression": fmt.Sprintf(`%q in pod.metadata.annotations ? Quantity(pod.metadata.annotations[%q]) : Quantity("1Mi")`, AnnotationUsageMemory, AnnotationUsageMemory)},
		}}}},
	}
	for _, obj := range []map[string]any{metric, usage} {
		u := &unstructured.Unstructured{Object: obj}
		if err := c.Client.Create(ctx, u); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create kwok %s %s: %w", u.GetKind(), u.GetName(), err)
		}
	}
	return nil
}

func lower(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if ch >= 'A' && ch <= 'Z' {
			b[i] = ch + 'a' - 'A'
		}
	}
	return string(b)
}
