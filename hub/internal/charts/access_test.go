package charts

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/e2e/ociregistry"
)

// authRepo serves the packaged test repository behind basic auth; its
// index may point the archives at another server (mirror).
type authRepo struct {
	srv, mirror *httptest.Server

	mu   sync.Mutex
	auth map[string][]string // server name -> Authorization headers seen
}

func newAuthRepo(t *testing.T, user, pass string, archivesOnMirror bool) *authRepo {
	t.Helper()
	files := packagedRepo(t)
	a := &authRepo{auth: map[string][]string{}}
	serve := func(name string, needAuth bool) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			a.mu.Lock()
			a.auth[name] = append(a.auth[name], req.Header.Get("Authorization"))
			a.mu.Unlock()
			if u, p, ok := req.BasicAuth(); needAuth && (!ok || u != user || p != pass) {
				w.Header().Set("WWW-Authenticate", `Basic realm="charts"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			body, ok := files[req.URL.Path]
			if !ok {
				http.NotFound(w, req)
				return
			}
			_, _ = w.Write(body)
		})
	}
	a.srv = httptest.NewServer(serve("repo", true))
	t.Cleanup(a.srv.Close)
	a.mirror = httptest.NewServer(serve("mirror", false))
	t.Cleanup(a.mirror.Close)
	if archivesOnMirror {
		idx, err := parseIndex(files["/index.yaml"])
		if err != nil {
			t.Fatal(err)
		}
		for _, cvs := range idx.Entries {
			for _, cv := range cvs {
				cv.URLs = []string{a.mirror.URL + "/" + cv.URLs[0]}
			}
		}
		if files["/index.yaml"], err = yaml.Marshal(idx); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func (a *authRepo) seen(name string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.auth[name]...)
}

// TestIndexRepositoryBasicAuth: secretRef credentials reach an index.yaml
// repository as basic auth, and chart URLs on another host only with
// passCredentials; wrong or missing credentials fail clearly and the
// password shows in no error or log.
func TestIndexRepositoryBasicAuth(t *testing.T) {
	ctx := context.Background()
	const user, pass = "reader", "index-pass-4242"
	good := &Credentials{Username: user, Password: pass}

	t.Run("same host", func(t *testing.T) {
		a := newAuthRepo(t, user, pass, false)
		var logs logBuffer
		e := newEnv(t, withLog(&logs))
		c, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: a.srv.URL, Credentials: good}, "podinfo", "6.14.1")
		if err != nil {
			t.Fatal(err)
		}
		if c.Digest != Digest(packagedRepo(t)["/podinfo-6.14.1.tgz"]) {
			t.Fatalf("digest %s", c.Digest)
		}
		if got := a.seen("repo"); len(got) != 2 || got[0] == "" || got[1] == "" {
			t.Errorf("repository saw Authorization %q; want it on the index and the archive", got)
		}
		if strings.Contains(logs.String(), pass) {
			t.Errorf("logs show the password:\n%s", logs.String())
		}
	})

	t.Run("archive on another host", func(t *testing.T) {
		a := newAuthRepo(t, user, pass, true)
		e := newEnv(t)
		if _, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: a.srv.URL, Credentials: good}, "podinfo", "6.14.1"); err != nil {
			t.Fatal(err)
		}
		if got := a.seen("mirror"); len(got) != 1 || got[0] != "" {
			t.Errorf("other host saw Authorization %q; want none without passCredentials", got)
		}
	})

	t.Run("archive on another host with passCredentials", func(t *testing.T) {
		a := newAuthRepo(t, user, pass, true)
		e := newEnv(t)
		if _, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: a.srv.URL, Credentials: good, PassCredentials: true}, "podinfo", "6.14.1"); err != nil {
			t.Fatal(err)
		}
		if got := a.seen("mirror"); len(got) != 1 || !strings.HasPrefix(got[0], "Basic ") {
			t.Errorf("other host saw Authorization %q; want basic auth with passCredentials", got)
		}
	})

	for _, tc := range []struct {
		name  string
		cred  *Credentials
		hint  string
		wrong string
	}{
		{"wrong password", &Credentials{Username: user, Password: "not-the-pass-77"}, "credentials refused", "not-the-pass-77"},
		{"no credentials", nil, "sent without credentials", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAuthRepo(t, user, pass, false)
			var logs logBuffer
			e := newEnv(t, withLog(&logs))
			_, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: a.srv.URL, Credentials: tc.cred}, "podinfo", "6.14.1")
			wantErr(t, err, ErrUnauthorized, "GET "+a.srv.URL+"/index.yaml: HTTP 401 Unauthorized: "+tc.hint)
			wantErr(t, err, ErrFetch)
			if tc.wrong != "" && (strings.Contains(err.Error(), tc.wrong) || strings.Contains(logs.String(), tc.wrong)) {
				t.Errorf("error or logs show the password: %v\n%s", err, logs.String())
			}
			e.assertEmpty(t)
		})
	}
}

// TestIndexRepositoryPrivateCA: certSecretRef's ca.crt makes a repository
// with a private CA reachable; without it the certificate is refused.
func TestIndexRepositoryPrivateCA(t *testing.T) {
	ctx := context.Background()
	files := packagedRepo(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, ok := files[req.URL.Path]
		if !ok {
			http.NotFound(w, req)
			return
		}
		_, _ = w.Write(body)
	}))
	srv.Config.ErrorLog = quietLog()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	e := newEnv(t)
	_, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: srv.URL}, "podinfo", "6.14.1")
	wantErr(t, err, ErrFetch, "GET "+srv.URL+"/index.yaml", "certificate")
	e.assertEmpty(t)

	c, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: srv.URL, TLS: &TLS{CA: ca}}, "podinfo", "6.14.1")
	if err != nil {
		t.Fatal(err)
	}
	if !e.cs.Has(c.Digest) {
		t.Fatal("chart not stored")
	}

	// insecureSkipTLSVerify (Tether's field) also reaches it; the
	// ingress-nginx chart is not stored yet, so this makes requests.
	if _, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: srv.URL, InsecureSkipTLSVerify: true}, "ingress-nginx", "4.15.1"); err != nil {
		t.Fatal(err)
	}
}

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

// TestWrongPasswordNeverResolvesAStoredChart: a chart fetched with the
// right credentials is stored under the repository's URL; asking for it
// again with a wrong password (or none) must fail, not be answered from
// the store, while the right credentials get it without a new download.
func TestWrongPasswordNeverResolvesAStoredChart(t *testing.T) {
	ctx := context.Background()
	const user, pass = "reader", "right-pass-5150"
	good := &Credentials{Username: user, Password: pass}
	bad := &Credentials{Username: user, Password: "wrong-pass-5150"}

	t.Run("index.yaml", func(t *testing.T) {
		a := newAuthRepo(t, user, pass, false)
		e := newEnv(t)
		first, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: a.srv.URL, Credentials: good}, "podinfo", "6.14.1")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*Credentials{bad, nil} {
			_, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: a.srv.URL, Credentials: c}, "podinfo", "6.14.1")
			wantErr(t, err, ErrUnauthorized, "GET "+a.srv.URL+"/index.yaml: HTTP 401")
		}
		n := len(a.seen("repo"))
		again, err := e.cs.Resolve(ctx, RepoRef{Name: "r", URL: a.srv.URL, Credentials: good}, "podinfo", "6.14.1")
		if err != nil || again.Digest != first.Digest {
			t.Fatalf("again = %+v, %v", again, err)
		}
		if got := len(a.seen("repo")) - n; got != 1 {
			t.Errorf("stored chart with credentials made %d requests, want 1 (the index only)", got)
		}
	})

	t.Run("oci", func(t *testing.T) {
		reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass})
		reg.PushChart(t, podinfoArchive(t), "charts")
		e := newEnv(t)
		ref := RepoRef{Name: "r", URL: reg.URL("charts"), Type: "oci", Insecure: true, Credentials: good}
		first, err := e.cs.Resolve(ctx, ref, "podinfo", "6.14.1")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*Credentials{bad, nil} {
			r := ref
			r.Credentials = c
			_, err := e.cs.Resolve(ctx, r, "podinfo", "6.14.1")
			wantErr(t, err, ErrUnauthorized, "pull "+reg.URL("charts")+"/podinfo:6.14.1: ")
		}
		n := len(reg.Seen())
		again, err := e.cs.Resolve(ctx, ref, "podinfo", "6.14.1")
		if err != nil || again.Digest != first.Digest {
			t.Fatalf("again = %+v, %v", again, err)
		}
		for _, s := range reg.Seen()[n:] {
			if strings.Contains(s.Path, "/blobs/") {
				t.Errorf("stored chart downloaded again: %s %s", s.Method, s.Path)
			}
		}
	})
}
