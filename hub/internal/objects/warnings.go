package objects

import "fmt"

// Warnings lists the fields of o that Tether accepts (so k0rdent and Flux
// manifests apply as written) but does not act on yet, one sentence each
// naming the field. `tether apply` prints them and the API shows them in
// status.warnings. They are derived from the spec, so they are never
// stale and never stored.
func Warnings(o Object) []string {
	var w []string
	add := func(field, format string, args ...any) {
		w = append(w, field+": "+fmt.Sprintf(format, args...))
	}
	switch o := o.(type) {
	case *HelmRepository:
		sp := o.Spec
		if sp.PassCredentials && sp.SecretRef == nil {
			add("spec.passCredentials", "no effect without spec.secretRef")
		}
		if sp.Provider != "" && sp.Provider != "generic" {
			add("spec.provider", "%q cloud authentication is not supported; anonymous access is used", sp.Provider)
		}
		if len(sp.AccessFrom) > 0 {
			add("spec.accessFrom", "no effect: templates read repositories in their own namespace")
		}
		if sp.Timeout != "" {
			add("spec.timeout", "no effect yet: the hub's own download limits apply")
		}
	case *ServiceTemplate:
		cs := o.Spec.Helm.ChartSpec
		if cs.Interval != "" {
			add("spec.helm.chartSpec.interval", "no effect: the chart is pinned by digest once resolved (the HelmRepository's interval sets how often resolution is retried)")
		}
		if cs.ReconcileStrategy == "Revision" {
			add("spec.helm.chartSpec.reconcileStrategy", "Revision has no effect: a chart version is resolved once and pinned by digest")
		}
		if len(cs.ValuesFiles) > 0 || cs.IgnoreMissingValuesFiles {
			add("spec.helm.chartSpec.valuesFiles", "not supported yet: give values in the services that use this template")
		}
		if len(cs.Verify) > 0 {
			add("spec.helm.chartSpec.verify", "chart signatures are not verified yet; the chart is pinned by its sha256 digest")
		}
	case *ClusterDeployment:
		if o.Spec.Template != TemplateAdopted {
			add("spec.template", "%q: provisioning through Cluster API is not available yet; this ClusterDeployment deploys its services to the enrolled cluster named %q", o.Spec.Template, o.Metadata.Name)
		}
		if o.Spec.Credential != "" && o.Spec.Template != TemplateAdopted {
			add("spec.credential", "no effect until provisioning through Cluster API is available")
		}
		if len(o.Spec.Config) > 0 && o.Spec.Template != TemplateAdopted {
			add("spec.config", "no effect until provisioning through Cluster API is available")
		}
	}
	return w
}

// WithWarnings sets o's status.warnings to Warnings(o), for kinds with a
// status; it is how the API shows them.
func WithWarnings(o Object) {
	w := Warnings(o)
	switch o := o.(type) {
	case *HelmRepository:
		o.Status.Warnings = w
	case *ServiceTemplate:
		o.Status.Warnings = w
	case *ClusterDeployment:
		o.Status.Warnings = w
	case *MultiClusterService:
		o.Status.Warnings = w
	}
}
