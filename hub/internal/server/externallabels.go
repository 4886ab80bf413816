package server

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tetherfleet/tether/hub/internal/remotewrite"
)

func checkExternalLabels(m map[string]string) error {
	for _, n := range slices.Sorted(maps.Keys(m)) {
		if err := remotewrite.CheckExternalLabel(n, m[n]); err != nil {
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
	if err := remotewrite.CheckExternalLabel(name, value); err != nil {
		return "", "", err
	}
	return name, value, nil
}

func externalLabels(m map[string]string) labels.Labels { return labels.FromMap(m) }
