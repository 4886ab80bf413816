package desired

import (
	"encoding/json"
	"fmt"

	"github.com/tetherfleet/tether/hub/internal/objects"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// ProblemOptions: the service's helmOptions or its spec's syncMode cannot
// be read; the service is not deployed (the cluster keeps its last good
// version of it).
const ProblemOptions = "OptionsError"

// HelmOptions are the Helm settings the agent applies to one service (see
// objects.HelmOptions); the zero value is the agent's defaults.
type HelmOptions struct {
	TimeoutMS    int64 `json:"timeoutMs,omitempty"`
	SkipCRDs     bool  `json:"skipCRDs,omitempty"`
	DisableHooks bool  `json:"disableHooks,omitempty"`
	Atomic       bool  `json:"atomic,omitempty"`
	NoWait       bool  `json:"noWait,omitempty"`
}

// knobs sets svc's sync mode and Helm options from its source spec and
// its template's helmOptions under the service's own.
func knobs(svc *Service, w candidate) *Problem {
	fail := func(err error) *Problem {
		return &Problem{Source: w.src.ref, Service: w.p.key, Code: ProblemOptions, Reason: err.Error()}
	}
	mode, err := objects.SyncModeOf(w.src.spec)
	if err != nil {
		return fail(err)
	}
	var tmpl json.RawMessage
	if w.p.tmpl != nil {
		tmpl = w.p.tmpl.Spec.HelmOptions
	}
	o, _, err := objects.ParseHelmOptions(tmpl, w.p.svc.HelmOptions)
	if err != nil {
		return fail(fmt.Errorf("template %s or service: %w", w.p.svc.Template, err))
	}
	drift, err := objects.DriftRulesOf(w.src.spec)
	if err != nil {
		return fail(err)
	}
	svc.Drift = nil
	if len(drift.Ignore) > 0 || len(drift.Exclude) > 0 {
		svc.Drift = &drift
	}
	svc.SyncMode = mode
	h := HelmOptions{TimeoutMS: o.Timeout.Milliseconds(), SkipCRDs: o.SkipCRDs, DisableHooks: o.DisableHooks, Atomic: o.Atomic, NoWait: o.NoWait}
	svc.Helm = nil
	if h != (HelmOptions{}) {
		svc.Helm = &h
	}
	return nil
}

func equalHelm(a, b *HelmOptions) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func wireHelm(h *HelmOptions) *fleetv1.HelmOptions {
	if h == nil {
		return nil
	}
	return &fleetv1.HelmOptions{TimeoutMs: h.TimeoutMS, SkipCrds: h.SkipCRDs, DisableHooks: h.DisableHooks, Atomic: h.Atomic, SkipWait: h.NoWait}
}

func equalDrift(a, b *objects.DriftRules) bool {
	if a == nil || b == nil {
		return a == b
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func wireDrift(d *objects.DriftRules, out *fleetv1.Service) {
	if d == nil {
		return
	}
	sel := func(s objects.DriftSelector) *fleetv1.ObjectSelector {
		return &fleetv1.ObjectSelector{Group: s.Group, Version: s.Version, Kind: s.Kind, Name: s.Name, Namespace: s.Namespace,
			LabelSelector: s.LabelSelector, AnnotationSelector: s.AnnotationSelector}
	}
	for _, s := range d.Ignore {
		out.DriftIgnore = append(out.DriftIgnore, sel(s))
	}
	for _, x := range d.Exclude {
		ex := &fleetv1.DriftExclusion{Paths: x.Paths}
		if x.Target != nil {
			ex.Target = sel(*x.Target)
		}
		out.DriftExclusions = append(out.DriftExclusions, ex)
	}
}
