package objects

import (
	"cmp"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// k0rdentGroups are k0rdent's apiVersions, accepted for the kinds Tether
// shares with it and stored as APIVersion.
var k0rdentGroups = []string{"k0rdent.mirantis.com/v1alpha1", "k0rdent.mirantis.com/v1beta1"}

// fluxSourceGroups are Flux's source API versions: k0rdent's chart sources
// (HelmRepository) are Flux objects, so its manifests carry these.
var fluxSourceGroups = []string{"source.toolkit.fluxcd.io/v1", "source.toolkit.fluxcd.io/v1beta2"}

// k0rdentInternalKinds are kinds k0rdent's own controllers write or run
// on; a manifest of one is refused with the reason.
var k0rdentInternalKinds = map[string]string{
	"Release":                 "it records an installed k0rdent release (kcm's provider versions); Tether has no k0rdent release to install",
	"Management":              "it configures k0rdent's own management components; configure the Tether hub with `tether serve` flags",
	"StateManagementProvider": "it plugs a deployment engine (Sveltos) into k0rdent; Tether's agents install services themselves",
	"ServiceSet":              "kcm creates it from ClusterDeployments and MultiClusterServices; apply those instead",
	"ProviderTemplate":        "it installs k0rdent's CAPI providers; Tether uses the CAPI controllers of its management cluster",
	"ProviderInterface":       "it describes a CAPI infrastructure provider to k0rdent's own controllers (identity kinds, cluster kinds); Tether does not run them",
	"Region":                  "it attaches a regional k0rdent management cluster; a Tether hub manages its whole fleet, and agents reach it from any region",
	"ManagementBackup":        "it backs up k0rdent's management cluster with Velero; back up the Tether hub's store instead (docs/SECURITY.md)",
}

// DefaultKinds returns a new registry of every kind Tether serves:
// HelmRepository, ServiceTemplate, ClusterDeployment, MultiClusterService,
// ConfigMap, Secret, ServiceTemplateChain, AccessManagement, Flux's
// GitRepository, OCIRepository, HelmChart and Bucket, PrometheusRule and
// NotificationPolicy (alerting), k0rdent's
// provisioning kinds (stored with a warning), and the refusal of
// k0rdent's internal kinds. The caller may register more kinds in it.
func DefaultKinds() *Registry {
	r := NewRegistry()
	MustRegister(r, helmRepositoryKind())
	MustRegister(r, serviceTemplateKind())
	MustRegister(r, clusterDeploymentKind())
	MustRegister(r, multiClusterServiceKind())
	MustRegister(r, configMapKind())
	MustRegister(r, secretKind())
	MustRegister(r, serviceTemplateChainKind())
	MustRegister(r, accessManagementKind())
	MustRegister(r, gitRepositoryKind())
	MustRegister(r, ociRepositoryKind())
	MustRegister(r, helmChartKind())
	MustRegister(r, bucketKind())
	MustRegister(r, scrapeConfigKind())
	MustRegister(r, prometheusRuleKind())
	MustRegister(r, notificationPolicyKind())
	registerProvisioning(r)
	for _, kind := range slices.Sorted(maps.Keys(k0rdentInternalKinds)) {
		r.Refuse(kind, "k0rdent.mirantis.com/", "is one of k0rdent's internal kinds and is not accepted: "+k0rdentInternalKinds[kind])
	}
	return r
}

func helmRepositoryKind() KindDef[*HelmRepository] {
	return KindDef[*HelmRepository]{
		Kind: KindHelmRepository, New: func() *HelmRepository { return &HelmRepository{} },
		APIVersion: APIVersion, Accepts: append(slices.Clone(k0rdentGroups), fluxSourceGroups...),
		Plural: "helmrepositories", Short: []string{"hr"}, Aliases: []string{"helmrepo"},
		BuiltinNames: []string{LocalRepository},
		Spec:         func(o *HelmRepository) any { return &o.Spec },
		Status:       func(o *HelmRepository) any { return &o.Status },
		Default:      (*HelmRepository).setDefaults,
		Validate:     (*HelmRepository).validateSpec,
		Warnings:     helmRepositoryWarnings,
		Columns: []Column[*HelmRepository]{
			{Header: "URL", Value: func(o *HelmRepository) string { return o.Spec.URL }},
			AgeColumn[*HelmRepository](),
		},
		Redact: func(o *HelmRepository, marker string) []string {
			if u, ok := RedactURL(o.Spec.URL, marker); ok {
				o.Spec.URL = u
				return []string{"spec.url credentials"}
			}
			return nil
		},
	}
}

func gitRepositoryKind() KindDef[*GitRepository] {
	return KindDef[*GitRepository]{
		Kind: KindGitRepository, New: func() *GitRepository { return &GitRepository{} },
		APIVersion: APIVersion, Accepts: fluxSourceGroups,
		Plural: "gitrepositories", Short: []string{"gitrepo"},
		Spec:     func(o *GitRepository) any { return &o.Spec },
		Status:   func(o *GitRepository) any { return &o.Status },
		Validate: (*GitRepository).validateSpec,
		Warnings: gitRepositoryWarnings,
		Columns: []Column[*GitRepository]{
			{Header: "URL", Value: func(o *GitRepository) string { return o.Spec.URL }},
			AgeColumn[*GitRepository](),
		},
		Redact: func(o *GitRepository, marker string) []string {
			if u, ok := RedactURL(o.Spec.URL, marker); ok {
				o.Spec.URL = u
				return []string{"spec.url credentials"}
			}
			return nil
		},
	}
}

func ociRepositoryKind() KindDef[*OCIRepository] {
	return KindDef[*OCIRepository]{
		Kind: KindOCIRepository, New: func() *OCIRepository { return &OCIRepository{} },
		APIVersion: APIVersion, Accepts: fluxSourceGroups,
		Plural: "ocirepositories", Short: []string{"ocirepo"},
		Spec:     func(o *OCIRepository) any { return &o.Spec },
		Status:   func(o *OCIRepository) any { return &o.Status },
		Validate: (*OCIRepository).validateSpec,
		Warnings: ociRepositoryWarnings,
		Columns: []Column[*OCIRepository]{
			{Header: "URL", Value: func(o *OCIRepository) string { return o.Spec.URL }},
			AgeColumn[*OCIRepository](),
		},
	}
}

func helmChartKind() KindDef[*HelmChart] {
	return KindDef[*HelmChart]{
		Kind: KindHelmChart, New: func() *HelmChart { return &HelmChart{} },
		APIVersion: APIVersion, Accepts: fluxSourceGroups,
		Plural: "helmcharts", Short: []string{"hc"},
		Spec:     func(o *HelmChart) any { return &o.Spec },
		Status:   func(o *HelmChart) any { return &o.Status },
		Default:  (*HelmChart).setDefaults,
		Validate: (*HelmChart).validateSpec,
		Warnings: helmChartWarnings,
		Columns: []Column[*HelmChart]{
			{Header: "CHART", Value: func(o *HelmChart) string { return o.Spec.Chart }},
			{Header: "VERSION", Value: func(o *HelmChart) string { return orNone(o.Spec.Version) }},
			{Header: "SOURCE", Value: func(o *HelmChart) string { return o.Spec.SourceRef.Kind + "/" + o.Spec.SourceRef.Name }},
			AgeColumn[*HelmChart](),
		},
	}
}

func bucketKind() KindDef[*Bucket] {
	return KindDef[*Bucket]{
		Kind: KindBucket, New: func() *Bucket { return &Bucket{} },
		APIVersion: APIVersion, Accepts: fluxSourceGroups,
		Plural:   "buckets",
		Spec:     func(o *Bucket) any { return &o.Spec },
		Status:   func(o *Bucket) any { return &o.Status },
		Validate: (*Bucket).validateSpec,
		Warnings: bucketWarnings,
		Columns: []Column[*Bucket]{
			{Header: "ENDPOINT", Value: func(o *Bucket) string { return o.Spec.Endpoint }},
			{Header: "BUCKET", Value: func(o *Bucket) string { return o.Spec.BucketName }},
			AgeColumn[*Bucket](),
		},
	}
}

func serviceTemplateKind() KindDef[*ServiceTemplate] {
	return KindDef[*ServiceTemplate]{
		Kind: KindServiceTemplate, New: func() *ServiceTemplate { return &ServiceTemplate{} },
		APIVersion: APIVersion, Accepts: k0rdentGroups,
		Plural: "servicetemplates", Short: []string{"st"}, Aliases: []string{"svctmpl"},
		SharedFromSystemNamespaces: true,
		Spec:                       func(o *ServiceTemplate) any { return &o.Spec },
		Status:                     func(o *ServiceTemplate) any { return &o.Status },
		Default:                    (*ServiceTemplate).setDefaults,
		Validate:                   (*ServiceTemplate).validateSpec,
		References:                 []string{KindHelmRepository},
		Refs: func(o *ServiceTemplate) []Ref {
			if o.Spec.Mode() != ModeChartSpec || o.Spec.Helm.ChartSpec.SourceRef.Kind != KindHelmRepository {
				return nil // a source object (git, OCI, a HelmChart) is read when the chart is made
			}
			ref := o.Spec.Helm.ChartSpec.SourceRef
			return []Ref{{Kind: KindHelmRepository, Name: ref.Name, Field: "spec.helm.chartSpec.sourceRef.name"}}
		},
		Warnings: serviceTemplateWarnings,
		Columns: []Column[*ServiceTemplate]{
			{Header: "CHART", Value: func(o *ServiceTemplate) string { return cmp.Or(o.Spec.Helm.ChartSpec.Chart, o.Status.ChartName) }},
			{Header: "VERSION", Value: func(o *ServiceTemplate) string { return cmp.Or(o.Spec.Helm.ChartSpec.Version, o.Status.ChartVersion) }},
			{Header: "VALID", Value: func(o *ServiceTemplate) string { ok, _ := o.Ready(); return fmt.Sprint(ok) }},
			AgeColumn[*ServiceTemplate](),
			{Header: "DIGEST", Wide: true, Value: func(o *ServiceTemplate) string { return orNone(o.Status.ChartDigest) }},
			{Header: "MESSAGE", Wide: true, Value: func(o *ServiceTemplate) string { _, msg := o.Ready(); return orNone(msg) }},
		},
		CompileInput: true, StatusIsCompileInput: true,
	}
}

func clusterDeploymentKind() KindDef[*ClusterDeployment] {
	d := deploysServices(KindDef[*ClusterDeployment]{
		Kind: KindClusterDeployment, New: func() *ClusterDeployment { return &ClusterDeployment{} },
		APIVersion: APIVersion, Accepts: k0rdentGroups,
		Plural: "clusterdeployments", Short: []string{"cd"},
		Spec:     func(o *ClusterDeployment) any { return &o.Spec },
		Default:  (*ClusterDeployment).setDefaults,
		Validate: (*ClusterDeployment).validateSpec,
		Warnings: clusterDeploymentWarnings,
		Cluster:  func(o *ClusterDeployment) string { return o.Metadata.Name },
	}, func(o *ClusterDeployment) (*ServiceSpec, *ServicesStatus) {
		return &o.Spec.ServiceSpec, &o.Status.ServicesStatus
	},
		Column[*ClusterDeployment]{Header: "TEMPLATE", Value: func(o *ClusterDeployment) string { return o.Spec.Template }})
	// The whole status, provisioning fields included, is what
	// UpdateStatus copies.
	d.Status = func(o *ClusterDeployment) any { return &o.Status }
	phase, wide := provisioningColumns()
	d.Columns = append(append([]Column[*ClusterDeployment]{d.Columns[0], phase}, d.Columns[1:]...), wide...)
	d.Describe = describeProvisioning
	return d
}

func multiClusterServiceKind() KindDef[*MultiClusterService] {
	return deploysServices(KindDef[*MultiClusterService]{
		Kind: KindMultiClusterService, New: func() *MultiClusterService { return &MultiClusterService{} },
		APIVersion: APIVersion, Accepts: k0rdentGroups,
		Plural: "multiclusterservices", Short: []string{"mcs"},
		Spec:     func(o *MultiClusterService) any { return &o.Spec },
		Default:  (*MultiClusterService).setDefaults,
		Validate: (*MultiClusterService).validateSpec,
		Warnings: multiClusterServiceWarnings,
	}, func(o *MultiClusterService) (*ServiceSpec, *ServicesStatus) { return &o.Spec.ServiceSpec, &o.Status },
		Column[*MultiClusterService]{Header: "SELECTOR", Value: func(o *MultiClusterService) string { return orNone(selectorString(o.Spec.ClusterSelector)) }})
}

// deploysServices completes the definition of a kind that deploys the
// services of a serviceSpec: its status, its references to
// ServiceTemplates, its columns (first, then SERVICES, READY, AGE and a
// wide MESSAGE) and its place in the compiler's input.
func deploysServices[T Object](d KindDef[T], services func(T) (*ServiceSpec, *ServicesStatus), first Column[T]) KindDef[T] {
	spec := func(o T) *ServiceSpec { ss, _ := services(o); return ss }
	status := func(o T) *ServicesStatus { _, st := services(o); return st }
	d.Status = func(o T) any { return status(o) }
	d.ServiceSpec = spec
	d.References = []string{KindServiceTemplate, KindServiceTemplateChain}
	d.Refs = func(o T) []Ref { return serviceRefs(spec(o)) }
	d.Columns = append([]Column[T]{first}, servicesColumns(spec, status)...)
	d.CompileInput = true
	return d
}

func configMapKind() KindDef[*ConfigMap] {
	return KindDef[*ConfigMap]{
		Kind: KindConfigMap, New: func() *ConfigMap { return &ConfigMap{} },
		APIVersion: CoreAPIVersion,
		Plural:     "configmaps", Short: []string{"cm"},
		Spec:     func(o *ConfigMap) any { return o.Data },
		Validate: (*ConfigMap).validateSpec,
		Columns: []Column[*ConfigMap]{
			{Header: "DATA", Value: func(o *ConfigMap) string { return fmt.Sprint(len(o.Data)) }},
			AgeColumn[*ConfigMap](),
		},
		CompileInput: true,
	}
}

func secretKind() KindDef[*Secret] {
	return KindDef[*Secret]{
		Kind: KindSecret, New: func() *Secret { return &Secret{} },
		APIVersion: CoreAPIVersion,
		Plural:     "secrets",
		Spec:       func(o *Secret) any { return struct{ T, D any }{o.Type, o.Data} },
		Default:    (*Secret).setDefaults,
		Validate:   (*Secret).validateSpec,
		Columns: []Column[*Secret]{
			// A viewer's copy has its keys in stringData (see Redact).
			{Header: "DATA", Value: func(o *Secret) string { return fmt.Sprint(len(o.Data) + len(o.StringData)) }},
			AgeColumn[*Secret](),
		},
		Redact:       redactSecret,
		CompileInput: true,
	}
}

// serviceRefs are the ServiceTemplates and ServiceTemplateChains a
// serviceSpec names.
func serviceRefs(ss *ServiceSpec) []Ref {
	refs := make([]Ref, 0, len(ss.Services))
	for i, svc := range ss.Services {
		use := fmt.Sprintf("services[%d]", i)
		refs = append(refs, Ref{Kind: KindServiceTemplate, Name: svc.Template, Field: "spec.serviceSpec." + use + ".template", Use: use})
		if svc.TemplateChain != "" {
			refs = append(refs, Ref{Kind: KindServiceTemplateChain, Name: svc.TemplateChain, Field: "spec.serviceSpec." + use + ".templateChain", Use: use})
		}
	}
	return refs
}

// servicesColumns are the columns of a kind that deploys services.
func servicesColumns[T Object](spec func(T) *ServiceSpec, status func(T) *ServicesStatus) []Column[T] {
	return []Column[T]{
		{Header: "SERVICES", Value: func(o T) string { return fmt.Sprint(len(spec(o).Services)) }},
		{Header: "READY", Value: func(o T) string {
			r, tot, _ := readiness(status(o))
			return fmt.Sprintf("%d/%d", r, tot)
		}},
		AgeColumn[T](),
		{Header: "MESSAGE", Wide: true, Value: func(o T) string { _, _, msg := readiness(status(o)); return orNone(msg) }},
	}
}

func readiness(st *ServicesStatus) (ready, total int, msg string) {
	for _, s := range st.Services {
		total++
		if s.State == "Deployed" {
			ready++
		}
	}
	for _, c := range st.Conditions {
		if c.Type == "Ready" && c.Status != "True" {
			msg = c.Message
		}
	}
	return ready, total, msg
}

func selectorString(sel LabelSelector) string {
	var parts []string
	for _, k := range sortedKeys(sel.MatchLabels) {
		parts = append(parts, k+"="+sel.MatchLabels[k])
	}
	for _, e := range sel.MatchExpressions {
		parts = append(parts, fmt.Sprintf("%s %s (%s)", e.Key, e.Operator, strings.Join(e.Values, ",")))
	}
	return strings.Join(parts, ",")
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

// redactSecret hides every value of data and stringData; the keys stay
// visible in stringData, each mapped to marker.
func redactSecret(o *Secret, marker string) []string {
	keys := slices.Sorted(maps.Keys(o.Data))
	for k := range o.StringData {
		if _, ok := o.Data[k]; !ok {
			keys = append(keys, k)
		}
	}
	var hidden []string
	if len(keys) > 0 {
		o.StringData = make(map[string]string, len(keys))
		for _, k := range keys {
			o.StringData[k] = marker
		}
		hidden = append(hidden, "data")
	}
	o.Data = nil
	return hidden
}

// RedactURL replaces the userinfo of a URL with marker. ok is false when
// the URL has none (or does not parse: then it is shown as stored only if
// it has no '@').
func RedactURL(raw, marker string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil {
		// Not expected: apply validates URLs. Hide everything that could
		// be userinfo rather than guess.
		if strings.Contains(raw, "@") {
			return marker, true
		}
		return raw, false
	}
	if u.User == nil {
		return raw, false
	}
	u.User = nil
	s := u.String()
	scheme := u.Scheme + "://"
	return scheme + marker + "@" + strings.TrimPrefix(s, scheme), true
}

func serviceTemplateChainKind() KindDef[*ServiceTemplateChain] {
	return KindDef[*ServiceTemplateChain]{
		Kind: KindServiceTemplateChain, New: func() *ServiceTemplateChain { return &ServiceTemplateChain{} },
		APIVersion: APIVersion, Accepts: k0rdentGroups,
		Plural: "servicetemplatechains", Short: []string{"stc"},
		// Services of every namespace may use the chains of the system
		// namespaces, as k0rdent's system chains serve every namespace.
		SharedFromSystemNamespaces: true,
		Spec:                       func(o *ServiceTemplateChain) any { return &o.Spec },
		Validate:                   (*ServiceTemplateChain).validateSpec,
		Columns: []Column[*ServiceTemplateChain]{
			{Header: "TEMPLATES", Value: func(o *ServiceTemplateChain) string { return fmt.Sprint(len(o.Spec.SupportedTemplates)) }},
			AgeColumn[*ServiceTemplateChain](),
			{Header: "UPGRADES", Wide: true, Value: chainUpgrades},
		},
		// A chain an AccessManagement distributes decides which system
		// templates a managed namespace sees.
		CompileInput: true,
	}
}

// chainUpgrades is a chain's upgrade paths, "a->b|c, b->c".
func chainUpgrades(o *ServiceTemplateChain) string {
	var parts []string
	for _, st := range o.Spec.SupportedTemplates {
		if ups := o.upgradesFrom(st.Name); len(ups) > 0 {
			parts = append(parts, st.Name+"->"+strings.Join(ups, "|"))
		}
	}
	return orNone(strings.Join(parts, ", "))
}

func accessManagementKind() KindDef[*AccessManagement] {
	return KindDef[*AccessManagement]{
		Kind: KindAccessManagement, New: func() *AccessManagement { return &AccessManagement{} },
		APIVersion: APIVersion, Accepts: k0rdentGroups,
		Plural: "accessmanagements", Short: []string{"am"},
		ClusterScoped: true,
		Spec:          func(o *AccessManagement) any { return &o.Spec },
		Status:        func(o *AccessManagement) any { return &o.Status },
		Validate:      (*AccessManagement).validateSpec,
		Warnings:      accessManagementWarnings,
		Columns: []Column[*AccessManagement]{
			{Header: "RULES", Value: func(o *AccessManagement) string { return fmt.Sprint(len(o.Spec.AccessRules)) }},
			AgeColumn[*AccessManagement](),
		},
		// It decides which system templates a namespace's services see.
		CompileInput: true,
	}
}
