package provision

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// Labels the hub puts on every object it applies to the management
// cluster, naming the ClusterDeployment it came from.
const (
	LabelDeployment          = "tether.dev/cluster-deployment"
	LabelDeploymentNamespace = "tether.dev/cluster-deployment-namespace"
)

// Rendered is a ClusterTemplate's chart rendered for one ClusterDeployment.
type Rendered struct {
	Objects []*unstructured.Unstructured
	// Hash is the digest of the objects, in order.
	Hash string
	// KubernetesVersion is the chart's tether.dev/k8s-version annotation.
	KubernetesVersion string
	// Providers and ProviderContracts are the chart's
	// cluster.x-k8s.io/provider annotation (a comma-separated list) and
	// each provider's cluster.x-k8s.io/<provider> contract, k0rdent's
	// form.
	Providers         []string
	ProviderContracts map[string]string
}

// Render renders a ClusterTemplate chart archive as release name in
// namespace with config (ClusterDeployment.spec.config, a JSON object or
// empty) as values. The chart's values.schema.json checks the values
// first: a value it refuses is an ErrInvalidConfig, a chart that does not
// load or render an ErrRender. Every object is put in namespace and
// labelled with the deployment.
func Render(archive []byte, name, namespace string, config json.RawMessage) (Rendered, error) {
	ch, err := loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return Rendered{}, fmt.Errorf("%w: load chart: %w", ErrRender, err)
	}
	vals := map[string]any{}
	if len(bytes.TrimSpace(config)) > 0 && string(bytes.TrimSpace(config)) != "null" {
		if err := json.Unmarshal(config, &vals); err != nil {
			return Rendered{}, fmt.Errorf("%w: spec.config: not a JSON object: %w", ErrInvalidConfig, err)
		}
	}
	objs, err := renderChart(ch, name, namespace, vals)
	if errors.Is(err, ErrInvalidConfig) {
		return Rendered{}, fmt.Errorf("spec.config: %w", err)
	}
	if err != nil {
		return Rendered{}, err
	}
	h := sha256.New()
	for _, u := range objs {
		u.SetNamespace(namespace)
		labels := u.GetLabels()
		if labels == nil {
			labels = map[string]string{}
		}
		labels[LabelDeployment] = name
		labels[LabelDeploymentNamespace] = namespace
		u.SetLabels(labels)
		b, err := json.Marshal(u.Object)
		if err != nil {
			return Rendered{}, fmt.Errorf("%w: %s %s: %w", ErrRender, u.GetKind(), u.GetName(), err)
		}
		h.Write(b)
	}
	providers, contracts := providerAnnotations(ch)
	return Rendered{Objects: objs, Hash: "sha256:" + hex.EncodeToString(h.Sum(nil)), KubernetesVersion: kubernetesVersion(ch),
		Providers: providers, ProviderContracts: contracts}, nil
}

// providerAnnotations reads the chart's provider annotations.
func providerAnnotations(ch *chart.Chart) ([]string, map[string]string) {
	if ch.Metadata == nil {
		return nil, nil
	}
	var providers []string
	contracts := map[string]string{}
	for _, p := range strings.Split(ch.Metadata.Annotations["cluster.x-k8s.io/provider"], ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		providers = append(providers, p)
		if c := strings.TrimSpace(ch.Metadata.Annotations["cluster.x-k8s.io/"+p]); c != "" {
			contracts[p] = c
		}
	}
	if len(contracts) == 0 {
		contracts = nil
	}
	return providers, contracts
}

// renderChart renders ch as release name in namespace with vals, which
// the chart's values schema must accept.
func renderChart(ch *chart.Chart, name, namespace string, vals map[string]any) ([]*unstructured.Unstructured, error) {
	opts := chartutil.ReleaseOptions{Name: name, Namespace: namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValuesWithSchemaValidation(ch, vals, opts, chartutil.DefaultCapabilities, false)
	if err != nil {
		return nil, fmt.Errorf("%w: values: %s", ErrInvalidConfig, strings.TrimSpace(err.Error()))
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRender, err)
	}
	objs, err := decodeManifests(files)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%w: chart %s renders no objects", ErrRender, ch.Name())
	}
	return objs, nil
}

func kubernetesVersion(ch *chart.Chart) string {
	if ch.Metadata == nil {
		return ""
	}
	return ch.Metadata.Annotations["tether.dev/k8s-version"]
}

// decodeManifests decodes the rendered templates in file order, skipping
// partials and NOTES.txt.
func decodeManifests(files map[string]string) ([]*unstructured.Unstructured, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		base := path.Base(n)
		if strings.HasPrefix(base, "_") || base == "NOTES.txt" || (!strings.HasSuffix(base, ".yaml") && !strings.HasSuffix(base, ".yml")) {
			continue
		}
		names = append(names, n)
	}
	sort.Strings(names)
	var out []*unstructured.Unstructured
	for _, n := range names {
		d := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(files[n]), 4096)
		for {
			var m map[string]any
			if err := d.Decode(&m); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%w: %s: %w", ErrRender, n, err)
			}
			if len(m) == 0 {
				continue
			}
			u := &unstructured.Unstructured{Object: m}
			if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
				return nil, fmt.Errorf("%w: %s: an object without apiVersion, kind or metadata.name", ErrRender, n)
			}
			out = append(out, u)
		}
	}
	return out, nil
}
