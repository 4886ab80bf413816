// Package api is the hub's console API: JSON over HTTPS with bearer tokens,
// used by the `tether` CLI. Viewers may read; admins may also write. It also
// holds the client side (Client, ClientConfig) so the two cannot drift.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/version"
)

// Cluster states as shown to operators.
const (
	StateConnected = "Connected"
	StateOffline   = "Offline"
	// StatePending: a token exists but no agent has enrolled yet.
	StatePending = "Pending"
)

// Cluster is a cluster as the console shows it: the stored record merged
// with the live session, if any.
type Cluster struct {
	Name           string            `json:"name"`
	State          string            `json:"state"`
	Labels         map[string]string `json:"labels,omitempty"`
	Created        time.Time         `json:"created"`
	Enrolled       time.Time         `json:"enrolled,omitzero"`
	LastSeen       time.Time         `json:"lastSeen,omitzero"`
	ConnectedSince time.Time         `json:"connectedSince,omitzero"`
	AgentVersion   string            `json:"agentVersion,omitempty"`
	Hostname       string            `json:"hostname,omitempty"`
	Address        string            `json:"address,omitempty"`
	CertNotAfter   time.Time         `json:"certNotAfter,omitzero"`
	Revision       uint64            `json:"revision"`
	BytesIn        uint64            `json:"bytesIn,omitempty"`
	BytesOut       uint64            `json:"bytesOut,omitempty"`
	// OutboxPending and OutboxDropped: the agent's queued reports and those
	// it dropped while offline because its outbox was full.
	OutboxPending uint64 `json:"outboxPending,omitempty"`
	OutboxDropped uint64 `json:"outboxDropped,omitempty"`
	// OutboxKinds are the same per payload kind, with dead-lettered
	// entries (from agents that send them).
	OutboxKinds []gateway.OutboxKindStats `json:"outboxKinds,omitempty"`
	// Agent is the agent's own answer, fetched over the tunnel by describe.
	Agent *AgentDiagnosis `json:"agent,omitempty"`
	// Targets are the scrape targets the agent last reported (GET of one
	// cluster only).
	Targets []telemetry.Target `json:"targets,omitempty"`
}

// AgentDiagnosis is what the agent reports about itself when asked.
type AgentDiagnosis struct {
	Version      string    `json:"version"`
	Now          time.Time `json:"now"`
	HaveRevision uint64    `json:"haveRevision"`
	LinkState    string    `json:"linkState"`
	Error        string    `json:"error,omitempty"`
}

// TokenRequest is the body of POST /v1/tokens.
type TokenRequest struct {
	Cluster string            `json:"cluster"`
	TTL     string            `json:"ttl"`
	Uses    int               `json:"uses"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// VersionInfo is the body of GET /v1/version.
type VersionInfo struct {
	Version string `json:"version"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Message string `json:"error"`
}

// Fleet is the part of the registry the API uses.
type Fleet interface {
	CreateToken(ctx context.Context, req fleet.TokenRequest) (fleet.TokenInfo, error)
	Get(ctx context.Context, name string) (fleet.Cluster, error)
	List(ctx context.Context) ([]fleet.Cluster, error)
	Delete(ctx context.Context, name string) error
	SetLabels(ctx context.Context, name string, labels map[string]string) (fleet.Cluster, error)
}

// Gateway is the part of the agent gateway the API uses.
type Gateway interface {
	Session(cluster string) (gateway.SessionInfo, bool)
	Disconnect(cluster string)
	Diagnose(ctx context.Context, cluster string) (*fleetv1.DiagnoseResponse, error)
}

// Authenticator checks bearer tokens and creates console users.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (string, Role, error)
	Create(ctx context.Context, name string, role Role) (string, error)
	Revoke(ctx context.Context, name string, force bool) (Role, error)
}

// UserRequest is the body of POST /v1/users.
type UserRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// UserToken is a created console user's token, shown once.
type UserToken struct {
	Name  string `json:"name"`
	Role  Role   `json:"role"`
	Token string `json:"token"`
}

// Config configures the API handler.
type Config struct {
	Fleet   Fleet
	Gateway Gateway
	Auth    Authenticator
	Objects Objects
	Charts  Charts
	Desired Desired
	Reports Reports
	// Rollouts serves /v1/rollouts; nil answers 501.
	Rollouts Rollouts
	// Prometheus serves the Prometheus HTTP API under /api/v1/ to every
	// console user; nil serves none.
	Prometheus http.Handler
	// Targets add a cluster's scrape targets to GET /v1/clusters/{name};
	// nil adds none.
	Targets ScrapeTargets
	// Alerts serves the alerting API (alerting.Manager.Handler): rules
	// and alerts for viewers, silences written by admins. Nil: not mounted.
	Alerts http.Handler
	Logger *slog.Logger
	// Kinds are the object kinds served; nil means those of Objects if it
	// has a Kinds method (objects.Repo does), else objects.DefaultKinds().
	Kinds *objects.Registry
}

// Handler returns the console API.
func Handler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Kinds == nil {
		cfg.Kinds = objects.DefaultKinds()
		if o, ok := cfg.Objects.(interface{ Kinds() *objects.Registry }); ok {
			cfg.Kinds = o.Kinds()
		}
	}
	s := &server{cfg: cfg}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/version", s.auth(RoleViewer, s.version))
	mux.Handle("GET /v1/clusters", s.auth(RoleViewer, s.listClusters))
	mux.Handle("GET /v1/clusters/{name}", s.auth(RoleViewer, s.getCluster))
	mux.Handle("DELETE /v1/clusters/{name}", s.auth(RoleAdmin, s.deleteCluster))
	mux.Handle("PATCH /v1/clusters/{name}/labels", s.auth(RoleAdmin, s.labelCluster))
	mux.Handle("POST /v1/tokens", s.auth(RoleAdmin, s.createToken))
	mux.Handle("POST /v1/users", s.auth(RoleAdmin, s.createUser))
	mux.Handle("DELETE /v1/users/{name}", s.auth(RoleAdmin, s.revokeUser))
	s.registerObjects(mux)
	s.registerRollouts(mux)
	if cfg.Prometheus != nil {
		mux.Handle("/api/v1/", s.promAuth(cfg.Prometheus))
	}
	s.registerAlerts(mux)
	return mux
}

// Request body bounds. A body over its bound is refused with 413.
const (
	// maxBody bounds JSON request bodies.
	maxBody = 1 << 20
	// maxChart bounds a pushed chart archive.
	maxChart = 64 << 20
	// MaxRequestBody is the largest body any endpoint reads (a chart
	// push); the HTTP server should refuse larger ones before routing.
	MaxRequestBody = maxChart
)

// readBody reads a request body of at most limit bytes.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, bodyErr(what, err)
	}
	return b, nil
}

func bodyErr(what string, err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return httpError{http.StatusRequestEntityTooLarge, fmt.Errorf("%s: body is larger than the limit of %d bytes", what, tooLarge.Limit)}
	}
	return badRequest("%s: %v", what, err)
}

type server struct {
	cfg Config
}

type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// httpError carries a status code to the client.
type httpError struct {
	code int
	err  error
}

func (e httpError) Error() string { return e.err.Error() }
func (e httpError) Unwrap() error { return e.err }

func badRequest(format string, args ...any) error {
	return httpError{http.StatusBadRequest, fmt.Errorf(format, args...)}
}

func (s *server) auth(need Role, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		tok := r.Header.Get("Authorization")
		if len(tok) <= len(prefix) || tok[:len(prefix)] != prefix {
			writeError(w, http.StatusUnauthorized, errors.New("missing bearer token"))
			return
		}
		user, role, err := s.cfg.Auth.Authenticate(r.Context(), tok[len(prefix):])
		if err != nil {
			writeError(w, http.StatusUnauthorized, err)
			return
		}
		if need == RoleAdmin && role != RoleAdmin {
			writeError(w, http.StatusForbidden, fmt.Errorf("user %q has role %s; %s %s needs admin", user, role, r.Method, r.URL.Path))
			return
		}
		r = r.WithContext(withRole(r.Context(), role))
		if err := h(w, r); err != nil {
			code := http.StatusInternalServerError
			var he httpError
			switch {
			case errors.As(err, &he):
				code = he.code
			case errors.Is(err, fleet.ErrNotFound):
				code = http.StatusNotFound
			case errors.Is(err, fleet.ErrInvalidName):
				code = http.StatusBadRequest
			}
			if code == http.StatusInternalServerError {
				s.cfg.Logger.Error("console API", "method", r.Method, "path", r.URL.Path, "user", user, "err", err)
			}
			writeError(w, code, err)
			return
		}
		if r.Method != http.MethodGet {
			s.cfg.Logger.Info("console API", "method", r.Method, "path", r.URL.Path, "user", user)
		}
	})
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, Error{Message: err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func decode(w http.ResponseWriter, r *http.Request, v any) error {
	b, err := readBody(w, r, maxBody, "read "+r.URL.Path+" body")
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("decode %s body: %v", r.URL.Path, err)
	}
	return nil
}

func (s *server) version(w http.ResponseWriter, _ *http.Request) error {
	writeJSON(w, http.StatusOK, VersionInfo{Version: version.Get()})
	return nil
}

func (s *server) view(c fleet.Cluster) Cluster {
	v := Cluster{
		Name: c.Name, Labels: c.Labels, Created: c.Created, Enrolled: c.Enrolled, LastSeen: c.LastSeen,
		AgentVersion: c.AgentVersion, Hostname: c.Hostname, Address: c.Address, CertNotAfter: c.CertNotAfter,
		State: StateOffline,
	}
	if c.Enrolled.IsZero() {
		v.State = StatePending
	}
	if si, ok := s.cfg.Gateway.Session(c.Name); ok {
		v.State = StateConnected
		v.ConnectedSince = si.Since
		v.LastSeen = si.LastHeartbeat
		v.AgentVersion = si.AgentVersion
		v.Hostname = si.Hostname
		v.Address = si.RemoteAddr
		v.Revision = si.Revision
		v.BytesIn, v.BytesOut = si.BytesIn, si.BytesOut
		v.OutboxPending, v.OutboxDropped = si.OutboxPending, si.OutboxDropped
		v.OutboxKinds = si.OutboxKinds
	}
	return v
}

func (s *server) listClusters(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.cfg.Fleet.List(r.Context())
	if err != nil {
		return err
	}
	out := make([]Cluster, 0, len(cs))
	for _, c := range cs {
		out = append(out, s.view(c))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getCluster(w http.ResponseWriter, r *http.Request) error {
	c, err := s.cfg.Fleet.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	v := s.view(c)
	if s.cfg.Targets != nil {
		v.Targets = s.cfg.Targets.Targets(c.Name)
	}
	if v.State == StateConnected && r.URL.Query().Get("diagnose") == "true" {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		d, err := s.cfg.Gateway.Diagnose(ctx, c.Name)
		if err != nil {
			v.Agent = &AgentDiagnosis{Error: err.Error()}
		} else {
			v.Agent = &AgentDiagnosis{Version: d.GetAgentVersion(), Now: d.GetNow().AsTime(), HaveRevision: d.GetHaveRevision(), LinkState: d.GetLinkState()}
		}
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (s *server) deleteCluster(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.cfg.Fleet.Delete(r.Context(), name); err != nil {
		return err
	}
	s.cfg.Gateway.Disconnect(name)
	if err := s.cfg.Reports.Delete(r.Context(), name); err != nil {
		s.cfg.Logger.Warn("forget status reports of deleted cluster", "cluster", name, "err", err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *server) labelCluster(w http.ResponseWriter, r *http.Request) error {
	var labels map[string]string
	if err := decode(w, r, &labels); err != nil {
		return err
	}
	c, err := s.cfg.Fleet.SetLabels(r.Context(), r.PathValue("name"), labels)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, s.view(c))
	return nil
}

func (s *server) createToken(w http.ResponseWriter, r *http.Request) error {
	var req TokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		return badRequest("ttl %q: %v", req.TTL, err)
	}
	info, err := s.cfg.Fleet.CreateToken(r.Context(), fleet.TokenRequest{Cluster: req.Cluster, TTL: ttl, Uses: req.Uses, Labels: req.Labels})
	if err != nil {
		return badRequest("%v", err)
	}
	writeJSON(w, http.StatusCreated, info)
	return nil
}

func (s *server) createUser(w http.ResponseWriter, r *http.Request) error {
	var req UserRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	role, err := ParseRole(req.Role)
	if err != nil {
		return badRequest("%v", err)
	}
	tok, err := s.cfg.Auth.Create(r.Context(), req.Name, role)
	if err != nil {
		if errors.Is(err, store.ErrAlreadyExists) {
			return httpError{http.StatusConflict, err}
		}
		return badRequest("%v", err)
	}
	writeJSON(w, http.StatusCreated, UserToken{Name: req.Name, Role: role, Token: tok})
	return nil
}

// RevokedUser is the answer to DELETE /v1/users/{name}.
type RevokedUser struct {
	Name string `json:"name"`
	Role Role   `json:"role"`
}

func (s *server) revokeUser(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	force := false
	if f := r.URL.Query().Get("force"); f != "" {
		var err error
		if force, err = strconv.ParseBool(f); err != nil {
			return badRequest("force=%q: want true or false", f)
		}
	}
	role, err := s.cfg.Auth.Revoke(r.Context(), name, force)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return httpError{http.StatusNotFound, fmt.Errorf("user %q not found", name)}
	case errors.Is(err, ErrLastAdmin):
		return httpError{http.StatusConflict, err}
	case errors.Is(err, store.ErrInvalid):
		return badRequest("%v", err)
	case err != nil:
		return err
	}
	writeJSON(w, http.StatusOK, RevokedUser{Name: name, Role: role})
	return nil
}
