package telemetryv1

import (
	"fmt"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// relabelActions are the actions Prometheus' relabel package knows.
var relabelActions = []relabel.Action{relabel.Replace, relabel.Keep, relabel.Drop, relabel.KeepEqual, relabel.DropEqual,
	relabel.HashMod, relabel.LabelMap, relabel.LabelDrop, relabel.LabelKeep, relabel.Lowercase, relabel.Uppercase}

// RelabelConfig converts one relabel rule of a desired state's scrape
// config into Prometheus' relabel.Config and validates it as Prometheus
// does (legacy label names, the wire's rule). The hub validates a
// ScrapeConfig object with it and the agent converts what it receives
// with it, so what the hub accepts the agent runs. Fields are taken as
// given: the hub fills in Prometheus' defaults before it sends a rule.
func RelabelConfig(w *fleetv1.RelabelConfig) (*relabel.Config, error) {
	act := relabel.Action(strings.ToLower(w.GetAction()))
	known := false
	for _, a := range relabelActions {
		known = known || a == act
	}
	if !known {
		return nil, fmt.Errorf("action %q: unknown (want replace, keep, drop, keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase or uppercase)", w.GetAction())
	}
	// Prometheus' Validate compares the regex with its default by value
	// (keepequal, dropequal), so the default must be that very one.
	re := relabel.DefaultRelabelConfig.Regex
	if w.GetRegex() != re.String() {
		var err error
		if re, err = relabel.NewRegexp(w.GetRegex()); err != nil {
			return nil, fmt.Errorf("regex %q: invalid: %v", w.GetRegex(), err)
		}
	}
	cfg := &relabel.Config{Separator: w.GetSeparator(), Regex: re, Modulus: w.GetModulus(), TargetLabel: w.GetTargetLabel(),
		Replacement: w.GetReplacement(), Action: act, NameValidationScheme: model.LegacyValidation}
	for _, l := range w.GetSourceLabels() {
		if !model.LegacyValidation.IsValidLabelName(l) {
			return nil, fmt.Errorf("source_labels: %q is not a valid label name", l)
		}
		cfg.SourceLabels = append(cfg.SourceLabels, model.LabelName(l))
	}
	if err := cfg.Validate(model.LegacyValidation); err != nil {
		return nil, fmt.Errorf("action %s: %w", act, err)
	}
	return cfg, nil
}
