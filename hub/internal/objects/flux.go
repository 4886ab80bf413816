package objects

import (
	"net/url"
	"strings"

	"github.com/Masterminds/semver/v3"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Flux's source kinds besides HelmRepository and GitRepository, as
// k0rdent's templates name them: a chartRef's OCIRepository or HelmChart,
// and Bucket (stored; not a source Tether reads yet).
const (
	KindOCIRepository = "OCIRepository"
	KindHelmChart     = "HelmChart"
	KindBucket        = "Bucket"
)

// ---- OCIRepository ----

// OCIRepository is an artifact in an OCI registry; as a template's
// chartRef, a Helm chart the hub pulls with Helm's registry client and
// pins by digest.
type OCIRepository struct {
	Header `json:",inline"`
	Spec   OCIRepositorySpec `json:"spec"`
	Status WarningsStatus    `json:"status,omitzero"`
}

// OCIRepositorySpec is Flux's source.toolkit.fluxcd.io/v1 (and v1beta2)
// OCIRepository spec, also k0rdent's remoteSourceSpec.oci.
type OCIRepositorySpec struct {
	// URL is oci://HOST/PATH of the artifact's repository (for a chart,
	// HOST/PATH/NAME).
	URL string `json:"url"`
	// Ref selects the tag: Digest wins, then SemVer (the newest tag in
	// range), then Tag (default: latest).
	Ref           *OCIRepositoryRef `json:"ref,omitempty"`
	LayerSelector *OCILayerSelector `json:"layerSelector,omitempty"`
	// Provider is the cloud login (generic, aws, azure, gcp); only
	// generic (SecretRef) is supported.
	Provider string `json:"provider,omitempty"`
	// SecretRef names a Secret of type kubernetes.io/dockerconfigjson,
	// or with username and password, for the registry.
	SecretRef          *LocalObjectReference `json:"secretRef,omitempty"`
	Verify             *OCIVerification      `json:"verify,omitempty"`
	ServiceAccountName string                `json:"serviceAccountName,omitempty"`
	// CertSecretRef names a Secret with ca.crt (and tls.crt, tls.key).
	CertSecretRef  *LocalObjectReference `json:"certSecretRef,omitempty"`
	ProxySecretRef *LocalObjectReference `json:"proxySecretRef,omitempty"`
	// Interval is how often the tag or semver range is looked up again.
	Interval Duration `json:"interval"`
	Timeout  Duration `json:"timeout,omitempty"`
	Ignore   *string  `json:"ignore,omitempty"`
	// Insecure allows plain HTTP to the registry.
	Insecure bool `json:"insecure,omitempty"`
	Suspend  bool `json:"suspend,omitempty"`
}

// OCIRepositoryRef is Flux's OCIRepositoryRef.
type OCIRepositoryRef struct {
	Digest       string `json:"digest,omitempty"`
	SemVer       string `json:"semver,omitempty"`
	SemverFilter string `json:"semverFilter,omitempty"`
	Tag          string `json:"tag,omitempty"`
}

// OCILayerSelector is Flux's OCILayerSelector.
type OCILayerSelector struct {
	MediaType string `json:"mediaType,omitempty"`
	Operation string `json:"operation,omitempty"` // extract, copy
}

// OCIVerification is Flux's OCIRepositoryVerification (and, without
// TrustedRootSecretRef, a HelmChart's verify).
type OCIVerification struct {
	Provider             string                `json:"provider,omitempty"`
	SecretRef            *LocalObjectReference `json:"secretRef,omitempty"`
	MatchOIDCIdentity    []OIDCIdentityMatch   `json:"matchOIDCIdentity,omitempty"`
	TrustedRootSecretRef *LocalObjectReference `json:"trustedRootSecretRef,omitempty"`
}

// OIDCIdentityMatch is Flux's OIDCIdentityMatch.
type OIDCIdentityMatch struct {
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
}

func (o *OCIRepository) validateSpec() FieldErrors {
	var errs FieldErrors
	o.Spec.validate(path("spec"), &errs)
	return errs
}

func (sp *OCIRepositorySpec) validate(p path, errs *FieldErrors) {
	switch u, err := url.Parse(sp.URL); {
	case sp.URL == "":
		errs.add(p.child("url"), "required")
	case err != nil:
		errs.add(p.child("url"), "%v", err)
	case u.Scheme != "oci":
		errs.add(p.child("url"), "%q: want an oci:// URL", sp.URL)
	case u.Host == "" || strings.Trim(u.Path, "/") == "":
		errs.add(p.child("url"), "%q: want oci://HOST/PATH", sp.URL)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "":
		errs.add(p.child("url"), "%q: want oci://HOST/PATH without user, query or fragment (credentials go in secretRef)", sp.URL)
	}
	requireDuration(sp.Interval, p.child("interval"), errs)
	validateDuration(sp.Timeout, p.child("timeout"), errs)
	if r := sp.Ref; r != nil {
		if r.SemVer != "" {
			if _, err := semver.NewConstraint(r.SemVer); err != nil {
				errs.add(p.child("ref").child("semver"), "%q: %v", r.SemVer, err)
			}
		}
		if r.Digest != "" && !isDigest(r.Digest) {
			errs.add(p.child("ref").child("digest"), "%q: want sha256: and 64 hex digits", r.Digest)
		}
	}
	if ls := sp.LayerSelector; ls != nil {
		switch ls.Operation {
		case "", "extract", "copy":
		default:
			errs.add(p.child("layerSelector").child("operation"), "%q: want extract or copy", ls.Operation)
		}
	}
	validateProvider(sp.Provider, p.child("provider"), errs, "generic", "aws", "azure", "gcp")
	validateRefs(p, errs, map[string]*LocalObjectReference{"secretRef": sp.SecretRef, "certSecretRef": sp.CertSecretRef, "proxySecretRef": sp.ProxySecretRef})
	sp.Verify.validate(p.child("verify"), errs)
}

func (v *OCIVerification) validate(p path, errs *FieldErrors) {
	if v == nil {
		return
	}
	switch v.Provider {
	case "", "cosign", "notation":
	default:
		errs.add(p.child("provider"), "%q: want cosign or notation", v.Provider)
	}
	for i, m := range v.MatchOIDCIdentity {
		if m.Issuer == "" {
			errs.add(p.child("matchOIDCIdentity").index(i).child("issuer"), "required")
		}
		if m.Subject == "" {
			errs.add(p.child("matchOIDCIdentity").index(i).child("subject"), "required")
		}
	}
	validateRefs(p, errs, map[string]*LocalObjectReference{"secretRef": v.SecretRef, "trustedRootSecretRef": v.TrustedRootSecretRef})
}

func isDigest(d string) bool {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ChartRepository is where an OCIRepository's chart lives, as a
// HelmRepository of type oci sees it: oci://HOST/PATH and the chart
// NAME of oci://HOST/PATH/NAME.
func (sp *OCIRepositorySpec) ChartRepository() (repoURL, chart string) {
	u := strings.TrimRight(sp.URL, "/")
	i := strings.LastIndex(u, "/")
	if i < len("oci://") {
		return u, ""
	}
	return u[:i], u[i+1:]
}

func ociRepositoryWarnings(o *OCIRepository) []string {
	var w warnings
	ociWarnings(&w, "spec", &o.Spec)
	return w
}

// ociWarnings covers an OCIRepository spec's accepted, unused fields.
func ociWarnings(w *warnings, p string, sp *OCIRepositorySpec) {
	if sp.Provider != "" && sp.Provider != "generic" {
		w.add(p+".provider", "%q cloud authentication is not supported; secretRef (or anonymous access) is used", sp.Provider)
	}
	if sp.Verify != nil {
		w.add(p+".verify", "signatures are not verified yet; the artifact is pinned by its sha256 digest")
	}
	for _, f := range []struct {
		set  bool
		name string
	}{
		{sp.ServiceAccountName != "", "serviceAccountName"},
		{sp.ProxySecretRef != nil, "proxySecretRef"},
		{sp.Ref != nil && sp.Ref.SemverFilter != "", "ref.semverFilter"},
	} {
		if f.set {
			w.add(p+"."+f.name, "not supported yet; accepted and kept")
		}
	}
	if sp.Ignore != nil {
		w.add(p+".ignore", "no effect: a chart is used as packaged")
	}
}

// ---- HelmChart ----

// HelmChart is Flux's chart of a HelmRepository or GitRepository; as a
// template's chartRef, the hub resolves it as a chartSpec.
type HelmChart struct {
	Header `json:",inline"`
	Spec   ChartSpec      `json:"spec"`
	Status WarningsStatus `json:"status,omitzero"`
}

func (o *HelmChart) setDefaults() {
	if o.Spec.SourceRef.Kind == "" {
		o.Spec.SourceRef.Kind = KindHelmRepository
	}
}

func (o *HelmChart) validateSpec() FieldErrors {
	var errs FieldErrors
	o.Spec.validate(path("spec"), true, &errs)
	return errs
}

func helmChartWarnings(o *HelmChart) []string {
	var w warnings
	chartSpecWarnings(&w, "spec", &o.Spec)
	return w
}

// validate checks a chart spec: a HelmChart's (flux: interval required,
// version a semver range defaulting to the newest) or a ServiceTemplate's
// chartSpec (interval optional, an exact version: Tether pins it).
func (cs *ChartSpec) validate(p path, fluxKind bool, errs *FieldErrors) {
	src := cs.SourceRef.Kind
	switch src {
	case KindHelmRepository, KindGitRepository, KindBucket:
	default:
		errs.add(p.child("sourceRef").child("kind"), "%q: want HelmRepository, GitRepository or Bucket", src)
	}
	switch {
	case cs.Chart == "":
		errs.add(p.child("chart"), "required")
	case src == KindHelmRepository:
		if msgs := validation.IsDNS1123Subdomain(strings.ReplaceAll(cs.Chart, "_", "-")); len(msgs) > 0 {
			errs.add(p.child("chart"), "%q: want lower-case letters, digits, '-', '_' or '.'", cs.Chart)
		}
	case strings.Contains("/"+cs.Chart+"/", "/../"):
		errs.add(p.child("chart"), "%q: must not leave the source (..)", cs.Chart)
	}
	switch {
	case src != KindHelmRepository:
		// Flux ignores the version of a chart in a git repository or
		// bucket: the chart is the one at the path.
	case cs.Version == "" && !fluxKind:
		errs.add(p.child("version"), "required")
	case cs.Version == "" || cs.Version == "*":
	case fluxKind:
		if _, err := semver.NewConstraint(cs.Version); err != nil {
			errs.add(p.child("version"), "%q is not a semantic version or range: %v", cs.Version, err)
		}
	default:
		if _, err := semver.StrictNewVersion(strings.TrimPrefix(cs.Version, "v")); err != nil {
			errs.add(p.child("version"), "%q is not a semantic version (an exact version such as 1.2.3 is required)", cs.Version)
		}
	}
	if fluxKind {
		requireDuration(cs.Interval, p.child("interval"), errs)
	} else {
		validateDuration(cs.Interval, p.child("interval"), errs)
	}
	switch cs.ReconcileStrategy {
	case "", "ChartVersion", "Revision":
	default:
		errs.add(p.child("reconcileStrategy"), "%q: want ChartVersion or Revision", cs.ReconcileStrategy)
	}
	if cs.SourceRef.Name == "" {
		errs.add(p.child("sourceRef").child("name"), "required")
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(cs.SourceRef.Name) {
			errs.add(p.child("sourceRef").child("name"), "%q: %s", cs.SourceRef.Name, msg)
		}
	}
	if cs.Verify != nil {
		if src != KindHelmRepository {
			errs.add(p.child("verify"), "only for charts of a HelmRepository (OCI)")
		}
		if cs.Verify.TrustedRootSecretRef != nil {
			errs.add(p.child("verify").child("trustedRootSecretRef"), "unknown field")
		}
		cs.Verify.validate(p.child("verify"), errs)
	}
}

// chartSpecWarnings covers a chart spec's accepted fields that have no
// effect, under p.
func chartSpecWarnings(w *warnings, p string, cs *ChartSpec) {
	if cs.ReconcileStrategy == "Revision" {
		w.add(p+".reconcileStrategy", "Revision has no effect: a chart version is resolved once and pinned by digest")
	}
	if len(cs.ValuesFiles) > 0 || cs.IgnoreMissingValuesFiles {
		w.add(p+".valuesFiles", "not supported yet: give values in the services that use this template")
	}
	if cs.Verify != nil {
		w.add(p+".verify", "chart signatures are not verified yet; the chart is pinned by its sha256 digest")
	}
	if cs.ValuesFile != "" {
		w.add(p+".valuesFile", "not supported yet: give values in the services that use this template")
	}
	if cs.Suspend {
		w.add(p+".suspend", "no effect: suspend the source instead (its spec.suspend)")
	}
	if len(cs.AccessFrom) > 0 {
		w.add(p+".accessFrom", "no effect: templates read sources in their own namespace")
	}
	if cs.SourceRef.Kind == KindBucket {
		w.add(p+".sourceRef.kind", "Bucket is not supported as a chart source yet: services that use this chart are not deployed")
	}
}

// ---- Bucket ----

// Bucket is Flux's S3-compatible bucket source: stored, not read by the
// hub yet.
type Bucket struct {
	Header `json:",inline"`
	Spec   BucketSpec     `json:"spec"`
	Status WarningsStatus `json:"status,omitzero"`
}

// BucketSpec is Flux's source.toolkit.fluxcd.io/v1 Bucket spec, also
// k0rdent's remoteSourceSpec.bucket.
type BucketSpec struct {
	Provider           string                `json:"provider,omitempty"`
	BucketName         string                `json:"bucketName"`
	Endpoint           string                `json:"endpoint"`
	STS                *BucketSTSSpec        `json:"sts,omitempty"`
	Insecure           bool                  `json:"insecure,omitempty"`
	Region             string                `json:"region,omitempty"`
	Prefix             string                `json:"prefix,omitempty"`
	SecretRef          *LocalObjectReference `json:"secretRef,omitempty"`
	CertSecretRef      *LocalObjectReference `json:"certSecretRef,omitempty"`
	ProxySecretRef     *LocalObjectReference `json:"proxySecretRef,omitempty"`
	ServiceAccountName string                `json:"serviceAccountName,omitempty"`
	Interval           Duration              `json:"interval"`
	Timeout            Duration              `json:"timeout,omitempty"`
	Ignore             *string               `json:"ignore,omitempty"`
	Suspend            bool                  `json:"suspend,omitempty"`
}

// BucketSTSSpec is Flux's BucketSTSSpec.
type BucketSTSSpec struct {
	Provider      string                `json:"provider"`
	Endpoint      string                `json:"endpoint"`
	SecretRef     *LocalObjectReference `json:"secretRef,omitempty"`
	CertSecretRef *LocalObjectReference `json:"certSecretRef,omitempty"`
}

func (o *Bucket) validateSpec() FieldErrors {
	var errs FieldErrors
	o.Spec.validate(path("spec"), &errs)
	return errs
}

func (sp *BucketSpec) validate(p path, errs *FieldErrors) {
	if sp.BucketName == "" {
		errs.add(p.child("bucketName"), "required")
	}
	if sp.Endpoint == "" {
		errs.add(p.child("endpoint"), "required")
	}
	requireDuration(sp.Interval, p.child("interval"), errs)
	validateDuration(sp.Timeout, p.child("timeout"), errs)
	validateProvider(sp.Provider, p.child("provider"), errs, "generic", "aws", "gcp", "azure")
	if s := sp.STS; s != nil {
		switch s.Provider {
		case "aws", "ldap":
		case "":
			errs.add(p.child("sts").child("provider"), "required")
		default:
			errs.add(p.child("sts").child("provider"), "%q: want aws or ldap", s.Provider)
		}
		if u, err := url.Parse(s.Endpoint); s.Endpoint == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			errs.add(p.child("sts").child("endpoint"), "%q: want an http:// or https:// URL", s.Endpoint)
		}
	}
	validateRefs(p, errs, map[string]*LocalObjectReference{"secretRef": sp.SecretRef, "certSecretRef": sp.CertSecretRef, "proxySecretRef": sp.ProxySecretRef})
}

func bucketWarnings(*Bucket) []string {
	return []string{"spec: Bucket is not supported as a source yet: stored; templates that read it are not deployed"}
}

// ---- shared ----

// WarningsStatus is the status of a kind whose status only shows its
// warnings.
type WarningsStatus struct {
	Warnings []string `json:"warnings,omitempty"`
}

// SetWarnings implements the warnings hook of a kind's status.
func (s *WarningsStatus) SetWarnings(w []string) { s.Warnings = w }

// requireDuration is validateDuration for a required field.
func requireDuration(d Duration, p path, errs *FieldErrors) {
	if d == "" {
		errs.add(p, "required")
		return
	}
	validateDuration(d, p, errs)
}

func validateProvider(v string, p path, errs *FieldErrors, allowed ...string) {
	if v == "" {
		return
	}
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	errs.add(p, "%q: want %s", v, strings.Join(allowed, ", "))
}

// validateRefs checks that the given optional references have a name.
func validateRefs(p path, errs *FieldErrors, refs map[string]*LocalObjectReference) {
	for _, k := range sortedKeys(refs) {
		if r := refs[k]; r != nil && r.Name == "" {
			errs.add(p.child(k).child("name"), "required")
		}
	}
}
