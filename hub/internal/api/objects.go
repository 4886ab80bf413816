package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// Objects is the part of the object repository the API uses.
type Objects interface {
	ApplyWith(ctx context.Context, objs []objects.Object, opts objects.ApplyOptions) ([]objects.Result, error)
	Get(ctx context.Context, kind, namespace, name string) (objects.Object, error)
	List(ctx context.Context, kind, namespace string) ([]objects.Object, error)
	Delete(ctx context.Context, kind, namespace, name string) error
}

// Charts is the part of the chart store the API uses.
type Charts interface {
	Push(ctx context.Context, archive []byte) (charts.Chart, error)
	List(ctx context.Context) ([]charts.Chart, error)
}

// Desired is the part of the desired-state compiler the API uses.
type Desired interface {
	State(ctx context.Context, cluster string) (*desired.State, error)
	Problems() []desired.Problem
}

// Reports reads agents' status reports.
type Reports interface {
	Get(ctx context.Context, cluster string) (reports.Report, bool, error)
	Delete(ctx context.Context, cluster string) error
}

// ApplyResult is one line of `tether apply` output.
type ApplyResult struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Action    string `json:"action"`
	// Warnings name accepted fields that have no effect yet.
	Warnings []string `json:"warnings,omitempty"`
	// DryRun: nothing was stored; Action is what apply would do.
	DryRun bool `json:"dryRun,omitempty"`
	// Object (dry run only) is the object as apply would store it,
	// defaulted; Live the stored one (none when Action is created).
	Object json.RawMessage `json:"object,omitempty"`
	Live   json.RawMessage `json:"live,omitempty"`
}

// DryRunAll is the value of POST /v1/apply's dryRun parameter (as in
// Kubernetes' API) that runs the whole apply and stores nothing.
const DryRunAll = "All"

// Service is one service on one cluster, as `tether get services` shows it.
type Service struct {
	Cluster   string `json:"cluster"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Template  string `json:"template,omitempty"`
	Chart     string `json:"chart,omitempty"`
	// Source is the object the service comes from, "Kind ns/name".
	Source string `json:"source,omitempty"`
	State  string `json:"state"`
	// DesiredRevision is the cluster's desired revision that last changed
	// the service; Revision the one the agent reported on.
	DesiredRevision  uint64    `json:"desiredRevision,omitempty"`
	Revision         uint64    `json:"revision,omitempty"`
	LastDeployedHash string    `json:"lastDeployedHash,omitempty"`
	Message          string    `json:"message,omitempty"`
	Time             time.Time `json:"time,omitzero"`
}

// States of services that only the hub knows.
const (
	// ServicePending: desired, not yet reported by the agent for this
	// revision.
	ServicePending = "Pending"
	// ServiceNotDeployed: the compiler could not place it (conflict,
	// template not ready, bad values); the message says why.
	ServiceNotDeployed = "NotDeployed"
)

// maxApply bounds an apply request body.
const maxApply = 8 << 20

func (s *server) registerObjects(mux *http.ServeMux) {
	mux.Handle("POST /v1/apply", s.auth(RoleAdmin, s.apply))
	mux.Handle("GET /v1/objects/{kind}", s.auth(RoleViewer, s.listObjects))
	mux.Handle("GET /v1/objects/{kind}/{namespace}/{name}", s.auth(RoleViewer, s.getObject))
	mux.Handle("DELETE /v1/objects/{kind}/{namespace}/{name}", s.auth(RoleAdmin, s.deleteObject))
	mux.Handle("POST /v1/charts", s.auth(RoleAdmin, s.pushChart))
	mux.Handle("GET /v1/charts", s.auth(RoleViewer, s.listCharts))
	mux.Handle("GET /v1/services", s.auth(RoleViewer, s.listServices))
}

func (s *server) apply(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, maxApply, "read apply body")
	if err != nil {
		return err
	}
	source := r.URL.Query().Get("source")
	if source == "" {
		source = "request"
	}
	var opts objects.ApplyOptions
	switch dr := r.URL.Query().Get("dryRun"); dr {
	case "":
	case DryRunAll:
		opts.DryRun = true
	default:
		return badRequest("dryRun %q: want %q or none", dr, DryRunAll)
	}
	objs, err := s.cfg.Kinds.Decode(body, source)
	if err != nil {
		return badRequest("%v", err)
	}
	if err := refuseRedacted(objs); err != nil {
		return err
	}
	res, err := s.cfg.Objects.ApplyWith(r.Context(), objs, opts)
	if err != nil {
		if errors.Is(err, objects.ErrInvalid) {
			return badRequest("%v", err)
		}
		return err
	}
	out := make([]ApplyResult, 0, len(res))
	for i, x := range res {
		ar := ApplyResult{Kind: x.Kind, Namespace: x.Namespace, Name: x.Name, Action: string(x.Action),
			Warnings: s.cfg.Kinds.Warnings(objs[i]), DryRun: opts.DryRun}
		if opts.DryRun {
			if ar.Object, err = json.Marshal(x.Object); err != nil {
				return fmt.Errorf("encode %s: %w", ar.Kind, err)
			}
			if x.Live != nil {
				if ar.Live, err = json.Marshal(x.Live); err != nil {
					return fmt.Errorf("encode %s: %w", ar.Kind, err)
				}
			}
		}
		out = append(out, ar)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) checkKind(kind string) error {
	if s.cfg.Kinds.Get(kind) == nil {
		return httpError{http.StatusBadRequest, fmt.Errorf("unknown kind %q; known kinds: %s", kind, strings.Join(s.cfg.Kinds.Names(), ", "))}
	}
	return nil
}

func objectErr(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return httpError{http.StatusNotFound, err}
	case errors.Is(err, objects.ErrInUse), errors.Is(err, objects.ErrInvalid):
		return httpError{http.StatusConflict, err}
	}
	return err
}

func (s *server) listObjects(w http.ResponseWriter, r *http.Request) error {
	kind := r.PathValue("kind")
	if err := s.checkKind(kind); err != nil {
		return err
	}
	objs, err := s.cfg.Objects.List(r.Context(), kind, r.URL.Query().Get("namespace"))
	if err != nil {
		return objectErr(err)
	}
	role := roleOf(r.Context())
	for _, o := range objs {
		if err := s.withStatus(r.Context(), o); err != nil {
			return err
		}
		redact(s.cfg.Kinds, role, o)
	}
	writeJSON(w, http.StatusOK, objs)
	return nil
}

func (s *server) getObject(w http.ResponseWriter, r *http.Request) error {
	kind := r.PathValue("kind")
	if err := s.checkKind(kind); err != nil {
		return err
	}
	o, err := s.cfg.Objects.Get(r.Context(), kind, r.PathValue("namespace"), r.PathValue("name"))
	if err != nil {
		return objectErr(err)
	}
	if err := s.withStatus(r.Context(), o); err != nil {
		return err
	}
	redact(s.cfg.Kinds, roleOf(r.Context()), o)
	writeJSON(w, http.StatusOK, o)
	return nil
}

func (s *server) deleteObject(w http.ResponseWriter, r *http.Request) error {
	kind := r.PathValue("kind")
	if err := s.checkKind(kind); err != nil {
		return err
	}
	if err := s.cfg.Objects.Delete(r.Context(), kind, r.PathValue("namespace"), r.PathValue("name")); err != nil {
		return objectErr(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) pushChart(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(w, r, maxChart, "read chart")
	if err != nil {
		return err
	}
	c, err := s.cfg.Charts.Push(r.Context(), body)
	if err != nil {
		return badRequest("%v", err)
	}
	writeJSON(w, http.StatusCreated, c)
	return nil
}

func (s *server) listCharts(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.cfg.Charts.List(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, cs)
	return nil
}

func (s *server) listServices(w http.ResponseWriter, r *http.Request) error {
	rows, err := s.services(r.Context(), r.URL.Query().Get("cluster"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rows)
	return nil
}

// services merges desired state, agents' reports and compile problems into
// one row per service per cluster.
func (s *server) services(ctx context.Context, only string) ([]Service, error) {
	cs, err := s.cfg.Fleet.List(ctx)
	if err != nil {
		return nil, err
	}
	problems := s.cfg.Desired.Problems()
	var out []Service
	for _, c := range cs {
		if only != "" && c.Name != only {
			continue
		}
		_, online := s.cfg.Gateway.Session(c.Name)
		rep, _, err := s.cfg.Reports.Get(ctx, c.Name)
		if err != nil {
			return nil, err
		}
		reported := map[string]reports.Service{}
		for _, rs := range rep.Services {
			reported[rs.Namespace+"/"+rs.Name] = rs
		}
		st, err := s.cfg.Desired.State(ctx, c.Name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		seen := map[string]bool{}
		if st != nil {
			for _, d := range st.Services {
				k := d.Namespace + "/" + d.Name
				seen[k] = true
				row := Service{
					Cluster: c.Name, Namespace: d.Namespace, Name: d.Name, Template: d.Template,
					Chart: d.ChartName + "-" + d.ChartVersion, Source: d.Source.String(), DesiredRevision: d.Revision,
					State: ServicePending, Message: "not yet applied by the agent",
				}
				if !online {
					row.Message = "not yet applied: cluster is offline"
				}
				if rs, ok := reported[k]; ok && (rep.Revision >= d.Revision || rs.LastDeployedHash == d.ValuesHash) {
					row.State, row.Message, row.Revision, row.LastDeployedHash, row.Time = rs.State, rs.Message, rs.Revision, rs.LastDeployedHash, rs.Time
				}
				out = append(out, row)
			}
		}
		// What the agent still reports but is no longer desired: being
		// deleted, or failed to delete.
		for k, rs := range reported {
			if !seen[k] {
				seen[k] = true
				out = append(out, Service{Cluster: c.Name, Namespace: rs.Namespace, Name: rs.Name, Template: rs.Template,
					State: rs.State, Revision: rs.Revision, Message: rs.Message, Time: rs.Time})
			}
		}
		for _, p := range problems {
			if p.Cluster != c.Name || p.Service == "" {
				continue
			}
			ns, name, _ := strings.Cut(p.Service, "/")
			out = append(out, Service{Cluster: c.Name, Namespace: ns, Name: name, Source: p.Source.String(),
				State: ServiceNotDeployed, Message: p.Code + ": " + p.Reason})
		}
	}
	slices.SortStableFunc(out, func(a, b Service) int {
		return strings.Compare(a.Cluster+"\x00"+a.Namespace+"\x00"+a.Name, b.Cluster+"\x00"+b.Namespace+"\x00"+b.Name)
	})
	return out, nil
}

// withStatus sets the warnings in o's status, the status the repository
// derives, and, for a kind that deploys
// services (ClusterDeployment, MultiClusterService), fills status.services
// from the agents' reports, and its Ready condition.
func (s *server) withStatus(ctx context.Context, o objects.Object) error {
	s.cfg.Kinds.WithWarnings(o)
	// Status the hub derives from other objects (an AccessManagement's
	// distribution).
	if d, ok := s.cfg.Objects.(interface {
		DeriveStatus(context.Context, objects.Object) error
	}); ok {
		if err := d.DeriveStatus(ctx, o); err != nil {
			return err
		}
	}
	h := o.GetHeader()
	k := s.cfg.Kinds.KindOf(o)
	if k == nil {
		return nil
	}
	_, st := k.Services(o)
	if st == nil {
		return nil
	}
	src := desired.Ref{Kind: h.Kind, Namespace: h.Metadata.Namespace, Name: h.Metadata.Name}.String()
	// A kind bound to one cluster lists that cluster's services; one that
	// selects clusters names the cluster of each.
	only, bound := k.Cluster(o)
	clusterField := !bound
	rows, err := s.services(ctx, only)
	if err != nil {
		return err
	}
	st.Services = nil
	ready, total := 0, 0
	var notReady []string
	for _, r := range rows {
		if r.Source != src {
			continue
		}
		ss := objects.ServiceState{Name: r.Name, Namespace: r.Namespace, Template: r.Template, State: r.State,
			Revision: r.Revision, LastDeployedHash: r.LastDeployedHash, Message: r.Message}
		if clusterField {
			ss.Cluster = r.Cluster
		}
		if !r.Time.IsZero() {
			t := r.Time
			ss.Time = &t
		}
		st.Services = append(st.Services, ss)
		total++
		if r.State == "Deployed" {
			ready++
		} else {
			notReady = append(notReady, r.Namespace+"/"+r.Name+" is "+r.State)
		}
	}
	cond := objects.Condition{Type: "Ready", Status: "True", Reason: "AllServicesDeployed", Message: fmt.Sprintf("%d/%d services deployed", ready, total)}
	if ready < total {
		cond.Status, cond.Reason = "False", "ServicesNotDeployed"
		cond.Message += ": " + strings.Join(notReady, "; ")
	}
	// Keep the stored conditions (a provisioned ClusterDeployment's);
	// Ready is derived here.
	conds := []objects.Condition{cond}
	for _, c := range st.Conditions {
		if c.Type != cond.Type {
			conds = append(conds, c)
		}
	}
	st.Conditions = conds
	return nil
}
