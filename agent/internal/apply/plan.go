package apply

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"helm.sh/helm/v3/pkg/release"

	"github.com/tetherfleet/tether/agent/internal/observe"
)

// Plan renders r (a server-side dry run, with release storage in memory)
// and compares it with the installed release and, when the hash matches,
// the live objects. It writes nothing.
func (e *Engine) Plan(ctx context.Context, r Release) (Plan, error) {
	p, err := prepare(r)
	if err != nil {
		return Plan{}, fmt.Errorf("plan release %s/%s: %w", r.Namespace, r.Name, err)
	}
	pl, err := e.plan(ctx, p)
	if err != nil {
		return Plan{}, fmt.Errorf("plan release %s: %w", p.key, err)
	}
	return pl, nil
}

func (e *Engine) plan(ctx context.Context, p prepared) (Plan, error) {
	last, err := e.lastRelease(ctx, p.key.name, p.key.namespace)
	if err != nil && !errors.Is(err, ErrReleaseNotFound) {
		return Plan{}, err
	}
	if last != nil && last.Labels[LabelHash] == p.hash {
		d, err := e.Drift(ctx, p.key.name, p.key.namespace, p.drift)
		if err != nil {
			return Plan{}, err
		}
		if d.Drifted {
			return Plan{Action: ActionRepaired, Changes: d.Reasons}, nil
		}
		return Plan{Action: ActionUnchanged}, nil
	}
	raw, err := e.rawHelmConfig(p.key.namespace)
	if err != nil {
		return Plan{}, err
	}
	version, act, before := 1, ActionInstalled, ""
	if last != nil {
		version, act, before = last.Version+1, ActionUpgraded, last.Manifest
	}
	rendered, err := e.render(ctx, raw, p, version)
	if err != nil {
		return Plan{}, fmt.Errorf("render: %w", err)
	}
	changes, err := manifestChanges(before, rendered, p.key.namespace)
	if err != nil {
		return Plan{}, err
	}
	return Plan{Action: act, Changes: changes}, nil
}

// manifestChanges lists the objects of after that are new or differ from
// before, then those of before that after drops.
func manifestChanges(before string, after *release.Release, namespace string) ([]string, error) {
	old, err := observe.ParseManifest(before)
	if err != nil {
		return nil, fmt.Errorf("installed manifest: %w", err)
	}
	cur, err := observe.ParseManifest(after.Manifest)
	if err != nil {
		return nil, fmt.Errorf("rendered manifest: %w", err)
	}
	id := func(o observe.Object) string {
		ns := o.Namespace
		if ns == "" {
			ns = namespace
		}
		return o.GVK.GroupKind().String() + " " + o.Ref(ns)
	}
	have := map[string]observe.Object{}
	for _, o := range old {
		have[id(o)] = o
	}
	var out []string
	seen := map[string]bool{}
	for _, o := range cur {
		k := id(o)
		seen[k] = true
		ns := o.Namespace
		if ns == "" {
			ns = namespace
		}
		switch prev, ok := have[k]; {
		case !ok:
			out = append(out, "create "+o.Ref(ns))
		case !reflect.DeepEqual(prev.Content, o.Content):
			out = append(out, "change "+o.Ref(ns))
		}
	}
	for _, o := range old {
		if !seen[id(o)] {
			ns := o.Namespace
			if ns == "" {
				ns = namespace
			}
			out = append(out, "delete "+o.Ref(ns))
		}
	}
	return out, nil
}
