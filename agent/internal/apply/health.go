package apply

import (
	"context"
	"errors"
	"fmt"
	"time"

	"helm.sh/helm/v3/pkg/release"

	"github.com/tetherfleet/tether/agent/internal/observe"
)

// Health checks the release's workloads once.
func (e *Engine) Health(ctx context.Context, name, namespace string) (Health, error) {
	p, err := e.check(ctx, name, namespace)
	if err != nil {
		return Health{}, err
	}
	if p == nil {
		return Health{Ready: true}, nil
	}
	return Health{Message: p.Message("")}, nil
}

// WaitHealthy polls Health until the release is ready, ctx is done, or
// timeout (Config.HealthTimeout when 0) passes. On timeout the error wraps
// ErrNotReady and reads like "Deployment web/nginx: 0/2 replicas available
// after 2m0s". The returned Health is the last one seen.
func (e *Engine) WaitHealthy(ctx context.Context, name, namespace string, timeout time.Duration) (Health, error) {
	if timeout <= 0 {
		timeout = e.cfg.HealthTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(e.cfg.PollInterval)
	defer tick.Stop()
	for {
		p, err := e.check(ctx, name, namespace)
		switch {
		case err != nil && (errors.Is(err, ErrReleaseNotFound) || errors.Is(err, ErrForeignRelease) || ctx.Err() != nil):
			return Health{}, err
		case err != nil:
			// The API server may be briefly away; keep trying until the deadline.
			e.log.Debug("health check failed", "release", namespace+"/"+name, "err", err)
			p = &observe.Problem{Object: "release " + namespace + "/" + name, What: err.Error()}
		case p == nil:
			return Health{Ready: true}, nil
		}
		select {
		case <-ctx.Done():
			return Health{Message: p.Message("")}, context.Cause(ctx)
		case <-deadline.C:
			return Health{Message: p.Message("")}, notReadyError(p.Message(" after " + timeout.String()))
		case <-tick.C:
		}
	}
}

type notReadyError string

func (e notReadyError) Error() string        { return string(e) }
func (e notReadyError) Is(target error) bool { return target == ErrNotReady }

// check returns the first reason the release is not ready, or nil: its
// stored status, then its workloads (observe.Observer.Check).
func (e *Engine) check(ctx context.Context, name, namespace string) (*observe.Problem, error) {
	rel, err := e.lastRelease(ctx, name, namespace)
	if err != nil {
		return nil, err
	}
	if st := rel.Info.Status; st != release.StatusDeployed {
		return &observe.Problem{Object: "release " + namespace + "/" + name, What: fmt.Sprintf("%s: %s", st, rel.Info.Description)}, nil
	}
	p, err := e.obs.Check(ctx, rel.Manifest, namespace)
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", namespace, name, err)
	}
	return p, nil
}
