package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/rollout"
)

// Rollouts is the part of the rollout controller the API uses.
type Rollouts interface {
	Status(ctx context.Context, namespace, name string) (*rollout.Record, error)
	Pause(ctx context.Context, namespace, name string) (*rollout.Record, error)
	Resume(ctx context.Context, namespace, name string) (*rollout.Record, error)
	Approve(ctx context.Context, namespace, name, stage string) (*rollout.Record, error)
	History(ctx context.Context, namespace, name string) ([]rollout.RevisionRecord, error)
	UndoSpec(ctx context.Context, namespace, name string, to uint64, current *objects.MultiClusterServiceSpec) (objects.MultiClusterServiceSpec, uint64, error)
	UndoClusterDeploymentSpec(ctx context.Context, namespace, name string, to uint64) (objects.ServiceSpec, uint64, error)
}

// ApproveRequest is the body of POST /v1/rollouts/{ns}/{name}/approve.
type ApproveRequest struct {
	Stage string `json:"stage"`
}

// UndoRequest is the body of POST /v1/rollouts/{ns}/{name}/undo; 0 means
// the revision before the current one.
type UndoRequest struct {
	ToRevision uint64 `json:"toRevision,omitempty"`
	// ClusterDeployment ("namespace/name") names the ClusterDeployment
	// to undo in the hub-wide rollout (/v1/rollouts/_hub/clusterdeployments/undo);
	// required there, refused elsewhere.
	ClusterDeployment string `json:"clusterDeployment,omitempty"`
}

// UndoResult says what undo re-applied.
type UndoResult struct {
	// Restored is the revision whose services were re-applied; the
	// MultiClusterService's new generation rolls them out.
	Restored uint64 `json:"restored"`
	// Action is what the apply did (configured, unchanged) and
	// Generation the object's generation after it.
	Action     string `json:"action"`
	Generation int64  `json:"generation"`
}

func (s *server) registerRollouts(mux *http.ServeMux) {
	const p = "/v1/rollouts/{namespace}/{name}"
	mux.Handle("GET "+p, s.auth(RoleViewer, s.rolloutStatus))
	mux.Handle("GET "+p+"/history", s.auth(RoleViewer, s.rolloutHistory))
	mux.Handle("POST "+p+"/pause", s.auth(RoleAdmin, s.rolloutOp(func(ctx context.Context, ns, name string) (*rollout.Record, error) {
		return s.cfg.Rollouts.Pause(ctx, ns, name)
	})))
	mux.Handle("POST "+p+"/resume", s.auth(RoleAdmin, s.rolloutOp(func(ctx context.Context, ns, name string) (*rollout.Record, error) {
		return s.cfg.Rollouts.Resume(ctx, ns, name)
	})))
	mux.Handle("POST "+p+"/approve", s.auth(RoleAdmin, s.rolloutApprove))
	mux.Handle("POST "+p+"/undo", s.auth(RoleAdmin, s.rolloutUndo))
}

func rolloutErr(err error) error {
	switch {
	case errors.Is(err, rollout.ErrNotFound):
		return httpError{http.StatusNotFound, err}
	case errors.Is(err, rollout.ErrUnknownStage), errors.Is(err, rollout.ErrUnknownRevision):
		return httpError{http.StatusBadRequest, err}
	}
	return objectErr(err)
}

func (s *server) rollouts() (Rollouts, error) {
	if s.cfg.Rollouts == nil {
		return nil, httpError{http.StatusNotImplemented, errors.New("this hub runs no rollout controller")}
	}
	return s.cfg.Rollouts, nil
}

func (s *server) rolloutStatus(w http.ResponseWriter, r *http.Request) error {
	ro, err := s.rollouts()
	if err != nil {
		return err
	}
	rec, err := ro.Status(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
	if err != nil {
		return rolloutErr(err)
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

func (s *server) rolloutHistory(w http.ResponseWriter, r *http.Request) error {
	ro, err := s.rollouts()
	if err != nil {
		return err
	}
	h, err := ro.History(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
	if err != nil {
		return rolloutErr(err)
	}
	writeJSON(w, http.StatusOK, h)
	return nil
}

func (s *server) rolloutOp(op func(ctx context.Context, ns, name string) (*rollout.Record, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := s.rollouts(); err != nil {
			return err
		}
		rec, err := op(r.Context(), r.PathValue("namespace"), r.PathValue("name"))
		if err != nil {
			return rolloutErr(err)
		}
		writeJSON(w, http.StatusOK, rec)
		return nil
	}
}

func (s *server) rolloutApprove(w http.ResponseWriter, r *http.Request) error {
	ro, err := s.rollouts()
	if err != nil {
		return err
	}
	var req ApproveRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if req.Stage == "" {
		return badRequest("approve: stage is required")
	}
	rec, err := ro.Approve(r.Context(), r.PathValue("namespace"), r.PathValue("name"), req.Stage)
	if err != nil {
		return rolloutErr(err)
	}
	writeJSON(w, http.StatusOK, rec)
	return nil
}

// rolloutUndo re-applies an earlier revision's selector and services to
// the MultiClusterService (kubectl rollout undo's model): its new
// generation is a new revision, rolled out under its policy.
func (s *server) rolloutUndo(w http.ResponseWriter, r *http.Request) error {
	ro, err := s.rollouts()
	if err != nil {
		return err
	}
	var req UndoRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if ns == rollout.ClusterDeploymentsNamespace && name == rollout.ClusterDeploymentsName {
		return s.undoClusterDeployment(w, r, ro, req)
	}
	if req.ClusterDeployment != "" {
		return badRequest("undo: clusterDeployment is only for the hub-wide rollout of ClusterDeployments")
	}
	o, err := s.cfg.Objects.Get(r.Context(), objects.KindMultiClusterService, ns, name)
	if err != nil {
		return objectErr(err)
	}
	mcs := o.(*objects.MultiClusterService)
	spec, restored, err := ro.UndoSpec(r.Context(), ns, name, req.ToRevision, &mcs.Spec)
	if err != nil {
		return rolloutErr(err)
	}
	mcs.Spec = spec
	res, err := s.cfg.Objects.ApplyWith(r.Context(), []objects.Object{mcs}, objects.ApplyOptions{})
	if err != nil {
		return objectErr(err)
	}
	writeJSON(w, http.StatusOK, UndoResult{Restored: restored, Action: string(res[0].Action), Generation: res[0].Generation})
	return nil
}

// undoClusterDeployment re-applies an earlier serviceSpec of one
// ClusterDeployment: a new revision, rolled out under the hub-wide
// policy.
func (s *server) undoClusterDeployment(w http.ResponseWriter, r *http.Request, ro Rollouts, req UndoRequest) error {
	ns, name, ok := strings.Cut(req.ClusterDeployment, "/")
	if !ok || ns == "" || name == "" {
		return badRequest("undo: clusterDeployment %q: want NAMESPACE/NAME of the ClusterDeployment to undo", req.ClusterDeployment)
	}
	o, err := s.cfg.Objects.Get(r.Context(), objects.KindClusterDeployment, ns, name)
	if err != nil {
		return objectErr(err)
	}
	cd := o.(*objects.ClusterDeployment)
	spec, restored, err := ro.UndoClusterDeploymentSpec(r.Context(), ns, name, req.ToRevision)
	if err != nil {
		return rolloutErr(err)
	}
	cd.Spec.ServiceSpec = spec
	res, err := s.cfg.Objects.ApplyWith(r.Context(), []objects.Object{cd}, objects.ApplyOptions{})
	if err != nil {
		return objectErr(err)
	}
	writeJSON(w, http.StatusOK, UndoResult{Restored: restored, Action: string(res[0].Action), Generation: res[0].Generation})
	return nil
}

func rolloutPath(namespace, name, op string) string {
	p := "/v1/rollouts/" + url.PathEscape(namespace) + "/" + url.PathEscape(name)
	if op != "" {
		p += "/" + op
	}
	return p
}

// RolloutStatus returns a MultiClusterService's rollout.
func (c *Client) RolloutStatus(ctx context.Context, namespace, name string) (*rollout.Record, error) {
	var rec rollout.Record
	return &rec, c.do(ctx, http.MethodGet, rolloutPath(namespace, name, ""), nil, &rec)
}

// RolloutHistory returns a MultiClusterService's revisions.
func (c *Client) RolloutHistory(ctx context.Context, namespace, name string) ([]rollout.RevisionRecord, error) {
	var h []rollout.RevisionRecord
	return h, c.do(ctx, http.MethodGet, rolloutPath(namespace, name, "history"), nil, &h)
}

// RolloutOp runs pause or resume.
func (c *Client) RolloutOp(ctx context.Context, namespace, name, op string) (*rollout.Record, error) {
	var rec rollout.Record
	return &rec, c.do(ctx, http.MethodPost, rolloutPath(namespace, name, op), struct{}{}, &rec)
}

// RolloutApprove approves a stage.
func (c *Client) RolloutApprove(ctx context.Context, namespace, name, stage string) (*rollout.Record, error) {
	var rec rollout.Record
	return &rec, c.do(ctx, http.MethodPost, rolloutPath(namespace, name, "approve"), ApproveRequest{Stage: stage}, &rec)
}

// RolloutUndo re-applies revision to (0: the one before the current);
// cd names the ClusterDeployment ("namespace/name") for the hub-wide
// rollout, "" otherwise.
func (c *Client) RolloutUndo(ctx context.Context, namespace, name string, to uint64, cd string) (UndoResult, error) {
	var res UndoResult
	return res, c.do(ctx, http.MethodPost, rolloutPath(namespace, name, "undo"), UndoRequest{ToRevision: to, ClusterDeployment: cd}, &res)
}
