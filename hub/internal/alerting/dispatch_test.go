package alerting

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// testPolicy compiles a policy with one webhook receiver "team" at url.
func testPolicy(t *testing.T, r objects.AlertRoute, url string) *policy {
	t.Helper()
	np := &objects.NotificationPolicy{Spec: objects.NotificationPolicySpec{Route: r,
		Receivers: []objects.AlertReceiver{{Name: "team", Webhook: &objects.WebhookReceiver{URL: url}}, {Name: "db", Webhook: &objects.WebhookReceiver{URL: url + "/db"}}}}}
	np.Metadata.Namespace, np.Metadata.Name = "ops", "p"
	np.Kind = objects.KindNotificationPolicy
	objects.Default(np)
	if err := objects.Validate(np); err != nil {
		t.Fatal(err)
	}
	m := &Manager{cfg: Config{HTTPClient: http.DefaultClient}}
	p, err := m.compilePolicy(context.Background(), np, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func alert(start time.Time, kv ...string) *Alert {
	return &Alert{Labels: labels.FromStrings(kv...), StartsAt: start, EndsAt: start.Add(time.Hour)}
}

// sent takes the notifications queued for a receiver (the dispatcher is
// not running, so nothing drains the queue but the test).
func sent(d *Dispatcher, receiver string) []*Notification {
	d.mu.Lock()
	q := d.queues["ops/p/"+receiver]
	d.mu.Unlock()
	if q == nil {
		return nil
	}
	var out []*Notification
	for {
		select {
		case n := <-q.ch:
			out = append(out, n)
		default:
			return out
		}
	}
}

func clusters(n *Notification) string {
	var out []string
	for _, a := range n.Alerts {
		out = append(out, a.Labels.Get("cluster")+":"+a.Status)
	}
	return strings.Join(out, ",")
}

// TestGroupingRepeatAndSilence drives the dispatcher's clock: alerts of a
// group wait for groupWait and go out together; a new alert in the group
// waits for groupInterval; an unchanged group is repeated only after
// repeatInterval; a silenced alert leaves the notification; a resolved
// one is sent once as resolved. Child routes take their alerts.
func TestGroupingRepeatAndSilence(t *testing.T) {
	clk := &clock{t: t0}
	d := NewDispatcher(DispatcherConfig{Now: clk.Now})
	d.SetPolicies([]*policy{testPolicy(t, objects.AlertRoute{
		Receiver: "team", GroupBy: []string{"alertname"},
		GroupWait: "30s", GroupInterval: "5m", RepeatInterval: "1h",
		Routes: []objects.AlertRoute{{Receiver: "db", Matchers: []string{`team="db"`}}},
	}, "http://unused")})
	flush := func(after time.Duration) []*Notification {
		clk.Set(t0.Add(after))
		d.flush(t0.Add(after))
		return sent(d, "team")
	}
	d.Put(alert(t0, "alertname", "Offline", "cluster", "a"), alert(t0, "alertname", "Offline", "cluster", "b"),
		alert(t0, "alertname", "Offline", "cluster", "c", "team", "db"))
	if got := flush(10 * time.Second); len(got) != 0 {
		t.Fatalf("before groupWait: %d notifications", len(got))
	}
	got := flush(30 * time.Second)
	if len(got) != 1 || clusters(got[0]) != "a:firing,b:firing" || got[0].GroupLabels.String() != `{alertname="Offline"}` {
		t.Fatalf("after groupWait: %v", got)
	}
	if db := sent(d, "db"); len(db) != 1 || clusters(db[0]) != "c:firing" {
		t.Fatalf("child route: %v", db)
	}
	// A third alert joins; it waits for groupInterval.
	clk.Set(t0.Add(time.Minute))
	d.Put(alert(t0.Add(time.Minute), "alertname", "Offline", "cluster", "d"))
	if got := flush(2 * time.Minute); len(got) != 0 {
		t.Fatalf("before groupInterval: %d notifications", len(got))
	}
	if got := flush(5*time.Minute + 30*time.Second); len(got) != 1 || clusters(got[0]) != "a:firing,b:firing,d:firing" {
		t.Fatalf("after groupInterval: %v", got)
	}
	// Unchanged: quiet until repeatInterval.
	if got := flush(10*time.Minute + 30*time.Second); len(got) != 0 {
		t.Fatalf("unchanged group renotified before repeatInterval: %v", got)
	}
	// Keep the alerts alive (the rule manager resends them).
	clk.Set(t0.Add(50 * time.Minute))
	for _, c := range []string{"a", "b", "d"} {
		d.Put(&Alert{Labels: labels.FromStrings("alertname", "Offline", "cluster", c), StartsAt: t0, EndsAt: t0.Add(3 * time.Hour)})
	}
	if got := flush(65*time.Minute + 30*time.Second); len(got) != 1 || clusters(got[0]) != "a:firing,b:firing,d:firing" {
		t.Fatalf("after repeatInterval: %v", got)
	}
	// A silence on b: the next flush leaves it out.
	d.SetSilences([]Silence{{ID: "s1", Matchers: []string{`cluster="b"`}, StartsAt: t0, EndsAt: t0.Add(2 * time.Hour)}})
	if got := flush(70*time.Minute + 30*time.Second); len(got) != 1 || clusters(got[0]) != "a:firing,d:firing" {
		t.Fatalf("with b silenced: %v", got)
	}
	st := d.Alerts()
	if i := slices.IndexFunc(st, func(s AlertStatus) bool { return s.Labels.Get("cluster") == "b" }); i < 0 || !slices.Equal(st[i].SilencedBy, []string{"s1"}) {
		t.Fatalf("alert statuses %+v: b is silenced by s1", st)
	}
	// a resolves: one resolved notification, then it is gone.
	clk.Set(t0.Add(72 * time.Minute))
	d.Put(&Alert{Labels: labels.FromStrings("alertname", "Offline", "cluster", "a"), StartsAt: t0, EndsAt: t0.Add(72 * time.Minute)})
	if got := flush(75*time.Minute + 30*time.Second); len(got) != 1 || clusters(got[0]) != "d:firing,a:resolved" {
		t.Fatalf("after a resolved: %v", got)
	}
	if got := flush(80*time.Minute + 30*time.Second); len(got) != 0 {
		t.Fatalf("resolved alert sent twice: %v", got)
	}
}

// TestFailingReceiverIsRetried: a webhook answering 503 is retried with
// backoff until it succeeds; a 400 is not retried. Both outcomes are
// recorded as deliveries.
func TestFailingReceiverIsRetried(t *testing.T) {
	var calls, bad atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/db") {
			bad.Add(1)
			http.Error(w, "no such channel", http.StatusBadRequest)
			return
		}
		var m WebhookMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil || m.Version != "4" {
			t.Errorf("webhook body: %v %+v", err, m)
		}
		if calls.Add(1) < 3 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	clk := &clock{t: t0}
	d := NewDispatcher(DispatcherConfig{Now: clk.Now, Tick: time.Hour, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond, MaxAttempts: 5})
	d.SetPolicies([]*policy{testPolicy(t, objects.AlertRoute{Receiver: "team", GroupWait: "1s",
		Routes: []objects.AlertRoute{{Receiver: "db", Matchers: []string{`team="db"`}}}}, srv.URL)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "Run to start", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.ctx != nil })
	d.Put(alert(t0, "alertname", "X", "cluster", "a"), alert(t0, "alertname", "Y", "team", "db"))
	clk.Set(t0.Add(time.Second))
	d.flush(t0.Add(time.Second))
	deliveries := func(name string) []Delivery {
		for _, s := range d.Alerts() {
			if s.Labels.Get("alertname") == name {
				return s.Deliveries
			}
		}
		return nil
	}
	waitFor(t, "both deliveries", func() bool { return len(deliveries("X")) == 1 && len(deliveries("Y")) == 1 })
	if dv := deliveries("X")[0]; dv.Error != "" || dv.Attempts != 3 || calls.Load() != 3 {
		t.Fatalf("retried delivery %+v after %d calls: want success on the 3rd", dv, calls.Load())
	}
	if dv := deliveries("Y")[0]; dv.Attempts != 1 || !strings.Contains(dv.Error, "400 Bad Request: no such channel") || bad.Load() != 1 {
		t.Fatalf("refused delivery %+v after %d calls: want one attempt", dv, bad.Load())
	}
}

// TestQueueIsBounded: a receiver whose queue is full drops notifications
// and records the drop instead of growing.
func TestQueueIsBounded(t *testing.T) {
	clk := &clock{t: t0}
	d := NewDispatcher(DispatcherConfig{Now: clk.Now, QueueSize: 2})
	d.SetPolicies([]*policy{testPolicy(t, objects.AlertRoute{Receiver: "team", GroupBy: []string{"..."}, GroupWait: "1s"}, "http://unused")})
	for _, c := range []string{"a", "b", "c", "d"} {
		d.Put(alert(t0, "alertname", "X", "cluster", c))
	}
	d.flush(t0.Add(time.Second))
	d.mu.Lock()
	q := d.queues["ops/p/team"]
	n, dropped := len(q.ch), q.dropped
	d.mu.Unlock()
	if n != 2 || dropped != 2 {
		t.Fatalf("queue holds %d, dropped %d; want 2 and 2", n, dropped)
	}
}

func TestParseMatcher(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{`severity="critical"`, `severity="critical"`, true},
		{`team=~db|web`, `team=~"db|web"`, true},
		{` env != dev `, `env!="dev"`, true},
		{`a!~"x.*"`, `a!~"x.*"`, true},
		{`a=~"("`, "", false},
		{`=x`, "", false},
		{`a="unterminated`, "", false},
	} {
		m, err := objects.ParseMatcher(tc.in)
		if (err == nil) != tc.ok || (err == nil && m.String() != tc.want) {
			t.Errorf("ParseMatcher(%q) = %v, %v; want %s ok=%v", tc.in, m, err, tc.want, tc.ok)
		}
	}
}

func FuzzDecodeSilenceRequest(f *testing.F) {
	f.Add([]byte(`{"matchers":["cluster=\"edge-1\""],"duration":"2h"}`))
	f.Add([]byte(`{"matchers":["a=~.*"],"endsAt":"2026-12-02T12:00:00Z"}`))
	f.Add([]byte(`{"matchers":[],"duration":"-1h","x":1}`))
	f.Add([]byte(`{"matchers":["a!~\"(\""],"startsAt":"2026-12-02T09:00:00Z","duration":"1h"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSilenceRequest(b, t0)
		if err != nil {
			return
		}
		if len(s.Matchers) == 0 || !s.EndsAt.After(t0) || !s.EndsAt.After(s.StartsAt) {
			t.Fatalf("accepted a silence that cannot work: %+v", s)
		}
		if len(compileSilences([]Silence{*s})) != 1 {
			t.Fatalf("accepted matchers that do not compile: %v", s.Matchers)
		}
	})
}

func FuzzParseMatcher(f *testing.F) {
	for _, s := range []string{`a="b"`, `a=~"b|c"`, `a!=b`, `x!~".*"`, `a="\u00e9\""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := objects.ParseMatcher(s)
		if err != nil {
			return
		}
		// What String prints parses back to the same matcher.
		m2, err := objects.ParseMatcher(m.String())
		if err != nil || m2.String() != m.String() {
			t.Fatalf("%q -> %s -> %v, %v", s, m, m2, err)
		}
	})
}

// TestExternalLabels: a webhook gets each alert with the hub's external
// labels, and an alert's own value for one keeps it; routes see the
// labels (the alert with its own region goes to the child route); the
// held alerts, and so their fingerprints, keep the rules' labels.
func TestExternalLabels(t *testing.T) {
	got := make(chan WebhookMessage, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m WebhookMessage
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		got <- m
	}))
	defer srv.Close()
	clk := &clock{t: t0}
	d := NewDispatcher(DispatcherConfig{Now: clk.Now, Tick: time.Hour, ExternalURL: "https://hub-eu:7443",
		ExternalLabels: labels.FromStrings("hub", "eu-1", "region", "eu")})
	d.SetPolicies([]*policy{testPolicy(t, objects.AlertRoute{Receiver: "team", GroupBy: []string{"alertname", "region"}, GroupWait: "1s",
		Routes: []objects.AlertRoute{{Receiver: "db", Matchers: []string{`region="us"`}}}}, srv.URL)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "Run to start", func() bool { d.mu.Lock(); defer d.mu.Unlock(); return d.ctx != nil })
	plain := alert(t0, "alertname", "Offline", "cluster", "a")
	own := alert(t0, "alertname", "Offline", "cluster", "b", "region", "us")
	d.Put(plain, own)
	clk.Set(t0.Add(time.Second))
	d.flush(t0.Add(time.Second))

	byReceiver := map[string]WebhookMessage{}
	for range 2 {
		select {
		case m := <-got:
			byReceiver[m.Receiver] = m
		case <-time.After(30 * time.Second):
			t.Fatalf("webhooks received: %v; want one for team and one for db", byReceiver)
		}
	}
	team, db := byReceiver["team"], byReceiver["db"]
	if len(team.Alerts) != 1 || !maps.Equal(team.Alerts[0].Labels, map[string]string{"alertname": "Offline", "cluster": "a", "hub": "eu-1", "region": "eu"}) {
		t.Errorf("team webhook alerts %+v: want cluster a with hub=eu-1, region=eu", team.Alerts)
	}
	if team.CommonLabels["region"] != "eu" || !maps.Equal(team.GroupLabels, map[string]string{"alertname": "Offline", "region": "eu"}) || team.ExternalURL != "https://hub-eu:7443" {
		t.Errorf("team webhook: common labels %v, group labels %v, externalURL %q", team.CommonLabels, team.GroupLabels, team.ExternalURL)
	}
	if len(db.Alerts) != 1 || !maps.Equal(db.Alerts[0].Labels, map[string]string{"alertname": "Offline", "cluster": "b", "hub": "eu-1", "region": "us"}) {
		t.Errorf("db webhook alerts %+v: want cluster b keeping region=us, with hub=eu-1", db.Alerts)
	}
	for _, s := range d.Alerts() {
		if s.Labels.Has("hub") || s.Fingerprint != fmt.Sprintf("%016x", s.Labels.Hash()) {
			t.Errorf("held alert %s (fingerprint %s): want the rules' labels and their fingerprint", s.Labels, s.Fingerprint)
		}
	}
	if want := fmt.Sprintf("%016x", plain.Labels.Hash()); team.Alerts[0].Fingerprint != want {
		t.Errorf("webhook fingerprint %s, want the held alert's %s", team.Alerts[0].Fingerprint, want)
	}
}
