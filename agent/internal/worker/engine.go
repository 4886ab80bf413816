package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tetherfleet/tether/agent/internal/engine"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// Reader answers from the agent's release record what a reconcile pass
// asks of every release, without Helm (observe.Reader).
type Reader interface {
	Unchanged(ctx context.Context, name, namespace, hash string) (engine.Result, bool, error)
	Get(ctx context.Context, name, namespace string) (engine.ReleaseInfo, error)
	List(ctx context.Context) ([]engine.ReleaseInfo, error)
	Health(ctx context.Context, name, namespace string) (engine.Health, error)
	Drift(ctx context.Context, name, namespace string, rules engine.DriftRules) (engine.Drift, error)
}

// Engine is the agent's engine (reconcile.Engine). What the release
// record can answer, it answers itself through Reader: a release up to
// date, its health, its drift, the list of releases; so a steady cluster
// needs no worker. Everything that writes (install, upgrade, repair,
// uninstall, adoption) or renders (a dry-run plan) goes to the Helm
// worker, started on demand by the Supervisor; so does a question the
// record cannot answer (engine.ErrUnknown: a record from before it held
// Helm's status and manifest, or a release Secret gone).
type Engine struct {
	sup    *Supervisor
	reader Reader
	log    *slog.Logger
}

// NewEngine returns an engine over a supervisor and a record reader.
func NewEngine(sup *Supervisor, reader Reader, log *slog.Logger) *Engine {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{sup: sup, reader: reader, log: log}
}

// response is a worker reply that carries an operation error.
type response interface{ GetError() *workerv1.Error }

// call runs one RPC in the worker (started if needed) and returns its
// reply, with the operation's error (resp.Error) decoded as an error.
func call[R response](ctx context.Context, e *Engine, op string, rpc func(context.Context, workerv1.EngineClient) (R, error)) (R, error) {
	var resp R
	err := e.sup.Do(ctx, op, func(ctx context.Context, c workerv1.EngineClient) error {
		var err error
		if resp, err = rpc(ctx, c); err != nil {
			return err
		}
		return errorFromProto(resp.GetError())
	})
	return resp, err
}

// Apply returns the recorded release when it is deployed with r's hash
// (ActionUnchanged, no worker), else has the worker install or upgrade it.
func (e *Engine) Apply(ctx context.Context, r engine.Release) (engine.Result, error) {
	res, ok, err := e.reader.Unchanged(ctx, r.Name, r.Namespace, r.Hash)
	if err != nil {
		e.log.Debug("release record unreadable; asking the helm worker", "release", r.Namespace+"/"+r.Name, "err", err)
	} else if ok {
		return res, nil
	}
	return e.apply(ctx, "apply", r, false)
}

// Repair re-applies r in the worker even when its hash is deployed.
func (e *Engine) Repair(ctx context.Context, r engine.Release) (engine.Result, error) {
	return e.apply(ctx, "repair", r, true)
}

func (e *Engine) apply(ctx context.Context, op string, r engine.Release, force bool) (engine.Result, error) {
	req, err := requestOf(r, force)
	if err != nil {
		return engine.Result{}, err
	}
	resp, err := call(ctx, e, op+" "+r.Namespace+"/"+r.Name, func(ctx context.Context, c workerv1.EngineClient) (*workerv1.ApplyResponse, error) {
		return c.Apply(ctx, req)
	})
	if err != nil {
		return engine.Result{}, err
	}
	return engine.Result{Action: engine.Action(resp.GetAction()), Revision: int(resp.GetRevision()), Manifest: resp.GetManifest(), Hash: resp.GetHash()}, nil
}

// Plan renders r in the worker (syncMode DryRun).
func (e *Engine) Plan(ctx context.Context, r engine.Release) (engine.Plan, error) {
	req, err := requestOf(r, false)
	if err != nil {
		return engine.Plan{}, err
	}
	resp, err := call(ctx, e, "plan "+r.Namespace+"/"+r.Name, func(ctx context.Context, c workerv1.EngineClient) (*workerv1.PlanResponse, error) {
		return c.Plan(ctx, req)
	})
	if err != nil {
		return engine.Plan{}, err
	}
	return engine.Plan{Action: engine.Action(resp.GetAction()), Changes: resp.GetChanges()}, nil
}

// Adopt has the worker adopt a release installed before the agent kept
// records (see apply.Engine.Adopt).
func (e *Engine) Adopt(ctx context.Context, r engine.Release) (bool, error) {
	req, err := requestOf(r, false)
	if err != nil {
		return false, err
	}
	resp, err := call(ctx, e, "adopt "+r.Namespace+"/"+r.Name, func(ctx context.Context, c workerv1.EngineClient) (*workerv1.AdoptResponse, error) {
		return c.Adopt(ctx, req)
	})
	return resp.GetAdopted(), err
}

// Uninstall has the worker uninstall a release.
func (e *Engine) Uninstall(ctx context.Context, name, namespace string) error {
	_, err := call(ctx, e, "uninstall "+namespace+"/"+name, func(ctx context.Context, c workerv1.EngineClient) (*workerv1.UninstallResponse, error) {
		return c.Uninstall(ctx, &workerv1.ReleaseRef{Name: name, Namespace: namespace})
	})
	return err
}

// Health answers from the record and the cluster, or from the worker when
// the record cannot tell.
func (e *Engine) Health(ctx context.Context, name, namespace string) (engine.Health, error) {
	h, err := e.reader.Health(ctx, name, namespace)
	if !errors.Is(err, engine.ErrUnknown) {
		return h, err
	}
	resp, err := call(ctx, e, "health "+namespace+"/"+name, func(ctx context.Context, c workerv1.EngineClient) (*workerv1.HealthResponse, error) {
		return c.Health(ctx, &workerv1.ReleaseRef{Name: name, Namespace: namespace})
	})
	if err != nil {
		return engine.Health{}, err
	}
	return engine.Health{Ready: resp.GetReady(), Message: resp.GetMessage()}, nil
}

// Drift answers from the record and the cluster, or from the worker when
// the record cannot tell.
func (e *Engine) Drift(ctx context.Context, name, namespace string, rules engine.DriftRules) (engine.Drift, error) {
	d, err := e.reader.Drift(ctx, name, namespace, rules)
	if !errors.Is(err, engine.ErrUnknown) {
		return d, err
	}
	ref := &workerv1.ReleaseRef{Name: name, Namespace: namespace}
	if !rules.Empty() {
		if ref.DriftRulesJson, err = json.Marshal(rules); err != nil {
			return engine.Drift{}, fmt.Errorf("drift %s/%s: encode drift rules: %w", namespace, name, err)
		}
	}
	resp, err := call(ctx, e, "drift "+namespace+"/"+name, func(ctx context.Context, c workerv1.EngineClient) (*workerv1.DriftResponse, error) {
		return c.Drift(ctx, ref)
	})
	if err != nil {
		return engine.Drift{}, err
	}
	return engine.Drift{Drifted: resp.GetDrifted(), Reasons: resp.GetReasons()}, nil
}

// Get answers from the record, or from the worker when it cannot tell.
func (e *Engine) Get(ctx context.Context, name, namespace string) (engine.ReleaseInfo, error) {
	info, err := e.reader.Get(ctx, name, namespace)
	if !errors.Is(err, engine.ErrUnknown) {
		return info, err
	}
	resp, err := call(ctx, e, "get "+namespace+"/"+name, func(ctx context.Context, c workerv1.EngineClient) (*workerv1.GetResponse, error) {
		return c.Get(ctx, &workerv1.ReleaseRef{Name: name, Namespace: namespace})
	})
	if err != nil {
		return engine.ReleaseInfo{}, err
	}
	return infoOf(resp.GetInfo()), nil
}

// List returns the releases the agent recorded (the record is the truth
// of what it owns).
func (e *Engine) List(ctx context.Context) ([]engine.ReleaseInfo, error) {
	return e.reader.List(ctx)
}

func infoOf(p *workerv1.ReleaseInfo) engine.ReleaseInfo {
	i := engine.ReleaseInfo{Name: p.GetName(), Namespace: p.GetNamespace(), Revision: int(p.GetRevision()), Status: p.GetStatus(),
		Chart: p.GetChart(), Version: p.GetVersion(), Hash: p.GetHash(), Description: p.GetDescription()}
	if n := p.GetUpdatedUnixNano(); n != 0 {
		i.Updated = time.Unix(0, n)
	}
	return i
}

// requestOf encodes a release for the worker.
func requestOf(r engine.Release, force bool) (*workerv1.ApplyRequest, error) {
	p := &workerv1.Release{Name: r.Name, Namespace: r.Namespace, Chart: r.Chart, ValuesYaml: r.ValuesYAML, Hash: r.Hash, ChartDigest: r.ChartDigest,
		Options: &workerv1.Options{TimeoutMs: r.Options.Timeout.Milliseconds(), SkipCrds: r.Options.SkipCRDs,
			DisableHooks: r.Options.DisableHooks, Atomic: r.Options.Atomic}}
	if r.Values != nil {
		b, err := json.Marshal(r.Values)
		if err != nil {
			return nil, fmt.Errorf("%w: release %s/%s: values: %v", engine.ErrInvalidRelease, r.Namespace, r.Name, err)
		}
		p.ValuesJson = b
	}
	if !r.Drift.Empty() {
		b, err := json.Marshal(r.Drift)
		if err != nil {
			return nil, fmt.Errorf("%w: release %s/%s: drift rules: %v", engine.ErrInvalidRelease, r.Namespace, r.Name, err)
		}
		p.DriftRulesJson = b
	}
	return &workerv1.ApplyRequest{Release: p, Force: force}, nil
}
