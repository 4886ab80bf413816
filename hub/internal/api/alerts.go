package api

import (
	"context"
	"net/http"
	"net/url"

	"github.com/tetherfleet/tether/hub/internal/alerting"
)

// registerAlerts mounts the alerting handler's routes behind the bearer
// tokens: Prometheus' GET /api/v1/rules and /api/v1/alerts and Tether's
// GET /v1/alerts and /v1/silences for viewers; creating and expiring
// silences for admins.
func (s *server) registerAlerts(mux *http.ServeMux) {
	h := s.cfg.Alerts
	if h == nil {
		return
	}
	serve := func(w http.ResponseWriter, r *http.Request) error { h.ServeHTTP(w, r); return nil }
	for _, p := range []string{"GET /api/v1/rules", "GET /api/v1/alerts", "GET /v1/alerts", "GET /v1/silences"} {
		mux.Handle(p, s.auth(RoleViewer, serve))
	}
	mux.Handle("POST /v1/silences", s.auth(RoleAdmin, serve))
	mux.Handle("DELETE /v1/silences/{id}", s.auth(RoleAdmin, serve))
}

// Alerts lists the hub's alerts with their deliveries (GET /v1/alerts).
func (c *Client) Alerts(ctx context.Context) ([]alerting.AlertView, error) {
	var out []alerting.AlertView
	return out, c.do(ctx, http.MethodGet, "/v1/alerts", nil, &out)
}

// Silences lists the silences (GET /v1/silences).
func (c *Client) Silences(ctx context.Context) ([]alerting.SilenceView, error) {
	var out []alerting.SilenceView
	return out, c.do(ctx, http.MethodGet, "/v1/silences", nil, &out)
}

// CreateSilence creates a silence (POST /v1/silences).
func (c *Client) CreateSilence(ctx context.Context, req alerting.SilenceRequest) (alerting.SilenceView, error) {
	var out alerting.SilenceView
	return out, c.do(ctx, http.MethodPost, "/v1/silences", req, &out)
}

// ExpireSilence ends a silence now (DELETE /v1/silences/ID).
func (c *Client) ExpireSilence(ctx context.Context, id string) (alerting.SilenceView, error) {
	var out alerting.SilenceView
	return out, c.do(ctx, http.MethodDelete, "/v1/silences/"+url.PathEscape(id), nil, &out)
}
