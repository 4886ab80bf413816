package alerting

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// fleetSource is the fleet as the collector reads it: registry records,
// the agents' reports and the gateway's sessions, set by the test.
type fleetSource struct {
	mu       sync.Mutex
	clusters []fleet.Cluster
	reports  []reports.Report
	sessions []gateway.SessionInfo
}

func (f *fleetSource) List(context.Context) ([]fleet.Cluster, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fleet.Cluster(nil), f.clusters...), nil
}

func (f *fleetSource) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fleetSource) Sessions() []gateway.SessionInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]gateway.SessionInfo(nil), f.sessions...)
}

type reportSource struct{ f *fleetSource }

func (r reportSource) List(context.Context) ([]reports.Report, error) {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return append([]reports.Report(nil), r.f.reports...), nil
}

type env struct {
	t     *testing.T
	clock *clock
	db    *telemetry.DB
	repo  *objects.Repo
	m     *Manager
	fleet *fleetSource
}

var t0 = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// newEnv runs a Manager over a real TSDB and a real bbolt store, with a
// test clock. Rule groups and the dispatcher never tick on their own
// (hour-long intervals): the test evaluates and flushes at the times it
// sets.
func newEnv(t *testing.T, builtin BuiltinRules) *env {
	t.Helper()
	dir := t.TempDir()
	db, err := telemetry.Open(telemetry.Options{Dir: filepath.Join(dir, "tsdb")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := &clock{t: t0}
	repo, err := objects.NewRepo(objects.RepoConfig{Store: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	fs := &fleetSource{}
	m, err := New(Config{
		TSDB: db, Objects: repo, Store: st,
		Fleet: fs, Reports: reportSource{fs}, Sessions: fs,
		Builtin:         builtin,
		EvalInterval:    time.Hour,
		CollectInterval: time.Hour,
		ResendDelay:     time.Minute,
		ExternalURL:     "http://hub.example",
		Dispatcher:      DispatcherConfig{Tick: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond},
		Now:             clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-m.ready:
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not reconcile")
	}
	return &env{t: t, clock: clk, db: db, repo: repo, m: m, fleet: fs}
}

func (e *env) apply(manifest string) {
	e.t.Helper()
	objs, err := objects.Decode([]byte(manifest), "test")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.Apply(context.Background(), objs); err != nil {
		e.t.Fatal(err)
	}
}

// waitFor polls cond with a deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) hasGroup(name string) bool {
	for _, g := range e.m.rules.RuleGroups() {
		if g.Name() == name {
			return true
		}
	}
	return false
}

func (e *env) hasPolicy(key string) bool {
	e.m.disp.mu.Lock()
	defer e.m.disp.mu.Unlock()
	for _, p := range e.m.disp.policies {
		if p.key == key {
			return true
		}
	}
	return false
}

func (e *env) appendSamples(name string, ls map[string]string, v float64, ts ...time.Time) {
	e.t.Helper()
	app := e.db.AppenderV2(context.Background())
	m := map[string]string{"__name__": name}
	for k, v := range ls {
		m[k] = v
	}
	for _, t := range ts {
		if _, err := app.Append(0, labels.FromMap(m), 0, t.UnixMilli(), v, nil, nil, storage.AOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := app.Commit(); err != nil {
		e.t.Fatal(err)
	}
}

// at sets the clock and evaluates every rule group then.
func (e *env) at(ts time.Time) {
	e.clock.Set(ts)
	e.m.evaluate(context.Background(), ts)
}

// TestAlertReachesWebhookAndMailpit: a PrometheusRule applied as an object
// is evaluated over samples in a real TSDB; its alert goes pending, fires
// after `for`, and the NotificationPolicy delivers it after groupWait to a
// webhook (Alertmanager's JSON, its URL from a Secret) and to a real SMTP
// server (Mailpit), where the message is read back through its API.
func TestAlertReachesWebhookAndMailpit(t *testing.T) {
	mp := e2etest.StartMailpit(t)
	hooks := make(chan WebhookMessage, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m WebhookMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if r.URL.Query().Get("token") != "s3cret" {
			t.Errorf("webhook URL %s: token from the Secret missing", r.URL)
		}
		hooks <- m
	}))
	defer srv.Close()
	e := newEnv(t, BuiltinRules{Disabled: true})
	e.apply(`apiVersion: v1
kind: Secret
metadata: {name: hooks, namespace: ops}
stringData: {url: "` + srv.URL + `/hook?token=s3cret"}
---
apiVersion: tether.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: ops, namespace: ops}
spec:
  route:
    receiver: team
    groupBy: [alertname]
    groupWait: 30s
  receivers:
  - name: team
    webhook: {urlSecretRef: {name: hooks, key: url}}
    email: {to: [oncall@example.com], from: tether@example.com, smarthost: "` + mp.SMTPAddr + `"}
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: app, namespace: ops}
spec:
  groups:
  - name: app
    rules:
    - alert: HighValue
      expr: test_value > 5
      for: 1m
      labels: {severity: critical}
      annotations: {summary: "value is {{ $value }} on {{ $labels.job }}"}
    - record: job:test_value:max
      expr: max by (job) (test_value)
`)
	waitFor(t, "the rule group and the policy", func() bool { return e.hasGroup("app") && e.hasPolicy("ops/ops") })

	var ts []time.Time
	for i := range 5 {
		ts = append(ts, t0.Add(time.Duration(i)*30*time.Second))
	}
	e.appendSamples("test_value", map[string]string{"job": "api"}, 10, ts...)

	e.at(t0)
	if got := e.m.Alerts(); len(got) != 1 || got[0].State != "pending" {
		t.Fatalf("after the first evaluation: %+v, want one pending alert", got)
	}
	e.at(t0.Add(time.Minute))
	if got := e.m.Alerts(); len(got) != 1 || got[0].State != "firing" {
		t.Fatalf("after for: %+v, want one firing alert", got)
	}
	e.m.disp.flush(t0.Add(time.Minute + 10*time.Second))
	select {
	case m := <-hooks:
		t.Fatalf("notified before groupWait: %+v", m)
	default:
	}
	e.clock.Set(t0.Add(time.Minute + 30*time.Second))
	e.m.disp.flush(t0.Add(time.Minute + 30*time.Second))

	select {
	case m := <-hooks:
		if m.Version != "4" || m.Status != "firing" || m.Receiver != "team" || len(m.Alerts) != 1 {
			t.Fatalf("webhook message: %+v", m)
		}
		a := m.Alerts[0]
		if a.Labels["alertname"] != "HighValue" || a.Labels["job"] != "api" || a.Labels["severity"] != "critical" || a.Annotations["summary"] != "value is 10 on api" {
			t.Fatalf("webhook alert: %+v", a)
		}
		if m.GroupLabels["alertname"] != "HighValue" || !strings.HasPrefix(a.GeneratorURL, "http://hub.example/graph?") {
			t.Fatalf("webhook group labels %v, generatorURL %q", m.GroupLabels, a.GeneratorURL)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no webhook message")
	}
	var msg e2etest.MailpitMessage
	e2etest.Eventually(t, "the alert mail at mailpit", 30*time.Second, func() (bool, string) {
		ms := mp.Messages(t)
		if len(ms) == 0 {
			return false, "no messages"
		}
		msg = mp.Message(t, ms[0].ID)
		return true, ""
	})
	if msg.Subject != "[FIRING:1] HighValue (api critical)" || len(msg.To) != 1 || msg.To[0].Address != "oncall@example.com" || !strings.Contains(msg.Text, "summary: value is 10 on api") {
		t.Fatalf("mail: subject %q to %v text %q", msg.Subject, msg.To, msg.Text)
	}
	// The deliveries are recorded on the alert.
	waitFor(t, "two deliveries", func() bool {
		a := e.m.Alerts()
		return len(a) == 1 && len(a[0].Deliveries) == 2
	})
	for _, d := range e.m.Alerts()[0].Deliveries {
		if d.Error != "" || d.Attempts != 1 || d.Receiver != "ops/ops/team" {
			t.Fatalf("delivery %+v", d)
		}
	}
	// The recording rule wrote its series into the TSDB.
	q, err := e.db.Querier(t0.UnixMilli(), t0.Add(time.Hour).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	set := q.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "job:test_value:max"))
	if !set.Next() {
		t.Fatalf("recording rule series missing (err %v)", set.Err())
	}

	// The samples stop: the alert resolves and the resolution is sent.
	e.at(t0.Add(10 * time.Minute))
	e.m.disp.flush(t0.Add(10 * time.Minute))
	select {
	case m := <-hooks:
		if m.Status != "resolved" || len(m.Alerts) != 1 || m.Alerts[0].Status != "resolved" || m.Alerts[0].EndsAt.IsZero() {
			t.Fatalf("resolved message: %+v", m)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no resolved message")
	}
}

// TestBuiltinOfflineRuleFires: the fleet collector, driven by the test
// clock, writes tether_cluster_* series; a cluster whose agent
// disconnected fires TetherClusterOffline once it has been gone longer
// than the threshold, and a connected one does not.
func TestBuiltinOfflineRuleFires(t *testing.T) {
	b := DefaultBuiltinRules()
	b.ClusterOffline = 10 * time.Minute
	e := newEnv(t, b)
	waitFor(t, "the built-in group", func() bool { return e.hasGroup("tether-fleet") })
	certEnd := t0.Add(3 * 24 * time.Hour)
	e.fleet.mu.Lock()
	e.fleet.clusters = []fleet.Cluster{
		{Name: "edge-1", Enrolled: t0.Add(-time.Hour), LastSeen: t0, CertNotAfter: certEnd},
		{Name: "edge-2", Enrolled: t0.Add(-time.Hour), LastSeen: t0, CertNotAfter: t0.Add(300 * 24 * time.Hour)},
		{Name: "edge-3", Enrolled: t0.Add(-time.Hour)}, // enrolled, never seen since the hub started
		{Name: "pending", LastSeen: time.Time{}},       // never enrolled: no series
	}
	e.fleet.reports = []reports.Report{{Cluster: "edge-2", Services: []reports.Service{{Name: "web", Namespace: "apps", State: "Deployed"}}}}
	e.fleet.sessions = []gateway.SessionInfo{{Cluster: "edge-1", LastHeartbeat: t0}, {Cluster: "edge-2", LastHeartbeat: t0}}
	e.fleet.mu.Unlock()

	collect := func(at time.Time) {
		t.Helper()
		if err := e.m.coll.collect(context.Background(), at); err != nil {
			t.Fatal(err)
		}
	}
	collect(t0)
	// edge-1 disconnects; edge-2 stays and heartbeats.
	e.fleet.set(func() { e.fleet.sessions = e.fleet.sessions[1:] })
	firing := func() map[string]string {
		out := map[string]string{}
		for _, a := range e.m.Alerts() {
			if a.State == "firing" {
				out[a.Name+"/"+a.Labels["cluster"]] = a.Labels["severity"]
			}
		}
		return out
	}
	for at := t0.Add(30 * time.Second); !at.After(t0.Add(12 * time.Minute)); at = at.Add(30 * time.Second) {
		e.fleet.set(func() { e.fleet.sessions[0].LastHeartbeat = at })
		collect(at)
		if at.Equal(t0.Add(5 * time.Minute)) {
			e.at(at)
			if _, ok := firing()["TetherClusterOffline/edge-1"]; ok {
				t.Fatal("TetherClusterOffline fired after 5m, below the 10m threshold")
			}
		}
	}
	e.at(t0.Add(12 * time.Minute))
	got := firing()
	if _, ok := got["TetherClusterOffline/edge-1"]; !ok {
		t.Fatalf("firing %v: want TetherClusterOffline for edge-1", got)
	}
	if _, ok := got["TetherClusterOffline/edge-3"]; !ok {
		t.Fatalf("firing %v: want TetherClusterOffline for edge-3 (enrolled an hour ago, never seen)", got)
	}
	if _, ok := got["TetherClusterOffline/pending"]; ok {
		t.Fatalf("firing %v: a cluster that never enrolled is not offline", got)
	}
	if _, ok := got["TetherClusterOffline/edge-2"]; ok {
		t.Fatalf("firing %v: edge-2 is connected", got)
	}
	if _, ok := got["TetherAgentCertificateExpiring/edge-1"]; !ok {
		t.Fatalf("firing %v: edge-1's certificate expires in 3 days", got)
	}
	if _, ok := got["TetherAgentCertificateExpiring/edge-2"]; ok {
		t.Fatalf("firing %v: edge-2's certificate expires in 300 days", got)
	}

	// A service turns Failed: its Deployed series goes stale, the Failed
	// one fires after ServiceFailedFor.
	e.fleet.set(func() { e.fleet.reports[0].Services[0].State = "Failed" })
	start := t0.Add(12*time.Minute + 30*time.Second)
	for at := start; !at.After(start.Add(b.ServiceFailedFor)); at = at.Add(30 * time.Second) {
		collect(at)
	}
	e.at(start)
	e.at(start.Add(b.ServiceFailedFor))
	if _, ok := firing()["TetherServiceFailed/edge-2"]; !ok {
		t.Fatalf("firing %v: want TetherServiceFailed for edge-2", firing())
	}
	if n := countSeries(t, e.db, SeriesService, start.Add(b.ServiceFailedFor)); n != 1 {
		t.Fatalf("%d live tether_service_status series, want 1 (the Deployed one is stale)", n)
	}
}

// countSeries counts the series of name with a non-stale sample at ts.
func countSeries(t *testing.T, db *telemetry.DB, name string, ts time.Time) int {
	t.Helper()
	e := newEngine(nil)
	q, err := e.NewInstantQuery(context.Background(), db, nil, name, ts)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	res := q.Exec(context.Background())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		t.Fatal(err)
	}
	return len(v)
}

// TestRulesAPIShape: GET /api/v1/rules and /api/v1/alerts answer in
// Prometheus' JSON shape; a bad type is a Prometheus error.
func TestRulesAPIShape(t *testing.T) {
	e := newEnv(t, DefaultBuiltinRules())
	waitFor(t, "the built-in group", func() bool { return e.hasGroup("tether-fleet") })
	h := e.m.Handler()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/rules?type=alert", nil))
	var resp struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Name  string `json:"name"`
				File  string `json:"file"`
				Rules []struct {
					Name, Type, State, Health, Query string
					Alerts                           []json.RawMessage
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.Status != "success" || len(resp.Data.Groups) != 1 {
		t.Fatalf("rules: %v %s", err, rec.Body)
	}
	g := resp.Data.Groups[0]
	if g.Name != "tether-fleet" || len(g.Rules) != 4 || g.Rules[0].Type != "alerting" || g.Rules[0].Alerts == nil {
		t.Fatalf("group %+v", g)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/rules?type=bogus", nil))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), `"errorType":"bad_data"`) {
		t.Fatalf("bad type: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/api/v1/alerts", nil))
	if rec.Body.String() != `{"status":"success","data":{"alerts":[]}}`+"\n" {
		t.Fatalf("alerts: %s", rec.Body)
	}
}

// TestSilenceAPI: silences are created, listed and expired through the
// handler and stored in the hub store; the dispatcher gets them on the
// next reconcile.
func TestSilenceAPI(t *testing.T) {
	e := newEnv(t, BuiltinRules{Disabled: true})
	h := e.m.Handler()
	do := func(method, path, body string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
		return rec
	}
	if rec := do("POST", "/v1/silences", `{"matchers":["cluster=~\".*\""],"duration":"1h"}`); rec.Code != 400 || !strings.Contains(rec.Body.String(), "match every alert") {
		t.Fatalf("silence of everything: %d %s", rec.Code, rec.Body)
	}
	rec := do("POST", "/v1/silences", `{"matchers":["cluster=\"edge-1\""],"duration":"2h","comment":"maintenance"}`)
	var sv SilenceView
	if err := json.Unmarshal(rec.Body.Bytes(), &sv); rec.Code != 201 || err != nil || sv.State != "active" || !sv.EndsAt.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("create: %d %s", rec.Code, rec.Body)
	}
	ls := labels.FromStrings("alertname", "X", "cluster", "edge-1")
	waitFor(t, "the dispatcher to load the silence", func() bool {
		e.m.disp.mu.Lock()
		defer e.m.disp.mu.Unlock()
		return e.m.disp.silencedLocked(ls, t0) == sv.ID
	})
	if rec := do("DELETE", "/v1/silences/"+sv.ID, ""); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"state":"expired"`) {
		t.Fatalf("expire: %d %s", rec.Code, rec.Body)
	}
	if rec := do("DELETE", "/v1/silences/nope", ""); rec.Code != 404 {
		t.Fatalf("expire unknown: %d %s", rec.Code, rec.Body)
	}
	waitFor(t, "the dispatcher to drop the silence", func() bool {
		e.m.disp.mu.Lock()
		defer e.m.disp.mu.Unlock()
		return e.m.disp.silencedLocked(ls, t0) == ""
	})
	if rec := do("GET", "/v1/silences", ""); !strings.Contains(rec.Body.String(), `"comment":"maintenance"`) {
		t.Fatalf("list: %s", rec.Body)
	}
}

// TestPolicyWithMissingSecretKeyIsNotInForce: a policy whose Secret lacks
// the key is reported by LoadErrors and left out; the others still load.
func TestPolicyWithMissingSecretKeyIsNotInForce(t *testing.T) {
	e := newEnv(t, BuiltinRules{Disabled: true})
	e.apply(`apiVersion: v1
kind: Secret
metadata: {name: pd}
stringData: {other: x}
---
apiVersion: tether.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: pager}
spec:
  route: {receiver: pd}
  receivers: [{name: pd, pagerduty: {routingKeySecretRef: {name: pd, key: routingKey}}}]
`)
	waitFor(t, "the load error", func() bool { return e.m.LoadErrors()["NotificationPolicy default/pager"] != "" })
	if got := e.m.LoadErrors()["NotificationPolicy default/pager"]; !strings.Contains(got, `key "routingKey" not in Secret default/pd`) {
		t.Fatalf("load error %q", got)
	}
	if e.hasPolicy("default/pager") {
		t.Fatal("policy in force without its routing key")
	}
	if _, err := e.m.silences.Expire(context.Background(), "x"); !errors.Is(err, ErrSilenceNotFound) {
		t.Fatalf("expire unknown silence: %v", err)
	}
}

// TestRuleObjectsReload: applying, changing and deleting a PrometheusRule
// changes the rule manager's groups through the controller loop.
func TestRuleObjectsReload(t *testing.T) {
	e := newEnv(t, BuiltinRules{Disabled: true})
	rule := func(expr string) string {
		return "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: r}\nspec:\n  groups:\n  - name: g\n    rules:\n    - {alert: A, expr: '" + expr + "'}\n"
	}
	query := func() string {
		for _, g := range e.m.RuleGroups("") {
			if g.Name == "g" && len(g.Rules) == 1 {
				return g.Rules[0].Query
			}
		}
		return ""
	}
	e.apply(rule("up == 0"))
	waitFor(t, "the group", func() bool { return query() == "up == 0" })
	e.apply(rule("up < 1"))
	waitFor(t, "the changed rule", func() bool { return query() == "up < 1" })
	if err := e.repo.Delete(context.Background(), objects.KindPrometheusRule, "default", "r"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the group to go", func() bool { return len(e.m.RuleGroups("")) == 0 })
}

// TestRunStopsEverything: when Run returns, the goroutines it started
// (rule groups, controller, collector, dispatcher, receiver senders) are
// gone.
func TestRunStopsEverything(t *testing.T) {
	dir := t.TempDir()
	db, err := telemetry.Open(telemetry.Options{Dir: filepath.Join(dir, "tsdb")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	repo, err := objects.NewRepo(objects.RepoConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := objects.Decode([]byte("apiVersion: tether.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: p}\nspec: {route: {receiver: w, groupWait: 1s}, receivers: [{name: w, webhook: {url: 'http://127.0.0.1:1/x'}}]}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Apply(context.Background(), objs); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	fs := &fleetSource{}
	m, err := New(Config{TSDB: db, Objects: repo, Store: st, Fleet: fs, Builtin: DefaultBuiltinRules(),
		Dispatcher: DispatcherConfig{MinBackoff: time.Hour, MaxBackoff: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	<-m.ready
	// A sender stuck in its backoff after a failed send.
	m.disp.Put(alert(time.Now(), "alertname", "X"))
	m.disp.flush(time.Now().Add(time.Second))
	waitFor(t, "the sender to fail once", func() bool {
		m.disp.mu.Lock()
		defer m.disp.mu.Unlock()
		q := m.disp.queues["default/p/w"]
		return q != nil && q.started && len(q.ch) == 0
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= before })
}
