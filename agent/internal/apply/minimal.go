package apply

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"helm.sh/helm/v3/pkg/kube"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/kubernetes"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// ErrNoServerVersion: the API server serves no /version and the engine
// found no Node whose kubelet version it could assume instead.
var ErrNoServerVersion = errors.New("no Kubernetes version for the cluster")

// apiServer answers what Helm asks of an API server before it writes,
// also of minimal ones. CAPD's in-memory backend (the workload clusters
// of Cluster API's in-memory provider) serves discovery, CRUD and watches
// but neither /version nor OpenAPI. Helm asks /version before every
// operation (IsReachable) and for the chart's .Capabilities, and
// downloads OpenAPI to validate what it creates. So:
//
//   - /version answering 404 (and only that: any other failure, a
//     refused connection or a 403, is the cluster's answer and stays the
//     error) falls back to the highest status.nodeInfo.kubeletVersion of
//     the cluster's Nodes. Kubernetes' skew policy keeps every kubelet at
//     or below the API server's version, so the highest one is the
//     closest the cluster can say without /version, and never newer than
//     the server (a chart gating an API on the version does not pick one
//     the server is too old for). No Nodes with a version: a clear error.
//   - OpenAPI v3 and v2 both answering 404: Helm's client-side schema
//     validation is skipped (the server has no schema to validate
//     against; it would fail every create with "failed to download
//     openapi").
//
// Each assumption is logged once (again when the assumed version
// changes). A conformant API server sees one extra GET of /openapi/v3,
// once per engine, and nothing else changes.
type apiServer struct {
	log   *slog.Logger
	disc  discovery.DiscoveryInterface
	nodes kubernetes.Interface

	mu      sync.Mutex
	assumed string // the version last assumed from Nodes (and logged)
	openAPI int    // 0 unknown, 1 served, -1 not served
	timeout time.Duration
}

func newAPIServer(log *slog.Logger, disc discovery.DiscoveryInterface, nodes kubernetes.Interface) *apiServer {
	return &apiServer{log: log, disc: disc, nodes: nodes, timeout: 30 * time.Second}
}

// ServerVersion is the API server's /version, or, when it serves none,
// the version assumed from its Nodes.
func (s *apiServer) ServerVersion() (*version.Info, error) {
	v, err := s.disc.ServerVersion()
	if err == nil || !apierrors.IsNotFound(err) {
		return v, err
	}
	return s.versionFromNodes(err)
}

func (s *apiServer) versionFromNodes(versionErr error) (*version.Info, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	nodes, err := s.nodes.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("%w: the API server serves no /version (%v), and listing its Nodes to assume one failed: %w",
			ErrNoServerVersion, versionErr, err)
	}
	var best *utilversion.Version
	var bestRaw, bestNode string
	for _, n := range nodes.Items {
		raw := n.Status.NodeInfo.KubeletVersion
		v, err := utilversion.ParseGeneric(raw)
		if err != nil {
			continue
		}
		if best == nil || v.GreaterThan(best) {
			best, bestRaw, bestNode = v, raw, n.Name
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: the API server serves no /version (%v), and none of its %d Nodes has a kubelet version to assume one from",
			ErrNoServerVersion, versionErr, len(nodes.Items))
	}
	s.mu.Lock()
	if s.assumed != bestRaw {
		s.assumed = bestRaw
		s.log.Warn("the API server serves no /version; assuming the highest kubelet version of its Nodes",
			"version", bestRaw, "node", bestNode, "nodes", len(nodes.Items))
	}
	s.mu.Unlock()
	return &version.Info{
		Major:      fmt.Sprint(best.Major()),
		Minor:      fmt.Sprint(best.Minor()),
		GitVersion: bestRaw,
	}, nil
}

// validate says whether Helm should validate objects against the API
// server's OpenAPI schema: false only when it serves neither OpenAPI v3
// nor v2 (both 404). Other errors say true and leave them to Helm. A
// definite answer is kept for the engine's life.
func (s *apiServer) validate() bool {
	s.mu.Lock()
	known := s.openAPI
	s.mu.Unlock()
	if known != 0 {
		return known > 0
	}
	_, err := s.disc.OpenAPIV3().Paths()
	if err != nil && apierrors.IsNotFound(err) {
		_, err = s.disc.OpenAPISchema()
		if err != nil && apierrors.IsNotFound(err) {
			s.mu.Lock()
			if s.openAPI == 0 {
				s.log.Warn("the API server serves no OpenAPI (v3 nor v2); Helm installs without client-side schema validation")
			}
			s.openAPI = -1
			s.mu.Unlock()
			return false
		}
	}
	if err == nil {
		s.mu.Lock()
		s.openAPI = 1
		s.mu.Unlock()
	}
	return true
}

// versionedDiscovery is the discovery client Helm gets: the shared cached
// one, with ServerVersion from apiServer (the chart's .Capabilities).
type versionedDiscovery struct {
	discovery.CachedDiscoveryInterface
	server *apiServer
}

func (d versionedDiscovery) ServerVersion() (*version.Info, error) { return d.server.ServerVersion() }

// kubeClient is Helm's kube.Client with the reachability check and
// schema validation of apiServer; every other method is Helm's.
type kubeClient struct {
	*kube.Client
	server *apiServer
}

// IsReachable implements kube.Interface: Helm's check is a GET of
// /version.
func (c *kubeClient) IsReachable() error {
	if _, err := c.server.ServerVersion(); err != nil {
		return fmt.Errorf("kubernetes cluster unreachable: %w", err)
	}
	return nil
}

// Build implements kube.Interface, validating only where the API server
// has a schema to validate against.
func (c *kubeClient) Build(r io.Reader, validate bool) (kube.ResourceList, error) {
	return c.Client.Build(r, validate && c.server.validate())
}

// unconditionalSecrets is the Secrets client of Helm's release storage.
// Helm updates a release Secret without a resourceVersion (it writes a
// new object from the release): an unconditional update, which
// conformant API servers allow for Secrets and CAPD's in-memory one
// refuses as a conflict. Helm logs that and goes on, so the release
// stays pending-install in storage though its objects are created. An
// update without a resourceVersion that gets a conflict is therefore
// made once more with the Secret's current resourceVersion: what the API
// server does for an unconditional update. The engine holds the
// release's lock meanwhile, so this agent has no other writer to race.
type unconditionalSecrets struct {
	corev1client.SecretInterface
}

func (s unconditionalSecrets) Update(ctx context.Context, secret *corev1.Secret, opts metav1.UpdateOptions) (*corev1.Secret, error) {
	out, err := s.SecretInterface.Update(ctx, secret, opts)
	if err == nil || secret.ResourceVersion != "" || !apierrors.IsConflict(err) {
		return out, err
	}
	cur, getErr := s.Get(ctx, secret.Name, metav1.GetOptions{})
	if getErr != nil {
		return nil, fmt.Errorf("%w (and reading its resourceVersion to update it unconditionally: %v)", err, getErr)
	}
	retry := secret.DeepCopy()
	retry.ResourceVersion = cur.ResourceVersion
	return s.SecretInterface.Update(ctx, retry, opts)
}
