package apply

import (
	"context"
	"errors"
	"fmt"

	"helm.sh/helm/v3/pkg/release"

	"github.com/tetherfleet/tether/agent/internal/observe"
)

// Drift compares the live objects with the stored manifest of the release
// (rules in package observe's doc). A release that is missing, failed or
// pending has drifted too.
// rules name the objects and fields not to compare.
func (e *Engine) Drift(ctx context.Context, name, namespace string, rules DriftRules) (Drift, error) {
	f, err := observe.CompileDriftRules(rules)
	if err != nil {
		return Drift{}, fmt.Errorf("drift: release %s/%s: %w", namespace, name, err)
	}
	rel, err := e.lastRelease(ctx, name, namespace)
	if errors.Is(err, ErrReleaseNotFound) {
		return Drift{Drifted: true, Reasons: []string{fmt.Sprintf("release %s/%s is not installed", namespace, name)}}, nil
	}
	if err != nil {
		return Drift{}, fmt.Errorf("drift: %w", err)
	}
	var reasons []string
	if st := rel.Info.Status; st != release.StatusDeployed {
		reasons = append(reasons, fmt.Sprintf("release %s/%s is %s", namespace, name, st))
	}
	d, err := e.obs.Drift(ctx, rel.Manifest, namespace, f)
	if err != nil {
		return Drift{}, fmt.Errorf("drift: release %s/%s: %w", namespace, name, err)
	}
	reasons = append(reasons, d.Reasons...)
	return Drift{Drifted: len(reasons) > 0, Reasons: reasons}, nil
}
