// Package helmworker is the Helm side of the agent: the gRPC Engine
// service that tether-agent-helm serves to tether-agent over their
// socketpair (protocol/worker/v1), backed by apply.Engine. The agent never
// links this package; see agent/internal/worker for the agent's side and
// docs/design/agent.md for why the two are apart.
package helmworker

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/tetherfleet/tether/agent/internal/apply"
	"github.com/tetherfleet/tether/agent/internal/worker"
	"github.com/tetherfleet/tether/protocol/version"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// Engine is what the server needs of apply.Engine.
type Engine interface {
	Apply(ctx context.Context, r apply.Release) (apply.Result, error)
	Repair(ctx context.Context, r apply.Release) (apply.Result, error)
	Health(ctx context.Context, name, namespace string) (apply.Health, error)
	Drift(ctx context.Context, name, namespace string, rules apply.DriftRules) (apply.Drift, error)
	Uninstall(ctx context.Context, name, namespace string) error
	List(ctx context.Context) ([]apply.ReleaseInfo, error)
	Adopt(ctx context.Context, r apply.Release) (bool, error)
	Get(ctx context.Context, name, namespace string) (apply.ReleaseInfo, error)
	Plan(ctx context.Context, r apply.Release) (apply.Plan, error)
}

// Server serves an Engine.
type Server struct {
	workerv1.UnimplementedEngineServer
	engine Engine
}

// NewServer returns a server for e.
func NewServer(e Engine) *Server { return &Server{engine: e} }

var errOf = worker.ErrorToProto

// Hello implements workerv1.EngineServer.
func (s *Server) Hello(context.Context, *workerv1.HelloRequest) (*workerv1.HelloResponse, error) {
	return &workerv1.HelloResponse{WorkerVersion: version.Get(), Pid: int32(os.Getpid())}, nil
}

// Apply implements workerv1.EngineServer.
func (s *Server) Apply(ctx context.Context, in *workerv1.ApplyRequest) (*workerv1.ApplyResponse, error) {
	r, err := releaseOf(in.GetRelease())
	if err != nil {
		return &workerv1.ApplyResponse{Error: errOf(err)}, nil
	}
	op := s.engine.Apply
	if in.GetForce() {
		op = s.engine.Repair
	}
	res, err := op(ctx, r)
	if err != nil {
		return &workerv1.ApplyResponse{Error: errOf(err)}, nil
	}
	return &workerv1.ApplyResponse{Action: string(res.Action), Revision: int32(res.Revision), Manifest: res.Manifest, Hash: res.Hash}, nil
}

// Plan implements workerv1.EngineServer.
func (s *Server) Plan(ctx context.Context, in *workerv1.ApplyRequest) (*workerv1.PlanResponse, error) {
	r, err := releaseOf(in.GetRelease())
	if err != nil {
		return &workerv1.PlanResponse{Error: errOf(err)}, nil
	}
	p, err := s.engine.Plan(ctx, r)
	if err != nil {
		return &workerv1.PlanResponse{Error: errOf(err)}, nil
	}
	return &workerv1.PlanResponse{Action: string(p.Action), Changes: p.Changes}, nil
}

// Adopt implements workerv1.EngineServer.
func (s *Server) Adopt(ctx context.Context, in *workerv1.ApplyRequest) (*workerv1.AdoptResponse, error) {
	r, err := releaseOf(in.GetRelease())
	if err != nil {
		return &workerv1.AdoptResponse{Error: errOf(err)}, nil
	}
	ok, err := s.engine.Adopt(ctx, r)
	return &workerv1.AdoptResponse{Adopted: ok, Error: errOf(err)}, nil
}

// Uninstall implements workerv1.EngineServer.
func (s *Server) Uninstall(ctx context.Context, in *workerv1.ReleaseRef) (*workerv1.UninstallResponse, error) {
	return &workerv1.UninstallResponse{Error: errOf(s.engine.Uninstall(ctx, in.GetName(), in.GetNamespace()))}, nil
}

// Health implements workerv1.EngineServer.
func (s *Server) Health(ctx context.Context, in *workerv1.ReleaseRef) (*workerv1.HealthResponse, error) {
	h, err := s.engine.Health(ctx, in.GetName(), in.GetNamespace())
	if err != nil {
		return &workerv1.HealthResponse{Error: errOf(err)}, nil
	}
	return &workerv1.HealthResponse{Ready: h.Ready, Message: h.Message}, nil
}

// Drift implements workerv1.EngineServer.
func (s *Server) Drift(ctx context.Context, in *workerv1.ReleaseRef) (*workerv1.DriftResponse, error) {
	var rules apply.DriftRules
	if b := in.GetDriftRulesJson(); len(b) > 0 {
		if err := json.Unmarshal(b, &rules); err != nil {
			return &workerv1.DriftResponse{Error: errOf(fmt.Errorf("%w: release %s/%s: drift rules: %v", apply.ErrInvalidRelease, in.GetNamespace(), in.GetName(), err))}, nil
		}
	}
	d, err := s.engine.Drift(ctx, in.GetName(), in.GetNamespace(), rules)
	if err != nil {
		return &workerv1.DriftResponse{Error: errOf(err)}, nil
	}
	return &workerv1.DriftResponse{Drifted: d.Drifted, Reasons: d.Reasons}, nil
}

// Get implements workerv1.EngineServer.
func (s *Server) Get(ctx context.Context, in *workerv1.ReleaseRef) (*workerv1.GetResponse, error) {
	info, err := s.engine.Get(ctx, in.GetName(), in.GetNamespace())
	if err != nil {
		return &workerv1.GetResponse{Error: errOf(err)}, nil
	}
	return &workerv1.GetResponse{Info: infoToProto(info)}, nil
}

// List implements workerv1.EngineServer.
func (s *Server) List(ctx context.Context, _ *workerv1.ListRequest) (*workerv1.ListResponse, error) {
	infos, err := s.engine.List(ctx)
	if err != nil {
		return &workerv1.ListResponse{Error: errOf(err)}, nil
	}
	out := &workerv1.ListResponse{Releases: make([]*workerv1.ReleaseInfo, 0, len(infos))}
	for _, i := range infos {
		out.Releases = append(out.Releases, infoToProto(i))
	}
	return out, nil
}

func infoToProto(i apply.ReleaseInfo) *workerv1.ReleaseInfo {
	p := &workerv1.ReleaseInfo{Name: i.Name, Namespace: i.Namespace, Revision: int32(i.Revision), Status: i.Status,
		Chart: i.Chart, Version: i.Version, Hash: i.Hash, Description: i.Description}
	if !i.Updated.IsZero() {
		p.UpdatedUnixNano = i.Updated.UnixNano()
	}
	return p
}

// releaseOf decodes a release sent by the agent.
func releaseOf(p *workerv1.Release) (apply.Release, error) {
	if p == nil {
		return apply.Release{}, fmt.Errorf("%w: request has no release", apply.ErrInvalidRelease)
	}
	r := apply.Release{Name: p.GetName(), Namespace: p.GetNamespace(), Chart: p.GetChart(), ValuesYAML: p.GetValuesYaml(),
		Hash: p.GetHash(), ChartDigest: p.GetChartDigest()}
	if b := p.GetValuesJson(); len(b) > 0 {
		if err := json.Unmarshal(b, &r.Values); err != nil {
			return apply.Release{}, fmt.Errorf("%w: release %s/%s: values: %v", apply.ErrInvalidRelease, r.Namespace, r.Name, err)
		}
	}
	if b := p.GetDriftRulesJson(); len(b) > 0 {
		if err := json.Unmarshal(b, &r.Drift); err != nil {
			return apply.Release{}, fmt.Errorf("%w: release %s/%s: drift rules: %v", apply.ErrInvalidRelease, r.Namespace, r.Name, err)
		}
	}
	if o := p.GetOptions(); o != nil {
		r.Options = apply.Options{Timeout: time.Duration(max(o.GetTimeoutMs(), 0)) * time.Millisecond,
			SkipCRDs: o.GetSkipCrds(), DisableHooks: o.GetDisableHooks(), Atomic: o.GetAtomic()}
	}
	return r, nil
}
