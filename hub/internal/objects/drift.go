package objects

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"k8s.io/apimachinery/pkg/labels"
)

// DriftRules are a serviceSpec's driftIgnore and driftExclusions (Sveltos'
// PatchSelector and DriftExclusion shapes, as k0rdent carries them):
// objects the agents do not check for drift, and fields of objects they
// neither compare nor reset (fields other controllers own, such as an
// HPA's spec.replicas).
type DriftRules struct {
	Ignore  []DriftSelector  `json:"ignore,omitempty"`
	Exclude []DriftExclusion `json:"exclude,omitempty"`
}

// DriftSelector is Sveltos' PatchSelector: empty fields match anything;
// name and namespace are anchored regular expressions; labelSelector and
// annotationSelector are label selector expressions.
type DriftSelector struct {
	Group              string `json:"group,omitempty"`
	Version            string `json:"version,omitempty"`
	Kind               string `json:"kind,omitempty"`
	Name               string `json:"name,omitempty"`
	Namespace          string `json:"namespace,omitempty"`
	LabelSelector      string `json:"labelSelector,omitempty"`
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// DriftExclusion is Sveltos' DriftExclusion: JSON 6902 paths
// ("/spec/replicas") of the objects Target selects (nil: every object of
// the service).
type DriftExclusion struct {
	Paths  []string       `json:"paths"`
	Target *DriftSelector `json:"target,omitempty"`
}

// DriftRulesOf reads ss's drift rules: provider.config's (where k0rdent
// v1beta1 puts them), then the serviceSpec's own (deprecated there); both
// apply. The error names the first field that cannot be read.
func DriftRulesOf(ss *ServiceSpec) (DriftRules, error) {
	var r DriftRules
	cfg := providerConfig(ss)
	for _, src := range []struct {
		path            string
		ignore, exclude json.RawMessage
	}{
		{"provider.config.", cfg["driftIgnore"], cfg["driftExclusions"]},
		{"", ss.DriftIgnore, ss.DriftExclusions},
	} {
		if len(src.ignore) > 0 && string(src.ignore) != "null" {
			var sels []DriftSelector
			if err := json.Unmarshal(src.ignore, &sels); err != nil {
				return DriftRules{}, fmt.Errorf("%sdriftIgnore: not a list of selectors: %v", src.path, err)
			}
			for i, s := range sels {
				if err := s.check(); err != nil {
					return DriftRules{}, fmt.Errorf("%sdriftIgnore[%d]: %v", src.path, i, err)
				}
			}
			r.Ignore = append(r.Ignore, sels...)
		}
		if len(src.exclude) > 0 && string(src.exclude) != "null" {
			var exs []DriftExclusion
			if err := json.Unmarshal(src.exclude, &exs); err != nil {
				return DriftRules{}, fmt.Errorf("%sdriftExclusions: not a list of {paths, target}: %v", src.path, err)
			}
			for i, x := range exs {
				if err := x.check(); err != nil {
					return DriftRules{}, fmt.Errorf("%sdriftExclusions[%d].%v", src.path, i, err)
				}
			}
			r.Exclude = append(r.Exclude, exs...)
		}
	}
	return r, nil
}

func (s DriftSelector) check() error {
	for _, f := range []struct{ name, v string }{{"name", s.Name}, {"namespace", s.Namespace}} {
		if _, err := regexp.Compile("^(?:" + f.v + ")$"); err != nil {
			return fmt.Errorf("%s %q is not a regular expression: %v", f.name, f.v, err)
		}
	}
	for _, f := range []struct{ name, v string }{{"labelSelector", s.LabelSelector}, {"annotationSelector", s.AnnotationSelector}} {
		if _, err := labels.Parse(f.v); err != nil {
			return fmt.Errorf("%s %q: %v", f.name, f.v, err)
		}
	}
	return nil
}

func (x DriftExclusion) check() error {
	if len(x.Paths) == 0 {
		return fmt.Errorf("paths: empty")
	}
	for i, p := range x.Paths {
		if err := checkDriftPath(p); err != nil {
			return fmt.Errorf("paths[%d]: %v", i, err)
		}
	}
	if x.Target != nil {
		if err := x.Target.check(); err != nil {
			return fmt.Errorf("target: %v", err)
		}
	}
	return nil
}

// checkDriftPath refuses what the agents refuse (observe.ParsePath): the
// whole object, empty segments, and the object's identity.
func checkDriftPath(p string) error {
	var segs []string
	if strings.HasPrefix(p, "/") {
		segs = strings.Split(p[1:], "/")
	} else {
		segs = strings.Split(p, ".")
	}
	for _, s := range segs {
		if s == "" {
			return fmt.Errorf("%q: empty segment (want a JSON 6902 path such as /spec/replicas)", p)
		}
	}
	switch {
	case segs[0] == "apiVersion" || segs[0] == "kind",
		segs[0] == "metadata" && (len(segs) == 1 || segs[1] == "name" || segs[1] == "namespace"):
		return fmt.Errorf("%q names the object's identity", p)
	}
	return nil
}
