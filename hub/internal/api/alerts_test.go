package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
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
