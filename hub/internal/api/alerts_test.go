package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
)

// TestAlertsMountNeedsTokens: the alerting routes answer viewers' GETs,
// refuse requests without a token, and leave silence writes to admins.
func TestAlertsMountNeedsTokens(t *testing.T) {
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	users := &api.Users{Store: st, Now: time.Now}
	var admin string
	if _, err := users.EnsureAdmin(context.Background(), func(t string) error { admin = t; return nil }); err != nil {
		t.Fatal(err)
	}
	alerts := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"path":"` + r.URL.Path + `"}`))
	})
	srv := httptest.NewServer(api.Handler(api.Config{Auth: users, Alerts: alerts}))
	defer srv.Close()
	viewer := createViewer(t, srv.URL, admin, "ann").Token
	for _, tc := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/api/v1/rules", viewer, 200},
		{"GET", "/api/v1/alerts", viewer, 200},
		{"GET", "/v1/alerts", viewer, 200},
		{"GET", "/v1/silences", viewer, 200},
		{"GET", "/api/v1/rules", "", 401},
		{"POST", "/v1/silences", viewer, 403},
		{"DELETE", "/v1/silences/abc", viewer, 403},
		{"POST", "/v1/silences", admin, 200},
		{"DELETE", "/v1/silences/abc", admin, 200},
	} {
		if code, body := call(t, tc.method, srv.URL+tc.path, tc.token, "{}"); code != tc.want {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
}

// TestApplyAlertingKinds: PrometheusRule (prometheus-operator's
// apiVersion) and NotificationPolicy apply through the console; a bad
// expression is refused naming the group and rule; viewers see the
// policy's webhook token redacted.
func TestApplyAlertingKinds(t *testing.T) {
	url, admin := newAPI(t)
	rules := "apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: r, namespace: ops}\nspec: {groups: [{name: g, rules: [{alert: A, expr: 'up == '}]}]}\n"
	if code, body := call(t, "POST", url+"/v1/apply?source=rules.yaml", admin, rules); code != 400 || !strings.Contains(body, `spec.groups[0].rules[0]: group "g", alert "A": could not parse expression`) {
		t.Fatalf("bad rule: %d %s", code, body)
	}
	doc := strings.Replace(rules, "'up == '", "'up == 0'", 1) + "---\n" +
		"apiVersion: tether.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: p, namespace: ops}\nspec: {route: {receiver: w}, receivers: [{name: w, webhook: {url: 'https://hooks.example/x?token=abc'}}]}\n"
	if code, body := call(t, "POST", url+"/v1/apply?source=ok.yaml", admin, doc); code != 200 {
		t.Fatalf("apply: %d %s", code, body)
	}
	viewer := createViewer(t, url, admin, "v").Token
	code, body := call(t, "GET", url+"/v1/objects/NotificationPolicy/ops/p", viewer, "")
	if code != 200 || strings.Contains(body, "abc") || !strings.Contains(body, "hooks.example") {
		t.Fatalf("viewer's policy: %d %s", code, body)
	}
	if code, body := call(t, "GET", url+"/v1/objects/PrometheusRule/ops/r", viewer, ""); code != 200 || !strings.Contains(body, `"apiVersion":"monitoring.coreos.com/v1"`) {
		t.Fatalf("rule: %d %s", code, body)
	}
}
