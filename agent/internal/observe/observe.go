package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/tetherfleet/tether/agent/internal/engine"
)

// Config configures an Observer. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// RESTConfig reaches the cluster. Required. When its QPS is 0 the
	// observer allows 50 requests a second, bursts of 100 (client-go's 5
	// would make the drift check of a large chart crawl), shared by all
	// its requests.
	RESTConfig *rest.Config
	// HTTPClient carries the requests; nil: one made from RESTConfig
	// (rest.HTTPClientFor). Pass the agent's to share its connections.
	HTTPClient *http.Client
	// Logger. Default: discard.
	Logger *slog.Logger
	// MaxGroupVersions bounds how many group-versions the mapper caches.
	// Default 256.
	MaxGroupVersions int
}

// DefaultConfig returns the defaults; RESTConfig is left nil.
func DefaultConfig() Config {
	return Config{Logger: slog.New(slog.DiscardHandler), MaxGroupVersions: 256}
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.RESTConfig == nil:
		return errors.New("observe config: RESTConfig is required")
	case c.MaxGroupVersions < 0:
		return fmt.Errorf("observe config: MaxGroupVersions %d is negative", c.MaxGroupVersions)
	}
	return nil
}

// Observer answers questions about the objects of a release manifest on
// one cluster: are its workloads ready, do the live objects still match.
// It is safe for concurrent use.
type Observer struct {
	log      *slog.Logger
	dynamic  dynamic.Interface
	metadata metadata.Interface
	mapper   *Mapper
}

// New returns an observer of the cluster cfg.RESTConfig reaches. It does
// not contact the cluster.
func New(cfg Config) (*Observer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := DefaultConfig()
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	if cfg.MaxGroupVersions == 0 {
		cfg.MaxGroupVersions = d.MaxGroupVersions
	}
	rc := rest.CopyConfig(cfg.RESTConfig)
	if rc.RateLimiter == nil {
		qps, burst := rc.QPS, rc.Burst
		if qps == 0 {
			qps, burst = 50, 100
		}
		if qps > 0 {
			// One limiter for every client below, so together they keep
			// to it.
			rc.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(qps, max(burst, 1))
		}
	}
	hc := cfg.HTTPClient
	if hc == nil {
		var err error
		if hc, err = rest.HTTPClientFor(rc); err != nil {
			return nil, fmt.Errorf("observe: HTTP client: %w", err)
		}
	}
	dc, err := dynamic.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("observe: dynamic client: %w", err)
	}
	mc, err := metadata.NewForConfigAndClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("observe: metadata client: %w", err)
	}
	root, err := rootClient(rc, hc)
	if err != nil {
		return nil, fmt.Errorf("observe: discovery client: %w", err)
	}
	return &Observer{log: cfg.Logger, dynamic: dc, metadata: mc, mapper: newMapper(root, cfg.MaxGroupVersions)}, nil
}

// rootClient is a REST client of the API server's root, for discovery
// paths; its serializer decodes only API errors (metav1.Status).
func rootClient(rc *rest.Config, hc *http.Client) (*rest.RESTClient, error) {
	c := rest.CopyConfig(rc)
	c.APIPath, c.GroupVersion = "", nil
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	c.AcceptContentTypes, c.ContentType = "application/json", "application/json"
	return rest.UnversionedRESTClientForConfigAndClient(c, hc)
}

// Mapper returns the observer's kind-to-resource mapper.
func (o *Observer) Mapper() *Mapper { return o.mapper }

// Problem is why one object of a release is not ready.
type Problem struct {
	Object string // "Deployment ns/name", or "release ns/name"
	What   string // "0/2 replicas available"
	Pod    string // "pod ns/x: Pending: Unschedulable: ..." or ""
}

// Message is the problem in one line, suffix appended to What (" after
// 2m0s"), then the Pod's reason.
func (p Problem) Message(suffix string) string {
	s := p.Object + ": " + p.What + suffix
	if p.Pod != "" {
		s += "; " + p.Pod
	}
	return s
}

// Health checks the workloads of manifest once (the release's status is
// the caller's to check): every Deployment, StatefulSet and DaemonSet in
// it must be available and every Job complete. namespace is the
// release's, for objects the manifest leaves without one.
func (o *Observer) Health(ctx context.Context, manifest, namespace string) (engine.Health, error) {
	p, err := o.Check(ctx, manifest, namespace)
	if err != nil {
		return engine.Health{}, err
	}
	if p == nil {
		return engine.Health{Ready: true}, nil
	}
	return engine.Health{Message: p.Message("")}, nil
}

// Check returns the first reason a workload of manifest is not ready, in
// manifest order, or nil when all are.
func (o *Observer) Check(ctx context.Context, manifest, namespace string) (*Problem, error) {
	objs, err := ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	for _, obj := range objs {
		if obj.GVK.Group != "apps" && obj.GVK.Group != "batch" {
			continue
		}
		ns := obj.Namespace
		if ns == "" {
			ns = namespace
		}
		p, err := o.checkWorkload(ctx, obj, ns)
		if err != nil {
			return nil, err
		}
		if p != nil {
			return p, nil
		}
	}
	return nil, nil
}

// Drift compares the live objects with manifest (rules in the package
// doc) and returns a reason per difference; the release's own status is
// the caller's to add. namespace is the release's. f (nil: none) names
// the objects and fields not to compare.
func (o *Observer) Drift(ctx context.Context, manifest, namespace string, f *DriftFilter) (engine.Drift, error) {
	objs, err := ParseManifest(manifest)
	if err != nil {
		return engine.Drift{}, err
	}
	var reasons []string
	for _, obj := range objs {
		rs, err := o.objectDrift(ctx, obj, namespace, f)
		if err != nil {
			return engine.Drift{}, err
		}
		reasons = append(reasons, rs...)
	}
	return engine.Drift{Drifted: len(reasons) > 0, Reasons: reasons}, nil
}
