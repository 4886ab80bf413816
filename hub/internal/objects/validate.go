package objects

import (
	"bytes"
	"encoding/json"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Default fills in defaults: namespace "default", apiVersion normalised,
// priority 100, service namespace "default", sourceRef kind
// HelmRepository, HelmRepository type from the URL scheme, Secret
// stringData merged into data. It is idempotent.
func Default(o Object) { builtinKinds().Default(o) }

// Default fills in the defaults of o's kind (see the package's Default);
// an object of an unknown kind only gets its namespace.
func (r *Registry) Default(o Object) {
	h := o.GetHeader()
	k := r.KindOf(o)
	if k == nil {
		if h.Metadata.Namespace == "" {
			h.Metadata.Namespace = DefaultNamespace
		}
		return
	}
	h.APIVersion = k.apiVersion
	h.Metadata.Namespace = k.namespaceFor(h.Metadata.Namespace)
	if k.defaults != nil {
		k.defaults(o)
	}
}

// Validate checks one object on its own (references to other objects are
// checked by Repo.Apply). Call Default first. The error is an
// *ObjectError listing every problem with its field path.
func Validate(o Object) error { return builtinKinds().Validate(o) }

// Validate is the package's Validate for the kinds of r.
func (r *Registry) Validate(o Object) error {
	if fe := r.validate(o); len(fe) > 0 {
		h := o.GetHeader()
		return &ObjectError{Kind: h.Kind, Key: h.nsName(), Fields: fe}
	}
	return nil
}

func (r *Registry) validate(o Object) FieldErrors {
	var errs FieldErrors
	k := r.KindOf(o)
	if k == nil {
		errs.add("kind", "%s %q", ErrUnknownKind, o.GetHeader().Kind)
		return errs
	}
	validateMetadata(&o.GetHeader().Metadata, "metadata", k.Namespaced(), &errs)
	if k.validate != nil {
		errs = append(errs, k.validate(o)...)
	}
	return errs
}

func validateMetadata(m *Metadata, p path, namespaced bool, errs *FieldErrors) {
	if m.Name == "" {
		errs.add(p.child("name"), "required")
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(m.Name) {
			errs.add(p.child("name"), "%q: %s", m.Name, msg)
		}
	}
	if namespaced {
		for _, msg := range validation.IsDNS1123Label(m.Namespace) {
			errs.add(p.child("namespace"), "%q: %s", m.Namespace, msg)
		}
	} else if m.Namespace != "" {
		errs.add(p.child("namespace"), "%q: the kind is cluster-scoped; give no namespace", m.Namespace)
	}
	for _, k := range sortedKeys(m.Labels) {
		for _, msg := range validation.IsQualifiedName(k) {
			errs.add(p.child("labels").key(k), "key: %s", msg)
		}
		for _, msg := range validation.IsValidLabelValue(m.Labels[k]) {
			errs.add(p.child("labels").key(k), "%q: %s", m.Labels[k], msg)
		}
	}
	for _, k := range sortedKeys(m.Annotations) {
		for _, msg := range validation.IsQualifiedName(strings.ToLower(k)) {
			errs.add(p.child("annotations").key(k), "key: %s", msg)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// ---- HelmRepository ----

func (o *HelmRepository) setDefaults() {
	if o.Spec.Type == "" {
		o.Spec.Type = "default"
		if strings.HasPrefix(o.Spec.URL, "oci://") {
			o.Spec.Type = "oci"
		}
	}
}

func (o *HelmRepository) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path // the object's root
	)
	sp := p.child("spec")
	switch u, err := url.Parse(o.Spec.URL); {
	case o.Spec.URL == "":
		errs.add(sp.child("url"), "required")
	case err != nil:
		errs.add(sp.child("url"), "%v", err)
	case u.Host == "":
		errs.add(sp.child("url"), "%q has no host", o.Spec.URL)
	case o.Spec.Type == "oci" && u.Scheme != "oci":
		errs.add(sp.child("url"), "%q: type oci needs an oci:// URL", o.Spec.URL)
	case o.Spec.Type == "default" && u.Scheme != "http" && u.Scheme != "https":
		errs.add(sp.child("url"), "%q: want an http:// or https:// URL (or type oci with oci://)", o.Spec.URL)
	}
	if o.Spec.Type != "default" && o.Spec.Type != "oci" {
		errs.add(sp.child("type"), "%q: want default or oci", o.Spec.Type)
	}
	validateDuration(o.Spec.Interval, sp.child("interval"), &errs)
	validateDuration(o.Spec.Timeout, sp.child("timeout"), &errs)
	for _, r := range []struct {
		ref  *LocalObjectReference
		name string
	}{{o.Spec.SecretRef, "secretRef"}, {o.Spec.CertSecretRef, "certSecretRef"}} {
		if r.ref != nil && r.ref.Name == "" {
			errs.add(sp.child(r.name).child("name"), "required")
		}
	}
	switch o.Spec.Provider {
	case "", "generic", "aws", "azure", "gcp":
	default:
		errs.add(sp.child("provider"), "%q: want generic, aws, azure or gcp", o.Spec.Provider)
	}
	return errs
}

// validateDuration checks an optional duration field: a positive Go
// duration such as "10m" or "1h30m".
func validateDuration(d Duration, p path, errs *FieldErrors) {
	if d == "" {
		return
	}
	v, err := time.ParseDuration(string(d))
	if err != nil || v <= 0 {
		errs.add(p, "%q: want a positive duration such as 30s, 10m or 1h", string(d))
	}
}

// ---- ServiceTemplate ----

func (o *ServiceTemplate) setDefaults() {
	if o.Spec.Mode() == ModeChartSpec && o.Spec.Helm.ChartSpec.SourceRef.Kind == "" {
		o.Spec.Helm.ChartSpec.SourceRef.Kind = KindHelmRepository
	}
}

func (o *ServiceTemplate) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path // the object's root
	)
	sp := p.child("spec")
	// Exactly one chart or manifest source, as k0rdent's schema says.
	var set []string
	for _, f := range []struct {
		set  bool
		name string
	}{
		{!reflect.ValueOf(o.Spec.Helm.ChartSpec).IsZero(), "helm.chartSpec"},
		{o.Spec.Helm.ChartRef != nil, "helm.chartRef"},
		{o.Spec.Helm.ChartSource != nil, "helm.chartSource"},
		{o.Spec.Kustomize != nil, "kustomize"},
		{o.Spec.Resources != nil, "resources"},
	} {
		if f.set {
			set = append(set, f.name)
		}
	}
	switch len(set) {
	case 0:
		errs.add(sp, "one of helm (chartSpec, chartRef or chartSource), kustomize or resources is required")
		return errs
	case 1:
	default:
		errs.add(sp, "%s are mutually exclusive", strings.Join(set, " and "))
		return errs
	}
	switch o.Spec.Mode() {
	case ModeChartSpec:
		o.Spec.Helm.ChartSpec.validate(sp.child("helm").child("chartSpec"), false, &errs)
	case ModeChartRef:
		validateChartRef(o.Spec.Helm.ChartRef, sp.child("helm").child("chartRef"), &errs)
	default:
		errs = append(errs, o.validateSource()...)
	}
	return errs
}

// ---- ServiceSpec ----

func defaultServiceSpec(s *ServiceSpec) {
	if s.Priority == 0 {
		s.Priority = DefaultPriority
	}
	for i := range s.Services {
		if s.Services[i].Namespace == "" {
			s.Services[i].Namespace = DefaultNamespace
		}
	}
}

// maxReleaseName is Helm's limit on release names.
const maxReleaseName = 53

func validateServiceSpec(s *ServiceSpec, p path, errs *FieldErrors) {
	if s.Priority < MinPriority || s.Priority > MaxPriority {
		errs.add(p.child("priority"), "%d is out of range [%d, %d]", s.Priority, MinPriority, MaxPriority)
	}
	switch s.SyncMode {
	case "", SyncOneTime, SyncContinuous, SyncContinuousWithDriftDetection, SyncDryRun:
	default:
		errs.add(p.child("syncMode"), "%q: want %s, %s, %s or %s", s.SyncMode, SyncOneTime, SyncContinuous, SyncContinuousWithDriftDetection, SyncDryRun)
	}
	validateTemplateResourceRefs(s.TemplateResourceRefs, p.child("templateResourceRefs"), errs)
	names := map[string]int{}
	for i, svc := range s.Services {
		sp := p.child("services").index(i)
		if svc.Name == "" {
			errs.add(sp.child("name"), "required")
		} else {
			for _, msg := range validation.IsDNS1123Label(svc.Name) {
				errs.add(sp.child("name"), "%q: %s", svc.Name, msg)
			}
			if len(svc.Name) > maxReleaseName {
				errs.add(sp.child("name"), "%q: Helm release names are at most %d characters", svc.Name, maxReleaseName)
			}
			if j, dup := names[svc.Name]; dup {
				errs.add(sp.child("name"), "%q is also the name of services[%d]", svc.Name, j)
			} else {
				names[svc.Name] = i
			}
		}
		for _, msg := range validation.IsDNS1123Label(svc.Namespace) {
			errs.add(sp.child("namespace"), "%q: %s", svc.Namespace, msg)
		}
		if svc.Template == "" {
			errs.add(sp.child("template"), "required")
		} else {
			for _, msg := range validation.IsDNS1123Subdomain(svc.Template) {
				errs.add(sp.child("template"), "%q: %s", svc.Template, msg)
			}
		}
		for j, vf := range svc.ValuesFrom {
			vp := sp.child("valuesFrom").index(j)
			if vf.Kind != KindConfigMap && vf.Kind != KindSecret {
				errs.add(vp.child("kind"), "%q: want ConfigMap or Secret", vf.Kind)
			}
			if vf.Name == "" {
				errs.add(vp.child("name"), "required")
			} else {
				for _, msg := range validation.IsDNS1123Subdomain(vf.Name) {
					errs.add(vp.child("name"), "%q: %s", vf.Name, msg)
				}
			}
		}
		if err := CheckValues(string(svc.Values)); err != nil {
			errs.add(sp.child("values"), "%v", err)
		} else if err := checkGetResourceIDs(string(svc.Values), s.TemplateResourceRefs); err != nil {
			errs.add(sp.child("values"), "%v", err)
		}
	}
	// dependsOn: names in this spec, no self, no duplicates, no cycles.
	for i, svc := range s.Services {
		seen := map[string]bool{}
		for j, d := range svc.DependsOn {
			dp := p.child("services").index(i).child("dependsOn").index(j)
			ns, name := DependsOnName(d)
			k, ok := names[name]
			switch {
			case name == svc.Name:
				errs.add(dp, "%q: a service cannot depend on itself", d)
			case !ok:
				errs.add(dp, "%q is not a service in this spec", d)
			case ns != "" && s.Services[k].Namespace != ns:
				errs.add(dp, "%q: service %q of this spec is in namespace %q", d, name, s.Services[k].Namespace)
			case seen[name]:
				errs.add(dp, "%q is listed twice", d)
			}
			seen[name] = true
		}
	}
	if cyc := findCycle(s.Services, names); cyc != nil {
		errs.add(p.child("services").index(names[cyc[0]]).child("dependsOn"), "dependency cycle: %s", strings.Join(cyc, " -> "))
	}
}

// DependsOnName splits a dependsOn entry into its namespace ("" when it
// names only a service) and service name.
func DependsOnName(d string) (namespace, name string) {
	if ns, n, ok := strings.Cut(d, "/"); ok {
		return ns, n
	}
	return "", d
}

// findCycle returns one dependsOn cycle (first name repeated at the end),
// or nil.
func findCycle(svcs []Service, names map[string]int) []string {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(svcs))
	var stack []string
	var visit func(i int) []string
	visit = func(i int) []string {
		color[i] = grey
		stack = append(stack, svcs[i].Name)
		for _, dep := range svcs[i].DependsOn {
			_, d := DependsOnName(dep)
			j, ok := names[d]
			if !ok || j == i {
				continue
			}
			switch color[j] {
			case grey:
				for k, n := range stack {
					if n == d {
						return append(append([]string(nil), stack[k:]...), d)
					}
				}
			case white:
				if c := visit(j); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return nil
	}
	for i := range svcs {
		if color[i] == white {
			if c := visit(i); c != nil {
				return c
			}
		}
	}
	return nil
}

// ---- ClusterDeployment ----

func (o *ClusterDeployment) setDefaults() {
	defaultServiceSpec(&o.Spec.ServiceSpec)
	o.Spec.Config = compactJSON(o.Spec.Config)
}

func (o *ClusterDeployment) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path // the object's root
	)
	sp := p.child("spec")
	if o.Spec.Template == "" {
		errs.add(sp.child("template"), "required (%q binds the enrolled cluster of the same name)", TemplateAdopted)
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(o.Spec.Template) {
			errs.add(sp.child("template"), "%q: %s", o.Spec.Template, msg)
		}
	}
	if o.Spec.Template == TemplateAdopted {
		for _, msg := range validation.IsDNS1123Label(o.Metadata.Name) {
			errs.add("metadata.name", "%q: an adopted cluster's name must be a cluster name: %s", o.Metadata.Name, msg)
		}
	}
	if len(o.Spec.Config) > 0 && !json.Valid(o.Spec.Config) {
		errs.add(sp.child("config"), "not valid JSON")
	}
	validateServiceSpec(&o.Spec.ServiceSpec, sp.child("serviceSpec"), &errs)
	return errs
}

// ---- MultiClusterService ----

func (o *MultiClusterService) setDefaults() {
	defaultServiceSpec(&o.Spec.ServiceSpec)
	o.Spec.Rollout.setDefaults()
}

func (o *MultiClusterService) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path // the object's root
	)
	sp := p.child("spec")
	validateSelector(&o.Spec.ClusterSelector, sp.child("clusterSelector"), &errs)
	validateRollout(o.Spec.Rollout, sp.child("rollout"), &errs)
	validateServiceSpec(&o.Spec.ServiceSpec, sp.child("serviceSpec"), &errs)
	return errs
}

func validateSelector(s *LabelSelector, p path, errs *FieldErrors) {
	for _, k := range sortedKeys(s.MatchLabels) {
		for _, msg := range validation.IsQualifiedName(k) {
			errs.add(p.child("matchLabels").key(k), "key: %s", msg)
		}
		for _, msg := range validation.IsValidLabelValue(s.MatchLabels[k]) {
			errs.add(p.child("matchLabels").key(k), "%q: %s", s.MatchLabels[k], msg)
		}
	}
	for i, e := range s.MatchExpressions {
		ep := p.child("matchExpressions").index(i)
		if e.Key == "" {
			errs.add(ep.child("key"), "required")
		} else {
			for _, msg := range validation.IsQualifiedName(e.Key) {
				errs.add(ep.child("key"), "%q: %s", e.Key, msg)
			}
		}
		switch e.Operator {
		case "In", "NotIn":
			if len(e.Values) == 0 {
				errs.add(ep.child("values"), "must be non-empty for operator %s", e.Operator)
			}
			for j, v := range e.Values {
				for _, msg := range validation.IsValidLabelValue(v) {
					errs.add(ep.child("values").index(j), "%q: %s", v, msg)
				}
			}
		case "Exists", "DoesNotExist":
			if len(e.Values) > 0 {
				errs.add(ep.child("values"), "must be empty for operator %s", e.Operator)
			}
		case "":
			errs.add(ep.child("operator"), "required (In, NotIn, Exists or DoesNotExist)")
		default:
			errs.add(ep.child("operator"), "%q: want In, NotIn, Exists or DoesNotExist", e.Operator)
		}
	}
}

// ---- ConfigMap, Secret ----

// maxDataBytes bounds a ConfigMap's or Secret's data, as Kubernetes does.
const maxDataBytes = 1 << 20

func (o *ConfigMap) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path // the object's root
	)
	total := 0
	for _, k := range sortedKeys(o.Data) {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs.add(p.child("data").key(k), "key: %s", msg)
		}
		total += len(k) + len(o.Data[k])
	}
	if total > maxDataBytes {
		errs.add(p.child("data"), "%d bytes, more than the limit of %d", total, maxDataBytes)
	}
	return errs
}

func (o *Secret) setDefaults() {
	if len(o.StringData) > 0 {
		if o.Data == nil {
			o.Data = map[string][]byte{}
		}
		for k, v := range o.StringData {
			o.Data[k] = []byte(v)
		}
		o.StringData = nil
	}
	if o.Type == "" {
		o.Type = "Opaque"
	}
}

func (o *Secret) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path // the object's root
	)
	total := 0
	for _, k := range sortedKeys(o.Data) {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs.add(p.child("data").key(k), "key: %s", msg)
		}
		total += len(k) + len(o.Data[k])
	}
	for _, k := range sortedKeys(o.StringData) {
		errs.add(p.child("stringData").key(k), "not merged into data (call Default)")
	}
	if total > maxDataBytes {
		errs.add(p.child("data"), "%d bytes, more than the limit of %d", total, maxDataBytes)
	}
	return errs
}

func compactJSON(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b // Validate reports it
	}
	return buf.Bytes()
}

func (o *ServiceTemplateChain) validateSpec() FieldErrors { return o.Spec.validate() }

// validateSource checks spec.kustomize or spec.resources: one source,
// local or remote, as k0rdent's schema says.
func (o *ServiceTemplate) validateSource() FieldErrors {
	var (
		errs FieldErrors
		p    path
	)
	src, field := o.Spec.Source()
	fp := p.child("spec").child(field)
	switch src.DeploymentType {
	case "", "Local", "Remote":
	default:
		errs.add(fp.child("deploymentType"), "%q: want Local or Remote", src.DeploymentType)
	}
	switch r, rs := src.LocalSourceRef, src.RemoteSourceSpec; {
	case r != nil && rs != nil:
		errs.add(fp, "localSourceRef and remoteSourceSpec are mutually exclusive")
	case r == nil && rs == nil:
		errs.add(fp, "one of localSourceRef or remoteSourceSpec is required")
	case r != nil:
		rp := fp.child("localSourceRef")
		switch r.Kind {
		case KindConfigMap, KindSecret:
			if field == "helm.chartSource" {
				errs.add(rp.child("kind"), "%q: Secret and ConfigMap are not supported as Helm chart sources", r.Kind)
			}
		case KindGitRepository, KindBucket, KindOCIRepository:
		default:
			errs.add(rp.child("kind"), "%q: want ConfigMap, Secret, GitRepository, Bucket or OCIRepository", r.Kind)
		}
		if r.Name == "" {
			errs.add(rp.child("name"), "required")
		}
	default:
		n := 0
		for _, set := range []bool{rs.Git != nil, rs.Bucket != nil, rs.OCI != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			errs.add(fp.child("remoteSourceSpec"), "exactly one of git, bucket or oci is required")
		}
		rsp := fp.child("remoteSourceSpec")
		if rs.Git != nil {
			rs.Git.validate(rsp.child("git"), &errs)
		}
		if rs.Bucket != nil {
			rs.Bucket.validate(rsp.child("bucket"), &errs)
		}
		if rs.OCI != nil {
			rs.OCI.validate(rsp.child("oci"), &errs)
		}
	}
	if strings.Contains("/"+src.Path+"/", "/../") {
		errs.add(fp.child("path"), "%q: must not leave the source (..)", src.Path)
	}
	return errs
}

// ---- GitRepository ----

func (o *GitRepository) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path
	)
	o.Spec.validate(p.child("spec"), &errs)
	return errs
}

func (sp *GitRepositorySpec) validate(p path, errs *FieldErrors) {
	switch u, err := url.Parse(sp.URL); {
	case sp.URL == "":
		errs.add(p.child("url"), "required")
	case err != nil:
		errs.add(p.child("url"), "%v", err)
	case u.Scheme != "http" && u.Scheme != "https":
		errs.add(p.child("url"), "%q: want an http:// or https:// URL (ssh is not supported yet)", sp.URL)
	case u.Host == "":
		errs.add(p.child("url"), "%q has no host", sp.URL)
	}
	requireDuration(sp.Interval, p.child("interval"), errs)
	validateDuration(sp.Timeout, p.child("timeout"), errs)
	validateProvider(sp.Provider, p.child("provider"), errs, "generic", "aws", "azure", "github")
	validateRefs(p, errs, map[string]*LocalObjectReference{"secretRef": sp.SecretRef, "proxySecretRef": sp.ProxySecretRef})
	if v := sp.Verify; v != nil {
		switch v.Mode {
		case "", "head", "HEAD", "Tag", "TagAndHEAD":
		default:
			errs.add(p.child("verify").child("mode"), "%q: want HEAD, Tag or TagAndHEAD", v.Mode)
		}
		if v.SecretRef.Name == "" {
			errs.add(p.child("verify").child("secretRef").child("name"), "required")
		}
	}
	for i, in := range sp.Include {
		if in.Repository.Name == "" {
			errs.add(p.child("include").index(i).child("repository").child("name"), "required")
		}
	}
	if r := sp.Ref; r != nil && r.SemVer != "" {
		if _, err := semver.NewConstraint(r.SemVer); err != nil {
			errs.add(p.child("ref").child("semver"), "%q: %v", r.SemVer, err)
		}
	}
	if r := sp.Ref; r != nil && r.Commit != "" && !isHexCommit(r.Commit) {
		errs.add(p.child("ref").child("commit"), "%q: want a full 40-character hex commit", r.Commit)
	}
}

func isHexCommit(s string) bool {
	if len(s) != 40 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
