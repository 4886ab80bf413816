package objects

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// API versions.
const (
	// APIVersion is the group/version every tether kind is stored under.
	APIVersion = "tether.dev/v1alpha1"
	// CoreAPIVersion is the version of ConfigMap and Secret.
	CoreAPIVersion = "v1"
)

// Kinds.
const (
	KindHelmRepository      = "HelmRepository"
	KindServiceTemplate     = "ServiceTemplate"
	KindClusterDeployment   = "ClusterDeployment"
	KindMultiClusterService = "MultiClusterService"
	KindConfigMap           = "ConfigMap"
	KindSecret              = "Secret"
)

// Well-known names.
const (
	// DefaultNamespace is the namespace of objects that name none.
	DefaultNamespace = "default"
	// SystemNamespace is Tether's own system namespace; it is the first of
	// DefaultSystemNamespaces.
	SystemNamespace = "tether-system"
	// LocalRepository is the built-in HelmRepository of charts pushed with
	// `tether chart push`; it needs no object.
	LocalRepository = "tether-local"
	// TemplateAdopted in ClusterDeployment.spec.template binds the object to
	// the enrolled fleet cluster of the same name.
	TemplateAdopted = "adopted"
	// DefaultPriority is a serviceSpec's priority when it names none.
	DefaultPriority = 100
	// MinPriority and MaxPriority bound serviceSpec.priority (as k0rdent).
	MinPriority = 1
	MaxPriority = 2147483646
)

// DefaultSystemNamespaces returns the namespaces whose ServiceTemplates
// every namespace may use unless the hub is configured otherwise: a
// serviceSpec's template is looked up in the object's own namespace, then
// in these, in order (as k0rdent's system templates). kcm-system and
// k0rdent-system are where k0rdent keeps them, so its manifests work as
// written.
func DefaultSystemNamespaces() []string {
	return []string{SystemNamespace, "kcm-system", "k0rdent-system"}
}

// Object is any API object: a pointer to a struct that embeds Header, of a
// kind registered in a Registry (DefaultKinds has HelmRepository,
// ServiceTemplate, ClusterDeployment, MultiClusterService, ConfigMap and
// Secret). What the hub does with an object is in its kind's KindDef.
type Object interface {
	// GetHeader returns the object's apiVersion, kind and metadata, for
	// reading and writing.
	GetHeader() *Header
}

// Header is the part every object has.
type Header struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
}

// GetHeader implements Object.
func (h *Header) GetHeader() *Header { return h }

// Key returns "Kind ns/name", the form errors use ("Kind name" for an
// object of a cluster-scoped kind).
func (h *Header) Key() string {
	return h.Kind + " " + h.nsName()
}

func (h *Header) nsName() string {
	if h.Metadata.Namespace == "" {
		return h.Metadata.Name
	}
	return h.Metadata.Namespace + "/" + h.Metadata.Name
}

// Metadata is the object metadata. Generation, ResourceVersion, UID and
// CreationTimestamp are set by the hub; values in applied input are ignored.
type Metadata struct {
	Name              string            `json:"name"`
	Namespace         string            `json:"namespace,omitempty"`
	Labels            map[string]string `json:"labels,omitempty"`
	Annotations       map[string]string `json:"annotations,omitempty"`
	Generation        int64             `json:"generation,omitempty"`
	ResourceVersion   Revision          `json:"resourceVersion,omitempty"`
	CreationTimestamp *time.Time        `json:"creationTimestamp,omitempty"`
	UID               string            `json:"uid,omitempty"`
	// CreateRevision is the store revision of the object's creation; it
	// breaks priority ties (older wins). Filled in when read from the store.
	CreateRevision uint64 `json:"-"`
}

// Revision is a store revision. In JSON it reads a number or a decimal
// string (Kubernetes writes resourceVersion as a string) and writes a
// string, so manifests from `kubectl get -o yaml` decode.
type Revision uint64

// MarshalJSON implements json.Marshaler.
func (r Revision) MarshalJSON() ([]byte, error) {
	return []byte(`"` + strconv.FormatUint(uint64(r), 10) + `"`), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (r *Revision) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
	}
	if s == "" || s == "null" {
		*r = 0
		return nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return fmt.Errorf("resourceVersion %q is not a non-negative integer", s)
	}
	*r = Revision(n)
	return nil
}

// Condition is a status condition, as in Kubernetes.
type Condition struct {
	Type               string     `json:"type"`
	Status             string     `json:"status"` // True, False, Unknown
	Reason             string     `json:"reason,omitempty"`
	Message            string     `json:"message,omitempty"`
	LastTransitionTime *time.Time `json:"lastTransitionTime,omitempty"`
}

// ---- HelmRepository ----

// HelmRepository is a chart source.
type HelmRepository struct {
	Header `json:",inline"`
	Spec   HelmRepositorySpec   `json:"spec"`
	Status HelmRepositoryStatus `json:"status,omitzero"`
}

// HelmRepositorySpec says where charts come from. Its fields are Flux's
// HelmRepository (source.toolkit.fluxcd.io/v1), as k0rdent uses it, plus
// Tether's insecureSkipTLSVerify.
type HelmRepositorySpec struct {
	// URL is http(s):// for an index.yaml repository, oci:// for OCI.
	URL string `json:"url"`
	// Type is "default" (index.yaml) or "oci"; defaulted from the URL.
	Type                  string `json:"type,omitempty"`
	InsecureSkipTLSVerify bool   `json:"insecureSkipTLSVerify,omitempty"`
	// Interval is how often the index is fetched again while a template's
	// chart is not resolved yet (a resolved chart is pinned by digest).
	Interval Duration `json:"interval,omitempty"`
	// Timeout bounds one index or chart download.
	Timeout Duration `json:"timeout,omitempty"`
	// Insecure allows plain http for an OCI registry (Flux's field).
	Insecure bool `json:"insecure,omitempty"`
	// SecretRef names a Secret with username/password for the repository.
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// CertSecretRef names a Secret with ca.crt (and tls.crt/tls.key).
	CertSecretRef *LocalObjectReference `json:"certSecretRef,omitempty"`
	// PassCredentials sends SecretRef's credentials to chart URLs on other
	// hosts too.
	PassCredentials bool `json:"passCredentials,omitempty"`
	// Provider is Flux's OCI auth provider: generic, aws, azure or gcp.
	Provider string `json:"provider,omitempty"`
	// Suspend stops fetching from the repository.
	Suspend bool `json:"suspend,omitempty"`
	// AccessFrom is Flux's cross-namespace access list; kept, unused.
	AccessFrom json.RawMessage `json:"accessFrom,omitempty"`
}

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	Name string `json:"name"`
}

// HelmRepositoryStatus is written by the hub.
type HelmRepositoryStatus struct {
	Conditions []Condition `json:"conditions,omitempty"`
	// Warnings lists accepted fields that have no effect in Tether yet.
	Warnings []string `json:"warnings,omitempty"`
}

// Duration is a Go/Kubernetes duration string such as "10m" or "1h30m".
type Duration string

// Std returns d as a time.Duration; an empty or invalid Duration is 0
// (validation refuses invalid ones).
func (d Duration) Std() time.Duration {
	v, err := time.ParseDuration(string(d))
	if err != nil {
		return 0
	}
	return v
}

// ---- ServiceTemplate ----

// ServiceTemplate names one chart version from a HelmRepository.
type ServiceTemplate struct {
	Header `json:",inline"`
	Spec   ServiceTemplateSpec   `json:"spec"`
	Status ServiceTemplateStatus `json:"status,omitzero"`
}

// ServiceTemplateSpec wraps the chart reference (k0rdent shape): one of
// helm (chartSpec, chartRef or chartSource), kustomize or resources.
type ServiceTemplateSpec struct {
	// DisplayName and Description are for people (the console shows
	// them). k0rdent's schema has neither and prunes them; Tether keeps
	// them.
	DisplayName string   `json:"displayName,omitempty"`
	Description string   `json:"description,omitempty"`
	Helm        HelmSpec `json:"helm,omitzero"`
	// HelmOptions are the defaults of the services' helmOptions.
	HelmOptions json.RawMessage `json:"helmOptions,omitempty"`
	// Kustomize and Resources are k0rdent's manifest sources: the hub
	// renders them (kustomize build, or the plain manifests) into a
	// generated chart (docs/design/sources.md).
	Kustomize            *SourceSpec `json:"kustomize,omitempty"`
	Resources            *SourceSpec `json:"resources,omitempty"`
	Version              string      `json:"version,omitempty"`
	KubernetesConstraint string      `json:"k8sConstraint,omitempty"`
}

// SourceSpec is k0rdent's source of a kustomize, resources or
// chartSource template: a local object (ConfigMap, Secret,
// GitRepository, ...) or an embedded remote source, and the path in it.
type SourceSpec struct {
	LocalSourceRef   *LocalSourceRef   `json:"localSourceRef,omitempty"`
	RemoteSourceSpec *RemoteSourceSpec `json:"remoteSourceSpec,omitempty"`
	// DeploymentType is k0rdent's Local or Remote (where Sveltos
	// deploys); Tether's agents always deploy on their own cluster.
	DeploymentType string `json:"deploymentType,omitempty"`
	// Path is the directory in the source (GitRepository) holding the
	// manifests, the kustomization.yaml or the chart.
	Path string `json:"path,omitempty"`
}

// LocalSourceRef names the object holding a template's manifests.
type LocalSourceRef struct {
	Kind      string `json:"kind"` // ConfigMap, Secret, GitRepository, Bucket, OCIRepository
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// RemoteSourceSpec embeds a Flux source's spec in the template.
type RemoteSourceSpec struct {
	Git    *GitRepositorySpec `json:"git,omitempty"`
	Bucket *BucketSpec        `json:"bucket,omitempty"`
	OCI    *OCIRepositorySpec `json:"oci,omitempty"`
}

// Template modes: where a ServiceTemplate's chart comes from.
const (
	// ModeChartSpec: a chart of a HelmRepository, resolved once and
	// pinned by digest.
	ModeChartSpec = "chartSpec"
	// ModeChartRef: the chart of a Flux OCIRepository or HelmChart.
	ModeChartRef = "chartRef"
	// ModeChartSource: a chart directory in a source, packaged by the hub.
	ModeChartSource = "chartSource"
	// ModeKustomize and ModeResources: manifests the hub renders into a
	// generated chart.
	ModeKustomize = "kustomize"
	ModeResources = "resources"
)

// Mode says where the template's chart comes from (one of the Mode
// constants); "" when the spec names no chart (validation refuses it).
// A spec naming several (which validation refuses too) reports the first
// of chartSpec, chartRef, chartSource, kustomize, resources.
func (s *ServiceTemplateSpec) Mode() string {
	switch {
	case !reflect.ValueOf(s.Helm.ChartSpec).IsZero():
		return ModeChartSpec
	case s.Helm.ChartRef != nil:
		return ModeChartRef
	case s.Helm.ChartSource != nil:
		return ModeChartSource
	case s.Kustomize != nil:
		return ModeKustomize
	case s.Resources != nil:
		return ModeResources
	}
	return ""
}

// Source returns the template's kustomize, resources or chartSource
// source and its field path under spec, or nil if it has none.
func (s *ServiceTemplateSpec) Source() (*SourceSpec, string) {
	switch s.Mode() {
	case ModeKustomize:
		return s.Kustomize, "kustomize"
	case ModeResources:
		return s.Resources, "resources"
	case ModeChartSource:
		return s.Helm.ChartSource, "helm.chartSource"
	}
	return nil, ""
}

// HelmSpec holds the chart reference: exactly one of chartSpec (a chart
// of a HelmRepository), chartRef (the chart of a Flux OCIRepository or
// HelmChart) and chartSource (a chart directory in a source).
type HelmSpec struct {
	ChartSpec   ChartSpec   `json:"chartSpec,omitzero"`
	ChartRef    *ChartRef   `json:"chartRef,omitempty"`
	ChartSource *SourceSpec `json:"chartSource,omitempty"`
}

// ChartRef is Flux helm-controller's CrossNamespaceSourceReference, as a
// k0rdent template's chartRef: an OCIRepository or HelmChart holding
// the chart.
type ChartRef struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind"` // OCIRepository, HelmChart, ExternalArtifact
	Name       string `json:"name"`
	Namespace  string `json:"namespace,omitempty"`
}

// ErrNoChart: a ServiceTemplate that names no chart.
var ErrNoChart = errors.New("no spec.helm (chartSpec, chartRef or chartSource), spec.kustomize or spec.resources")

// HasChart reports whether the template names a chart of a
// HelmRepository (chartSpec), or names nothing (which validation
// refuses).
func (s *ServiceTemplateSpec) HasChart() bool {
	switch s.Mode() {
	case ModeChartSpec:
		return s.Helm.ChartSpec.SourceRef.Kind == KindHelmRepository || s.Helm.ChartSpec.SourceRef.Kind == ""
	case "":
		return true
	}
	return false
}

// Generated reports whether the hub gets the template's chart from a
// source object on every pass (chartRef, chartSource, a chartSpec of a
// GitRepository, kustomize, resources): it is rendered, packaged or
// fetched again when the source changes, and status.observedGeneration
// says which spec it was made for.
func (s *ServiceTemplateSpec) Generated() bool {
	return !s.HasChart()
}

// ChartSpec names a chart: Flux's HelmChartTemplateSpec, as in k0rdent.
type ChartSpec struct {
	Chart     string    `json:"chart"`
	Version   string    `json:"version"`
	SourceRef SourceRef `json:"sourceRef"`
	// Interval is Flux's chart re-check period; Tether pins the resolved
	// chart by digest, so it has no effect (accepted with a warning).
	Interval Duration `json:"interval,omitempty"`
	// ReconcileStrategy, ValuesFiles, IgnoreMissingValuesFiles and Verify
	// are Flux's; accepted with a warning.
	ReconcileStrategy        string           `json:"reconcileStrategy,omitempty"`
	ValuesFiles              []string         `json:"valuesFiles,omitempty"`
	ValuesFile               string           `json:"valuesFile,omitempty"`
	IgnoreMissingValuesFiles bool             `json:"ignoreMissingValuesFiles,omitempty"`
	Verify                   *OCIVerification `json:"verify,omitempty"`
	Suspend                  bool             `json:"suspend,omitempty"`
	AccessFrom               json.RawMessage  `json:"accessFrom,omitempty"`
}

// SourceRef points at the chart's source in the template's namespace:
// a HelmRepository (the chart by name and version), or a GitRepository
// (the chart is the directory at the chart path).
type SourceRef struct {
	// APIVersion is Flux's source apiVersion; accepted, not needed.
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"` // HelmRepository (default), GitRepository, Bucket
	Name       string `json:"name"`
}

// ServiceTemplateStatus is the resolved chart, written by the charts
// package. A template is ready when ChartDigest is set, Valid is true and
// ChartName/ChartVersion match the spec.
type ServiceTemplateStatus struct {
	ChartDigest  string `json:"chartDigest,omitempty"`
	ChartName    string `json:"chartName,omitempty"`
	ChartVersion string `json:"chartVersion,omitempty"`
	Valid        bool   `json:"valid,omitempty"`
	Message      string `json:"message,omitempty"`
	// ObservedGeneration is the metadata.generation a generated chart
	// (spec.kustomize, spec.resources) was rendered from; Source is
	// where its manifests came from (a ConfigMap, a git commit).
	ObservedGeneration int64  `json:"observedGeneration,omitempty"`
	Source             string `json:"source,omitempty"`
	// Warnings lists accepted fields that have no effect in Tether yet.
	Warnings []string `json:"warnings,omitempty"`
}

// Ready reports whether the template's chart is resolved for its current
// spec, and if not, why.
func (t *ServiceTemplate) Ready() (bool, string) {
	st, cs := t.Status, t.Spec.Helm.ChartSpec
	gen := t.Spec.Generated()
	switch {
	case t.Spec.Mode() == "":
		return false, ErrNoChart.Error()
	case gen && st.ObservedGeneration != t.Metadata.Generation:
		if st.Message != "" && st.ChartDigest == "" {
			return false, "chart not generated: " + st.Message
		}
		return false, "chart not generated yet for this generation of the spec"
	case st.ChartDigest == "":
		if st.Message != "" {
			return false, "chart not resolved: " + st.Message
		}
		return false, "chart not resolved yet (no chartDigest)"
	case !st.Valid:
		return false, "chart invalid: " + st.Message
	case gen:
	case st.ChartName != "" && st.ChartName != cs.Chart,
		st.ChartVersion != "" && st.ChartVersion != cs.Version:
		return false, fmt.Sprintf("chart %s %s not resolved yet (status has %s %s)", cs.Chart, cs.Version, st.ChartName, st.ChartVersion)
	}
	return true, ""
}

// ---- ServiceSpec (ClusterDeployment, MultiClusterService) ----

// ServiceSpec lists services to deploy.
type ServiceSpec struct {
	Services []Service `json:"services,omitempty"`
	// Priority decides conflicts between sources that deploy the same
	// namespace/name on one cluster: higher wins. Default 100.
	Priority int32 `json:"priority,omitempty"`
	// StopOnConflict: when this source loses a conflict on a cluster, none
	// of its services are deployed there.
	StopOnConflict bool `json:"stopOnConflict,omitempty"`
	// ContinueOnError: Tether deploys every service on its own, so one that
	// fails never holds the others; true is what it always does.
	ContinueOnError bool `json:"continueOnError,omitempty"`

	// The fields below are k0rdent's (v1beta1); see Warnings for what each
	// does in Tether today.

	// SyncMode is OneTime, Continuous, ContinuousWithDriftDetection (the
	// default) or DryRun; provider.config.syncMode wins (see SyncModeOf).
	SyncMode string `json:"syncMode,omitempty"`
	// Provider selects and configures k0rdent's state management provider.
	Provider *ServiceProvider `json:"provider,omitempty"`
	// TemplateResourceRefs name hub objects values templates read with
	// getResource (see "Values templates").
	TemplateResourceRefs []TemplateResourceRef `json:"templateResourceRefs,omitempty"`
	PolicyRefs           json.RawMessage       `json:"policyRefs,omitempty"`
	DriftIgnore          json.RawMessage       `json:"driftIgnore,omitempty"`
	DriftExclusions      json.RawMessage       `json:"driftExclusions,omitempty"`
	Reload               bool                  `json:"reload,omitempty"`
}

// TemplateResourceRef is Sveltos' TemplateResourceRef as k0rdent's
// serviceSpec carries it: a ConfigMap or Secret in the hub's store that
// values templates read as {{ (getResource "IDENTIFIER").data.key }}.
type TemplateResourceRef struct {
	Resource TemplateResource `json:"resource"`
	// Identifier is the name getResource takes; unique in the serviceSpec.
	Identifier string `json:"identifier"`
	// Optional: a missing resource reads as an empty map instead of
	// failing the cluster's compile.
	Optional bool `json:"optional,omitempty"`
	// IgnoreStatusChanges and WatchFields are Sveltos' reconcile
	// filters. ConfigMaps and Secrets have no status and Tether recompiles
	// on any change (an unchanged result redeploys nothing), so they have
	// no effect; WatchFields is warned about.
	IgnoreStatusChanges bool     `json:"ignoreStatusChanges,omitempty"`
	WatchFields         []string `json:"watchFields,omitempty"`
}

// TemplateResource is the corev1.ObjectReference of a TemplateResourceRef.
// Name and Namespace may hold template actions over the cluster
// (`{{ .Cluster.metadata.name }}-config`); Namespace defaults to the
// referencing object's. UID, ResourceVersion and FieldPath are accepted
// and ignored, with a warning.
type TemplateResource struct {
	APIVersion      string `json:"apiVersion,omitempty"`
	Kind            string `json:"kind"`
	Name            string `json:"name"`
	Namespace       string `json:"namespace,omitempty"`
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	FieldPath       string `json:"fieldPath,omitempty"`
}

// ServiceProvider is k0rdent's StateManagementProviderConfig.
type ServiceProvider struct {
	Name           string          `json:"name,omitempty"`
	Config         json.RawMessage `json:"config,omitempty"`
	SelfManagement bool            `json:"selfManagement,omitempty"`
}

// Sync modes (k0rdent's).
const (
	SyncOneTime                      = "OneTime"
	SyncContinuous                   = "Continuous"
	SyncContinuousWithDriftDetection = "ContinuousWithDriftDetection"
	SyncDryRun                       = "DryRun"
)

// Service is one Helm release.
type Service struct {
	// Template is a ServiceTemplate in the object's namespace.
	Template string `json:"template"`
	// Name is the Helm release name.
	Name string `json:"name"`
	// Namespace is the release namespace; default "default".
	Namespace string `json:"namespace,omitempty"`
	// Values is Helm values YAML; it may use Go templates over .Cluster.
	Values Values `json:"values,omitempty"`
	// ValuesFrom are merged in order, then Values on top.
	ValuesFrom []ValuesFrom `json:"valuesFrom,omitempty"`
	// DependsOn names services of the same spec deployed first: "name",
	// or "namespace/name" when written as k0rdent v1beta1's {name,
	// namespace} object.
	DependsOn DependsOnList `json:"dependsOn,omitempty"`
	// Disable: the service is not deployed (and removed where it was).
	Disable bool `json:"disable,omitempty"`
	// HelmOptions, HelmAction, TemplateChain and Version are k0rdent's:
	// see ParseHelmOptions for the helmOptions acted on; helmAction
	// Uninstall removes the service like Disable.
	HelmOptions   json.RawMessage `json:"helmOptions,omitempty"`
	HelmAction    string          `json:"helmAction,omitempty"`
	TemplateChain string          `json:"templateChain,omitempty"`
	Version       string          `json:"version,omitempty"`
}

// DependsOnList is a service's dependsOn. In input each entry is a service
// name (Tether, k0rdent v1alpha1) or an object {name, namespace} (k0rdent
// v1beta1); an object with a namespace is kept as "namespace/name" and
// written back as the object.
type DependsOnList []string

// UnmarshalJSON implements json.Unmarshaler.
func (l *DependsOnList) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make(DependsOnList, 0, len(raw))
	for _, r := range raw {
		var name string
		if err := json.Unmarshal(r, &name); err == nil {
			out = append(out, name)
			continue
		}
		var ref struct{ Name, Namespace string }
		if err := json.Unmarshal(r, &ref); err != nil {
			return fmt.Errorf("dependsOn: want a service name or {name, namespace}")
		}
		if ref.Namespace != "" {
			out = append(out, ref.Namespace+"/"+ref.Name)
		} else {
			out = append(out, ref.Name)
		}
	}
	*l = out
	return nil
}

// MarshalJSON implements json.Marshaler.
func (l DependsOnList) MarshalJSON() ([]byte, error) {
	out := make([]any, 0, len(l))
	for _, d := range l {
		if ns, name, ok := strings.Cut(d, "/"); ok {
			out = append(out, map[string]string{"name": name, "namespace": ns})
		} else {
			out = append(out, d)
		}
	}
	return json.Marshal(out)
}

// Values is a YAML document kept as text (it may hold template actions). In
// input it may also be written as a YAML mapping, which is kept as YAML
// text.
type Values string

// UnmarshalJSON implements json.Unmarshaler.
func (v *Values) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*v = Values(s)
		return nil
	}
	if string(b) == "null" {
		*v = ""
		return nil
	}
	if len(b) == 0 || b[0] != '{' {
		return fmt.Errorf("want a string or a mapping")
	}
	y, err := jsonToYAML(b)
	if err != nil {
		return err
	}
	*v = Values(y)
	return nil
}

// ValuesFrom names a ConfigMap or Secret in the object's namespace whose
// key "values.yaml" (or "values") holds values YAML.
type ValuesFrom struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// ServiceState is the status of one service on one cluster.
type ServiceState struct {
	Cluster          string     `json:"cluster,omitempty"`
	Name             string     `json:"name"`
	Namespace        string     `json:"namespace"`
	Template         string     `json:"template,omitempty"`
	State            string     `json:"state"`
	Revision         uint64     `json:"revision,omitempty"`
	LastDeployedHash string     `json:"lastDeployedHash,omitempty"`
	Message          string     `json:"message,omitempty"`
	Time             *time.Time `json:"time,omitempty"`
}

// ServicesStatus is the status of ClusterDeployment and MultiClusterService.
type ServicesStatus struct {
	Services   []ServiceState `json:"services,omitempty"`
	Conditions []Condition    `json:"conditions,omitempty"`
	// Warnings lists accepted fields that have no effect in Tether yet.
	Warnings []string `json:"warnings,omitempty"`
}

// ---- ClusterDeployment ----

// ClusterDeployment binds services to one cluster.
type ClusterDeployment struct {
	Header `json:",inline"`
	Spec   ClusterDeploymentSpec   `json:"spec"`
	Status ClusterDeploymentStatus `json:"status,omitzero"`
}

// ClusterDeploymentSpec is the desired cluster and its services.
type ClusterDeploymentSpec struct {
	// Template is "adopted" (bind to the enrolled cluster of the same
	// name) or a cluster template name for CAPI provisioning.
	Template   string `json:"template"`
	Credential string `json:"credential,omitempty"`
	// Config is free-form configuration for the cluster template.
	Config      json.RawMessage `json:"config,omitempty"`
	ServiceSpec ServiceSpec     `json:"serviceSpec,omitzero"`
	// The fields below are k0rdent's (v1beta1) for provisioning; see
	// Warnings.
	PropagateCredentials *bool           `json:"propagateCredentials,omitempty"`
	ClusterAuth          string          `json:"clusterAuth,omitempty"`
	DataSource           string          `json:"dataSource,omitempty"`
	AuditPolicy          string          `json:"auditPolicy,omitempty"`
	IPAMClaim            json.RawMessage `json:"ipamClaim,omitempty"`
	DryRun               bool            `json:"dryRun,omitempty"`
	CleanupOnDeletion    bool            `json:"cleanupOnDeletion,omitempty"`
}

// ---- MultiClusterService ----

// MultiClusterService deploys services on every cluster its selector
// matches.
type MultiClusterService struct {
	Header `json:",inline"`
	Spec   MultiClusterServiceSpec `json:"spec"`
	Status ServicesStatus          `json:"status,omitzero"`
}

// MultiClusterServiceSpec selects clusters and lists services.
type MultiClusterServiceSpec struct {
	// ClusterSelector matches fleet cluster labels; empty matches all.
	ClusterSelector LabelSelector `json:"clusterSelector,omitzero"`
	ServiceSpec     ServiceSpec   `json:"serviceSpec,omitzero"`
	// Rollout says when each matching cluster takes a new revision
	// (rollout.go); nil: every cluster at once.
	Rollout *Rollout `json:"rollout,omitempty"`
	// DependsOn (other MultiClusterServices) and
	// KeepServicesOnSelectorMismatch are k0rdent's; see Warnings.
	DependsOn                      []string `json:"dependsOn,omitempty"`
	KeepServicesOnSelectorMismatch bool     `json:"keepServicesOnSelectorMismatch,omitempty"`
}

// LabelSelector is Kubernetes' LabelSelector.
type LabelSelector struct {
	MatchLabels      map[string]string `json:"matchLabels,omitempty"`
	MatchExpressions []LabelExpression `json:"matchExpressions,omitempty"`
}

// LabelExpression is one selector requirement.
type LabelExpression struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"` // In, NotIn, Exists, DoesNotExist
	Values   []string `json:"values,omitempty"`
}

// Matches reports whether labels satisfy the selector (all terms ANDed; an
// empty selector matches everything).
func (s *LabelSelector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	for _, e := range s.MatchExpressions {
		v, ok := labels[e.Key]
		switch e.Operator {
		case "In":
			if !ok || !contains(e.Values, v) {
				return false
			}
		case "NotIn":
			if ok && contains(e.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false // unknown operators never match (validation refuses them)
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ---- ConfigMap, Secret ----

// ConfigMap holds values for valuesFrom (hub-side only).
type ConfigMap struct {
	Header `json:",inline"`
	Data   map[string]string `json:"data,omitempty"`
}

// Secret holds values for valuesFrom (hub-side only). Data is base64 in
// JSON and YAML, as in Kubernetes; StringData is merged into Data on apply
// and never stored.
type Secret struct {
	Header     `json:",inline"`
	Type       string            `json:"type,omitempty"`
	Data       map[string][]byte `json:"data,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
}

// SetWarnings implements the warnings hook of a kind's status.
func (s *HelmRepositoryStatus) SetWarnings(w []string) { s.Warnings = w }

// SetWarnings implements the warnings hook of a kind's status.
func (s *ServiceTemplateStatus) SetWarnings(w []string) { s.Warnings = w }

// SetWarnings implements the warnings hook of a kind's status.
func (s *ServicesStatus) SetWarnings(w []string) { s.Warnings = w }

// New returns an empty object of a built-in kind with its header set, or
// nil for an unknown kind.
func New(kind string) Object { return builtinKinds().New(kind) }

// DeepCopy returns an independent copy of o. It panics if o does not
// marshal (a json.RawMessage field holding invalid JSON); Repo methods
// check instead.
func DeepCopy(o Object) Object {
	c, err := deepCopy(o)
	if err != nil {
		panic(err)
	}
	return c
}

func deepCopy(o Object) (Object, error) {
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("copy %s: %w", o.GetHeader().Key(), err)
	}
	c := reflect.New(reflect.TypeOf(o).Elem()).Interface().(Object)
	if err := json.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("copy %s: %w", o.GetHeader().Key(), err)
	}
	c.GetHeader().Metadata.CreateRevision = o.GetHeader().Metadata.CreateRevision
	return c, nil
}

// ---- ServiceTemplateChain, AccessManagement (k0rdent) ----

// KindServiceTemplateChain and KindAccessManagement are k0rdent's kinds
// for template upgrade paths and for distributing templates to
// namespaces. A service's templateChain is enforced on apply (see
// Repo.Apply); AccessManagement decides which system templates a
// namespace sees (access.go).
const (
	KindServiceTemplateChain = "ServiceTemplateChain"
	KindAccessManagement     = "AccessManagement"
)

// ServiceTemplateChain lists templates and the upgrades each allows.
type ServiceTemplateChain struct {
	Header `json:",inline"`
	Spec   TemplateChainSpec `json:"spec"`
}

// TemplateChainSpec is k0rdent's TemplateChainSpec.
type TemplateChainSpec struct {
	SupportedTemplates []SupportedTemplate `json:"supportedTemplates,omitempty"`
}

// SupportedTemplate is one template of a chain and where it may go.
type SupportedTemplate struct {
	Name              string             `json:"name"`
	AvailableUpgrades []AvailableUpgrade `json:"availableUpgrades,omitempty"`
}

// AvailableUpgrade is a template a chain allows upgrading to.
type AvailableUpgrade struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

// ---- GitRepository (Flux source) ----

// KindGitRepository is Flux's git source, as k0rdent's kustomize and
// resources templates name it.
const KindGitRepository = "GitRepository"

// GitRepository is a git repository the hub reads a template's
// manifests from, pinned by commit.
type GitRepository struct {
	Header `json:",inline"`
	Spec   GitRepositorySpec   `json:"spec"`
	Status GitRepositoryStatus `json:"status,omitzero"`
}

// GitRepositorySpec is Flux's source.toolkit.fluxcd.io/v1 GitRepository
// spec (also k0rdent's remoteSourceSpec.git).
type GitRepositorySpec struct {
	// URL is an http(s):// repository URL (ssh:// is not supported yet).
	URL string `json:"url"`
	// SecretRef names a Secret with username and password (or a bearer
	// token under key bearerToken) for the repository.
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Interval is how often the branch, tag or semver range is looked up
	// again; a new commit renders a new chart.
	Interval Duration          `json:"interval,omitempty"`
	Timeout  Duration          `json:"timeout,omitempty"`
	Ref      *GitRepositoryRef `json:"ref,omitempty"`
	Suspend  bool              `json:"suspend,omitempty"`
	// Provider, ServiceAccountName, Verify, ProxySecretRef, Ignore,
	// RecurseSubmodules, Include and SparseCheckout are Flux's; accepted
	// with a warning.
	Provider           string                `json:"provider,omitempty"`
	ServiceAccountName string                `json:"serviceAccountName,omitempty"`
	Verify             *GitVerification      `json:"verify,omitempty"`
	ProxySecretRef     *LocalObjectReference `json:"proxySecretRef,omitempty"`
	Ignore             *string               `json:"ignore,omitempty"`
	RecurseSubmodules  bool                  `json:"recurseSubmodules,omitempty"`
	Include            []GitInclude          `json:"include,omitempty"`
	SparseCheckout     []string              `json:"sparseCheckout,omitempty"`
}

// GitInclude is Flux's GitRepositoryInclude.
type GitInclude struct {
	Repository LocalObjectReference `json:"repository"`
	FromPath   string               `json:"fromPath,omitempty"`
	ToPath     string               `json:"toPath,omitempty"`
}

// GitVerification is Flux's GitRepositoryVerification.
type GitVerification struct {
	Mode      string               `json:"mode,omitempty"` // HEAD, Tag, TagAndHEAD
	SecretRef LocalObjectReference `json:"secretRef"`
}

// GitRepositoryRef selects the commit: Commit wins, then Name (a full
// reference such as refs/heads/main), SemVer (the newest tag in range),
// Tag, then Branch (default: the remote's HEAD).
type GitRepositoryRef struct {
	Branch string `json:"branch,omitempty"`
	Tag    string `json:"tag,omitempty"`
	SemVer string `json:"semver,omitempty"`
	Name   string `json:"name,omitempty"`
	Commit string `json:"commit,omitempty"`
}

// GitRepositoryStatus shows the accepted fields that have no effect.
type GitRepositoryStatus struct {
	Warnings []string `json:"warnings,omitempty"`
}

// SetWarnings implements the warnings hook of a kind's status.
func (s *GitRepositoryStatus) SetWarnings(w []string) { s.Warnings = w }
