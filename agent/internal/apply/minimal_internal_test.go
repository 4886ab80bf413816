package apply

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"

	"github.com/tetherfleet/tether/agent/internal/cache"
)

// minimalServer is a real HTTP server in the shape of a minimal API
// server (CAPD's in-memory one): /version answers versionStatus (200
// with a version, or the status with no body), /api/v1/nodes lists
// kubelets, OpenAPI answers openAPIStatus.
type minimalServer struct {
	*httptest.Server
	nodeLists atomic.Int32
}

func startMinimal(t *testing.T, versionStatus, openAPIStatus int, kubelets ...string) *minimalServer {
	t.Helper()
	s := &minimalServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		if versionStatus != http.StatusOK {
			http.Error(w, http.StatusText(versionStatus), versionStatus)
			return
		}
		writeJSON(w, version.Info{Major: "1", Minor: "37", GitVersion: "v1.37.2"})
	})
	mux.HandleFunc("GET /api/v1/nodes", func(w http.ResponseWriter, _ *http.Request) {
		s.nodeLists.Add(1)
		l := corev1.NodeList{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "NodeList"}}
		for i, v := range kubelets {
			n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-" + string(rune('a'+i))}}
			n.Status.NodeInfo.KubeletVersion = v
			l.Items = append(l.Items, n)
		}
		writeJSON(w, l)
	})
	openAPI := func(w http.ResponseWriter, _ *http.Request) {
		if openAPIStatus != http.StatusOK {
			http.Error(w, http.StatusText(openAPIStatus), openAPIStatus)
			return
		}
		writeJSON(w, map[string]any{"paths": map[string]any{}})
	}
	mux.HandleFunc("GET /openapi/v3", openAPI)
	mux.HandleFunc("GET /openapi/v2", openAPI)
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// testEngine is an engine for the cluster at url, logging into a buffer.
func testEngine(t *testing.T, url string) (*Engine, *bytes.Buffer) {
	t.Helper()
	db, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	var logs bytes.Buffer
	cfg := DefaultConfig()
	cfg.RESTConfig, cfg.Records = &rest.Config{Host: url}, db
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e, &logs
}

// TestServerVersionFallback: what Helm gets as the cluster's version
// (its reachability check and the chart's .Capabilities, through the
// engine's Helm configuration) when /version answers 404, answers
// otherwise, or nothing answers.
func TestServerVersionFallback(t *testing.T) {
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	for _, tc := range []struct {
		name       string
		url        func(t *testing.T) (string, *minimalServer)
		want       string // GitVersion; "" for an error
		wantErr    string
		noVersion  bool // the error is ErrNoServerVersion
		nodeLists  int32
		assumedLog bool
	}{
		{name: "served", url: func(t *testing.T) (string, *minimalServer) {
			s := startMinimal(t, http.StatusOK, http.StatusOK, "v1.30.0")
			return s.URL, s
		}, want: "v1.37.2"},
		{name: "404 falls back to the highest kubelet", url: func(t *testing.T) (string, *minimalServer) {
			s := startMinimal(t, http.StatusNotFound, http.StatusNotFound, "v1.33.4", "v1.34.2", "", "not-a-version", "v1.34.0")
			return s.URL, s
		}, want: "v1.34.2", nodeLists: 2, assumedLog: true},
		{name: "404 without nodes", url: func(t *testing.T) (string, *minimalServer) {
			s := startMinimal(t, http.StatusNotFound, http.StatusNotFound)
			return s.URL, s
		}, wantErr: "none of its 0 Nodes has a kubelet version", noVersion: true, nodeLists: 2},
		{name: "403 is not a missing /version", url: func(t *testing.T) (string, *minimalServer) {
			s := startMinimal(t, http.StatusForbidden, http.StatusOK, "v1.34.2")
			return s.URL, s
		}, wantErr: "Forbidden"},
		{name: "500 is not a missing /version", url: func(t *testing.T) (string, *minimalServer) {
			s := startMinimal(t, http.StatusInternalServerError, http.StatusOK, "v1.34.2")
			return s.URL, s
		}, wantErr: "Internal Server Error"},
		{name: "unreachable", url: func(*testing.T) (string, *minimalServer) { return closed.URL, nil },
			wantErr: "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url, srv := tc.url(t)
			e, logs := testEngine(t, url)
			hc, err := e.rawHelmConfig("ns")
			if err != nil {
				t.Fatal(err)
			}
			reachErr := hc.KubeClient.IsReachable()
			dc, err := hc.RESTClientGetter.ToDiscoveryClient()
			if err != nil {
				t.Fatal(err)
			}
			v, verErr := dc.ServerVersion()
			if tc.want != "" {
				if reachErr != nil || verErr != nil {
					t.Fatalf("IsReachable: %v; ServerVersion: %v; want both to succeed", reachErr, verErr)
				}
				if v.GitVersion != tc.want || v.Major != "1" || v.Minor != strings.Split(tc.want, ".")[1] {
					t.Errorf("ServerVersion = %+v, want %s", v, tc.want)
				}
			} else {
				for what, err := range map[string]error{"IsReachable": reachErr, "ServerVersion": verErr} {
					if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
						t.Errorf("%s: %v, want an error containing %q", what, err, tc.wantErr)
					}
					if errors.Is(err, ErrNoServerVersion) != tc.noVersion {
						t.Errorf("%s: %v; errors.Is ErrNoServerVersion = %v, want %v", what, err, !tc.noVersion, tc.noVersion)
					}
				}
				if !strings.Contains(reachErr.Error(), "unreachable") {
					t.Errorf("IsReachable: %v, want it to say unreachable", reachErr)
				}
			}
			if srv != nil && srv.nodeLists.Load() != tc.nodeLists {
				t.Errorf("Node lists = %d, want %d", srv.nodeLists.Load(), tc.nodeLists)
			}
			if n := strings.Count(logs.String(), "serves no /version"); (n == 1) != tc.assumedLog || n > 1 {
				t.Errorf("log has %d lines about the missing /version, want %v once:\n%s", n, tc.assumedLog, logs)
			}
			if tc.assumedLog && !strings.Contains(logs.String(), "version="+tc.want) {
				t.Errorf("log does not name the assumed version %s:\n%s", tc.want, logs)
			}
		})
	}
}

// TestValidateOnlyWithOpenAPI: Helm validates against OpenAPI unless the
// server serves neither v3 nor v2; an error other than 404 leaves
// validation on (Helm then reports it).
func TestValidateOnlyWithOpenAPI(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		want   bool
	}{
		{"served", http.StatusOK, true},
		{"not served", http.StatusNotFound, false},
		{"failing", http.StatusInternalServerError, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startMinimal(t, http.StatusOK, tc.status)
			e, logs := testEngine(t, s.URL)
			for range 2 {
				if got := e.server.validate(); got != tc.want {
					t.Errorf("validate() = %v, want %v", got, tc.want)
				}
			}
			if n := strings.Count(logs.String(), "serves no OpenAPI"); n != map[bool]int{true: 0, false: 1}[tc.want] {
				t.Errorf("log has %d lines about the missing OpenAPI:\n%s", n, logs)
			}
		})
	}
}

// strictSecrets is a real HTTP server that, like CAPD's in-memory API
// server, refuses an update whose resourceVersion is not the stored one
// (also an empty one) with 409 Conflict.
func strictSecrets(t *testing.T) (url string, puts *atomic.Int32) {
	t.Helper()
	puts = new(atomic.Int32)
	const stored = "7"
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/ns/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: r.PathValue("name"), Namespace: "ns", ResourceVersion: stored}})
	})
	mux.HandleFunc("PUT /api/v1/namespaces/ns/secrets/{name}", func(w http.ResponseWriter, r *http.Request) {
		puts.Add(1)
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(body, nil, nil) // JSON or protobuf
		s, ok := obj.(*corev1.Secret)
		if err != nil || !ok {
			http.Error(w, fmt.Sprintf("decode a Secret: %T %v", obj, err), http.StatusBadRequest)
			return
		}
		if s.ResourceVersion != stored {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusConflict)
			writeJSON(w, metav1.Status{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"}, Status: metav1.StatusFailure,
				Code: http.StatusConflict, Reason: metav1.StatusReasonConflict, Message: "object has been modified"})
			return
		}
		s.ResourceVersion = "8"
		writeJSON(w, s)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, puts
}

// TestReleaseUpdateWithoutUnconditionalUpdates: Helm's Secrets driver,
// as the engine builds it, stores a release update (pending-install ->
// deployed) on a server that refuses updates without the current
// resourceVersion; an update that carries a stale resourceVersion still
// gets its conflict.
func TestReleaseUpdateWithoutUnconditionalUpdates(t *testing.T) {
	url, puts := strictSecrets(t)
	e, _ := testEngine(t, url)
	hc, err := e.rawHelmConfig("ns")
	if err != nil {
		t.Fatal(err)
	}
	rel := &release.Release{Name: "hello", Namespace: "ns", Version: 1, Info: &release.Info{Status: release.StatusDeployed},
		Chart: &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "hello", Version: "0.1.0"}}}
	if err := hc.Releases.Update(rel); err != nil {
		t.Fatalf("release update on a server without unconditional updates: %v", err)
	}
	if n := puts.Load(); n != 2 {
		t.Errorf("PUTs = %d, want 2 (refused without resourceVersion, then with the current one)", n)
	}

	puts.Store(0)
	stale := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "ns", ResourceVersion: "3"}}
	_, err = unconditionalSecrets{SecretInterface: e.kube.CoreV1().Secrets("ns")}.Update(t.Context(), stale, metav1.UpdateOptions{})
	if !apierrors.IsConflict(err) || puts.Load() != 1 {
		t.Errorf("update with a stale resourceVersion: %v after %d PUTs, want the conflict after 1", err, puts.Load())
	}
}
