package objects

import (
	"context"
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tetherfleet/tether/hub/internal/store"
)

// AccessManagement is k0rdent's (cluster-scoped) set of rules that
// distribute objects of the system namespace to other namespaces. In
// Tether a rule that distributes ServiceTemplateChains (or
// ServiceTemplates) makes the namespaces it targets *managed*: there, a
// service sees the templates and chains of its own namespace and those
// the rules distribute to it, as in k0rdent. A namespace no such rule
// targets keeps Tether's default: the templates and chains of the
// system namespaces serve it. Credentials, ClusterTemplateChains and the
// other provisioning kinds are kept, with a warning, until provisioning
// exists.
type AccessManagement struct {
	Header `json:",inline"`
	Spec   AccessManagementSpec   `json:"spec"`
	Status AccessManagementStatus `json:"status,omitzero"`
}

// AccessManagementSpec is k0rdent's AccessManagementSpec.
type AccessManagementSpec struct {
	AccessRules []AccessRule `json:"accessRules,omitempty"`
}

// AccessRule is k0rdent's AccessRule: objects of the system namespace
// and the namespaces they go to.
type AccessRule struct {
	// TargetNamespaces selects the namespaces; empty: every namespace.
	TargetNamespaces *ResourceSelector `json:"targetNamespaces,omitempty"`
	// Resources selects objects by kind (k0rdent's generic form); when
	// set, the per-kind lists below are not read (as in k0rdent).
	Resources              []ResourceRule `json:"resources,omitempty"`
	ClusterTemplateChains  []string       `json:"clusterTemplateChains,omitempty"`
	ServiceTemplateChains  []string       `json:"serviceTemplateChains,omitempty"`
	Credentials            []string       `json:"credentials,omitempty"`
	ClusterAuthentications []string       `json:"clusterAuthentications,omitempty"`
	DataSources            []string       `json:"dataSources,omitempty"`
	ClusterAuditPolicies   []string       `json:"clusterAuditPolicies,omitempty"`
}

// ResourceSelector is k0rdent's ResourceSelector: names, a label
// selector, or a label selector as a string; at most one.
type ResourceSelector struct {
	Selector       *LabelSelector `json:"selector,omitempty"`
	StringSelector string         `json:"stringSelector,omitempty"`
	List           []string       `json:"list,omitempty"`
}

// ResourceRule is k0rdent's ResourceRule: the objects of one kind of
// the system namespace, by names or labels (none: all of them).
type ResourceRule struct {
	Selector       *LabelSelector `json:"selector,omitempty"`
	APIGroup       string         `json:"apiGroup,omitempty"`
	Kind           string         `json:"kind"`
	StringSelector string         `json:"stringSelector,omitempty"`
	Names          []string       `json:"names,omitempty"`
}

// AccessManagementStatus says, per rule, what is distributed where. The
// hub derives it when the object is read (Repo.DeriveStatus): it follows
// the chains and namespaces of the moment.
type AccessManagementStatus struct {
	Rules []AccessRuleStatus `json:"rules,omitempty"`
	// Warnings lists accepted fields that have no effect in Tether yet.
	Warnings []string `json:"warnings,omitempty"`
}

// AccessRuleStatus is what one rule distributes.
type AccessRuleStatus struct {
	// TargetNamespaces describes the namespaces the rule targets.
	TargetNamespaces string `json:"targetNamespaces"`
	// Namespaces are the namespaces with ClusterDeployments or
	// MultiClusterServices the rule targets now.
	Namespaces []string `json:"namespaces,omitempty"`
	// ServiceTemplateChains and ServiceTemplates are what it
	// distributes, as NAMESPACE/NAME of the system namespace they come
	// from.
	ServiceTemplateChains []string `json:"serviceTemplateChains,omitempty"`
	ServiceTemplates      []string `json:"serviceTemplates,omitempty"`
	// Errors are what it names and cannot distribute (a chain that is not
	// in any system namespace).
	Errors []string `json:"errors,omitempty"`
}

// SetWarnings implements the warnings hook of a kind's status.
func (s *AccessManagementStatus) SetWarnings(w []string) { s.Warnings = w }

// namespaceNameLabel is the label Kubernetes puts on every namespace;
// Tether's namespaces have no other labels.
const namespaceNameLabel = "kubernetes.io/metadata.name"

// k0rdentGroup is the API group k0rdent's built-in kinds belong to.
const k0rdentGroup = "k0rdent.mirantis.com"

// effectiveResources is k0rdent's AccessRule.EffectiveResources: the
// resources when set, else the per-kind lists as resource rules.
func (r *AccessRule) effectiveResources() []ResourceRule {
	if len(r.Resources) > 0 {
		return r.Resources
	}
	var out []ResourceRule
	for _, l := range []struct {
		kind  string
		names []string
	}{
		{KindClusterTemplateChain, r.ClusterTemplateChains},
		{KindServiceTemplateChain, r.ServiceTemplateChains},
		{KindCredential, r.Credentials},
		{KindClusterAuthentication, r.ClusterAuthentications},
		{KindDataSource, r.DataSources},
		{KindClusterAuditPolicy, r.ClusterAuditPolicies},
	} {
		if len(l.names) > 0 {
			out = append(out, ResourceRule{APIGroup: k0rdentGroup, Kind: l.kind, Names: l.names})
		}
	}
	return out
}

// distributesServices reports whether a resource rule selects
// ServiceTemplateChains or ServiceTemplates, the kinds Tether
// distributes.
func (rr *ResourceRule) distributesServices() bool {
	return (rr.Kind == KindServiceTemplateChain || rr.Kind == KindServiceTemplate) && (rr.APIGroup == "" || rr.APIGroup == k0rdentGroup)
}

// selector returns a ResourceSelector's (or ResourceRule's) label
// selector; nil when it selects by names or everything.
func selectorOf(sel *LabelSelector, str string) (labels.Selector, error) {
	switch {
	case sel != nil:
		ls := &metav1.LabelSelector{MatchLabels: sel.MatchLabels}
		for _, e := range sel.MatchExpressions {
			ls.MatchExpressions = append(ls.MatchExpressions, metav1.LabelSelectorRequirement{Key: e.Key, Operator: metav1.LabelSelectorOperator(e.Operator), Values: e.Values})
		}
		return metav1.LabelSelectorAsSelector(ls)
	case str != "":
		return labels.Parse(str)
	}
	return nil, nil
}

func (o *AccessManagement) validateSpec() FieldErrors {
	var errs FieldErrors
	for i, rule := range o.Spec.AccessRules {
		rp := path("spec").child("accessRules").index(i)
		if ts := rule.TargetNamespaces; ts != nil {
			tp := rp.child("targetNamespaces")
			if n := countSet(ts.Selector != nil, ts.StringSelector != "", len(ts.List) > 0); n > 1 {
				errs.add(tp, "only one of list, selector, stringSelector can be specified")
			}
			if ts.Selector != nil {
				validateSelector(ts.Selector, tp.child("selector"), &errs)
			}
			if _, err := selectorOf(nil, ts.StringSelector); err != nil {
				errs.add(tp.child("stringSelector"), "%q: %v", ts.StringSelector, err)
			}
		}
		for j, rr := range rule.Resources {
			pp := rp.child("resources").index(j)
			if rr.Kind == "" {
				errs.add(pp.child("kind"), "required")
			}
			if n := countSet(rr.Selector != nil, rr.StringSelector != "", len(rr.Names) > 0); n > 1 {
				errs.add(pp, "only one of names, selector, stringSelector can be specified")
			}
			if rr.Selector != nil {
				validateSelector(rr.Selector, pp.child("selector"), &errs)
			}
			if _, err := selectorOf(nil, rr.StringSelector); err != nil {
				errs.add(pp.child("stringSelector"), "%q: %v", rr.StringSelector, err)
			}
		}
	}
	return errs
}

func countSet(set ...bool) int {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	return n
}

func accessManagementWarnings(o *AccessManagement) []string {
	var w warnings
	for i, rule := range o.Spec.AccessRules {
		rp := fmt.Sprintf("spec.accessRules[%d]", i)
		if len(rule.Resources) > 0 && rule.hasListFields() {
			w.add(rp, "resources is set, so clusterTemplateChains, serviceTemplateChains, credentials and the other lists are not read (as in k0rdent)")
		}
		if ts := rule.TargetNamespaces; ts != nil {
			if sel, _ := selectorOf(ts.Selector, ts.StringSelector); sel != nil && !onlyNameLabel(sel) {
				w.add(rp+".targetNamespaces", "Tether's namespaces have no labels but %s (their name): the selector matches by that label only", namespaceNameLabel)
			}
		}
		if len(rule.Resources) > 0 {
			for j, rr := range rule.Resources {
				if !rr.distributesServices() {
					w.add(fmt.Sprintf("%s.resources[%d]", rp, j), "%s: stored; not distributed: Tether distributes ServiceTemplateChains and ServiceTemplates (others: not until provisioning or that kind exists)", rr.Kind)
				}
			}
			continue
		}
		for _, f := range []struct {
			set  bool
			name string
		}{
			{len(rule.ClusterTemplateChains) > 0, "clusterTemplateChains"},
			{len(rule.Credentials) > 0, "credentials"},
			{len(rule.ClusterAuthentications) > 0, "clusterAuthentications"},
			{len(rule.DataSources) > 0, "dataSources"},
			{len(rule.ClusterAuditPolicies) > 0, "clusterAuditPolicies"},
		} {
			if f.set {
				w.add(rp+"."+f.name, "stored; not distributed until provisioning through Cluster API is available")
			}
		}
	}
	return w
}

func (r *AccessRule) hasListFields() bool {
	return len(r.ClusterTemplateChains)+len(r.ServiceTemplateChains)+len(r.Credentials)+len(r.ClusterAuthentications)+len(r.DataSources)+len(r.ClusterAuditPolicies) > 0
}

// onlyNameLabel reports whether a selector reads no label but the
// namespace-name label.
func onlyNameLabel(sel labels.Selector) bool {
	reqs, _ := sel.Requirements()
	for _, r := range reqs {
		if r.Key() != namespaceNameLabel {
			return false
		}
	}
	return true
}

// ---- Access: what the rules distribute ----

// Access is what the AccessManagement rules distribute, over the
// ServiceTemplateChains of the system namespaces: which namespaces are
// managed, and which templates and chains each may use from the system
// namespaces. The zero rules (no AccessManagement) manage no namespace.
type Access struct {
	system []string
	rules  []accessRule
	// chains are the ServiceTemplateChains of the system namespaces, in
	// system-namespace order.
	chains []*ServiceTemplateChain
}

// accessRule is one rule that distributes ServiceTemplateChains or
// ServiceTemplates.
type accessRule struct {
	where   string // "AccessManagement NAME spec.accessRules[I]"
	all     bool   // every namespace
	list    []string
	sel     labels.Selector
	targets string // as the status describes them
	kinds   []ResourceRule
}

// NewAccess computes the access the rules of ams give, over chains (the
// ServiceTemplateChains of the system namespaces; others are ignored).
func NewAccess(ams []*AccessManagement, chains []*ServiceTemplateChain, systemNamespaces []string) *Access {
	a := &Access{system: systemNamespaces}
	for _, sys := range systemNamespaces {
		for _, c := range chains {
			if c.Metadata.Namespace == sys {
				a.chains = append(a.chains, c)
			}
		}
	}
	ams = slices.Clone(ams)
	slices.SortStableFunc(ams, func(x, y *AccessManagement) int { return strings.Compare(x.Metadata.Name, y.Metadata.Name) })
	for _, am := range ams {
		for i, rule := range am.Spec.AccessRules {
			ar := accessRule{where: fmt.Sprintf("AccessManagement %s spec.accessRules[%d]", am.Metadata.Name, i)}
			for _, rr := range rule.effectiveResources() {
				if rr.distributesServices() {
					ar.kinds = append(ar.kinds, rr)
				}
			}
			if len(ar.kinds) == 0 {
				continue // distributes nothing Tether's services use
			}
			ts := rule.TargetNamespaces
			var sel labels.Selector
			if ts != nil {
				sel, _ = selectorOf(ts.Selector, ts.StringSelector) // validated on apply
			}
			switch {
			case ts != nil && len(ts.List) > 0:
				ar.list = ts.List
				ar.targets = strings.Join(ts.List, ", ")
			case sel != nil:
				ar.sel = sel
				ar.targets = "namespaces matching " + sel.String()
			default:
				ar.all = true
				ar.targets = "every namespace"
			}
			a.rules = append(a.rules, ar)
		}
	}
	return a
}

func (a *Access) isSystem(ns string) bool { return slices.Contains(a.system, ns) }

func (ar *accessRule) targetsNS(ns string) bool {
	switch {
	case ar.all:
		return true
	case ar.sel != nil:
		return ar.sel.Matches(labels.Set{namespaceNameLabel: ns})
	}
	return slices.Contains(ar.list, ns)
}

// rulesFor returns the rules that manage namespace ns (none for a system
// namespace: the system namespaces always see each other's objects).
func (a *Access) rulesFor(ns string) []*accessRule {
	if a == nil || a.isSystem(ns) {
		return nil
	}
	var out []*accessRule
	for i := range a.rules {
		if a.rules[i].targetsNS(ns) {
			out = append(out, &a.rules[i])
		}
	}
	return out
}

// Managed reports whether an AccessManagement rule decides which system
// templates and chains namespace ns sees.
func (a *Access) Managed(ns string) bool { return len(a.rulesFor(ns)) > 0 }

// selected returns the chains (first of each name, in system-namespace
// order) and the template names a rule distributes, and the names it
// gives that no system namespace has.
func (a *Access) selected(ar *accessRule) (chains []*ServiceTemplateChain, templates, missing []string) {
	seen := map[string]bool{}
	for _, rr := range ar.kinds {
		sel, _ := selectorOf(rr.Selector, rr.StringSelector)
		if rr.Kind == KindServiceTemplate {
			// Templates by name; by labels or all, the test is done
			// when a template is looked up (distributesTemplate).
			templates = append(templates, rr.Names...)
			continue
		}
		if len(rr.Names) > 0 {
			for _, n := range rr.Names {
				c := a.chain(n)
				if c == nil {
					missing = append(missing, n)
				} else if !seen[n] {
					seen[n] = true
					chains = append(chains, c)
				}
			}
			continue
		}
		for _, c := range a.chains {
			if !seen[c.Metadata.Name] && (sel == nil || sel.Matches(labels.Set(c.Metadata.Labels))) {
				seen[c.Metadata.Name] = true
				chains = append(chains, c)
			}
		}
	}
	for _, c := range chains {
		templates = append(templates, c.templateNames()...)
	}
	return chains, templates, missing
}

// chain returns the first system namespace's chain named name.
func (a *Access) chain(name string) *ServiceTemplateChain {
	for _, c := range a.chains {
		if c.Metadata.Name == name {
			return c
		}
	}
	return nil
}

// distributed reports whether a rule of namespace ns distributes the
// object of kind (ServiceTemplate or ServiceTemplateChain) named name;
// labelsOf gives the labels of the system namespace's object, for rules
// that select templates by label.
func (a *Access) distributed(kind, ns, name string, labelsOf func() map[string]string) bool {
	for _, ar := range a.rulesFor(ns) {
		chains, templates, _ := a.selected(ar)
		switch kind {
		case KindServiceTemplateChain:
			for _, c := range chains {
				if c.Metadata.Name == name {
					return true
				}
			}
		case KindServiceTemplate:
			if slices.Contains(templates, name) {
				return true
			}
			for _, rr := range ar.kinds {
				if rr.Kind != KindServiceTemplate || len(rr.Names) > 0 {
					continue
				}
				if sel, _ := selectorOf(rr.Selector, rr.StringSelector); sel == nil || sel.Matches(labels.Set(labelsOf())) {
					return true
				}
			}
		}
	}
	return false
}

// Resolve returns the namespace whose object of a kind shared from the
// system namespaces (ServiceTemplate, ServiceTemplateChain) named name a
// reference from namespace ns uses: ns itself when it has one (exists);
// else, for a namespace no rule manages, the first system namespace
// that has one; for a managed namespace, the same only when a rule
// distributes it there. labels gives the labels of the object in a
// system namespace (nil: none).
func (a *Access) Resolve(kind, ns, name string, exists func(ns string) bool, labels func(ns string) map[string]string) (string, bool) {
	if exists(ns) {
		return ns, true
	}
	for _, sys := range a.systemNamespaces() {
		if sys == ns || !exists(sys) {
			continue
		}
		if a.Managed(ns) && !a.distributed(kind, ns, name, func() map[string]string {
			if labels == nil {
				return nil
			}
			return labels(sys)
		}) {
			return "", false
		}
		return sys, true
	}
	return "", false
}

func (a *Access) systemNamespaces() []string {
	if a == nil {
		return nil
	}
	return a.system
}

// NotVisible explains why a kind's object named name, which a system
// namespace has, is not seen from namespace ns ("" if ns is not
// managed).
func (a *Access) NotVisible(kind, ns, name string) string {
	rules := a.rulesFor(ns)
	if len(rules) == 0 {
		return ""
	}
	var where []string
	var dist []string
	for _, ar := range rules {
		where = append(where, ar.where)
		chains, _, _ := a.selected(ar)
		for _, c := range chains {
			dist = append(dist, c.Metadata.Name)
		}
	}
	return fmt.Sprintf("namespace %s is managed by %s: %s %s is not distributed to it (its ServiceTemplateChains: %s)",
		ns, strings.Join(where, ", "), kind, name, orNone(strings.Join(slices.Compact(slices.Sorted(slices.Values(dist))), ", ")))
}

// ruleStatus is the status of AccessManagement am's rules, given the
// namespaces that have ClusterDeployments or MultiClusterServices.
func (a *Access) ruleStatus(am *AccessManagement, namespaces []string) []AccessRuleStatus {
	out := make([]AccessRuleStatus, 0, len(am.Spec.AccessRules))
	for i := range am.Spec.AccessRules {
		where := fmt.Sprintf("AccessManagement %s spec.accessRules[%d]", am.Metadata.Name, i)
		var ar *accessRule
		for j := range a.rules {
			if a.rules[j].where == where {
				ar = &a.rules[j]
			}
		}
		if ar == nil {
			out = append(out, AccessRuleStatus{TargetNamespaces: "none: the rule distributes no ServiceTemplateChain or ServiceTemplate"})
			continue
		}
		st := AccessRuleStatus{TargetNamespaces: ar.targets}
		for _, ns := range namespaces {
			if ar.targetsNS(ns) && !a.isSystem(ns) {
				st.Namespaces = append(st.Namespaces, ns)
			}
		}
		chains, templates, missing := a.selected(ar)
		for _, c := range chains {
			st.ServiceTemplateChains = append(st.ServiceTemplateChains, c.Metadata.Namespace+"/"+c.Metadata.Name)
		}
		st.ServiceTemplates = slices.Compact(slices.Sorted(slices.Values(templates)))
		for _, rr := range ar.kinds {
			if rr.Kind == KindServiceTemplate && len(rr.Names) == 0 {
				sel, _ := selectorOf(rr.Selector, rr.StringSelector)
				if sel == nil {
					st.ServiceTemplates = append(st.ServiceTemplates, "every ServiceTemplate of the system namespaces")
				} else {
					st.ServiceTemplates = append(st.ServiceTemplates, "ServiceTemplates of the system namespaces matching "+sel.String())
				}
			}
		}
		for _, m := range missing {
			st.Errors = append(st.Errors, fmt.Sprintf("ServiceTemplateChain %s is not in the system namespaces (%s)", m, strings.Join(a.system, ", ")))
		}
		out = append(out, st)
	}
	return out
}

// DeriveStatus fills in o's status fields that the hub computes from
// other objects when o is read: an AccessManagement's rules. Other kinds
// are unchanged.
func (r *Repo) DeriveStatus(ctx context.Context, o Object) error {
	am, ok := o.(*AccessManagement)
	if !ok {
		return nil
	}
	var acc *Access
	var namespaces []string
	err := r.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		v := r.view(tx, nil)
		var err error
		if acc, err = v.accessOf(); err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, k := range r.cfg.Kinds.kinds {
			if k.serviceSpec == nil {
				continue
			}
			sos, err := tx.List(k.name, "")
			if err != nil {
				return err
			}
			for _, so := range sos {
				seen[so.Namespace] = true
			}
		}
		namespaces = slices.Sorted(func(yield func(string) bool) {
			for ns := range seen {
				if !yield(ns) {
					return
				}
			}
		})
		return nil
	})
	if err != nil {
		return fmt.Errorf("derive status of %s: %w", am.Key(), err)
	}
	// The object as read may differ from the stored one (a dry run):
	// its own rules are read from it.
	own := NewAccess([]*AccessManagement{am}, acc.chains, acc.system)
	am.Status.Rules = own.ruleStatus(am, namespaces)
	return nil
}
