package desired

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"text/template"

	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Cluster is a fleet cluster as Compile sees it.
type Cluster struct {
	Name   string
	Labels map[string]string
	// APIServer is the kube-apiserver URL the cluster's agent reported.
	APIServer string
}

// Inputs is everything desired state is compiled from.
type Inputs struct {
	Clusters             []Cluster
	ClusterDeployments   []*objects.ClusterDeployment
	MultiClusterServices []*objects.MultiClusterService
	ServiceTemplates     []*objects.ServiceTemplate
	ConfigMaps           []*objects.ConfigMap
	Secrets              []*objects.Secret
	// AccessManagements and ServiceTemplateChains decide which templates
	// of the system namespaces a namespace's services see (objects.Access).
	AccessManagements     []*objects.AccessManagement
	ServiceTemplateChains []*objects.ServiceTemplateChain
	// ScrapeConfigs go to the clusters their clusterSelector matches (the
	// telemetry part of the desired state).
	ScrapeConfigs []*objects.ScrapeConfig
	// Previous is the last compiled services per cluster. A service that
	// cannot be compiled now (template not ready, values error, missing
	// ConfigMap) keeps its previous entry rather than being deleted, so a
	// template upgrade waiting for its chart does not uninstall anything.
	Previous map[string][]Service
	// SystemNamespaces are searched in order for a ServiceTemplate a
	// service names when its own namespace has none.
	SystemNamespaces []string
	// Admissions are the rollout controller's decisions, by source: a
	// MultiClusterService with one is compiled per cluster from the spec
	// of the revision that cluster is admitted to, not from the live
	// object (see Admission); so is a ClusterDeployment with one (its
	// Specs then hold only the serviceSpec of each revision, and
	// Clusters at most its own cluster), under the hub-wide rollout.
	Admissions map[Ref]*Admission
	// GateClusterDeployments: ClusterDeployment changes roll out under a
	// gradual hub-wide policy, so one without an Admission (just
	// applied) keeps what its cluster has until it is admitted.
	GateClusterDeployments bool
}

// Admission is what a rollout allows for one MultiClusterService.
type Admission struct {
	// Specs holds the object at each revision some cluster is admitted
	// to.
	Specs map[uint64]*objects.MultiClusterService
	// Clusters is the revision each cluster may receive. A cluster not
	// listed, or admitted to a revision without a spec, keeps the
	// services of this source it has now (the previous revision).
	Clusters map[string]uint64
	// Staged (preStage): clusters not admitted yet that receive a
	// revision ahead of their maintenance window, with its occurrences.
	// Each service of this source they keep carries the revision's
	// version of it as its staged next version.
	Staged map[string]Staging
}

// Staging is a revision delivered ahead of its windows.
type Staging struct {
	Revision uint64
	Windows  []objects.Span
}

// Staged is a service's next version, delivered ahead of its window
// (fleetv1.StagedService).
type Staged struct {
	Next    Service        `json:"next"`
	Windows []objects.Span `json:"windows"`
}

// needsAdmission reports whether a MultiClusterService without an
// Admission must wait for one: its rollout is gradual, so no cluster may
// take a change before the rollout controller has admitted it.
func needsAdmission(o *objects.MultiClusterService) bool {
	r := o.Spec.Rollout
	return r != nil && r.Strategy != "" && r.Strategy != objects.RolloutAll
}

// Service is one Helm release in a cluster's desired state.
type Service struct {
	Name         string   `json:"name"`
	Namespace    string   `json:"namespace"`
	Template     string   `json:"template"`
	ChartName    string   `json:"chartName"`
	ChartVersion string   `json:"chartVersion"`
	ChartDigest  string   `json:"chartDigest"`
	Values       []byte   `json:"values"` // canonical YAML
	ValuesHash   string   `json:"valuesHash"`
	Priority     int32    `json:"priority"`
	DependsOn    []string `json:"dependsOn,omitempty"` // "namespace/name"
	// SyncMode and Helm: see fleetv1.Service's sync_mode and helm_options.
	SyncMode string       `json:"syncMode,omitempty"`
	Helm     *HelmOptions `json:"helmOptions,omitempty"`
	// Drift: see fleetv1.Service's drift_ignore and drift_exclusions.
	Drift *objects.DriftRules `json:"drift,omitempty"`
	// Source is the object the service came from.
	Source Ref `json:"source"`
	// Revision is the desired-state revision in which the service last
	// changed; set by the Compiler, 0 from Compile.
	Revision uint64 `json:"revision,omitempty"`
	// Staged is its next version when a rollout pre-stages one.
	Staged *Staged `json:"staged,omitempty"`
}

// Key is "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// ClusterDesired is one cluster's compiled services, in apply order
// (dependencies first, then by namespace/name).
type ClusterDesired struct {
	Cluster  string
	Services []Service
	// ScrapeConfigs matching the cluster, by namespace and name.
	ScrapeConfigs []ScrapeConfig
}

// Ref names an object.
type Ref struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

func (r Ref) String() string { return r.Kind + " " + r.Namespace + "/" + r.Name }

// Problem codes.
const (
	// ProblemConflict: another source won the same namespace/name.
	ProblemConflict = "Conflict"
	// ProblemTemplateNotReady: the ServiceTemplate is missing or its chart
	// is not resolved.
	ProblemTemplateNotReady = "TemplateNotReady"
	// ProblemValues: values could not be rendered, read or merged.
	ProblemValues = "ValuesError"
	// ProblemDependency: dependsOn names a service absent on the cluster,
	// or the services form a cycle.
	ProblemDependency = "DependencyError"
	// ProblemClusterNotFound: a ClusterDeployment names no enrolled
	// cluster.
	ProblemClusterNotFound = "ClusterNotFound"
	// ProblemTooLarge: the cluster's desired state would not fit in one
	// wire message; the cluster keeps its last good desired state.
	ProblemTooLarge = "DesiredStateTooLarge"
)

// Problem is one reason a source's service is not (or not as written) in a
// cluster's desired state. The API shows them in the source's status.
type Problem struct {
	Cluster string `json:"cluster"`
	Source  Ref    `json:"source"`
	Service string `json:"service,omitempty"` // namespace/name
	Code    string `json:"code"`
	Reason  string `json:"reason"`
}

func (p Problem) String() string {
	s := p.Source.String() + ": cluster " + p.Cluster
	if p.Service != "" {
		s += ": service " + p.Service
	}
	return s + ": " + p.Code + ": " + p.Reason
}

// source is a ClusterDeployment or MultiClusterService being compiled.
type source struct {
	ref       Ref
	createRev uint64
	spec      *objects.ServiceSpec
	selector  *objects.LabelSelector // nil for a ClusterDeployment
	services  []prepared
	// Rollout-managed sources: variants by admitted revision, the
	// admission, and keep (no admission yet: every cluster keeps what
	// it has). A managed source itself is never applicable; its
	// variant for the cluster's revision is.
	variants  map[uint64]*source
	admission *Admission
	keep      bool
}

// prepared is a source's service with everything that does not depend on
// the cluster worked out once.
type prepared struct {
	svc       objects.Service
	key       string
	dependsOn []string
	tmpl      *objects.ServiceTemplate
	problem   *Problem // cluster-independent problem (Cluster unset)
	base      map[string]any
	inline    *template.Template // values with template actions
	static    []byte             // canonical values when not templated
	hash      string
}

// Compile computes every cluster's desired state. It is a pure function of
// its inputs: the same inputs give the same output, byte for byte.
func Compile(in Inputs) (map[string]ClusterDesired, []Problem) {
	c := compiler{
		parsed:    map[string]parsedValues{},
		yamls:     map[string][]byte{},
		templates: map[string]*objects.ServiceTemplate{},
		cms:       map[string]*objects.ConfigMap{},
		secrets:   map[string]*objects.Secret{},

		systemNamespaces: in.SystemNamespaces,
		access:           objects.NewAccess(in.AccessManagements, in.ServiceTemplateChains, in.SystemNamespaces),
	}
	for _, t := range in.ServiceTemplates {
		c.templates[nsName(t.Metadata.Namespace, t.Metadata.Name)] = t
	}
	for _, o := range in.ConfigMaps {
		c.cms[nsName(o.Metadata.Namespace, o.Metadata.Name)] = o
	}
	for _, o := range in.Secrets {
		c.secrets[nsName(o.Metadata.Namespace, o.Metadata.Name)] = o
	}
	var sources []*source
	for _, o := range in.ClusterDeployments {
		s := c.prepare(o.GetHeader(), &o.Spec.ServiceSpec, nil)
		if adm := in.Admissions[s.ref]; adm != nil {
			s.admission, s.variants = adm, map[uint64]*source{}
			for rev, spec := range adm.Specs {
				s.variants[rev] = c.prepare(o.GetHeader(), &spec.Spec.ServiceSpec, nil)
			}
		} else if in.GateClusterDeployments {
			s.keep = true
		}
		sources = append(sources, s)
	}
	for _, o := range in.MultiClusterServices {
		s := c.prepare(o.GetHeader(), &o.Spec.ServiceSpec, &o.Spec.ClusterSelector)
		if adm := in.Admissions[s.ref]; adm != nil {
			s.admission, s.variants = adm, map[uint64]*source{}
			for rev, spec := range adm.Specs {
				s.variants[rev] = c.prepare(o.GetHeader(), &spec.Spec.ServiceSpec, &spec.Spec.ClusterSelector)
			}
		} else if needsAdmission(o) {
			s.keep = true
		}
		sources = append(sources, s)
	}
	slices.SortFunc(sources, func(a, b *source) int {
		return cmp.Or(cmp.Compare(a.ref.Kind, b.ref.Kind), cmp.Compare(a.ref.Namespace, b.ref.Namespace), cmp.Compare(a.ref.Name, b.ref.Name))
	})

	clusters := slices.Clone(in.Clusters)
	slices.SortFunc(clusters, func(a, b Cluster) int { return cmp.Compare(a.Name, b.Name) })
	byName := map[string]bool{}
	for _, cl := range clusters {
		byName[cl.Name] = true
	}
	for _, s := range sources {
		if s.selector == nil && !byName[s.ref.Name] && len(s.services) > 0 {
			c.problems = append(c.problems, Problem{Cluster: s.ref.Name, Source: s.ref, Code: ProblemClusterNotFound,
				Reason: fmt.Sprintf("no enrolled cluster is named %q", s.ref.Name)})
		}
	}
	out := make(map[string]ClusterDesired, len(clusters))
	for _, cl := range clusters {
		cd := c.cluster(cl, sources, in.Previous[cl.Name])
		var tp []Problem
		cd.ScrapeConfigs, tp = compileTelemetry(cl, in.ScrapeConfigs)
		c.problems = append(c.problems, tp...)
		out[cl.Name] = cd
	}
	sortProblems(c.problems)
	return out, c.problems
}

// sortProblems orders problems by source, cluster and service.
func sortProblems(ps []Problem) {
	slices.SortStableFunc(ps, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(a.Source.Kind, b.Source.Kind), cmp.Compare(a.Source.Namespace, b.Source.Namespace),
			cmp.Compare(a.Source.Name, b.Source.Name), cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Service, b.Service))
	})
}

type compiler struct {
	// Caches: many sources share values text, and many clusters render a
	// template to the same text.
	parsed map[string]parsedValues // values text -> parsed
	yamls  map[string][]byte       // canonical JSON -> canonical YAML

	templates map[string]*objects.ServiceTemplate
	// systemNamespaces: see Inputs.SystemNamespaces.
	systemNamespaces []string
	access           *objects.Access
	cms              map[string]*objects.ConfigMap
	secrets          map[string]*objects.Secret
	problems         []Problem
}

func nsName(ns, name string) string { return ns + "/" + name }

// inSystem reports whether a system namespace has a template named name.
func (c *compiler) inSystem(name string) bool {
	for _, sys := range c.systemNamespaces {
		if c.templates[nsName(sys, name)] != nil {
			return true
		}
	}
	return false
}

func (c *compiler) prepare(h *objects.Header, spec *objects.ServiceSpec, sel *objects.LabelSelector) *source {
	ns := h.Metadata.Namespace
	s := &source{
		ref:       Ref{Kind: h.Kind, Namespace: ns, Name: h.Metadata.Name},
		createRev: h.Metadata.CreateRevision,
		spec:      objects.EffectiveServiceSpec(spec), // provider.config priority, stopOnConflict
		selector:  sel,
	}
	keys := map[string]string{}
	for _, svc := range spec.Services {
		if !svc.Disable && svc.HelmAction != objects.HelmActionUninstall {
			keys[svc.Name] = nsName(svc.Namespace, svc.Name)
		}
	}
	for _, svc := range spec.Services {
		if svc.Disable || svc.HelmAction == objects.HelmActionUninstall {
			continue // not desired: removed where it was deployed (k0rdent's disable, helmAction Uninstall)
		}
		p := prepared{svc: svc, key: nsName(svc.Namespace, svc.Name)}
		for _, d := range svc.DependsOn {
			_, name := objects.DependsOnName(d)
			if k, ok := keys[name]; ok {
				p.dependsOn = append(p.dependsOn, k)
			}
		}
		slices.Sort(p.dependsOn)
		fail := func(code, format string, args ...any) {
			p.problem = &Problem{Source: s.ref, Service: p.key, Code: code, Reason: fmt.Sprintf(format, args...)}
		}
		var t *objects.ServiceTemplate
		at, found := c.access.Resolve(objects.KindServiceTemplate, ns, svc.Template,
			func(n string) bool { return c.templates[nsName(n, svc.Template)] != nil },
			func(n string) map[string]string { return c.templates[nsName(n, svc.Template)].Metadata.Labels })
		if found {
			t = c.templates[nsName(at, svc.Template)]
		}
		if t == nil {
			if why := c.access.NotVisible(objects.KindServiceTemplate, ns, svc.Template); why != "" && c.inSystem(svc.Template) {
				fail(ProblemTemplateNotReady, "ServiceTemplate %s/%s not found: %s", ns, svc.Template, why)
			} else {
				fail(ProblemTemplateNotReady, "ServiceTemplate %s/%s not found", ns, svc.Template)
			}
			s.services = append(s.services, p)
			continue
		}
		if ok, why := t.Ready(); !ok {
			fail(ProblemTemplateNotReady, "ServiceTemplate %s/%s: %s", ns, svc.Template, why)
			s.services = append(s.services, p)
			continue
		}
		p.tmpl = t
		base := map[string]any{}
		for i, vf := range svc.ValuesFrom {
			data, err := c.valuesFrom(ns, vf)
			if err == nil {
				var m map[string]any
				if m, err = c.parse(data); err == nil {
					base = merge(base, m)
				}
			}
			if err != nil {
				fail(ProblemValues, "valuesFrom[%d]: %v", i, err)
				break
			}
		}
		if p.problem == nil {
			p.base = base
			text := string(svc.Values)
			switch {
			case objects.HasTemplate(text):
				t, err := objects.ParseValuesTemplate(text)
				if err != nil {
					fail(ProblemValues, "values: %v", err)
				}
				p.inline = t
			default:
				m, err := c.parse([]byte(text))
				if err != nil {
					fail(ProblemValues, "values: %v", err)
					break
				}
				p.static, p.hash, err = c.canonical(merge(base, m), p.tmpl.Status.ChartDigest)
				if err != nil {
					fail(ProblemValues, "values: %v", err)
				}
			}
		}
		s.services = append(s.services, p)
	}
	return s
}

func (c *compiler) valuesFrom(ns string, vf objects.ValuesFrom) ([]byte, error) {
	var data map[string][]byte
	switch vf.Kind {
	case objects.KindConfigMap:
		cm := c.cms[nsName(ns, vf.Name)]
		if cm == nil {
			return nil, fmt.Errorf("%s %s/%s not found", vf.Kind, ns, vf.Name)
		}
		data = map[string][]byte{}
		for k, v := range cm.Data {
			data[k] = []byte(v)
		}
	case objects.KindSecret:
		s := c.secrets[nsName(ns, vf.Name)]
		if s == nil {
			return nil, fmt.Errorf("%s %s/%s not found", vf.Kind, ns, vf.Name)
		}
		data = s.Data
	default:
		return nil, fmt.Errorf("kind %q: want ConfigMap or Secret", vf.Kind)
	}
	for _, k := range []string{"values.yaml", "values"} {
		if v, ok := data[k]; ok {
			return v, nil
		}
	}
	return nil, fmt.Errorf("%s %s/%s has no key values.yaml or values", vf.Kind, ns, vf.Name)
}

// findResource is getResource's view of the store's ConfigMaps and
// Secrets.
func (c *compiler) findResource(kind, ns, name string) (map[string]any, bool) {
	switch kind {
	case objects.KindConfigMap:
		if cm := c.cms[nsName(ns, name)]; cm != nil {
			return objects.ConfigMapResource(cm), true
		}
	case objects.KindSecret:
		if s := c.secrets[nsName(ns, name)]; s != nil {
			return objects.SecretResource(s), true
		}
	}
	return nil, false
}

// candidate is one source's offer of a service on a cluster.
type candidate struct {
	src *source
	p   *prepared
}

func (c *compiler) cluster(cl Cluster, sources []*source, previous []Service) ClusterDesired {
	tc := objects.NewTemplateCluster(cl.Name, cl.Labels)
	tc.APIServer = cl.APIServer
	var applicable []*source
	kept := map[Ref]bool{} // rollout-managed sources whose services this cluster keeps as they are
	staged := map[string]*stagedFrom{}
	for _, s := range sources {
		if s.selector == nil && s.ref.Name == cl.Name && tc.Namespace == "" {
			// The cluster's object lives in its ClusterDeployment's
			// namespace, as a CAPI Cluster does in k0rdent.
			tc.Namespace = s.ref.Namespace
		}
	}
	for _, s := range sources {
		if s.keep {
			kept[s.ref] = true
			continue
		}
		if s.admission != nil {
			c.stage(cl, tc, s, staged)
			rev, ok := s.admission.Clusters[cl.Name]
			v := s.variants[rev]
			switch {
			case !ok || v == nil && rev != 0:
				kept[s.ref] = true
			case v != nil && v.appliesTo(cl):
				applicable = append(applicable, v)
			}
			continue // revision 0: admitted to "none of its services"
		}
		if s.appliesTo(cl) {
			applicable = append(applicable, s)
		}
	}
	// Resolve conflicts; sources that stop on conflict and lose one drop out
	// entirely, which can only remove conflicts, so one retry suffices.
	winners, losers := resolve(applicable)
	var stopped []*source
	for _, l := range losers {
		if l.src.spec.StopOnConflict && !slices.Contains(stopped, l.src) {
			stopped = append(stopped, l.src)
		}
	}
	if len(stopped) > 0 {
		kept := slices.DeleteFunc(slices.Clone(applicable), func(s *source) bool { return slices.Contains(stopped, s) })
		winners, _ = resolve(kept)
		for _, s := range stopped {
			c.problems = append(c.problems, Problem{Cluster: cl.Name, Source: s.ref, Code: ProblemConflict,
				Reason: "lost a conflict and stopOnConflict is set: none of its services are deployed on this cluster"})
		}
	}
	for _, l := range losers {
		w := winners[l.p.key]
		if w.src == nil {
			continue // its winner stopped; reported above
		}
		c.problems = append(c.problems, Problem{Cluster: cl.Name, Source: l.src.ref, Service: l.p.key, Code: ProblemConflict,
			Reason: fmt.Sprintf("%s is deployed by %s (priority %d over %d)", l.p.key, w.src.ref, w.src.spec.Priority, l.src.spec.Priority)})
	}

	prev := map[string]*Service{}
	for i := range previous {
		prev[previous[i].Key()] = &previous[i]
	}
	services := make([]Service, 0, len(winners))
	for _, key := range slices.Sorted(maps.Keys(winners)) {
		w := winners[key]
		svc, prob := c.render(w, tc)
		if prob == nil {
			prob = knobs(&svc, w)
		}
		if prob != nil {
			prob.Cluster = cl.Name
			if old, ok := prev[key]; ok {
				prob.Reason += "; keeping the last good version"
				services = append(services, *old)
				services[len(services)-1].Revision = 0
			}
			c.problems = append(c.problems, *prob)
			continue
		}
		services = append(services, svc)
	}
	if len(kept) > 0 {
		// A cluster not admitted to a source's new revision keeps that
		// source's services exactly as it has them; they win over any
		// other source's offer of the same namespace/name, as they did.
		held := map[string]bool{}
		for _, p := range previous {
			if kept[p.Source] {
				held[p.Key()] = true
			}
		}
		services = slices.DeleteFunc(services, func(s Service) bool { return held[s.Key()] })
		for _, p := range previous {
			if kept[p.Source] {
				p.Revision = 0
				services = append(services, p)
			}
		}
		slices.SortFunc(services, func(a, b Service) int { return cmp.Compare(a.Key(), b.Key()) })
	}
	for i := range services {
		services[i].Staged = nil
		if st := staged[services[i].Key()]; st != nil && st.source == services[i].Source {
			services[i].Staged = &st.Staged
		}
	}
	return ClusterDesired{Cluster: cl.Name, Services: c.order(cl.Name, services)}
}

// appliesTo reports whether the source gives cl its services: an MCS
// whose selector matches, the ClusterDeployment named after it.
func (s *source) appliesTo(cl Cluster) bool {
	if s.selector == nil {
		return s.ref.Name == cl.Name
	}
	return s.selector.Matches(cl.Labels)
}

// stagedFrom is a staged next version and the source it is staged for.
type stagedFrom struct {
	Staged
	source Ref
}

// stage renders the versions of s's services in the revision staged for
// the cluster (if any), by namespace/name; they are attached to the
// services of s the cluster has (kept or of the revision it is admitted
// to). A service the staged revision adds or drops is not staged: it
// changes when the hub admits the cluster.
func (c *compiler) stage(cl Cluster, tc objects.TemplateCluster, s *source, out map[string]*stagedFrom) {
	st, ok := s.admission.Staged[cl.Name]
	v := s.variants[st.Revision]
	if !ok || v == nil || len(st.Windows) == 0 || !v.appliesTo(cl) {
		return
	}
	for i := range v.services {
		w := candidate{v, &v.services[i]}
		svc, prob := c.render(w, tc)
		if prob == nil {
			prob = knobs(&svc, w)
		}
		if prob != nil {
			continue // not staged; it waits for the admission
		}
		out[svc.Key()] = &stagedFrom{Staged: Staged{Next: svc, Windows: slices.Clone(st.Windows)}, source: s.ref}
	}
}

// resolve picks one candidate per namespace/name: higher priority, then
// older source (lower creation revision), then source name.
func resolve(sources []*source) (map[string]candidate, []candidate) {
	all := map[string][]candidate{}
	for _, s := range sources {
		for i := range s.services {
			p := &s.services[i]
			all[p.key] = append(all[p.key], candidate{s, p})
		}
	}
	winners := make(map[string]candidate, len(all))
	var losers []candidate
	for _, key := range slices.Sorted(maps.Keys(all)) {
		cs := all[key]
		slices.SortStableFunc(cs, func(a, b candidate) int {
			return cmp.Or(
				-cmp.Compare(a.src.spec.Priority, b.src.spec.Priority),
				cmp.Compare(a.src.createRev, b.src.createRev),
				cmp.Compare(a.src.ref.Kind, b.src.ref.Kind),
				cmp.Compare(a.src.ref.Namespace, b.src.ref.Namespace),
				cmp.Compare(a.src.ref.Name, b.src.ref.Name))
		})
		winners[key] = cs[0]
		losers = append(losers, cs[1:]...)
	}
	return winners, losers
}

func (c *compiler) render(w candidate, tc objects.TemplateCluster) (Service, *Problem) {
	p := w.p
	if p.problem != nil {
		prob := *p.problem
		return Service{}, &prob
	}
	values, hash := p.static, p.hash
	if p.inline != nil {
		fail := func(err error) (Service, *Problem) {
			return Service{}, &Problem{Source: w.src.ref, Service: p.key, Code: ProblemValues, Reason: "values: " + err.Error()}
		}
		res, err := objects.ResolveTemplateResources(w.src.spec.TemplateResourceRefs, tc, w.src.ref.Namespace, c.findResource)
		if err != nil {
			return fail(err)
		}
		text, err := objects.RenderValuesWith(p.inline, tc, res)
		if err != nil {
			return fail(err)
		}
		m, err := c.parse([]byte(text))
		if err != nil {
			return fail(fmt.Errorf("rendered: %w", err))
		}
		if values, hash, err = c.canonical(merge(p.base, m), p.tmpl.Status.ChartDigest); err != nil {
			return fail(err)
		}
	}
	st := p.tmpl.Status
	return Service{
		Name:         p.svc.Name,
		Namespace:    p.svc.Namespace,
		Template:     p.svc.Template,
		ChartName:    cmp.Or(st.ChartName, p.tmpl.Spec.Helm.ChartSpec.Chart),
		ChartVersion: cmp.Or(st.ChartVersion, p.tmpl.Spec.Helm.ChartSpec.Version),
		ChartDigest:  st.ChartDigest,
		Values:       values,
		ValuesHash:   hash,
		Priority:     w.src.spec.Priority,
		DependsOn:    p.dependsOn,
		Source:       w.src.ref,
	}, nil
}

// order sorts services dependencies first, otherwise by namespace/name
// (services arrive sorted by key). Dependencies on absent services and
// cycles are reported; services in a cycle go last, by key.
func (c *compiler) order(cluster string, services []Service) []Service {
	present := make(map[string]bool, len(services))
	for _, s := range services {
		present[s.Key()] = true
	}
	for _, s := range services {
		for _, d := range s.DependsOn {
			if !present[d] {
				c.problems = append(c.problems, Problem{Cluster: cluster, Source: s.Source, Service: s.Key(), Code: ProblemDependency,
					Reason: fmt.Sprintf("depends on %s, which is not in this cluster's desired state", d)})
			}
		}
	}
	out := make([]Service, 0, len(services))
	done := make(map[string]bool, len(services))
	for len(out) < len(services) {
		progress := false
		for _, s := range services {
			if done[s.Key()] {
				continue
			}
			ready := true
			for _, d := range s.DependsOn {
				if present[d] && !done[d] {
					ready = false
					break
				}
			}
			if ready {
				out = append(out, s)
				done[s.Key()] = true
				progress = true
				break // restart so the smallest ready key goes next
			}
		}
		if !progress {
			for _, s := range services {
				if !done[s.Key()] {
					c.problems = append(c.problems, Problem{Cluster: cluster, Source: s.Source, Service: s.Key(), Code: ProblemDependency,
						Reason: "dependsOn forms a cycle across sources"})
					out = append(out, s)
					done[s.Key()] = true
				}
			}
		}
	}
	return out
}

// merge deep-merges src over dst without modifying either: maps merge by
// key, anything else from src replaces.
func merge(dst, src map[string]any) map[string]any {
	out := make(map[string]any, len(dst)+len(src))
	maps.Copy(out, dst)
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := out[k].(map[string]any); ok {
				out[k] = merge(dm, sm)
				continue
			}
		}
		out[k] = v
	}
	return out
}

type parsedValues struct {
	m   map[string]any
	err error
}

// parse parses values YAML once per distinct text. The result is shared:
// merge never modifies its inputs.
func (c *compiler) parse(text []byte) (map[string]any, error) {
	if p, ok := c.parsed[string(text)]; ok {
		return p.m, p.err
	}
	m, err := objects.ParseValues(text)
	c.parsed[string(text)] = parsedValues{m, err}
	return m, err
}

// canonical returns values as canonical YAML (keys sorted) and the hash
// over digest and those bytes.
func (c *compiler) canonical(values map[string]any, digest string) ([]byte, string, error) {
	j, err := json.Marshal(values)
	if err != nil {
		return nil, "", err
	}
	y, ok := c.yamls[string(j)]
	if !ok {
		if y, err = yaml.JSONToYAML(j); err != nil {
			return nil, "", err
		}
		c.yamls[string(j)] = y
	}
	return y, valuesHash(y, digest), nil
}

// valuesHash is "sha256:" over the chart digest, a NUL, and the canonical
// values.
func valuesHash(values []byte, digest string) string {
	h := sha256.New()
	h.Write([]byte(digest))
	h.Write([]byte{0})
	h.Write(values)
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

func equalService(a, b *Service) bool {
	return a.Name == b.Name && a.Namespace == b.Namespace && a.Template == b.Template &&
		a.ChartName == b.ChartName && a.ChartVersion == b.ChartVersion && a.ChartDigest == b.ChartDigest &&
		bytes.Equal(a.Values, b.Values) && a.ValuesHash == b.ValuesHash && a.Priority == b.Priority &&
		slices.Equal(a.DependsOn, b.DependsOn) && a.Source == b.Source &&
		a.SyncMode == b.SyncMode && equalHelm(a.Helm, b.Helm) && equalDrift(a.Drift, b.Drift) && equalStaged(a.Staged, b.Staged)
}

func equalStaged(a, b *Staged) bool {
	if a == nil || b == nil {
		return a == b
	}
	return equalService(&a.Next, &b.Next) && slices.EqualFunc(a.Windows, b.Windows, func(x, y objects.Span) bool {
		return x.Start.Equal(y.Start) && x.End.Equal(y.End)
	})
}
