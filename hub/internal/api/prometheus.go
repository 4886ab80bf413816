package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

// ScrapeTargets gives a cluster's last reported scrape targets.
type ScrapeTargets interface {
	Targets(cluster string) []telemetry.Target
}

// promAuth serves the Prometheus HTTP API under /api/v1/ to every console
// user (viewer or admin) with a bearer token, as a Grafana data source
// with an "Authorization: Bearer <token>" header sends it. Refusals are in
// the Prometheus API's error shape, so such clients show the reason.
func (s *server) promAuth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const prefix = "Bearer "
		tok := r.Header.Get("Authorization")
		if len(tok) <= len(prefix) || tok[:len(prefix)] != prefix {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
			writePromError(w, http.StatusUnauthorized, "unauthorized", errors.New("missing bearer token: send \"Authorization: Bearer <console token>\""))
			return
		}
		user, role, err := s.cfg.Auth.Authenticate(r.Context(), tok[len(prefix):])
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="tether"`)
			writePromError(w, http.StatusUnauthorized, "unauthorized", err)
			return
		}
		if role != RoleViewer && role != RoleAdmin {
			writePromError(w, http.StatusForbidden, "forbidden", fmt.Errorf("user %q has role %s, which may not read metrics", user, role))
			return
		}
		h.ServeHTTP(w, r.WithContext(withRole(r.Context(), role)))
	})
}

func writePromError(w http.ResponseWriter, code int, typ string, err error) {
	b, _ := json.Marshal(struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
		Error     string `json:"error"`
	}{"error", typ, err.Error()})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(b)
}
