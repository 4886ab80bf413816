package objects

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Warnings lists the fields of o that Tether accepts (so k0rdent and Flux
// manifests apply as written) but does not act on yet, one sentence each
// naming the field. `tether apply` prints them and the API shows them in
// status.warnings. They are derived from the spec, so they are never
// stale and never stored.
func Warnings(o Object) []string { return builtinKinds().Warnings(o) }

// Warnings is the package's Warnings for the kinds of r.
func (r *Registry) Warnings(o Object) []string {
	if k := r.KindOf(o); k != nil && k.warnings != nil {
		return k.warnings(o)
	}
	return nil
}

// WithWarnings sets o's status.warnings to Warnings(o), for kinds with a
// status; it is how the API shows them.
func WithWarnings(o Object) { builtinKinds().WithWarnings(o) }

// WithWarnings is the package's WithWarnings for the kinds of r: o's
// status gets the warnings if it has a SetWarnings method.
func (r *Registry) WithWarnings(o Object) {
	k := r.KindOf(o)
	if k == nil {
		return
	}
	if st, ok := k.statusOf(o).(interface{ SetWarnings([]string) }); ok {
		st.SetWarnings(r.Warnings(o))
	}
}

// warnings collects warning sentences, each naming its field.
type warnings []string

func (w *warnings) add(field, format string, args ...any) {
	*w = append(*w, field+": "+fmt.Sprintf(format, args...))
}

func helmRepositoryWarnings(o *HelmRepository) []string {
	var w warnings
	sp := o.Spec
	if sp.PassCredentials && sp.SecretRef == nil {
		w.add("spec.passCredentials", "no effect without spec.secretRef")
	}
	if sp.Provider != "" && sp.Provider != "generic" {
		w.add("spec.provider", "%q cloud authentication is not supported; anonymous access is used", sp.Provider)
	}
	if len(sp.AccessFrom) > 0 {
		w.add("spec.accessFrom", "no effect: templates read repositories in their own namespace")
	}
	if sp.Timeout != "" {
		w.add("spec.timeout", "no effect yet: the hub's own download limits apply")
	}
	return w
}

func serviceTemplateWarnings(o *ServiceTemplate) []string {
	var w warnings
	sp := o.Spec
	ns := o.Metadata.Namespace
	switch sp.Mode() {
	case ModeChartSpec:
		chartSpecWarnings(&w, "spec.helm.chartSpec", &sp.Helm.ChartSpec)
	case ModeChartRef:
		ref := sp.Helm.ChartRef
		if ref.Kind == "ExternalArtifact" {
			w.add("spec.helm.chartRef.kind", "ExternalArtifact is not supported yet: this template is stored but services that use it are not deployed")
		}
		if ref.Namespace != "" && ref.Namespace != ns {
			w.add("spec.helm.chartRef.namespace", "%q: a template reads its sources in its own namespace (%s): this template is not deployed", ref.Namespace, ns)
		}
	}
	if src, field := sp.Source(); src != nil {
		sourceWarnings(&w, "spec."+field, src, ns)
	}
	helmOptionsWarnings(&w, "spec.helmOptions", sp.HelmOptions)
	if sp.KubernetesConstraint != "" {
		w.add("spec.k8sConstraint", "not checked yet against the clusters' Kubernetes versions")
	}
	return w
}

// serviceSpecWarnings covers k0rdent's serviceSpec fields, under p.
func serviceSpecWarnings(w *warnings, p string, ss *ServiceSpec) {
	if _, err := SyncModeOf(ss); err != nil {
		w.add(p+"."+strings.SplitN(err.Error(), ":", 2)[0], "%s; the services are not deployed", strings.TrimSpace(strings.SplitN(err.Error(), ":", 2)[1]))
	}
	if _, err := DriftRulesOf(ss); err != nil {
		field, why, _ := strings.Cut(err.Error(), ": ")
		w.add(p+"."+field, "%s; the services are not deployed", why)
	}
	if ss.Provider != nil {
		if ss.Provider.Name != "" || ss.Provider.SelfManagement {
			w.add(p+".provider", "name and selfManagement have no effect: Tether's agents deploy services themselves (no state management provider)")
		}
		cfg := providerConfig(ss)
		if len(ss.Provider.Config) > 0 && cfg == nil {
			w.add(p+".provider.config", "not an object; ignored")
		}
		for _, k := range slices.Sorted(maps.Keys(cfg)) {
			switch k {
			case "syncMode":
			case "priority":
				if _, err := configPriority(cfg); err != nil {
					w.add(p+".provider.config.priority", "%v; ignored", err)
				}
			case "stopOnConflict", "continueOnError":
				if _, err := configBool(cfg, k); err != nil {
					w.add(p+".provider.config."+k, "%v; ignored", err)
				}
			case "driftIgnore", "driftExclusions":
				// Acted on; DriftRulesOf's error is warned below.
			default:
				w.add(p+".provider.config."+k, "no effect in Tether yet")
			}
		}
	}
	for _, f := range []struct {
		set  bool
		name string
	}{
		{len(ss.PolicyRefs) > 0, "policyRefs"},
		{ss.Reload, "reload"},
	} {
		if f.set {
			w.add(p+"."+f.name, "not supported yet; accepted and kept")
		}
	}
	for i, r := range ss.TemplateResourceRefs {
		rp := fmt.Sprintf("%s.templateResourceRefs[%d]", p, i)
		for _, f := range []struct {
			set  bool
			name string
		}{
			{r.Resource.UID != "", "resource.uid"},
			{r.Resource.ResourceVersion != "", "resource.resourceVersion"},
			{r.Resource.FieldPath != "", "resource.fieldPath"},
			{len(r.WatchFields) > 0, "watchFields"},
		} {
			if f.set {
				w.add(rp+"."+f.name, "ignored: getResource reads the whole object, and any change to it recompiles")
			}
		}
	}
	for i, svc := range ss.Services {
		sp := fmt.Sprintf("%s.services[%d]", p, i)
		helmOptionsWarnings(w, sp+".helmOptions", svc.HelmOptions)
		switch svc.HelmAction {
		case "", HelmActionInstall, HelmActionUninstall:
		default:
			w.add(sp+".helmAction", "%q is neither %s nor %s; the service is installed", svc.HelmAction, HelmActionInstall, HelmActionUninstall)
		}
		if svc.Version != "" {
			w.add(sp+".version", "no effect: the template names the chart version")
		}
	}
}

// k0rdent's helmAction values: Uninstall removes the service like disable.
const (
	HelmActionInstall   = "Install"
	HelmActionUninstall = "Uninstall"
)

func helmOptionsWarnings(w *warnings, p string, raw []byte) {
	if len(raw) == 0 {
		return
	}
	_, ignored, err := ParseHelmOptions(raw)
	switch {
	case err != nil:
		w.add(p, "%s; the services using it are not deployed", strings.TrimPrefix(err.Error(), "helmOptions"))
	case len(ignored) > 0:
		w.add(p, "%s not applied yet (timeout, skipCRDs, disableHooks, atomic and wait are)", strings.Join(ignored, ", "))
	}
}

func multiClusterServiceWarnings(o *MultiClusterService) []string {
	var w warnings
	if len(o.Spec.DependsOn) > 0 {
		w.add("spec.dependsOn", "ordering between MultiClusterServices is not supported yet")
	}
	if o.Spec.KeepServicesOnSelectorMismatch {
		w.add("spec.keepServicesOnSelectorMismatch", "not supported yet: services are removed from clusters that stop matching")
	}
	serviceSpecWarnings(&w, "spec.serviceSpec", &o.Spec.ServiceSpec)
	return w
}

func clusterDeploymentWarnings(o *ClusterDeployment) []string {
	var w warnings
	sp := o.Spec
	for _, f := range []struct {
		set  bool
		name string
	}{
		{sp.PropagateCredentials != nil, "propagateCredentials"},
		{sp.ClusterAuth != "", "clusterAuth"},
		{sp.DataSource != "", "dataSource"},
		{sp.AuditPolicy != "", "auditPolicy"},
		{len(sp.IPAMClaim) > 0, "ipamClaim"},
		{sp.DryRun, "dryRun"},
		{sp.CleanupOnDeletion, "cleanupOnDeletion"},
	} {
		if f.set {
			w.add("spec."+f.name, "not supported by Tether's provisioning yet; no effect")
		}
	}
	serviceSpecWarnings(&w, "spec.serviceSpec", &o.Spec.ServiceSpec)
	return w
}

// sourceWarnings covers a kustomize, resources or chartSource source,
// under p, of a template in namespace ns.
func sourceWarnings(w *warnings, p string, src *SourceSpec, ns string) {
	notYet := "is not supported as a source yet: this template is stored but services that use it are not deployed"
	if r := src.LocalSourceRef; r != nil {
		switch r.Kind {
		case KindBucket, KindOCIRepository:
			w.add(p+".localSourceRef.kind", "%s %s", r.Kind, notYet)
		}
		if r.Namespace != "" && r.Namespace != ns && r.Kind != KindConfigMap && r.Kind != KindSecret {
			w.add(p+".localSourceRef.namespace", "%q: a template reads its sources in its own namespace (%s): this template is not deployed", r.Namespace, ns)
		}
	}
	if rs := src.RemoteSourceSpec; rs != nil {
		if rs.Bucket != nil {
			w.add(p+".remoteSourceSpec.bucket", "%s", notYet)
		}
		if rs.OCI != nil {
			w.add(p+".remoteSourceSpec.oci", "%s", notYet)
		}
		if rs.Git != nil {
			gitWarnings(w, p+".remoteSourceSpec.git", rs.Git)
		}
	}
	if src.DeploymentType == "Local" && !strings.HasSuffix(p, "chartSource") {
		w.add(p+".deploymentType", "Local has no effect: Tether's agents deploy on their own cluster, as Remote does (there is no management-cluster deployment)")
	}
}

func gitRepositoryWarnings(o *GitRepository) []string {
	var w warnings
	gitWarnings(&w, "spec", &o.Spec)
	return w
}

// gitWarnings covers a GitRepository spec's accepted, unused fields.
func gitWarnings(w *warnings, p string, sp *GitRepositorySpec) {
	for _, f := range []struct {
		set  bool
		name string
	}{
		{sp.Provider != "" && sp.Provider != "generic", "provider"},
		{sp.ServiceAccountName != "", "serviceAccountName"},
		{sp.Verify != nil, "verify"},
		{sp.ProxySecretRef != nil, "proxySecretRef"},
		{sp.Ignore != nil, "ignore"},
		{sp.RecurseSubmodules, "recurseSubmodules"},
		{len(sp.Include) > 0, "include"},
		{len(sp.SparseCheckout) > 0, "sparseCheckout"},
	} {
		if f.set {
			w.add(p+"."+f.name, "not supported yet; accepted and kept")
		}
	}
}
