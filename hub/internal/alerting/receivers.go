package alerting

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// secretFunc returns the value of a key of a Secret in the policy's
// namespace.
type secretFunc func(ref objects.SecretKeyRef) (string, error)

// compileReceiver turns a receiver of a policy into its integrations.
func compileReceiver(rc *objects.AlertReceiver, secret secretFunc, client *http.Client) (*receiver, error) {
	r := &receiver{name: rc.Name}
	if w := rc.Webhook; w != nil {
		u := w.URL
		if w.URLSecretRef != nil {
			v, err := secret(*w.URLSecretRef)
			if err != nil {
				return nil, fmt.Errorf("receiver %q webhook: %w", rc.Name, err)
			}
			u = strings.TrimSpace(v)
			if err := checkURL(u); err != nil {
				return nil, fmt.Errorf("receiver %q webhook: the URL in Secret %s: %w", rc.Name, w.URLSecretRef.Name, err)
			}
		}
		r.integrations = append(r.integrations, &webhook{url: u, maxAlerts: w.MaxAlerts, client: client})
	}
	if s := rc.Slack; s != nil {
		v, err := secret(s.URLSecretRef)
		if err != nil {
			return nil, fmt.Errorf("receiver %q slack: %w", rc.Name, err)
		}
		if err := checkURL(strings.TrimSpace(v)); err != nil {
			return nil, fmt.Errorf("receiver %q slack: the URL in Secret %s: %w", rc.Name, s.URLSecretRef.Name, err)
		}
		r.integrations = append(r.integrations, &slack{url: strings.TrimSpace(v), channel: s.Channel, client: client})
	}
	if e := rc.Email; e != nil {
		m := &email{cfg: *e}
		if e.AuthPasswordSecretRef != nil {
			v, err := secret(*e.AuthPasswordSecretRef)
			if err != nil {
				return nil, fmt.Errorf("receiver %q email: %w", rc.Name, err)
			}
			m.password = v
		}
		r.integrations = append(r.integrations, m)
	}
	if pd := rc.PagerDuty; pd != nil {
		v, err := secret(pd.RoutingKeySecretRef)
		if err != nil {
			return nil, fmt.Errorf("receiver %q pagerduty: %w", rc.Name, err)
		}
		u := pd.URL
		if u == "" {
			u = objects.DefaultPagerDutyURL
		}
		r.integrations = append(r.integrations, &pagerDuty{url: u, key: strings.TrimSpace(v), severity: pd.Severity, client: client})
	}
	if am := rc.Alertmanager; am != nil {
		a := &alertmanager{url: strings.TrimRight(am.URL, "/") + "/api/v2/alerts", client: client}
		if am.BearerTokenSecretRef != nil {
			v, err := secret(*am.BearerTokenSecretRef)
			if err != nil {
				return nil, fmt.Errorf("receiver %q alertmanager: %w", rc.Name, err)
			}
			a.token = strings.TrimSpace(v)
		}
		r.integrations = append(r.integrations, a)
	}
	return r, nil
}

// checkURL checks a URL read from a Secret (apply checked inline ones).
func checkURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("not an http or https URL")
	}
	return nil
}

// post sends a JSON body and maps the answer to an error: 5xx and 429
// are retried, other non-2xx are permanent.
func post(ctx context.Context, client *http.Client, url string, body any, hdr map[string]string) error {
	b, err := json.Marshal(body)
	if err != nil {
		return permanent{err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return permanent{fmt.Errorf("build request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tether-hub")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		return redactErr(err, url)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("POST %s: %s: %s", hostOf(url), resp.Status, strings.TrimSpace(string(msg)))
	if resp.StatusCode/100 == 5 || resp.StatusCode == http.StatusTooManyRequests {
		return err
	}
	return permanent{err}
}

// hostOf is the part of a URL errors may show: its path and query can
// hold tokens (Slack's do).
func hostOf(raw string) string {
	s := raw
	if i := strings.Index(s, "://"); i >= 0 {
		s = s[i+3:]
	}
	if i := strings.IndexAny(s, "/?"); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

func redactErr(err error, url string) error {
	return fmt.Errorf("POST %s: %s", hostOf(url), strings.ReplaceAll(err.Error(), url, hostOf(url)))
}

func labelMap(ls labels.Labels) map[string]string { return ls.Map() }

// ---- webhook ----

// WebhookMessage is Alertmanager's webhook payload, version "4".
type WebhookMessage struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []WebhookAlert    `json:"alerts"`
}

// WebhookAlert is one alert of a WebhookMessage.
type WebhookAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

func webhookMessage(n *Notification, maxAlerts int) WebhookMessage {
	m := WebhookMessage{Version: "4", GroupKey: n.GroupKey, Status: "resolved", Receiver: n.Receiver,
		GroupLabels: labelMap(n.GroupLabels), CommonLabels: labelMap(n.CommonLabels), CommonAnnotations: labelMap(n.CommonAnnotations),
		ExternalURL: n.ExternalURL, Alerts: []WebhookAlert{}}
	if n.Firing() {
		m.Status = "firing"
	}
	for i, a := range n.Alerts {
		if maxAlerts > 0 && i >= maxAlerts {
			m.TruncatedAlerts = len(n.Alerts) - maxAlerts
			break
		}
		wa := WebhookAlert{Status: a.Status, Labels: labelMap(a.Labels), Annotations: labelMap(a.Annotations), StartsAt: a.StartsAt, GeneratorURL: a.GeneratorURL, Fingerprint: a.Fingerprint}
		if a.Status == "resolved" {
			wa.EndsAt = a.EndsAt
		}
		m.Alerts = append(m.Alerts, wa)
	}
	return m
}

type webhook struct {
	url       string
	maxAlerts int
	client    *http.Client
}

func (w *webhook) Name() string { return "webhook" }
func (w *webhook) Send(ctx context.Context, n *Notification) error {
	return post(ctx, w.client, w.url, webhookMessage(n, w.maxAlerts), nil)
}

// ---- text ----

// subject is the one-line summary of a notification, Alertmanager style:
// "[FIRING:2] TetherClusterOffline (edge-1)".
func subject(n *Notification) string {
	firing := 0
	for _, a := range n.Alerts {
		if a.Status == "firing" {
			firing++
		}
	}
	st := "RESOLVED"
	if firing > 0 {
		st = fmt.Sprintf("FIRING:%d", firing)
	}
	var vals, extra []string
	n.GroupLabels.Range(func(l labels.Label) { vals = append(vals, l.Value) })
	n.CommonLabels.Range(func(l labels.Label) {
		if !n.GroupLabels.Has(l.Name) {
			extra = append(extra, l.Value)
		}
	})
	s := "[" + st + "]"
	if len(vals) > 0 {
		s += " " + strings.Join(vals, " ")
	}
	if len(extra) > 0 {
		s += " (" + strings.Join(extra, " ") + ")"
	}
	return s
}

// body is the plain-text list of a notification's alerts.
func body(n *Notification) string {
	var b strings.Builder
	for _, a := range n.Alerts {
		fmt.Fprintf(&b, "%s %s since %s\n", strings.ToUpper(a.Status), a.Labels.String(), a.StartsAt.UTC().Format(time.RFC3339))
		for _, k := range sortedKeys(labelMap(a.Annotations)) {
			fmt.Fprintf(&b, "  %s: %s\n", k, a.Annotations.Get(k))
		}
		if a.GeneratorURL != "" {
			fmt.Fprintf(&b, "  source: %s\n", a.GeneratorURL)
		}
	}
	return b.String()
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ---- slack ----

type slack struct {
	url, channel string
	client       *http.Client
}

func (s *slack) Name() string { return "slack" }
func (s *slack) Send(ctx context.Context, n *Notification) error {
	color := "good"
	if n.Firing() {
		color = "danger"
	}
	msg := map[string]any{
		"text":        subject(n),
		"attachments": []map[string]any{{"color": color, "title": subject(n), "text": body(n), "fallback": subject(n)}},
	}
	if s.channel != "" {
		msg["channel"] = s.channel
	}
	return post(ctx, s.client, s.url, msg, nil)
}

// ---- PagerDuty ----

type pagerDuty struct {
	url, key, severity string
	client             *http.Client
}

func (p *pagerDuty) Name() string { return "pagerduty" }
func (p *pagerDuty) Send(ctx context.Context, n *Notification) error {
	sum := sha256.Sum256([]byte(n.GroupKey))
	ev := map[string]any{
		"routing_key":  p.key,
		"dedup_key":    hex.EncodeToString(sum[:]),
		"event_action": "resolve",
		"client":       "Tether",
		"client_url":   n.ExternalURL,
	}
	if n.Firing() {
		sev := p.severity
		if sev == "" {
			sev = n.CommonLabels.Get("severity")
		}
		switch sev {
		case "critical", "error", "warning", "info":
		default:
			sev = "error"
		}
		ev["event_action"] = "trigger"
		summary := subject(n)
		if len(summary) > 1024 {
			summary = summary[:1024]
		}
		ev["payload"] = map[string]any{
			"summary":  summary,
			"source":   "tether-hub",
			"severity": sev,
			"custom_details": map[string]any{
				"firing":      body(n),
				"groupLabels": labelMap(n.GroupLabels),
			},
		}
	}
	return post(ctx, p.client, p.url, ev, nil)
}

// ---- external Alertmanager ----

type alertmanager struct {
	url, token string
	client     *http.Client
}

func (a *alertmanager) Name() string { return "alertmanager" }
func (a *alertmanager) Send(ctx context.Context, n *Notification) error {
	type amAlert struct {
		Labels       map[string]string `json:"labels"`
		Annotations  map[string]string `json:"annotations"`
		StartsAt     time.Time         `json:"startsAt"`
		EndsAt       time.Time         `json:"endsAt,omitzero"`
		GeneratorURL string            `json:"generatorURL,omitempty"`
	}
	out := make([]amAlert, 0, len(n.Alerts))
	for _, al := range n.Alerts {
		out = append(out, amAlert{Labels: labelMap(al.Labels), Annotations: labelMap(al.Annotations), StartsAt: al.StartsAt, EndsAt: al.EndsAt, GeneratorURL: al.GeneratorURL})
	}
	var hdr map[string]string
	if a.token != "" {
		hdr = map[string]string{"Authorization": "Bearer " + a.token}
	}
	return post(ctx, a.client, a.url, out, hdr)
}

// ---- email ----

type email struct {
	cfg      objects.EmailReceiver
	password string
}

func (e *email) Name() string { return "email" }

func (e *email) Send(ctx context.Context, n *Notification) error {
	host, _, err := net.SplitHostPort(e.cfg.Smarthost)
	if err != nil {
		return permanent{fmt.Errorf("smarthost %q: %w", e.cfg.Smarthost, err)}
	}
	var dl net.Dialer
	conn, err := dl.DialContext(ctx, "tcp", e.cfg.Smarthost)
	if err != nil {
		return fmt.Errorf("smtp %s: %w", e.cfg.Smarthost, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("smtp %s: %w", e.cfg.Smarthost, err)
	}
	defer c.Close()
	if err := c.Hello("tether-hub"); err != nil {
		return fmt.Errorf("smtp %s: EHLO: %w", e.cfg.Smarthost, err)
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host, InsecureSkipVerify: e.cfg.InsecureSkipVerify}); err != nil { //nolint:gosec // opt-in for test servers
			return fmt.Errorf("smtp %s: STARTTLS: %w", e.cfg.Smarthost, err)
		}
	} else if e.cfg.RequireTLS {
		return permanent{fmt.Errorf("smtp %s: the server does not offer STARTTLS and requireTLS is set", e.cfg.Smarthost)}
	}
	if e.cfg.AuthUsername != "" {
		if err := c.Auth(smtp.PlainAuth("", e.cfg.AuthUsername, e.password, host)); err != nil {
			return permanent{fmt.Errorf("smtp %s: AUTH PLAIN as %s: %w", e.cfg.Smarthost, e.cfg.AuthUsername, err)}
		}
	}
	if err := c.Mail(e.cfg.From); err != nil {
		return fmt.Errorf("smtp %s: MAIL FROM: %w", e.cfg.Smarthost, err)
	}
	for _, to := range e.cfg.To {
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("smtp %s: RCPT TO %s: %w", e.cfg.Smarthost, to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp %s: DATA: %w", e.cfg.Smarthost, err)
	}
	msg := "From: " + e.cfg.From + "\r\n" +
		"To: " + strings.Join(e.cfg.To, ", ") + "\r\n" +
		"Subject: " + headerSafe(subject(n)) + "\r\n" +
		"Date: " + time.Now().UTC().Format(time.RFC1123Z) + "\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" +
		strings.ReplaceAll(body(n), "\n", "\r\n")
	if _, err := io.WriteString(w, msg); err != nil {
		return fmt.Errorf("smtp %s: write message: %w", e.cfg.Smarthost, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp %s: end message: %w", e.cfg.Smarthost, err)
	}
	return c.Quit()
}

// headerSafe keeps label values from injecting mail headers.
func headerSafe(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
