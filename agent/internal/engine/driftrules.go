package engine

// DriftRules say which parts of a release drift detection leaves alone:
// k0rdent's driftIgnore and driftExclusions (Sveltos' shapes). The zero
// value compares every field of every object. Package observe applies
// them (observe.CompileDriftRules).
type DriftRules struct {
	// Ignore: objects matching any selector are not checked for drift.
	Ignore []ObjectSelector `json:"ignore,omitempty"`
	// Exclude: paths of the selected objects that are not compared, and
	// that an upgrade or repair leaves as the cluster has them.
	Exclude []DriftExclusion `json:"exclude,omitempty"`
}

// Empty reports whether r changes nothing.
func (r DriftRules) Empty() bool { return len(r.Ignore) == 0 && len(r.Exclude) == 0 }

// ObjectSelector selects objects (Sveltos' PatchSelector): empty fields
// match anything; Name and Namespace are anchored regular expressions;
// LabelSelector and AnnotationSelector are label selector expressions.
type ObjectSelector struct {
	Group              string `json:"group,omitempty"`
	Version            string `json:"version,omitempty"`
	Kind               string `json:"kind,omitempty"`
	Name               string `json:"name,omitempty"`
	Namespace          string `json:"namespace,omitempty"`
	LabelSelector      string `json:"labelSelector,omitempty"`
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// DriftExclusion is JSON 6902 paths ("/spec/replicas"; a "*" segment
// matches any key or index) of the objects Target selects; nil Target:
// every object.
type DriftExclusion struct {
	Paths  []string        `json:"paths"`
	Target *ObjectSelector `json:"target,omitempty"`
}
