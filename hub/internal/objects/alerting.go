package objects

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

// Alerting kinds: PrometheusRule (prometheus-operator's, rules in
// Prometheus' rule-file format) and NotificationPolicy (Tether's: an
// Alertmanager-like route tree and its receivers).
const (
	KindPrometheusRule     = "PrometheusRule"
	KindNotificationPolicy = "NotificationPolicy"
	// MonitoringAPIVersion is prometheus-operator's group/version.
	MonitoringAPIVersion = "monitoring.coreos.com/v1"
)

// ---- PrometheusRule ----

// PrometheusRule is prometheus-operator's PrometheusRule: groups of
// alerting and recording rules the hub evaluates over its TSDB.
type PrometheusRule struct {
	Header `json:",inline"`
	Spec   PrometheusRuleSpec `json:"spec"`
}

// PrometheusRuleSpec holds the rule groups, as spec.groups of a rule file.
type PrometheusRuleSpec struct {
	Groups []RuleGroup `json:"groups"`
}

// RuleGroup is one group of a Prometheus rule file.
type RuleGroup struct {
	Name        string            `json:"name"`
	Interval    string            `json:"interval,omitempty"`
	QueryOffset string            `json:"query_offset,omitempty"`
	Limit       int               `json:"limit,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Rules       []Rule            `json:"rules"`
	// PartialResponseStrategy is Thanos'; accepted and ignored.
	PartialResponseStrategy string `json:"partial_response_strategy,omitempty"`
}

// Rule is an alerting (Alert set) or recording (Record set) rule.
type Rule struct {
	Record        string            `json:"record,omitempty"`
	Alert         string            `json:"alert,omitempty"`
	Expr          RuleExpr          `json:"expr"`
	For           string            `json:"for,omitempty"`
	KeepFiringFor string            `json:"keep_firing_for,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// RuleExpr is a rule's PromQL expression. Like prometheus-operator's
// (an int-or-string), it may be written as a bare number: `expr: 0.999`.
type RuleExpr string

// UnmarshalJSON implements json.Unmarshaler: a string, or a number kept
// as written.
func (e *RuleExpr) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*e = RuleExpr(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("expr: want a string or a number: %w", err)
	}
	*e = RuleExpr(n.String())
	return nil
}

// maxRules bounds the rules of one PrometheusRule.
const maxRules = 1000

// PromQLParser is the parser rules are validated (and, at the hub,
// evaluated) with.
var PromQLParser = parser.NewParser(parser.Options{})

// RuleFile returns the groups in Prometheus' rule-file format (YAML).
func (s *PrometheusRuleSpec) RuleFile() ([]byte, error) {
	type rule struct {
		Record        string            `yaml:"record,omitempty"`
		Alert         string            `yaml:"alert,omitempty"`
		Expr          string            `yaml:"expr"`
		For           string            `yaml:"for,omitempty"`
		KeepFiringFor string            `yaml:"keep_firing_for,omitempty"`
		Labels        map[string]string `yaml:"labels,omitempty"`
		Annotations   map[string]string `yaml:"annotations,omitempty"`
	}
	type group struct {
		Name        string            `yaml:"name"`
		Interval    string            `yaml:"interval,omitempty"`
		QueryOffset string            `yaml:"query_offset,omitempty"`
		Limit       int               `yaml:"limit,omitempty"`
		Labels      map[string]string `yaml:"labels,omitempty"`
		Rules       []rule            `yaml:"rules"`
	}
	var f struct {
		Groups []group `yaml:"groups"`
	}
	for _, g := range s.Groups {
		yg := group{Name: g.Name, Interval: g.Interval, QueryOffset: g.QueryOffset, Limit: g.Limit, Labels: g.Labels, Rules: []rule{}}
		for _, r := range g.Rules {
			yg.Rules = append(yg.Rules, rule{Record: r.Record, Alert: r.Alert, Expr: string(r.Expr), For: r.For,
				KeepFiringFor: r.KeepFiringFor, Labels: r.Labels, Annotations: r.Annotations})
		}
		f.Groups = append(f.Groups, yg)
	}
	return yaml.Marshal(f)
}

// ParseRules parses and validates the groups with Prometheus' rulefmt
// (expressions with the PromQL parser, templates, durations, names).
func (s *PrometheusRuleSpec) ParseRules() (*rulefmt.RuleGroups, FieldErrors) {
	var errs FieldErrors
	p := path("spec").child("groups")
	if len(s.Groups) == 0 {
		errs.add(p, "at least one group is required")
		return nil, errs
	}
	n := 0
	for i, g := range s.Groups {
		gp := p.index(i)
		if len(g.Rules) == 0 {
			errs.add(gp.child("rules"), "group %q has no rules", g.Name)
		}
		n += len(g.Rules)
		for j, r := range g.Rules {
			for _, d := range []struct{ field, v string }{{"for", r.For}, {"keep_firing_for", r.KeepFiringFor}} {
				if d.v == "" {
					continue
				}
				if _, err := model.ParseDuration(d.v); err != nil {
					errs.add(gp.child("rules").index(j).child(d.field), "%q: %v", d.v, err)
				}
			}
		}
		for _, d := range []struct{ field, v string }{{"interval", g.Interval}, {"query_offset", g.QueryOffset}} {
			if d.v == "" {
				continue
			}
			if v, err := model.ParseDuration(d.v); err != nil || (d.field == "interval" && v == 0) {
				errs.add(gp.child(d.field), "%q: want a positive duration such as 30s or 1m", d.v)
			}
		}
	}
	if n > maxRules {
		errs.add(p, "%d rules, more than the limit of %d", n, maxRules)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	file, err := s.RuleFile()
	if err != nil {
		errs.add(p, "%v", err)
		return nil, errs
	}
	rgs, perrs := rulefmt.Parse(file, false, model.UTF8Validation, PromQLParser, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, e := range perrs {
		var re *rulefmt.Error
		if errors.As(e, &re) {
			gi := slices.IndexFunc(s.Groups, func(g RuleGroup) bool { return g.Name == re.Group })
			rp := gp0(p, gi).child("rules").index(re.Rule - 1)
			what := "record"
			if gi >= 0 && re.Rule-1 < len(s.Groups[gi].Rules) && s.Groups[gi].Rules[re.Rule-1].Alert != "" {
				what = "alert"
			}
			inner := re.Err.Error()
			if u := errors.Unwrap(&re.Err); u != nil {
				inner = u.Error()
			}
			errs.add(rp, "group %q, %s %q: %s", re.Group, what, re.RuleName, inner)
			continue
		}
		errs.add(p, "%s", stripLineCol(e.Error()))
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rgs, nil
}

func gp0(p path, i int) path {
	if i < 0 {
		return p
	}
	return p.index(i)
}

var lineColRE = regexp.MustCompile(`^\d+:\d+: `)

// stripLineCol drops the "line:col: " of rulefmt's messages: the lines are
// those of the generated rule file, not of the user's manifest.
func stripLineCol(s string) string { return lineColRE.ReplaceAllString(s, "") }

func (o *PrometheusRule) validateSpec() FieldErrors {
	_, errs := o.Spec.ParseRules()
	return errs
}

func prometheusRuleKind() KindDef[*PrometheusRule] {
	return KindDef[*PrometheusRule]{
		Kind: KindPrometheusRule, New: func() *PrometheusRule { return &PrometheusRule{} },
		APIVersion: MonitoringAPIVersion,
		Plural:     "prometheusrules", Short: []string{"promrule"},
		Spec:     func(o *PrometheusRule) any { return &o.Spec },
		Validate: (*PrometheusRule).validateSpec,
		Columns: []Column[*PrometheusRule]{
			{Header: "GROUPS", Value: func(o *PrometheusRule) string { return strconv.Itoa(len(o.Spec.Groups)) }},
			{Header: "RULES", Value: func(o *PrometheusRule) string {
				n := 0
				for _, g := range o.Spec.Groups {
					n += len(g.Rules)
				}
				return strconv.Itoa(n)
			}},
			AgeColumn[*PrometheusRule](),
		},
	}
}

// ---- NotificationPolicy ----

// NotificationPolicy routes the hub's alerts to receivers, as an
// Alertmanager configuration's route tree and receivers. Every policy
// sees every alert; its root route's matchers narrow what it takes.
type NotificationPolicy struct {
	Header `json:",inline"`
	Spec   NotificationPolicySpec `json:"spec"`
}

// NotificationPolicySpec is the route tree and the receivers it names.
type NotificationPolicySpec struct {
	Route     AlertRoute      `json:"route"`
	Receivers []AlertReceiver `json:"receivers"`
}

// AlertRoute is one node of the route tree. Children inherit the
// receiver, groupBy and timings they do not set.
type AlertRoute struct {
	Receiver string `json:"receiver,omitempty"`
	// Matchers select the alerts of this route, Alertmanager style:
	// `severity="critical"`, `team=~"db|web"`, `env!=dev`.
	Matchers []string `json:"matchers,omitempty"`
	// GroupBy are the labels alerts are grouped by; "..." groups by all.
	GroupBy        []string     `json:"groupBy,omitempty"`
	GroupWait      Duration     `json:"groupWait,omitempty"`
	GroupInterval  Duration     `json:"groupInterval,omitempty"`
	RepeatInterval Duration     `json:"repeatInterval,omitempty"`
	Continue       bool         `json:"continue,omitempty"`
	Routes         []AlertRoute `json:"routes,omitempty"`
}

// AlertReceiver is a named set of integrations; exactly the ones set are
// notified.
type AlertReceiver struct {
	Name         string                `json:"name"`
	Webhook      *WebhookReceiver      `json:"webhook,omitempty"`
	Slack        *SlackReceiver        `json:"slack,omitempty"`
	Email        *EmailReceiver        `json:"email,omitempty"`
	PagerDuty    *PagerDutyReceiver    `json:"pagerduty,omitempty"`
	Alertmanager *AlertmanagerReceiver `json:"alertmanager,omitempty"`
}

// SecretKeyRef names a key of a Secret in the policy's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// WebhookReceiver posts Alertmanager's webhook JSON (version "4").
type WebhookReceiver struct {
	// URL or URLSecretRef (a URL with a token in it) is required.
	URL          string        `json:"url,omitempty"`
	URLSecretRef *SecretKeyRef `json:"urlSecretRef,omitempty"`
	// MaxAlerts bounds the alerts in one message (0: all).
	MaxAlerts int `json:"maxAlerts,omitempty"`
}

// SlackReceiver posts to a Slack incoming webhook.
type SlackReceiver struct {
	URLSecretRef SecretKeyRef `json:"urlSecretRef"`
	Channel      string       `json:"channel,omitempty"`
}

// EmailReceiver sends mail over SMTP (STARTTLS when the server offers it,
// required with RequireTLS; PLAIN auth when a username is set).
type EmailReceiver struct {
	To []string `json:"to"`
	// From is the sender address.
	From string `json:"from"`
	// Smarthost is host:port of the SMTP server.
	Smarthost             string        `json:"smarthost"`
	AuthUsername          string        `json:"authUsername,omitempty"`
	AuthPasswordSecretRef *SecretKeyRef `json:"authPasswordSecretRef,omitempty"`
	RequireTLS            bool          `json:"requireTLS,omitempty"`
	// InsecureSkipVerify skips the server certificate check (test servers).
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
}

// PagerDutyReceiver sends PagerDuty Events API v2 events.
type PagerDutyReceiver struct {
	RoutingKeySecretRef SecretKeyRef `json:"routingKeySecretRef"`
	// URL defaults to https://events.pagerduty.com/v2/enqueue.
	URL      string `json:"url,omitempty"`
	Severity string `json:"severity,omitempty"`
}

// AlertmanagerReceiver posts alerts to an external Alertmanager's
// /api/v2/alerts.
type AlertmanagerReceiver struct {
	// URL is the Alertmanager's base URL (http://am:9093).
	URL                  string        `json:"url"`
	BearerTokenSecretRef *SecretKeyRef `json:"bearerTokenSecretRef,omitempty"`
}

// DefaultPagerDutyURL is the Events API v2 endpoint.
const DefaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// Route timing defaults (Alertmanager's).
const (
	DefaultGroupWait      Duration = "30s"
	DefaultGroupInterval  Duration = "5m"
	DefaultRepeatInterval Duration = "4h"
)

var matcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$`)

// ParseMatcher parses an Alertmanager-style matcher: name, one of
// = != =~ !~, and a value, quoted ("a b") or bare.
func ParseMatcher(s string) (*labels.Matcher, error) {
	if len(s) > 1024 {
		return nil, fmt.Errorf("matcher is %d bytes, more than the limit of 1024", len(s))
	}
	m := matcherRE.FindStringSubmatch(s)
	if m == nil {
		return nil, fmt.Errorf("matcher %q: want name=value, name!=value, name=~regex or name!~regex", s)
	}
	val := m[3]
	if strings.HasPrefix(val, `"`) {
		v, err := strconv.Unquote(val)
		if err != nil {
			return nil, fmt.Errorf("matcher %q: value %s is not a valid quoted string", s, val)
		}
		val = v
	}
	var t labels.MatchType
	switch m[2] {
	case "=":
		t = labels.MatchEqual
	case "!=":
		t = labels.MatchNotEqual
	case "=~":
		t = labels.MatchRegexp
	default:
		t = labels.MatchNotRegexp
	}
	lm, err := labels.NewMatcher(t, m[1], val)
	if err != nil {
		return nil, fmt.Errorf("matcher %q: %w", s, err)
	}
	return lm, nil
}

// maxRouteDepth bounds the route tree.
const maxRouteDepth = 16

func (o *NotificationPolicy) setDefaults() {
	r := &o.Spec.Route
	if r.GroupWait == "" {
		r.GroupWait = DefaultGroupWait
	}
	if r.GroupInterval == "" {
		r.GroupInterval = DefaultGroupInterval
	}
	if r.RepeatInterval == "" {
		r.RepeatInterval = DefaultRepeatInterval
	}
}

func (o *NotificationPolicy) validateSpec() FieldErrors {
	var errs FieldErrors
	sp := path("spec")
	names := map[string]bool{}
	for i, rc := range o.Spec.Receivers {
		rp := sp.child("receivers").index(i)
		if rc.Name == "" {
			errs.add(rp.child("name"), "required")
		} else if names[rc.Name] {
			errs.add(rp.child("name"), "receiver %q is listed twice", rc.Name)
		}
		names[rc.Name] = true
		validateReceiver(&rc, rp, &errs)
	}
	if o.Spec.Route.Receiver == "" {
		errs.add(sp.child("route").child("receiver"), "required on the root route")
	}
	validateRoute(&o.Spec.Route, sp.child("route"), names, 0, &errs)
	return errs
}

func validateRoute(r *AlertRoute, p path, receivers map[string]bool, depth int, errs *FieldErrors) {
	if depth > maxRouteDepth {
		errs.add(p, "routes nested deeper than %d", maxRouteDepth)
		return
	}
	if r.Receiver != "" && !receivers[r.Receiver] {
		errs.add(p.child("receiver"), "receiver %q is not in spec.receivers", r.Receiver)
	}
	for i, m := range r.Matchers {
		if _, err := ParseMatcher(m); err != nil {
			errs.add(p.child("matchers").index(i), "%v", err)
		}
	}
	for i, l := range r.GroupBy {
		if l != "..." && !model.UTF8Validation.IsValidLabelName(l) {
			errs.add(p.child("groupBy").index(i), "%q is not a label name", l)
		}
	}
	validateDuration(r.GroupWait, p.child("groupWait"), errs)
	validateDuration(r.GroupInterval, p.child("groupInterval"), errs)
	validateDuration(r.RepeatInterval, p.child("repeatInterval"), errs)
	for i := range r.Routes {
		validateRoute(&r.Routes[i], p.child("routes").index(i), receivers, depth+1, errs)
	}
}

func validateSecretRef(r *SecretKeyRef, p path, errs *FieldErrors) {
	if r.Name == "" {
		errs.add(p.child("name"), "required")
	}
	if r.Key == "" {
		errs.add(p.child("key"), "required")
	}
}

func validateHTTPURL(raw string, p path, errs *FieldErrors) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs.add(p, "%q: want an http or https URL", raw)
	}
}

func validateReceiver(rc *AlertReceiver, p path, errs *FieldErrors) {
	n := 0
	if w := rc.Webhook; w != nil {
		n++
		wp := p.child("webhook")
		switch {
		case (w.URL == "") == (w.URLSecretRef == nil):
			errs.add(wp, "set one of url and urlSecretRef")
		case w.URL != "":
			validateHTTPURL(w.URL, wp.child("url"), errs)
		default:
			validateSecretRef(w.URLSecretRef, wp.child("urlSecretRef"), errs)
		}
		if w.MaxAlerts < 0 {
			errs.add(wp.child("maxAlerts"), "must not be negative")
		}
	}
	if s := rc.Slack; s != nil {
		n++
		validateSecretRef(&s.URLSecretRef, p.child("slack").child("urlSecretRef"), errs)
	}
	if e := rc.Email; e != nil {
		n++
		ep := p.child("email")
		if len(e.To) == 0 {
			errs.add(ep.child("to"), "at least one address is required")
		}
		for i, a := range e.To {
			if _, err := mail.ParseAddress(a); err != nil {
				errs.add(ep.child("to").index(i), "%q: %v", a, err)
			}
		}
		if _, err := mail.ParseAddress(e.From); err != nil {
			errs.add(ep.child("from"), "%q: %v", e.From, err)
		}
		if h, port, err := splitHostPort(e.Smarthost); err != nil || h == "" || port == "" {
			errs.add(ep.child("smarthost"), "%q: want host:port", e.Smarthost)
		}
		if e.AuthPasswordSecretRef != nil {
			validateSecretRef(e.AuthPasswordSecretRef, ep.child("authPasswordSecretRef"), errs)
			if e.AuthUsername == "" {
				errs.add(ep.child("authUsername"), "required with authPasswordSecretRef")
			}
		}
	}
	if pd := rc.PagerDuty; pd != nil {
		n++
		pp := p.child("pagerduty")
		validateSecretRef(&pd.RoutingKeySecretRef, pp.child("routingKeySecretRef"), errs)
		if pd.URL != "" {
			validateHTTPURL(pd.URL, pp.child("url"), errs)
		}
		switch pd.Severity {
		case "", "critical", "error", "warning", "info":
		default:
			errs.add(pp.child("severity"), "%q: want critical, error, warning or info", pd.Severity)
		}
	}
	if am := rc.Alertmanager; am != nil {
		n++
		ap := p.child("alertmanager")
		validateHTTPURL(am.URL, ap.child("url"), errs)
		if am.BearerTokenSecretRef != nil {
			validateSecretRef(am.BearerTokenSecretRef, ap.child("bearerTokenSecretRef"), errs)
		}
	}
	if n == 0 {
		errs.add(p, "receiver %q has no integration: set webhook, slack, email, pagerduty or alertmanager", rc.Name)
	}
}

func splitHostPort(s string) (string, string, error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", errors.New("no port")
	}
	return strings.Trim(s[:i], "[]"), s[i+1:], nil
}

// SecretRefs lists the Secret keys the receiver reads, with their paths.
func (rc *AlertReceiver) SecretRefs() map[string]SecretKeyRef {
	out := map[string]SecretKeyRef{}
	if rc.Webhook != nil && rc.Webhook.URLSecretRef != nil {
		out["webhook.urlSecretRef"] = *rc.Webhook.URLSecretRef
	}
	if rc.Slack != nil {
		out["slack.urlSecretRef"] = rc.Slack.URLSecretRef
	}
	if rc.Email != nil && rc.Email.AuthPasswordSecretRef != nil {
		out["email.authPasswordSecretRef"] = *rc.Email.AuthPasswordSecretRef
	}
	if rc.PagerDuty != nil {
		out["pagerduty.routingKeySecretRef"] = rc.PagerDuty.RoutingKeySecretRef
	}
	if rc.Alertmanager != nil && rc.Alertmanager.BearerTokenSecretRef != nil {
		out["alertmanager.bearerTokenSecretRef"] = *rc.Alertmanager.BearerTokenSecretRef
	}
	return out
}

func notificationPolicyRefs(o *NotificationPolicy) []Ref {
	var refs []Ref
	for i, rc := range o.Spec.Receivers {
		refsOf := rc.SecretRefs()
		for _, f := range sortedKeys(refsOf) {
			use := fmt.Sprintf("receivers[%d].%s", i, f)
			refs = append(refs, Ref{Kind: KindSecret, Name: refsOf[f].Name, Field: "spec." + use + ".name", Use: use})
		}
	}
	return refs
}

func notificationPolicyKind() KindDef[*NotificationPolicy] {
	return KindDef[*NotificationPolicy]{
		Kind: KindNotificationPolicy, New: func() *NotificationPolicy { return &NotificationPolicy{} },
		APIVersion: APIVersion,
		Plural:     "notificationpolicies", Short: []string{"np"},
		Spec:       func(o *NotificationPolicy) any { return &o.Spec },
		Default:    (*NotificationPolicy).setDefaults,
		Validate:   (*NotificationPolicy).validateSpec,
		References: []string{KindSecret},
		Refs:       notificationPolicyRefs,
		Columns: []Column[*NotificationPolicy]{
			{Header: "RECEIVER", Value: func(o *NotificationPolicy) string { return o.Spec.Route.Receiver }},
			{Header: "RECEIVERS", Value: func(o *NotificationPolicy) string { return strconv.Itoa(len(o.Spec.Receivers)) }},
			AgeColumn[*NotificationPolicy](),
		},
		Redact: func(o *NotificationPolicy, marker string) []string {
			var hidden []string
			for i, rc := range o.Spec.Receivers {
				if rc.Webhook != nil && rc.Webhook.URL != "" {
					if u, ok := redactURLSecrets(rc.Webhook.URL, marker); ok {
						rc.Webhook.URL = u
						hidden = append(hidden, fmt.Sprintf("spec.receivers[%d].webhook.url credentials", i))
					}
				}
				if rc.Alertmanager != nil {
					if u, ok := redactURLSecrets(rc.Alertmanager.URL, marker); ok {
						rc.Alertmanager.URL = u
						hidden = append(hidden, fmt.Sprintf("spec.receivers[%d].alertmanager.url credentials", i))
					}
				}
			}
			return hidden
		},
	}
}

// redactURLSecrets hides a URL's userinfo and its query (where webhook
// tokens go).
func redactURLSecrets(raw, marker string) (string, bool) {
	s, hid := RedactURL(raw, marker)
	u, err := url.Parse(s)
	if err != nil || u.RawQuery == "" {
		return s, hid
	}
	u.RawQuery = ""
	return u.String() + "?" + marker, true
}
