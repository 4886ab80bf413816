package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/charts"
	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/fleet"
	"github.com/tetherfleet/tether/hub/internal/gateway"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/pki"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
)

// newAPI serves the console API over a real store, registry, chart store,
// compiler and gateway (with no agents connected).
func newAPI(t *testing.T) (url, adminToken string) {
	t.Helper()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "hub.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := fleet.New(fleet.Config{Store: st, CAFingerprint: ca.FingerprintSum()})
	if err != nil {
		t.Fatal(err)
	}
	serving, err := ca.ServerCert(nil, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	gcfg := gateway.DefaultConfig()
	gcfg.Registry, gcfg.Signer, gcfg.Certificate, gcfg.ClientCAs = reg, ca, serving, ca.Pool()
	gw, err := gateway.New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := objects.NewRepo(objects.RepoConfig{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := charts.New(charts.Config{Dir: filepath.Join(dir, "charts"), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	comp, err := desired.New(desired.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	users := &api.Users{Store: st, Now: time.Now}
	var tok string
	created, err := users.EnsureAdmin(context.Background(), func(t string) error { tok = t; return nil })
	if err != nil || !created {
		t.Fatalf("EnsureAdmin = %v, %v", created, err)
	}
	srv := httptest.NewServer(api.Handler(api.Config{
		Fleet: reg, Gateway: gw, Auth: users, Objects: repo, Charts: cs, Desired: comp, Reports: &reports.Reports{Store: st},
	}))
	t.Cleanup(srv.Close)
	return srv.URL, tok
}

func call(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		var e api.Error
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("error answer is not JSON: %s", b)
		}
		return resp.StatusCode, e.Message
	}
	return resp.StatusCode, string(b)
}

// createViewer creates the viewer name and returns what the API answered.
func createViewer(t *testing.T, url, admin, name string) api.UserToken {
	t.Helper()
	code, body := call(t, "POST", url+"/v1/users", admin, `{"name":"`+name+`","role":"viewer"}`)
	if code != http.StatusCreated {
		t.Fatalf("create viewer: %d %s", code, body)
	}
	var u api.UserToken
	if err := json.Unmarshal([]byte(body), &u); err != nil || u.Role != api.RoleViewer || u.Token == "" {
		t.Fatalf("created user = %+v, %v", u, err)
	}
	return u
}

func TestRolesAndTokens(t *testing.T) {
	url, admin := newAPI(t)
	u := createViewer(t, url, admin, "alice")
	tests := []struct {
		name, method, path, token, body string
		code                            int
		msg                             string
	}{
		{"no token", "GET", "/v1/clusters", "", "", 401, "missing bearer token"},
		{"garbage token", "GET", "/v1/clusters", "nope", "", 401, "token not valid"},
		{"wrong secret", "GET", "/v1/clusters", "alice.0000", "", 401, "token not valid"},
		{"viewer reads", "GET", "/v1/clusters", u.Token, "", 200, "[]"},
		{"viewer cannot write", "POST", "/v1/tokens", u.Token, `{"cluster":"edge","ttl":"1h","uses":1}`, 403, `user "alice" has role viewer`},
		{"viewer cannot create users", "POST", "/v1/users", u.Token, `{"name":"bob","role":"admin"}`, 403, "needs admin"},
		{"admin writes", "POST", "/v1/tokens", admin, `{"cluster":"edge","ttl":"1h","uses":1}`, 201, "tether1."},
		{"duplicate user", "POST", "/v1/users", admin, `{"name":"alice","role":"viewer"}`, 409, "already exists"},
		{"unknown role", "POST", "/v1/users", admin, `{"name":"carol","role":"root"}`, 400, `role "root"`},
		{"unknown field", "POST", "/v1/tokens", admin, `{"cluster":"edge","ttl":"1h","uses":1,"x":1}`, 400, "unknown field"},
		{"bad ttl", "POST", "/v1/tokens", admin, `{"cluster":"edge","ttl":"soon","uses":1}`, 400, `ttl "soon"`},
		{"unknown cluster", "GET", "/v1/clusters/nope", admin, "", 404, `cluster "nope"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := call(t, tt.method, url+tt.path, tt.token, tt.body)
			if code != tt.code || !strings.Contains(body, tt.msg) {
				t.Fatalf("%s %s = %d %s; want %d containing %q", tt.method, tt.path, code, body, tt.code, tt.msg)
			}
		})
	}
}

func TestApplyIsAllOrNothing(t *testing.T) {
	url, admin := newAPI(t)
	doc := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: apps}\ndata: {k: v}\n---\n" +
		"apiVersion: tether.dev/v1alpha1\nkind: ServiceTemplate\nmetadata: {name: t, namespace: apps}\nspec: {helm: {chartSpec: {chart: c, sourceRef: {name: tether-local}}}}\n"
	code, body := call(t, "POST", url+"/v1/apply?source=bad.yaml", admin, doc)
	if code != 400 || !strings.Contains(body, "bad.yaml: document 2 (ServiceTemplate apps/t): spec.helm.chartSpec.version") {
		t.Fatalf("apply with an invalid document = %d %s", code, body)
	}
	code, body = call(t, "GET", url+"/v1/objects/ConfigMap?namespace=apps", admin, "")
	if code != 200 || strings.TrimSpace(body) != "[]" {
		t.Fatalf("after a refused apply, configmaps = %d %s; want none", code, body)
	}
	if code, body := call(t, "GET", url+"/v1/objects/Widget", admin, ""); code != 400 || !strings.Contains(body, `unknown kind "Widget"`) {
		t.Fatalf("unknown kind = %d %s", code, body)
	}
}

func TestDryRunApplyStoresNothingAndIsForAdmins(t *testing.T) {
	url, admin := newAPI(t)
	viewer := createViewer(t, url, admin, "vic")
	doc := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: apps}\ndata: {k: v}\n"
	if code, body := call(t, "POST", url+"/v1/apply?dryRun=All", viewer.Token, doc); code != 403 {
		t.Fatalf("viewer dry run = %d %s; want 403", code, body)
	}
	if code, body := call(t, "POST", url+"/v1/apply?dryRun=true", admin, doc); code != 400 || !strings.Contains(body, `dryRun "true": want "All"`) {
		t.Fatalf("dryRun=true = %d %s; want 400", code, body)
	}
	code, body := call(t, "POST", url+"/v1/apply?dryRun=All", admin, doc)
	var res []api.ApplyResult
	if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil || len(res) != 1 ||
		res[0].Action != "created" || !res[0].DryRun || !strings.Contains(string(res[0].Object), `"data":{"k":"v"}`) || res[0].Live != nil {
		t.Fatalf("dry run = %d %s (%v)", code, body, err)
	}
	if code, body := call(t, "GET", url+"/v1/objects/ConfigMap/apps/a", admin, ""); code != 404 {
		t.Fatalf("after a dry run, GET = %d %s; want 404", code, body)
	}
	// A refused dry run is refused as apply would be.
	bad := strings.Replace(doc, "data: {k: v}", "data: {k: 1}", 1)
	if code, body := call(t, "POST", url+"/v1/apply?dryRun=All", admin, bad); code != 400 {
		t.Fatalf("invalid dry run = %d %s; want 400", code, body)
	}
	if code, body := call(t, "POST", url+"/v1/apply", admin, doc); code != 200 || !strings.Contains(body, `"action":"created"`) || strings.Contains(body, `"object"`) {
		t.Fatalf("apply after dry run = %d %s", code, body)
	}
}
