// Package ociregistry serves a real OCI distribution registry on loopback
// for tests (go-containerregistry's in-process registry), optionally
// behind basic auth and over TLS with a private CA (and client
// certificates), and pushes Helm charts into it with Helm's own registry
// client, as `helm push` does.
package ociregistry

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/registry"
)

// Config says how the registry is served. The zero value is a plain-HTTP
// registry that anyone may read and write.
type Config struct {
	// Username and Password, when set, are required (HTTP basic auth) on
	// every request, as a registry with htpasswd auth does.
	Username, Password string
	// TLS serves HTTPS with a certificate for 127.0.0.1 signed by a fresh
	// private CA (Registry.CAPEM).
	TLS bool
	// ClientCerts (with TLS) requires a client certificate signed by the
	// same CA; Registry.ClientCertPEM/ClientKeyPEM hold one.
	ClientCerts bool
	// Before, if set, sees every request before the registry serves it
	// (after auth), e.g. to hold it.
	Before func(*http.Request)
}

// Registry is a running registry.
type Registry struct {
	// Host is host:port, the registry part of oci://HOST/PATH.
	Host string
	// CAPEM is the CA that signed the server (and client) certificate
	// (TLS only).
	CAPEM []byte
	// ClientCertPEM and ClientKeyPEM are a client certificate accepted by
	// the registry (ClientCerts only).
	ClientCertPEM, ClientKeyPEM []byte

	cfg Config
	ca  *x509.CertPool
	mu  sync.Mutex
	n   int    // requests served
	req []Seen // every request's method, path and Authorization header
}

// Seen is one request the registry received.
type Seen struct {
	Method, Path, Authorization string
}

// Start serves a registry on 127.0.0.1 until the test ends.
func Start(t testing.TB, cfg Config) *Registry {
	t.Helper()
	r := &Registry{cfg: cfg}
	quiet := log.New(io.Discard, "", 0)
	inner := ggcr.New(ggcr.Logger(quiet))
	h := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.n++
		r.req = append(r.req, Seen{req.Method, req.URL.Path, req.Header.Get("Authorization")})
		r.mu.Unlock()
		if cfg.Username != "" || cfg.Password != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != cfg.Username || p != cfg.Password {
				w.Header().Set("WWW-Authenticate", `Basic realm="test-registry"`)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
				return
			}
		}
		if cfg.Before != nil {
			cfg.Before(req)
		}
		inner.ServeHTTP(w, req)
	})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = quiet // refused TLS handshakes are what some tests want
	if cfg.TLS {
		caCert, caKey := newCA(t)
		r.CAPEM = pemCert(caCert.Raw)
		r.ca = x509.NewCertPool()
		r.ca.AddCert(caCert)
		serverDER, serverKey := issue(t, caCert, caKey, "test-registry", x509.ExtKeyUsageServerAuth)
		srv.TLS = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{{Certificate: [][]byte{serverDER}, PrivateKey: serverKey}},
		}
		if cfg.ClientCerts {
			clientDER, clientKey := issue(t, caCert, caKey, "test-client", x509.ExtKeyUsageClientAuth)
			r.ClientCertPEM = pemCert(clientDER)
			r.ClientKeyPEM = pemKey(t, clientKey)
			srv.TLS.ClientAuth = tls.RequireAndVerifyClientCert
			srv.TLS.ClientCAs = r.ca
		}
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	r.Host = strings.TrimPrefix(strings.TrimPrefix(srv.URL, "https://"), "http://")
	return r
}

// URL returns oci://HOST/path.
func (r *Registry) URL(path string) string { return "oci://" + r.Host + "/" + strings.Trim(path, "/") }

// Requests returns how many requests the registry has served.
func (r *Registry) Requests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n
}

// Seen returns every request received so far.
func (r *Registry) Seen() []Seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Seen(nil), r.req...)
}

// ClientTLS returns a client TLS config that trusts the registry (and
// presents the client certificate when one is required).
func (r *Registry) ClientTLS(t testing.TB) *tls.Config {
	t.Helper()
	if !r.cfg.TLS {
		return nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: r.ca}
	if r.cfg.ClientCerts {
		pair, err := tls.X509KeyPair(r.ClientCertPEM, r.ClientKeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c
}

// PushChart pushes a packaged chart (.tgz bytes) to oci://HOST/path with
// Helm's registry client, as `helm push ARCHIVE oci://HOST/path` does,
// and returns the reference HOST/path/NAME:VERSION.
func (r *Registry) PushChart(t testing.TB, archive []byte, path string) string {
	t.Helper()
	ch, err := loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		t.Fatalf("push: load chart archive: %v", err)
	}
	opts := []registry.ClientOption{
		registry.ClientOptCredentialsFile(filepath.Join(t.TempDir(), "registry.json")),
	}
	if r.cfg.Username != "" {
		opts = append(opts, registry.ClientOptBasicAuth(r.cfg.Username, r.cfg.Password))
	}
	if r.cfg.TLS {
		opts = append(opts, registry.ClientOptHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: r.ClientTLS(t)}}))
	} else {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		t.Fatalf("push: registry client: %v", err)
	}
	ref := r.Host + "/" + strings.Trim(path, "/") + "/" + ch.Metadata.Name + ":" + ch.Metadata.Version
	if _, err := client.Push(archive, ref); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return ref
}

func newCA(t testing.TB) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test registry CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func issue(t testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, cn string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
