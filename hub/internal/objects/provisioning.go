package objects

import (
	"encoding/json"
	"reflect"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// k0rdent's kinds for provisioning clusters through Cluster API, stored,
// listed and validated as k0rdent's schema does, so k0rdent's manifests
// apply as written. ClusterTemplate and Credential are used by the
// provisioning controller (hub/internal/provision); the others are
// stored with a warning. ClusterDeployment fields that name them
// (clusterAuth, auditPolicy, ipamClaim, dataSource) are not references
// yet.
const (
	KindCredential            = "Credential"
	KindClusterTemplate       = "ClusterTemplate"
	KindClusterTemplateChain  = "ClusterTemplateChain"
	KindClusterAuthentication = "ClusterAuthentication"
	KindClusterAuditPolicy    = "ClusterAuditPolicy"
	KindClusterIPAM           = "ClusterIPAM"
	KindClusterIPAMClaim      = "ClusterIPAMClaim"
	KindDataSource            = "DataSource"
	KindClusterDataSource     = "ClusterDataSource"
)

// noProvisioning is the warning of the provisioning kinds Tether does not
// use yet.
const noProvisioning = "stored; Tether's provisioning does not use this kind yet"

// Credential names the cloud identity a ClusterDeployment provisions with.
type Credential struct {
	Header `json:",inline"`
	Spec   CredentialSpec   `json:"spec"`
	Status CredentialStatus `json:"status,omitzero"`
}

// CredentialSpec is k0rdent's CredentialSpec.
type CredentialSpec struct {
	IdentityRef *ObjectReference `json:"identityRef"`
	Region      string           `json:"region,omitempty"`
	Description string           `json:"description,omitempty"`
}

// ObjectReference is Kubernetes' corev1.ObjectReference.
type ObjectReference struct {
	APIVersion      string `json:"apiVersion,omitempty"`
	Kind            string `json:"kind,omitempty"`
	Name            string `json:"name,omitempty"`
	Namespace       string `json:"namespace,omitempty"`
	UID             string `json:"uid,omitempty"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	FieldPath       string `json:"fieldPath,omitempty"`
}

// ClusterTemplate is a chart that renders one provider's CAPI objects.
type ClusterTemplate struct {
	Header `json:",inline"`
	Spec   ClusterTemplateSpec   `json:"spec"`
	Status ClusterTemplateStatus `json:"status,omitzero"`
}

// ClusterTemplateStatus has k0rdent's metadata fields, filled by the
// provisioning controller from the chart's annotations when it renders
// the chart (cluster.x-k8s.io/provider, cluster.x-k8s.io/<provider>,
// tether.dev/k8s-version).
type ClusterTemplateStatus struct {
	WarningsStatus    `json:",inline"`
	KubernetesVersion string            `json:"k8sVersion,omitempty"`
	Providers         []string          `json:"providers,omitempty"`
	ProviderContracts map[string]string `json:"providerContracts,omitempty"`
	// ChartDigest is the chart those came from.
	ChartDigest string `json:"chartDigest,omitempty"`
}

// ClusterTemplateSpec is k0rdent's ClusterTemplateSpec.
type ClusterTemplateSpec struct {
	Helm              HelmSpec          `json:"helm"`
	ProviderContracts map[string]string `json:"providerContracts,omitempty"`
	KubernetesVersion string            `json:"k8sVersion,omitempty"`
	Providers         []string          `json:"providers,omitempty"`
}

// ClusterTemplateChain lists ClusterTemplates and the upgrades each
// allows (the shape of ServiceTemplateChain).
type ClusterTemplateChain struct {
	Header `json:",inline"`
	Spec   TemplateChainSpec `json:"spec"`
	Status WarningsStatus    `json:"status,omitzero"`
}

// ClusterAuthentication is a provisioned cluster's API server
// authentication configuration.
type ClusterAuthentication struct {
	Header `json:",inline"`
	Spec   ClusterAuthenticationSpec `json:"spec"`
	Status WarningsStatus            `json:"status,omitzero"`
}

// ClusterAuthenticationSpec is k0rdent's; the configuration is the
// kube-apiserver's AuthenticationConfiguration, kept as written.
type ClusterAuthenticationSpec struct {
	AuthenticationConfiguration json.RawMessage     `json:"authenticationConfiguration,omitempty"`
	CASecret                    *SecretKeyReference `json:"caSecret,omitempty"`
}

// SecretKeyReference is k0rdent's SecretKeyReference.
type SecretKeyReference struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Key       string `json:"key"`
}

// ClusterAuditPolicy is a provisioned cluster's API server audit policy.
type ClusterAuditPolicy struct {
	Header `json:",inline"`
	Spec   ClusterAuditPolicySpec `json:"spec"`
	Status WarningsStatus         `json:"status,omitzero"`
}

// ClusterAuditPolicySpec is k0rdent's; the policy is Kubernetes' audit
// Policy, kept as written.
type ClusterAuditPolicySpec struct {
	Policy json.RawMessage `json:"policy"`
}

// ClusterIPAM is a provisioned cluster's IP address management.
type ClusterIPAM struct {
	Header `json:",inline"`
	Spec   ClusterIPAMSpec `json:"spec"`
	Status WarningsStatus  `json:"status,omitzero"`
}

// ClusterIPAMSpec is k0rdent's ClusterIPAMSpec.
type ClusterIPAMSpec struct {
	Provider            string `json:"provider,omitempty"`
	ClusterIPAMClaimRef string `json:"clusterIPAMClaimRef,omitempty"`
}

// ClusterIPAMClaim claims addresses for a provisioned cluster.
type ClusterIPAMClaim struct {
	Header `json:",inline"`
	Spec   ClusterIPAMClaimSpec `json:"spec"`
	Status WarningsStatus       `json:"status,omitzero"`
}

// ClusterIPAMClaimSpec is k0rdent's ClusterIPAMClaimSpec.
type ClusterIPAMClaimSpec struct {
	Provider        string        `json:"provider"`
	Cluster         string        `json:"cluster,omitempty"`
	ClusterIPAMRef  string        `json:"clusterIPAMRef,omitempty"`
	NodeNetwork     *AddressSpace `json:"nodeNetwork,omitempty"`
	ClusterNetwork  *AddressSpace `json:"clusterNetwork,omitempty"`
	ExternalNetwork *AddressSpace `json:"externalNetwork,omitempty"`
}

// AddressSpace is k0rdent's AddressSpaceSpec.
type AddressSpace struct {
	Gateway     string   `json:"gateway,omitempty"`
	CIDR        string   `json:"cidr,omitempty"`
	IPAddresses []string `json:"ipAddresses,omitempty"`
	Prefix      int      `json:"prefix,omitempty"`
}

// DataSource is an external database for provisioned clusters' state.
type DataSource struct {
	Header `json:",inline"`
	Spec   DataSourceSpec `json:"spec"`
	Status WarningsStatus `json:"status,omitzero"`
}

// DataSourceSpec is k0rdent's DataSourceSpec.
type DataSourceSpec struct {
	CertificateAuthority *SecretKeyReference `json:"certificateAuthority,omitempty"`
	Auth                 DataSourceAuth      `json:"auth"`
	Type                 string              `json:"type"` // postgresql
	Endpoints            []string            `json:"endpoints"`
}

// DataSourceAuth is k0rdent's DataSourceAuth.
type DataSourceAuth struct {
	Username SecretKeyReference `json:"username"`
	Password SecretKeyReference `json:"password"`
}

// ClusterDataSource binds a DataSource schema to a cluster.
type ClusterDataSource struct {
	Header `json:",inline"`
	Spec   ClusterDataSourceSpec `json:"spec"`
	Status WarningsStatus        `json:"status,omitzero"`
}

// ClusterDataSourceSpec is k0rdent's ClusterDataSourceSpec.
type ClusterDataSourceSpec struct {
	Schema     string `json:"schema"`
	DataSource string `json:"dataSource"`
}

// registerProvisioning registers the provisioning kinds in r.
func registerProvisioning(r *Registry) {
	MustRegister(r, provisioningKind(KindCredential, "credentials", []string{"cred"}, func(o *Credential) any { return &o.Spec }, func(o *Credential) any { return &o.Status }, (*Credential).validateSpec))
	MustRegister(r, provisioningKind(KindClusterTemplate, "clustertemplates", []string{"clustertmpl"}, func(o *ClusterTemplate) any { return &o.Spec }, func(o *ClusterTemplate) any { return &o.Status }, (*ClusterTemplate).validateSpec))
	MustRegister(r, provisioningKind(KindClusterTemplateChain, "clustertemplatechains", []string{"ctc"}, func(o *ClusterTemplateChain) any { return &o.Spec }, func(o *ClusterTemplateChain) any { return &o.Status }, func(o *ClusterTemplateChain) FieldErrors { return o.Spec.validate() }))
	MustRegister(r, provisioningKind(KindClusterAuthentication, "clusterauthentications", []string{"clauth"}, func(o *ClusterAuthentication) any { return &o.Spec }, func(o *ClusterAuthentication) any { return &o.Status }, (*ClusterAuthentication).validateSpec))
	MustRegister(r, provisioningKind(KindClusterAuditPolicy, "clusterauditpolicies", nil, func(o *ClusterAuditPolicy) any { return &o.Spec }, func(o *ClusterAuditPolicy) any { return &o.Status }, (*ClusterAuditPolicy).validateSpec))
	MustRegister(r, provisioningKind(KindClusterIPAM, "clusteripams", nil, func(o *ClusterIPAM) any { return &o.Spec }, func(o *ClusterIPAM) any { return &o.Status }, (*ClusterIPAM).validateSpec))
	MustRegister(r, provisioningKind(KindClusterIPAMClaim, "clusteripamclaims", nil, func(o *ClusterIPAMClaim) any { return &o.Spec }, func(o *ClusterIPAMClaim) any { return &o.Status }, (*ClusterIPAMClaim).validateSpec))
	MustRegister(r, provisioningKind(KindDataSource, "datasources", nil, func(o *DataSource) any { return &o.Spec }, func(o *DataSource) any { return &o.Status }, (*DataSource).validateSpec))
	MustRegister(r, provisioningKind(KindClusterDataSource, "clusterdatasources", []string{"clds"}, func(o *ClusterDataSource) any { return &o.Spec }, func(o *ClusterDataSource) any { return &o.Status }, (*ClusterDataSource).validateSpec))
}

func provisioningKind[T Object](kind, plural string, short []string, spec, status func(T) any, validate func(T) FieldErrors) KindDef[T] {
	warn := func(T) []string { return []string{"spec: " + noProvisioning} }
	switch kind {
	case KindClusterTemplate, KindCredential, KindClusterTemplateChain:
		warn = nil // used by hub/internal/provision
	}
	return KindDef[T]{
		Kind: kind, New: func() T { return reflect.New(reflect.TypeFor[T]().Elem()).Interface().(T) },
		APIVersion: APIVersion, Accepts: k0rdentGroups,
		Plural: plural, Short: short,
		Spec: spec, Status: status, Validate: validate,
		Warnings: warn,
	}
}

func (o *Credential) validateSpec() FieldErrors {
	var errs FieldErrors
	if o.Spec.IdentityRef == nil {
		errs.Add("spec.identityRef", "required")
	}
	return errs
}

func (o *ClusterTemplate) validateSpec() FieldErrors {
	var errs FieldErrors
	p := path("spec").child("helm")
	h := &o.Spec.Helm
	var set []string
	for _, f := range []struct {
		set  bool
		name string
	}{
		{!reflect.ValueOf(h.ChartSpec).IsZero(), "chartSpec"},
		{h.ChartRef != nil, "chartRef"},
		{h.ChartSource != nil, "chartSource"},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	switch {
	case len(set) == 0:
		errs.add(p, "one of chartSpec or chartRef is required")
	case len(set) > 1:
		errs.add(p, "%s are mutually exclusive", strings.Join(set, " and "))
	case h.ChartSource != nil:
		errs.add(p.child("chartSource"), "not supported for ClusterTemplates (k0rdent's schema)")
	case h.ChartRef != nil:
		validateChartRef(h.ChartRef, p.child("chartRef"), &errs)
	default:
		cs := h.ChartSpec
		if cs.SourceRef.Kind == "" {
			cs.SourceRef.Kind = KindHelmRepository
		}
		cs.validate(p.child("chartSpec"), true, &errs)
	}
	return errs
}

func validateChartRef(ref *ChartRef, p path, errs *FieldErrors) {
	switch ref.Kind {
	case KindOCIRepository, KindHelmChart, "ExternalArtifact":
	case "":
		errs.add(p.child("kind"), "required (OCIRepository or HelmChart)")
	default:
		errs.add(p.child("kind"), "%q: want OCIRepository, HelmChart or ExternalArtifact", ref.Kind)
	}
	if ref.Name == "" {
		errs.add(p.child("name"), "required")
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(ref.Name) {
			errs.add(p.child("name"), "%q: %s", ref.Name, msg)
		}
	}
}

func (o *ClusterAuthentication) validateSpec() FieldErrors {
	var errs FieldErrors
	if len(o.Spec.AuthenticationConfiguration) > 0 && !hasKey(o.Spec.AuthenticationConfiguration, "jwt") {
		errs.Add("spec.authenticationConfiguration.jwt", "required")
	}
	if s := o.Spec.CASecret; s != nil && s.Key == "" {
		errs.Add("spec.caSecret.key", "required")
	}
	return errs
}

func (o *ClusterAuditPolicy) validateSpec() FieldErrors {
	var errs FieldErrors
	switch {
	case len(o.Spec.Policy) == 0:
		errs.Add("spec.policy", "required")
	case !hasKey(o.Spec.Policy, "rules"):
		errs.Add("spec.policy.rules", "required")
	}
	return errs
}

var ipamProviders = []string{"in-cluster", "ipam-infoblox"}

func (o *ClusterIPAM) validateSpec() FieldErrors {
	var errs FieldErrors
	validateProvider(o.Spec.Provider, path("spec.provider"), &errs, ipamProviders...)
	return errs
}

func (o *ClusterIPAMClaim) validateSpec() FieldErrors {
	var errs FieldErrors
	if o.Spec.Provider == "" {
		errs.Add("spec.provider", "required")
	}
	validateProvider(o.Spec.Provider, path("spec.provider"), &errs, ipamProviders...)
	return errs
}

func (o *DataSource) validateSpec() FieldErrors {
	var errs FieldErrors
	switch o.Spec.Type {
	case "postgresql":
	case "":
		errs.Add("spec.type", "required")
	default:
		errs.Add("spec.type", "%q: want postgresql", o.Spec.Type)
	}
	if len(o.Spec.Endpoints) == 0 {
		errs.Add("spec.endpoints", "required")
	}
	for _, r := range []struct {
		ref  *SecretKeyReference
		name string
	}{{&o.Spec.Auth.Username, "auth.username"}, {&o.Spec.Auth.Password, "auth.password"}, {o.Spec.CertificateAuthority, "certificateAuthority"}} {
		if r.ref != nil && r.ref.Key == "" {
			errs.Add("spec."+r.name+".key", "required")
		}
	}
	return errs
}

func (o *ClusterDataSource) validateSpec() FieldErrors {
	var errs FieldErrors
	if o.Spec.Schema == "" {
		errs.Add("spec.schema", "required")
	}
	if o.Spec.DataSource == "" {
		errs.Add("spec.dataSource", "required")
	}
	return errs
}

// hasKey reports whether raw is a JSON object with key.
func hasKey(raw json.RawMessage, key string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false
	}
	_, ok := m[key]
	return ok
}

// validate checks a chain's templates: each named once, each upgrade
// named.
func (s *TemplateChainSpec) validate() FieldErrors {
	var errs FieldErrors
	p := path("spec").child("supportedTemplates")
	seen := map[string]bool{}
	for i, st := range s.SupportedTemplates {
		sp := p.index(i)
		if st.Name == "" {
			errs.add(sp.child("name"), "required")
		} else if seen[st.Name] {
			errs.add(sp.child("name"), "%q is listed twice", st.Name)
		}
		seen[st.Name] = true
		for j, u := range st.AvailableUpgrades {
			if u.Name == "" {
				errs.add(sp.child("availableUpgrades").index(j).child("name"), "required")
			}
		}
	}
	return errs
}

// ClusterDeployment phases while it provisions through Cluster API.
const (
	// PhaseProvisioning: the CAPI objects are applied and the Cluster is
	// not Available yet (within the grace period, a False condition is
	// a warning).
	PhaseProvisioning = "Provisioning"
	// PhaseReady: the CAPI Cluster is Available.
	PhaseReady = "Ready"
	// PhaseFailed: bad input (nothing was applied), or the Cluster is
	// still not Available after the grace period.
	PhaseFailed = "Failed"
)

// Condition types the provisioning controller writes on a
// ClusterDeployment, besides the CAPI Cluster's own (InfrastructureReady,
// ControlPlaneAvailable, WorkersAvailable, Available, ...), copied as
// they are.
const (
	// CondTemplateReady: the ClusterTemplate exists, its chart resolves
	// and renders with spec.config, which its values schema accepts.
	CondTemplateReady = "TemplateReady"
	// CondCredentialReady: the Credential exists and its identity is on
	// the management cluster.
	CondCredentialReady = "CredentialReady"
	// CondApplied: the rendered objects are applied to the management
	// cluster.
	CondApplied = "Applied"
	// CondAgentInstalled: the agent chart is installed in the new
	// cluster.
	CondAgentInstalled = "AgentInstalled"
)

// ClusterDeploymentStatus is a ClusterDeployment's services status and,
// for one that provisions through Cluster API, what the provisioning
// controller follows. k0rdent's field names where it has them.
type ClusterDeploymentStatus struct {
	ServicesStatus `json:",inline"`
	// Phase is "" for an adopted cluster, else one of the Phase*
	// constants.
	Phase             string `json:"phase,omitempty"`
	KubernetesVersion string `json:"k8sVersion,omitempty"`
	// ControlPlane and Workers are "ready/desired" machines.
	ControlPlane string `json:"controlPlane,omitempty"`
	Workers      string `json:"workers,omitempty"`
	// Agent is the cluster's agent state: "", Installed, Enrolled.
	Agent string `json:"agent,omitempty"`
	// ProvisioningSince is when the objects were first applied: the
	// start of the grace period, kept across hub restarts.
	ProvisioningSince *time.Time `json:"provisioningSince,omitempty"`
	// AppliedHash is the digest of the last applied objects; the same
	// objects are not applied again.
	AppliedHash string `json:"appliedHash,omitempty"`
	// ChartDigest is the ClusterTemplate's chart that rendered them.
	ChartDigest string `json:"chartDigest,omitempty"`
	// Template is the ClusterTemplate last applied; moving spec.template
	// away from it is an upgrade a ClusterTemplateChain must allow.
	Template string `json:"template,omitempty"`
	// Events are what the provisioning controller saw happen, oldest
	// first, at most MaxProvisioningEvents (the oldest are dropped).
	Events []ProvisioningEvent `json:"events,omitempty"`
}

// MaxProvisioningEvents bounds ClusterDeploymentStatus.Events.
const MaxProvisioningEvents = 30

// ProvisioningEvent is one thing that happened to a provisioned cluster:
// a phase change, a condition that changed, the objects applied, the agent
// installed or enrolled.
type ProvisioningEvent struct {
	Time    time.Time `json:"time"`
	Reason  string    `json:"reason"`
	Message string    `json:"message,omitempty"`
}

// EventConditionChanged is the reason of the events that record a
// condition's change; past the bound they go first.
const EventConditionChanged = "ConditionChanged"

// RecordEvent appends an event to st. Past MaxProvisioningEvents it drops
// the oldest condition change (CAPI reports a score of conditions, which
// would otherwise push out the milestones: applied, phase, agent), or the
// oldest event when only milestones are left.
func (st *ClusterDeploymentStatus) RecordEvent(now time.Time, reason, message string) {
	st.Events = append(st.Events, ProvisioningEvent{Time: now.UTC().Truncate(time.Second), Reason: reason, Message: message})
	for len(st.Events) > MaxProvisioningEvents {
		drop := 0
		for i, e := range st.Events[:len(st.Events)-1] {
			if e.Reason == EventConditionChanged {
				drop = i
				break
			}
		}
		st.Events = append(st.Events[:drop:drop], st.Events[drop+1:]...)
	}
}

// CredentialStatus says whether the Credential's identity exists on the
// management cluster.
type CredentialStatus struct {
	WarningsStatus `json:",inline"`
	Ready          bool        `json:"ready,omitempty"`
	Conditions     []Condition `json:"conditions,omitempty"`
}

// SetCondition sets c in conds by type, keeping the transition time when
// the status is unchanged.
func SetCondition(conds *[]Condition, c Condition, now time.Time) {
	for i := range *conds {
		old := &(*conds)[i]
		if old.Type != c.Type {
			continue
		}
		if old.Status == c.Status && old.LastTransitionTime != nil {
			c.LastTransitionTime = old.LastTransitionTime
		} else {
			c.LastTransitionTime = &now
		}
		*old = c
		return
	}
	c.LastTransitionTime = &now
	*conds = append(*conds, c)
}

func provisioningColumns() (phase Column[*ClusterDeployment], wide []Column[*ClusterDeployment]) {
	return Column[*ClusterDeployment]{Header: "PHASE", Value: func(o *ClusterDeployment) string { return orNone(o.Status.Phase) }},
		[]Column[*ClusterDeployment]{
			{Header: "K8S", Wide: true, Value: func(o *ClusterDeployment) string { return orNone(o.Status.KubernetesVersion) }},
			{Header: "CONTROLPLANE", Wide: true, Value: func(o *ClusterDeployment) string { return orNone(o.Status.ControlPlane) }},
			{Header: "WORKERS", Wide: true, Value: func(o *ClusterDeployment) string { return orNone(o.Status.Workers) }},
			{Header: "AGENT", Wide: true, Value: func(o *ClusterDeployment) string { return orNone(o.Status.Agent) }},
		}
}

// describeProvisioning is what `tether describe clusterdeployment` prints
// after the object: its provisioning state and one line per condition.
func describeProvisioning(o *ClusterDeployment) []Section {
	if o.Spec.Template == TemplateAdopted {
		return nil
	}
	st := &o.Status
	sum := Section{Title: "Provisioning", Items: []Item{
		{"Phase", orNone(st.Phase)}, {"Kubernetes", orNone(st.KubernetesVersion)},
		{"Control plane", orNone(st.ControlPlane)}, {"Workers", orNone(st.Workers)}, {"Agent", orNone(st.Agent)},
	}}
	conds := Section{Title: "Conditions"}
	for _, c := range st.Conditions {
		v := c.Status
		if c.Reason != "" {
			v += " " + c.Reason
		}
		if c.Message != "" {
			v += ": " + strings.ReplaceAll(c.Message, "\n", " ")
		}
		conds.Items = append(conds.Items, Item{c.Type, v})
	}
	events := Section{Title: "Events"}
	for _, e := range st.Events {
		events.Items = append(events.Items, Item{e.Time.UTC().Format(time.RFC3339) + " " + e.Reason, strings.ReplaceAll(e.Message, "\n", " ")})
	}
	return []Section{sum, conds, events}
}
