package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newCA(t testing.TB) (*CA, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := LoadOrCreateCA(dir, t0)
	if err != nil {
		t.Fatalf("LoadOrCreateCA: %v", err)
	}
	return ca, dir
}

func newCSR(t testing.TB, key crypto.Signer, subject pkix.Name, uris ...*url.URL) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject, URIs: uris}, key)
	if err != nil {
		t.Fatalf("CreateCertificateRequest: %v", err)
	}
	return der
}

func ecKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustParse(t testing.TB, der []byte) *x509.Certificate {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLoadOrCreateCAPersists(t *testing.T) {
	ca, dir := newCA(t)
	if !strings.HasPrefix(ca.Fingerprint(), "sha256:") || len(ca.Fingerprint()) != len("sha256:")+64 {
		t.Fatalf("Fingerprint() = %q", ca.Fingerprint())
	}
	for file, want := range map[string]os.FileMode{"ca.key": 0o600, "ca.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode = %o, want %o", file, got, want)
		}
	}
	again, err := LoadOrCreateCA(dir, t0.Add(365*24*time.Hour))
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("reload changed fingerprint: %s != %s", again.Fingerprint(), ca.Fingerprint())
	}
	if !bytes.Equal(again.CertPEM(), ca.CertPEM()) {
		t.Fatal("reload changed CertPEM")
	}
	// A cert signed by the first instance verifies against the reloaded pool.
	der, _, err := ca.SignAgentCSR(newCSR(t, ecKey(t, elliptic.P256()), pkix.Name{}), "edge-1", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyAgentCert(mustParse(t, der), again.Pool(), t0); err != nil {
		t.Fatalf("verify against reloaded CA: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("dir holds %d entries, want 2 (no temp files left)", len(entries))
	}
}

func TestLoadOrCreateCARefuses(t *testing.T) {
	_, otherDir := newCA(t)
	otherKey, err := os.ReadFile(filepath.Join(otherDir, "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		now     time.Time
		wantErr string
	}{
		{"lone key", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "ca.crt")) }, t0, "ca.key exists but ca.crt is missing"},
		{"lone cert", func(t *testing.T, dir string) { os.Remove(filepath.Join(dir, "ca.key")) }, t0, "ca.crt exists but ca.key is missing"},
		{"garbage cert", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, "ca.crt"), []byte("nope"), 0o644) }, t0, "no CERTIFICATE PEM block"},
		{"garbage key", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, "ca.key"), []byte("nope"), 0o600) }, t0, "ca.key: no PEM block"},
		{"mismatched key", func(t *testing.T, dir string) { os.WriteFile(filepath.Join(dir, "ca.key"), otherKey, 0o600) }, t0, "ca.key does not match ca.crt"},
		{"expired", func(t *testing.T, dir string) {}, t0.Add(CAValidity + time.Hour), "CA expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir := newCA(t)
			tt.setup(t, dir)
			_, err := LoadOrCreateCA(dir, tt.now)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadOrCreateCA: got %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

// TestLoadCAOfMissingDirectoryIsErrNoCA: LoadCA never creates a CA, so the
// hub can decide whether a missing one may be replaced.
func TestLoadCAOfMissingDirectoryIsErrNoCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if _, err := LoadCA(dir, t0); !errors.Is(err, ErrNoCA) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("LoadCA of a missing dir = %v; want ErrNoCA naming %s", err, dir)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadCA created %s", dir)
	}
	ca, err := CreateCA(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateCA(dir, t0); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("CreateCA over an existing CA = %v; want a refusal", err)
	}
	again, err := LoadCA(dir, t0)
	if err != nil || again.Fingerprint() != ca.Fingerprint() {
		t.Fatalf("LoadCA after CreateCA = %v, %v", again, err)
	}
}

func TestSignAgentCSR(t *testing.T) {
	ca, _ := newCA(t)
	rsa2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     crypto.Signer
		cluster string
	}{
		{"p256", ecKey(t, elliptic.P256()), "edge-paris-1"},
		{"p384", ecKey(t, elliptic.P384()), "acme/edge-paris-1"},
		{"ed25519", edKey, "k3s.box-7"},
		{"rsa2048", rsa2048, "acme/store.42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The CSR claims another identity; it must be ignored.
			evil, _ := url.Parse("tether://cluster/victim")
			csr := newCSR(t, tt.key, pkix.Name{CommonName: "victim", Organization: []string{"tether:hub"}}, evil)
			der, notAfter, err := ca.SignAgentCSR(csr, tt.cluster, 24*time.Hour, t0)
			if err != nil {
				t.Fatalf("SignAgentCSR: %v", err)
			}
			if !notAfter.Equal(t0.Add(24 * time.Hour)) {
				t.Errorf("notAfter = %v", notAfter)
			}
			cert := mustParse(t, der)
			got, err := VerifyAgentCert(cert, ca.Pool(), t0.Add(time.Hour))
			if err != nil {
				t.Fatalf("VerifyAgentCert: %v", err)
			}
			if got != tt.cluster {
				t.Fatalf("cluster = %q, want %q", got, tt.cluster)
			}
			if cert.Subject.CommonName != tt.cluster || len(cert.URIs) != 1 || cert.URIs[0].String() != "tether://cluster/"+tt.cluster {
				t.Errorf("identity fields: CN %q URIs %v", cert.Subject.CommonName, cert.URIs)
			}
			if len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
				t.Errorf("usage: ext %v isCA %v", cert.ExtKeyUsage, cert.IsCA)
			}
			if cert.SerialNumber.BitLen() < 64 {
				t.Errorf("serial %x looks too small", cert.SerialNumber)
			}
			if !publicKeyEqual(cert.PublicKey, tt.key.Public()) {
				t.Error("certificate does not carry the CSR's public key")
			}
		})
	}
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(eq)
	return ok && ea.Equal(b)
}

func TestSignAgentCSRRejects(t *testing.T) {
	ca, _ := newCA(t)
	good := newCSR(t, ecKey(t, elliptic.P256()), pkix.Name{})
	rsa1024, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(good)
	tampered[len(tampered)-5] ^= 0xff

	tests := []struct {
		name    string
		csr     []byte
		cluster string
		ttl     time.Duration
		want    error
		wantMsg string
	}{
		{"rsa1024", newCSR(t, rsa1024, pkix.Name{}), "edge-1", time.Hour, ErrWeakKey, "RSA key has 1024 bits, want at least 2048"},
		{"p224", newCSR(t, ecKey(t, elliptic.P224()), pkix.Name{}), "edge-1", time.Hour, ErrWeakKey, "P-224"},
		{"garbage", []byte("not a csr"), "edge-1", time.Hour, ErrInvalidCSR, `sign agent CSR for "edge-1"`},
		{"empty", nil, "edge-1", time.Hour, ErrInvalidCSR, ""},
		{"bad signature", tampered, "edge-1", time.Hour, ErrInvalidCSR, ""},
		{"empty cluster", good, "", time.Hour, ErrInvalidCluster, ""},
		{"upper-case cluster", good, "Edge-1", time.Hour, ErrInvalidCluster, "not in [a-z0-9.-]"},
		{"two slashes", good, "a/b/c", time.Hour, ErrInvalidCluster, "at most one '/'"},
		{"leading dash", good, "-edge", time.Hour, ErrInvalidCluster, "start and end"},
		{"empty namespace", good, "/edge", time.Hour, ErrInvalidCluster, ""},
		{"zero ttl", good, "edge-1", 0, nil, "ttl 0s must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			der, _, err := ca.SignAgentCSR(tt.csr, tt.cluster, tt.ttl, t0)
			if err == nil {
				t.Fatalf("SignAgentCSR succeeded (%d bytes), want error", len(der))
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v is not %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestSignAgentCSRCapsAtCAExpiry(t *testing.T) {
	ca, _ := newCA(t)
	csr := newCSR(t, ecKey(t, elliptic.P256()), pkix.Name{})
	_, notAfter, err := ca.SignAgentCSR(csr, "edge-1", 20*CAValidity, t0)
	if err != nil {
		t.Fatal(err)
	}
	if !notAfter.Equal(ca.cert.NotAfter) {
		t.Fatalf("notAfter %v, want CA expiry %v", notAfter, ca.cert.NotAfter)
	}
}

func TestVerifyAgentCertRefuses(t *testing.T) {
	ca, _ := newCA(t)
	foreign, _ := newCA(t)
	csr := newCSR(t, ecKey(t, elliptic.P256()), pkix.Name{})

	foreignDER, _, err := foreign.SignAgentCSR(csr, "edge-1", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	goodDER, _, err := ca.SignAgentCSR(csr, "edge-1", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.ServerCert([]string{"hub.example.com"}, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	// Certificates from the right CA with the right usage but a broken identity.
	craft := func(mut func(*x509.Certificate)) *x509.Certificate {
		tmpl := mustParse(t, goodDER)
		tmpl.Raw, tmpl.RawTBSCertificate, tmpl.RawSubject = nil, nil, nil
		mut(tmpl)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, tmpl.PublicKey, ca.key)
		if err != nil {
			t.Fatal(err)
		}
		return mustParse(t, der)
	}
	tests := []struct {
		name    string
		cert    *x509.Certificate
		now     time.Time
		wantMsg string
	}{
		{"nil", nil, t0, "no certificate"},
		{"foreign CA", mustParse(t, foreignDER), t0, "unknown authority"},
		{"expired", mustParse(t, goodDER), t0.Add(2 * time.Hour), "expired"},
		{"not yet valid", mustParse(t, goodDER), t0.Add(-time.Hour), "expired or is not yet valid"},
		{"server cert", server.Leaf, t0, "incompatible key usage"},
		{"server usage", craft(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), t0, "incompatible key usage"},
		{"no URI", craft(func(c *x509.Certificate) { c.URIs = nil }), t0, "want exactly one URI SAN, got 0"},
		{"wrong O", craft(func(c *x509.Certificate) { c.Subject.Organization = []string{"tether:hub"} }), t0, `subject O is ["tether:hub"]`},
		{"CN mismatch", craft(func(c *x509.Certificate) { c.Subject.CommonName = "edge-2" }), t0, `subject CN "edge-2" does not match`},
		{"wrong URI host", craft(func(c *x509.Certificate) { c.URIs[0].Host = "user" }), t0, "is not tether://cluster/<cluster>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cluster, err := VerifyAgentCert(tt.cert, ca.Pool(), tt.now)
			if err == nil {
				t.Fatalf("VerifyAgentCert = %q, want error", cluster)
			}
			if !errors.Is(err, ErrNotAgentCert) {
				t.Errorf("error %v is not ErrNotAgentCert", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestServerCert(t *testing.T) {
	ca, _ := newCA(t)
	cert, err := ca.ServerCert([]string{"hub.example.com", "10.1.2.3", "hub.example.com"}, 90*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.Certificate) != 2 || !bytes.Equal(cert.Certificate[1], ca.cert.Raw) {
		t.Fatal("chain does not end with the CA certificate")
	}
	for _, host := range []string{"hub.example.com", "10.1.2.3", "localhost", "127.0.0.1", "::1"} {
		_, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Pool(), CurrentTime: t0})
		if err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "evil.example.com", Roots: ca.Pool(), CurrentTime: t0}); err == nil {
		t.Error("verify for an unlisted host succeeded")
	}
	for _, bad := range []string{"not a host", "a..b", "hub_1.example.com"} {
		if _, err := ca.ServerCert([]string{bad}, time.Hour, t0); err == nil {
			t.Errorf("ServerCert(%q): want error", bad)
		}
	}
}

// TestMutualTLS runs a real TLS 1.3 handshake: the agent pins the CA, the
// hub requires a client cert from the CA and reads the cluster from it.
func TestMutualTLS(t *testing.T) {
	ca, _ := newCA(t)
	now := time.Now()
	server, err := ca.ServerCert([]string{"hub.example.com"}, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	agentKey := ecKey(t, elliptic.P256())
	der, _, err := ca.SignAgentCSR(newCSR(t, agentKey, pkix.Name{}), "acme/edge-1", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	client := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: agentKey}

	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, &tls.Config{
		Certificates: []tls.Certificate{server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	})
	cli := tls.Client(c2, &tls.Config{
		Certificates: []tls.Certificate{client},
		RootCAs:      ca.Pool(),
		ServerName:   "hub.example.com",
		MinVersion:   tls.VersionTLS13,
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var cliErr error
	wg.Go(func() { cliErr = cli.HandshakeContext(ctx) })
	if err := srv.HandshakeContext(ctx); err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	wg.Wait()
	if cliErr != nil {
		t.Fatalf("client handshake: %v", cliErr)
	}
	peer := srv.ConnectionState().PeerCertificates
	cluster, err := VerifyAgentCert(peer[0], ca.Pool(), now)
	if err != nil || cluster != "acme/edge-1" {
		t.Fatalf("VerifyAgentCert(peer) = %q, %v", cluster, err)
	}
}

func FuzzSignAgentCSR(f *testing.F) {
	dir := f.TempDir()
	ca, err := LoadOrCreateCA(dir, t0)
	if err != nil {
		f.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	valid, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid, "edge-1")
	f.Add([]byte{}, "")
	f.Add([]byte{0x30, 0x82, 0xff, 0xff}, "a/b")
	f.Fuzz(func(t *testing.T, csr []byte, cluster string) {
		der, _, err := ca.SignAgentCSR(csr, cluster, time.Hour, t0)
		if err != nil {
			return
		}
		got, err := VerifyAgentCert(mustParse(t, der), ca.Pool(), t0)
		if err != nil {
			t.Fatalf("signed cert does not verify: %v", err)
		}
		if got != cluster {
			t.Fatalf("cluster %q != %q", got, cluster)
		}
	})
}

// TestServingCertAfterRestartValidForLaggingAgentClock: the hub re-issues
// its serving certificate on every start. With NotBefore = now - 5 min an
// agent whose clock lags the hub by more than that could not connect
// after each restart. The certificate is valid from the CA's start.
func TestServingCertAfterRestartValidForLaggingAgentClock(t *testing.T) {
	ca, _ := newCA(t) // created at t0
	restart := t0.Add(30 * 24 * time.Hour)
	cert, err := ca.ServerCert([]string{"hub.example.com"}, 365*24*time.Hour, restart)
	if err != nil {
		t.Fatal(err)
	}
	agentClock := restart.Add(-2 * time.Hour)
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "hub.example.com", Roots: ca.Pool(), CurrentTime: agentClock}); err != nil {
		t.Fatalf("agent 2h behind the hub: %v", err)
	}
	if !cert.Leaf.NotBefore.Equal(ca.cert.NotBefore) {
		t.Fatalf("NotBefore %v; want the CA's %v", cert.Leaf.NotBefore, ca.cert.NotBefore)
	}
}
