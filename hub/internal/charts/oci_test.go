package charts

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/ociregistry"
)

// podinfoArchive is the podinfo chart packaged as `helm package` does:
// the same bytes the index.yaml test repository serves.
func podinfoArchive(t *testing.T) []byte {
	t.Helper()
	return packagedRepo(t)["/podinfo-6.14.1.tgz"]
}

// TestOCIChartResolvesIntoTheStore pushes podinfo to a real registry on
// loopback with Helm's registry client and resolves it: the digest is the
// archive's sha256, the same record as from an index.yaml repository,
// fetched once.
func TestOCIChartResolvesIntoTheStore(t *testing.T) {
	ctx := context.Background()
	reg := ociregistry.Start(t, ociregistry.Config{})
	archive := podinfoArchive(t)
	reg.PushChart(t, archive, "charts")
	e := newEnv(t)
	ref := RepoRef{Name: "reg", URL: reg.URL("charts"), Type: "oci", Insecure: true}

	c, err := e.cs.Resolve(ctx, ref, "podinfo", "6.14.1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest != Digest(archive) || c.Name != "podinfo" || c.Version != "6.14.1" || c.Size != int64(len(archive)) {
		t.Fatalf("Resolve = %+v; want podinfo 6.14.1 with digest %s", c, Digest(archive))
	}
	if c.Source != reg.URL("charts") || !e.cs.Has(c.Digest) {
		t.Fatalf("Resolve = %+v (blob stored: %v); want source %s and the blob stored", c, e.cs.Has(c.Digest), reg.URL("charts"))
	}
	rc, _, err := e.cs.Open(c.Digest)
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	_, _ = got.ReadFrom(rc)
	rc.Close()
	if !bytes.Equal(got.Bytes(), archive) {
		t.Fatal("stored blob differs from the pushed archive")
	}

	// Fetched once: an exact version already stored costs no request,
	// also with a trailing slash on the URL.
	before := reg.Requests()
	ref2 := ref
	ref2.URL += "/"
	again, err := e.cs.Resolve(ctx, ref2, "podinfo", "6.14.1")
	if err != nil || again.Digest != c.Digest {
		t.Fatalf("second Resolve = %+v, %v; want the same chart", again, err)
	}
	if n := reg.Requests() - before; n != 0 {
		t.Errorf("second Resolve made %d registry requests, want 0", n)
	}

	// The same bytes from an index.yaml repository are the same record.
	hr := newHelmRepo(t)
	fromIndex, err := e.cs.Resolve(ctx, hr.ref(), "podinfo", "6.14.1")
	if err != nil || fromIndex.Digest != c.Digest {
		t.Fatalf("index Resolve = %+v, %v; want digest %s", fromIndex, err, c.Digest)
	}
	if got, _ := e.cs.Get(ctx, c.Digest); len(got.Sources) != 2 {
		t.Errorf("sources = %v, want the registry and the index repository", got.Sources)
	}

	// A constraint lists the tags and picks the newest match.
	byConstraint, err := e.cs.Resolve(ctx, ref, "podinfo", "~6.14")
	if err != nil || byConstraint.Digest != c.Digest {
		t.Fatalf("Resolve ~6.14 = %+v, %v; want 6.14.1", byConstraint, err)
	}

	// Type defaults from the oci:// scheme.
	if _, err := e.cs.Resolve(ctx, RepoRef{Name: "reg", URL: reg.URL("charts"), Insecure: true}, "podinfo", "6.14.1"); err != nil {
		t.Errorf("Resolve without type: %v", err)
	}
}

func TestOCIErrors(t *testing.T) {
	ctx := context.Background()
	reg := ociregistry.Start(t, ociregistry.Config{})
	reg.PushChart(t, podinfoArchive(t), "charts")
	plain := RepoRef{Name: "reg", URL: reg.URL("charts"), Type: "oci", Insecure: true}
	tests := []struct {
		name     string
		ref      RepoRef
		chart    string
		version  string
		cfg      func(*Config)
		target   error
		contains []string
	}{{
		name: "plain HTTP without insecure",
		ref:  RepoRef{Name: "reg", URL: reg.URL("charts"), Type: "oci"},
		// The registry client speaks HTTPS to a plain-HTTP server.
		target:   ErrFetch,
		contains: []string{"pull " + reg.URL("charts") + "/podinfo:6.14.1: ", "https://" + reg.Host},
	}, {
		name:     "version missing",
		ref:      plain,
		version:  "9.9.9",
		target:   ErrNotFound,
		contains: []string{"chart podinfo 9.9.9 from " + reg.URL("charts") + ": pull " + reg.URL("charts") + "/podinfo:9.9.9: "},
	}, {
		name:     "chart missing",
		ref:      plain,
		chart:    "nginx",
		target:   ErrNotFound,
		contains: []string{"pull " + reg.URL("charts") + "/nginx:6.14.1: "},
	}, {
		name:     "constraint matches no tag",
		ref:      plain,
		version:  ">=7",
		target:   ErrNotFound,
		contains: []string{"tags of " + reg.URL("charts") + "/podinfo: no version >=7 of chart podinfo (have 6.14.1)"},
	}, {
		name:     "chart larger than the limit",
		ref:      plain,
		cfg:      func(c *Config) { c.MaxChartSize = 4 << 10 },
		target:   ErrTooLarge,
		contains: []string{"pull " + reg.URL("charts") + "/podinfo:6.14.1: more than the limit of 4096 bytes"},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var mut []func(*Config)
			if tc.cfg != nil {
				mut = append(mut, tc.cfg)
			}
			e := newEnv(t, mut...)
			chart, version := "podinfo", "6.14.1"
			if tc.chart != "" {
				chart = tc.chart
			}
			if tc.version != "" {
				version = tc.version
			}
			_, err := e.cs.Resolve(ctx, tc.ref, chart, version)
			wantErr(t, err, tc.target, tc.contains...)
			e.assertEmpty(t)
		})
	}
}

// TestOCIResolveCancelled: Helm's registry client makes its requests
// without a context; the store's transport ties them to the caller's.
func TestOCIResolveCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var hold atomic.Bool
	reg := ociregistry.Start(t, ociregistry.Config{Before: func(req *http.Request) {
		if !hold.Load() || !strings.Contains(req.URL.Path, "/manifests/") {
			return
		}
		// The resolution is cancelled while the registry holds its
		// request; it must end (closing this request) instead of waiting.
		cancel()
		select {
		case <-req.Context().Done():
		case <-time.After(time.Minute):
		}
	}})
	reg.PushChart(t, podinfoArchive(t), "charts")
	hold.Store(true)
	e := newEnv(t)
	_, err := e.cs.Resolve(ctx, RepoRef{Name: "reg", URL: reg.URL("charts"), Type: "oci", Insecure: true}, "podinfo", "6.14.1")
	wantErr(t, err, context.Canceled, "pull "+reg.URL("charts")+"/podinfo:6.14.1")
	e.assertEmpty(t)
}

// logBuffer is a slog handler's output, safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func withLog(buf *logBuffer) func(*Config) {
	return func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
}

// TestOCIRegistryLoginAndTLS pulls from a registry that requires basic
// auth over TLS with a private CA and client certificates: the right
// credentials and certificates resolve; a wrong password, no
// credentials, no CA or no client certificate each fail clearly, and the
// password appears in no error or log line.
func TestOCIRegistryLoginAndTLS(t *testing.T) {
	ctx := context.Background()
	const user, pass = "robot", "s3cret-registry-pass"
	reg := ociregistry.Start(t, ociregistry.Config{Username: user, Password: pass, TLS: true, ClientCerts: true})
	archive := podinfoArchive(t)
	reg.PushChart(t, archive, "private/charts")
	good := RepoRef{
		Name: "reg", URL: reg.URL("private/charts"), Type: "oci",
		Credentials: &Credentials{Username: user, Password: pass},
		TLS:         &TLS{CA: reg.CAPEM, Cert: reg.ClientCertPEM, Key: reg.ClientKeyPEM},
	}
	var logs logBuffer

	fail := []struct {
		name     string
		mutate   func(*RepoRef)
		target   error
		contains []string
	}{{
		name:     "wrong password",
		mutate:   func(r *RepoRef) { r.Credentials = &Credentials{Username: user, Password: "wrong-password-1"} },
		target:   ErrUnauthorized,
		contains: []string{"pull " + reg.URL("private/charts") + "/podinfo:6.14.1: ", "401", "credentials refused"},
	}, {
		name:     "no credentials",
		mutate:   func(r *RepoRef) { r.Credentials = nil },
		target:   ErrUnauthorized,
		contains: []string{"sent without credentials"},
	}, {
		name:     "no CA",
		mutate:   func(r *RepoRef) { r.TLS = &TLS{Cert: reg.ClientCertPEM, Key: reg.ClientKeyPEM} },
		target:   ErrFetch,
		contains: []string{"certificate signed by unknown authority"},
	}, {
		name:     "no client certificate",
		mutate:   func(r *RepoRef) { r.TLS = &TLS{CA: reg.CAPEM} },
		target:   ErrFetch,
		contains: []string{"pull " + reg.URL("private/charts") + "/podinfo:6.14.1: "},
	}, {
		name:     "CA is not PEM",
		mutate:   func(r *RepoRef) { r.TLS = &TLS{CA: []byte("not a certificate")} },
		target:   ErrInvalidRequest,
		contains: []string{"certSecretRef: ca.crt holds no PEM certificate"},
	}, {
		name:     "key without certificate",
		mutate:   func(r *RepoRef) { r.TLS = &TLS{CA: reg.CAPEM, Key: reg.ClientKeyPEM} },
		target:   ErrInvalidRequest,
		contains: []string{"certSecretRef: tls.key without tls.crt"},
	}}
	for _, tc := range fail {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withLog(&logs))
			ref := good
			tc.mutate(&ref)
			_, err := e.cs.Resolve(ctx, ref, "podinfo", "6.14.1")
			wantErr(t, err, tc.target, tc.contains...)
			if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), "wrong-password-1") {
				t.Errorf("error shows a password: %v", err)
			}
			e.assertEmpty(t)
		})
	}

	e := newEnv(t, withLog(&logs))
	c, err := e.cs.Resolve(ctx, good, "podinfo", "6.14.1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest != Digest(archive) {
		t.Fatalf("digest %s, want %s", c.Digest, Digest(archive))
	}
	for _, s := range reg.Seen() {
		if s.Authorization != "" && !strings.HasPrefix(s.Authorization, "Basic ") {
			t.Errorf("registry saw Authorization %q, want basic auth", s.Authorization)
		}
	}
	if out := logs.String(); strings.Contains(out, pass) || strings.Contains(out, "wrong-password-1") || !strings.Contains(out, "chart pulled") {
		t.Errorf("logs show a password or miss the pull:\n%s", out)
	}
}

// TestCredentialsAreRedactedWhenPrinted: a RepoRef printed or logged by
// mistake shows no secret.
func TestCredentialsAreRedactedWhenPrinted(t *testing.T) {
	ref := RepoRef{Name: "r", URL: "oci://h/p", Credentials: &Credentials{Username: "u", Password: "pa55word"}, TLS: &TLS{Key: []byte("-----BEGIN KEY-----")}}
	var logs logBuffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("x", "ref", ref, "creds", ref.Credentials, "tls", ref.TLS)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "ref", ref, "creds", *ref.Credentials)
	for _, out := range []string{logs.String(), sprintAll(ref), sprintAll(*ref.Credentials), sprintAll(ref.TLS)} {
		if strings.Contains(out, "pa55word") || strings.Contains(out, "BEGIN KEY") {
			t.Errorf("printed secret: %s", out)
		}
	}
}

func sprintAll(x any) string {
	return fmt.Sprintf("%v %+v %#v %s", x, x, x, x)
}
