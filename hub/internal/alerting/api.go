package alerting

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/rules"
)

// Console API paths the Handler serves. The console mounts each behind
// its bearer-token check: the GETs for viewers, the rest for admins.
const (
	PathRules         = "GET /api/v1/rules"
	PathAlerts        = "GET /api/v1/alerts"
	PathTetherAlerts  = "GET /v1/alerts"
	PathSilences      = "GET /v1/silences"
	PathCreateSilence = "POST /v1/silences"
	PathExpireSilence = "DELETE /v1/silences/{id}"
)

// Handler serves the alerting API (see the Path constants). It does no
// authentication: the console wraps it.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PathRules, m.serveRules)
	mux.HandleFunc(PathAlerts, m.servePromAlerts)
	mux.HandleFunc(PathTetherAlerts, m.serveAlerts)
	mux.HandleFunc(PathSilences, m.serveSilences)
	mux.HandleFunc(PathCreateSilence, m.serveCreateSilence)
	mux.HandleFunc(PathExpireSilence, m.serveExpireSilence)
	return mux
}

// ---- Prometheus' shape ----

type promResponse struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
}

// PromRuleGroup is a group of GET /api/v1/rules.
type PromRuleGroup struct {
	Name           string     `json:"name"`
	File           string     `json:"file"`
	Rules          []PromRule `json:"rules"`
	Interval       float64    `json:"interval"`
	Limit          int        `json:"limit"`
	EvaluationTime float64    `json:"evaluationTime"`
	LastEvaluation time.Time  `json:"lastEvaluation"`
}

// PromRule is an alerting or recording rule of GET /api/v1/rules (the
// fields of both, as Prometheus answers).
type PromRule struct {
	State          string            `json:"state,omitempty"`
	Name           string            `json:"name"`
	Query          string            `json:"query"`
	Duration       float64           `json:"duration,omitempty"`
	KeepFiringFor  float64           `json:"keepFiringFor,omitempty"`
	Labels         map[string]string `json:"labels"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	Alerts         []PromAlert       `json:"alerts,omitzero"`
	Health         string            `json:"health"`
	LastError      string            `json:"lastError,omitempty"`
	EvaluationTime float64           `json:"evaluationTime"`
	LastEvaluation time.Time         `json:"lastEvaluation"`
	Type           string            `json:"type"`
}

// PromAlert is an alert in Prometheus' API shape.
type PromAlert struct {
	Labels          map[string]string `json:"labels"`
	Annotations     map[string]string `json:"annotations"`
	State           string            `json:"state"`
	ActiveAt        *time.Time        `json:"activeAt,omitempty"`
	KeepFiringSince *time.Time        `json:"keepFiringSince,omitempty"`
	Value           string            `json:"value"`
}

func promAlert(a *rules.Alert) PromAlert {
	pa := PromAlert{Labels: a.Labels.Map(), Annotations: a.Annotations.Map(), State: a.State.String(),
		ActiveAt: &a.ActiveAt, Value: strconv.FormatFloat(a.Value, 'e', -1, 64)}
	if !a.KeepFiringSince.IsZero() {
		pa.KeepFiringSince = &a.KeepFiringSince
	}
	return pa
}

// RuleGroups returns the groups in Prometheus' API shape; typ "alert" or
// "record" keeps only those rules.
func (m *Manager) RuleGroups(typ string) []PromRuleGroup {
	groups := m.rules.RuleGroups()
	out := make([]PromRuleGroup, 0, len(groups))
	for _, g := range groups {
		pg := PromRuleGroup{Name: g.Name(), File: g.File(), Rules: []PromRule{}, Interval: g.Interval().Seconds(), Limit: g.Limit(),
			EvaluationTime: g.GetEvaluationTime().Seconds(), LastEvaluation: g.GetLastEvaluation()}
		for _, r := range g.Rules() {
			pr := PromRule{Name: r.Name(), Query: r.Query().String(), Labels: r.Labels().Map(), Health: string(r.Health()),
				EvaluationTime: r.GetEvaluationDuration().Seconds(), LastEvaluation: r.GetEvaluationTimestamp()}
			if err := r.LastError(); err != nil {
				pr.LastError = err.Error()
			}
			switch r := r.(type) {
			case *rules.AlertingRule:
				if typ == "record" {
					continue
				}
				pr.Type, pr.State = "alerting", r.State().String()
				pr.Duration, pr.KeepFiringFor = r.HoldDuration().Seconds(), r.KeepFiringFor().Seconds()
				pr.Annotations = r.Annotations().Map()
				for _, a := range r.ActiveAlerts() {
					pr.Alerts = append(pr.Alerts, promAlert(a))
				}
				if pr.Alerts == nil {
					pr.Alerts = []PromAlert{}
				}
			case *rules.RecordingRule:
				if typ == "alert" {
					continue
				}
				pr.Type = "recording"
			}
			pg.Rules = append(pg.Rules, pr)
		}
		if typ != "" && len(pg.Rules) == 0 {
			continue
		}
		out = append(out, pg)
	}
	return out
}

func (m *Manager) serveRules(w http.ResponseWriter, r *http.Request) {
	typ := r.URL.Query().Get("type")
	if typ != "" && typ != "alert" && typ != "record" {
		writeJSON(w, http.StatusBadRequest, promResponse{Status: "error", ErrorType: "bad_data", Error: fmt.Sprintf("unsupported type %q: want alert or record", typ)})
		return
	}
	groups := m.RuleGroups(typ)
	if names := r.URL.Query()["rule_group[]"]; len(names) > 0 {
		groups = slices.DeleteFunc(groups, func(g PromRuleGroup) bool { return !slices.Contains(names, g.Name) })
	}
	if names := r.URL.Query()["rule_name[]"]; len(names) > 0 {
		for i := range groups {
			groups[i].Rules = slices.DeleteFunc(groups[i].Rules, func(pr PromRule) bool { return !slices.Contains(names, pr.Name) })
		}
		groups = slices.DeleteFunc(groups, func(g PromRuleGroup) bool { return len(g.Rules) == 0 })
	}
	writeJSON(w, http.StatusOK, promResponse{Status: "success", Data: map[string]any{"groups": groups}})
}

// activeAlerts are the rules' pending and firing alerts.
func (m *Manager) activeAlerts() []*rules.Alert {
	var out []*rules.Alert
	for _, r := range m.rules.AlertingRules() {
		out = append(out, r.ActiveAlerts()...)
	}
	return out
}

func (m *Manager) servePromAlerts(w http.ResponseWriter, _ *http.Request) {
	alerts := []PromAlert{}
	for _, a := range m.activeAlerts() {
		alerts = append(alerts, promAlert(a))
	}
	writeJSON(w, http.StatusOK, promResponse{Status: "success", Data: map[string]any{"alerts": alerts}})
}

// ---- Tether's view ----

// AlertView is one alert of GET /v1/alerts: the rule state joined with
// what the dispatcher did with it.
type AlertView struct {
	Name        string            `json:"name"`
	State       string            `json:"state"` // pending, firing, suppressed, resolved
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Since       time.Time         `json:"since"`
	Value       string            `json:"value,omitempty"`
	SilencedBy  []string          `json:"silencedBy,omitempty"`
	Receivers   []string          `json:"receivers,omitempty"`
	Deliveries  []Delivery        `json:"deliveries,omitempty"`
}

// Alerts returns the rules' active alerts and the dispatcher's resolved
// ones still held, sorted by labels.
func (m *Manager) Alerts() []AlertView {
	held := map[string]AlertStatus{}
	for _, s := range m.disp.Alerts() {
		held[s.Fingerprint] = s
	}
	now := m.cfg.Now()
	var out []AlertView
	seen := map[string]bool{}
	for _, a := range m.activeAlerts() {
		fp := fmt.Sprintf("%016x", a.Labels.Hash())
		seen[fp] = true
		v := AlertView{Name: a.Labels.Get(labels.AlertName), State: a.State.String(), Labels: a.Labels.Map(), Annotations: a.Annotations.Map(),
			Since: a.ActiveAt, Value: strconv.FormatFloat(a.Value, 'g', -1, 64)}
		if s, ok := held[fp]; ok {
			v.SilencedBy, v.Receivers, v.Deliveries = s.SilencedBy, s.Receivers, s.Deliveries
			if len(s.SilencedBy) > 0 && v.State == "firing" {
				v.State = "suppressed"
			}
		}
		out = append(out, v)
	}
	for fp, s := range held {
		if seen[fp] {
			continue
		}
		st := "firing"
		if s.Resolved(now) {
			st = "resolved"
		}
		if len(s.SilencedBy) > 0 && st == "firing" {
			st = "suppressed"
		}
		out = append(out, AlertView{Name: s.Labels.Get(labels.AlertName), State: st, Labels: s.Labels.Map(), Annotations: s.Annotations.Map(),
			Since: s.StartsAt, SilencedBy: s.SilencedBy, Receivers: s.Receivers, Deliveries: s.Deliveries})
	}
	slices.SortFunc(out, func(a, b AlertView) int {
		return labels.Compare(labels.FromMap(a.Labels), labels.FromMap(b.Labels))
	})
	return out
}

func (m *Manager) serveAlerts(w http.ResponseWriter, _ *http.Request) {
	out := m.Alerts()
	if out == nil {
		out = []AlertView{}
	}
	writeJSON(w, http.StatusOK, out)
}

// SilenceView is a silence with its state, as GET /v1/silences lists it.
type SilenceView struct {
	Silence
	State string `json:"state"`
}

func (m *Manager) serveSilences(w http.ResponseWriter, r *http.Request) {
	ss, err := m.silences.List(r.Context())
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	now := m.cfg.Now()
	out := make([]SilenceView, 0, len(ss))
	for _, s := range ss {
		out = append(out, SilenceView{Silence: s, State: s.State(now)})
	}
	writeJSON(w, http.StatusOK, out)
}

func (m *Manager) serveCreateSilence(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil {
		writeErr(w, http.StatusRequestEntityTooLarge, fmt.Errorf("silence: %w", err))
		return
	}
	s, err := DecodeSilenceRequest(b, m.cfg.Now())
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	s, err = m.silences.Create(r.Context(), s)
	if errors.Is(err, ErrInvalidSilence) {
		writeErr(w, http.StatusConflict, err)
		return
	}
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusCreated, SilenceView{Silence: *s, State: s.State(m.cfg.Now())})
}

func (m *Manager) serveExpireSilence(w http.ResponseWriter, r *http.Request) {
	s, err := m.silences.Expire(r.Context(), r.PathValue("id"))
	if errors.Is(err, ErrSilenceNotFound) {
		writeErr(w, http.StatusNotFound, err)
		return
	}
	if err != nil {
		writeErr(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, SilenceView{Silence: *s, State: s.State(m.cfg.Now())})
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
