package server

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/prometheus/model/labels"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// CheckExternalLabel reports why name=value cannot be one of the hub's
// external labels (Config.ExternalLabels), or nil.
func CheckExternalLabel(name, value string) error {
	switch {
	case strings.HasPrefix(name, "__"):
		return fmt.Errorf("label name %q: names starting with __ are reserved", name)
	case !telemetryv1.ValidLabelName(name):
		return fmt.Errorf("label name %q: want [a-zA-Z_][a-zA-Z0-9_]*, at most %d bytes", name, telemetryv1.MaxLabelNameBytes)
	case name == telemetryv1.ClusterLabel:
		// Every agent series has its own; an external one would never
		// show, or name the hub where a cluster is expected.
		return fmt.Errorf("label name %q: it is the per-cluster label agents' series carry; pick another name for the hub (e.g. region or hub)", name)
	case value == "":
		return fmt.Errorf("label %s: the value is empty", name)
	case !utf8.ValidString(value):
		return fmt.Errorf("label %s: the value is not valid UTF-8", name)
	}
	return nil
}

func checkExternalLabels(m map[string]string) error {
	for _, n := range slices.Sorted(maps.Keys(m)) {
		if err := CheckExternalLabel(n, m[n]); err != nil {
			return fmt.Errorf("hub: external label: %w", err)
		}
	}
	return nil
}

// ParseExternalLabel splits NAME=VALUE and checks it.
func ParseExternalLabel(s string) (string, string, error) {
	name, value, ok := strings.Cut(s, "=")
	if !ok {
		return "", "", errors.New("want NAME=VALUE")
	}
	if err := CheckExternalLabel(name, value); err != nil {
		return "", "", err
	}
	return name, value, nil
}

func externalLabels(m map[string]string) labels.Labels {
	if len(m) == 0 {
		return labels.EmptyLabels()
	}
	return labels.FromMap(m)
}
