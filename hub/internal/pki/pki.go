// Package pki is the hub's certificate authority: it creates and persists
// the CA, issues the hub's serving certificate, and signs agent client
// certificates from CSRs.
//
// # Agent identity
//
// An agent certificate names exactly one cluster, set by the hub and never
// taken from the CSR:
//
//	Subject CN   = <cluster>
//	Subject O    = "tether:agents"
//	URI SAN      = tether://cluster/<cluster>
//	ExtKeyUsage  = ClientAuth only
//
// ClusterFromCert requires all three to agree, so a certificate from the
// same CA for another purpose (the hub's serving cert) is not an agent. A
// cluster is "name" or "namespace/name", each part lower-case [a-z0-9.-].
//
// # Files
//
// The CA lives in dir as ca.crt (PEM, 0644) and ca.key (PEM PKCS#8, 0600),
// both written atomically. ECDSA P-256 is used for every key this package
// creates: it is supported by every TLS stack the agents meet.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tetherfleet/tether/hub/internal/atomicfile"
)

// Identity encoding and lifetimes.
const (
	// AgentOrganization is the Subject O of every agent certificate.
	AgentOrganization = "tether:agents"
	// URIScheme and URIHost form the agent URI SAN tether://cluster/<name>.
	URIScheme = "tether"
	URIHost   = "cluster"

	// CAValidity is the lifetime of a newly created CA.
	CAValidity = 10 * 365 * 24 * time.Hour
	// MinRSABits is the smallest RSA key SignAgentCSR accepts.
	MinRSABits = 2048

	// clockSkew backdates NotBefore so a peer whose clock is a little
	// behind accepts a fresh certificate.
	clockSkew = 5 * time.Minute

	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrInvalidCSR: the CSR does not parse or its signature is wrong.
	ErrInvalidCSR = errors.New("invalid certificate request")
	// ErrWeakKey: the CSR's public key type or size is not accepted.
	ErrWeakKey = errors.New("key too weak or unsupported")
	// ErrInvalidCluster: the cluster name cannot be encoded in a certificate.
	ErrInvalidCluster = errors.New("invalid cluster name")
	// ErrNotAgentCert: the certificate does not carry an agent identity or
	// does not chain to the CA for client auth.
	ErrNotAgentCert = errors.New("not a tether agent certificate")
	// ErrNoCA: the CA directory holds neither ca.crt nor ca.key.
	ErrNoCA = errors.New("no CA")
)

// CA is the hub's certificate authority. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
}

// LoadOrCreateCA loads the CA from dir (see LoadCA), or creates a new one
// (see CreateCA) if neither file exists. The hub itself uses LoadCA and
// CreateCA, so that it can refuse to mint a new CA for a fleet that trusts
// the lost one.
func LoadOrCreateCA(dir string, now time.Time) (*CA, error) {
	ca, err := LoadCA(dir, now)
	if errors.Is(err, ErrNoCA) {
		return CreateCA(dir, now)
	}
	return ca, err
}

// LoadCA loads ca.crt and ca.key from dir. It fails with ErrNoCA if neither
// exists, refuses a lone ca.crt or ca.key, and refuses a CA that has
// expired, is not a CA, or whose key does not match its certificate.
func LoadCA(dir string, now time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := parseCA(certPEM, keyPEM, now)
		if err != nil {
			return nil, fmt.Errorf("pki: load CA from %s: %w", dir, err)
		}
		return ca, nil
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("pki: load CA: neither %s nor %s exists: %w", certPath, keyPath, ErrNoCA)
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("pki: load CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("pki: load CA: %w", keyErr)
	case certErr != nil:
		return nil, fmt.Errorf("pki: load CA from %s: %s exists but %s is missing; refusing to create a new CA over it", dir, caKeyFile, caCertFile)
	default:
		return nil, fmt.Errorf("pki: load CA from %s: %s exists but %s is missing; refusing to create a new CA over it", dir, caCertFile, caKeyFile)
	}
}

// CreateCA creates a new self-signed CA valid from now for CAValidity and
// writes it to dir (created if missing). It refuses to overwrite an
// existing ca.crt or ca.key.
func CreateCA(dir string, now time.Time) (*CA, error) {
	for _, f := range []string{caCertFile, caKeyFile} {
		if _, err := os.Lstat(filepath.Join(dir, f)); !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("pki: create CA: %s already exists (or cannot be checked: %v); refusing to overwrite it", filepath.Join(dir, f), err)
		}
	}
	return createCA(dir, now)
}

func createCA(dir string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "tether hub CA", Organization: []string{"tether"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: sign: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: marshal key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	// Key first: a crash between the two writes leaves a lone key, which
	// LoadOrCreateCA refuses loudly instead of silently minting a new CA.
	if err := atomicfile.WriteFile(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, caCertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("pki: create CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA: parse own certificate: %w", err)
	}
	return &CA{cert: cert, key: key, certPEM: certPEM}, nil
}

func parseCA(certPEM, keyPEM []byte, now time.Time) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no CERTIFICATE PEM block", caCertFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caCertFile, err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: certificate is not a CA", caCertFile)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%s: CA expired at %s", caCertFile, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("%s: no PEM block", caKeyFile)
	}
	var parsed any
	switch kb.Type {
	case "PRIVATE KEY":
		parsed, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		parsed, err = x509.ParseECPrivateKey(kb.Bytes)
	default:
		return nil, fmt.Errorf("%s: unexpected PEM block %q", caKeyFile, kb.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", caKeyFile, err)
	}
	key, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: key is %T, want ECDSA", caKeyFile, parsed)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s does not match %s", caKeyFile, caCertFile)
	}
	return &CA{cert: cert, key: key, certPEM: bytes.Clone(certPEM)}, nil
}

// Fingerprint returns "sha256:<hex>" of the CA certificate's DER bytes, the
// form shown to operators (like kubeadm's discovery hash).
func (ca *CA) Fingerprint() string {
	sum := ca.FingerprintSum()
	return "sha256:" + hex.EncodeToString(sum[:])
}

// FingerprintSum returns the SHA-256 of the CA certificate's DER bytes, the
// value a join token pins.
func (ca *CA) FingerprintSum() [32]byte { return sha256.Sum256(ca.cert.Raw) }

// Pool returns a new pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// CertPEM returns a copy of the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// ServerCert issues a serving certificate for the hub's agent listener and
// console API, valid from now for ttl. Its SANs are 127.0.0.1, ::1,
// localhost and hosts (IP literals become IP SANs, the rest DNS SANs). The
// chain includes the CA certificate so an enrolling agent can check it
// against the fingerprint in its join token before it trusts the CA.
func (ca *CA) ServerCert(hosts []string, ttl time.Duration, now time.Time) (tls.Certificate, error) {
	if ttl <= 0 {
		return tls.Certificate{}, fmt.Errorf("pki: server cert: ttl %s must be positive", ttl)
	}
	var dns []string
	var ips []net.IP
	seen := map[string]bool{}
	for _, h := range append([]string{"localhost", "127.0.0.1", "::1"}, hosts...) {
		h = strings.TrimSpace(h)
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if !validDNSName(h) {
			return tls.Certificate{}, fmt.Errorf("pki: server cert: host %q is neither an IP address nor a DNS name", h)
		}
		dns = append(dns, h)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: server cert: generate key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: server cert: %w", err)
	}
	cn := "tether-hub"
	if len(hosts) > 0 && strings.TrimSpace(hosts[0]) != "" {
		cn = strings.TrimSpace(hosts[0])
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"tether:hub"}},
		// Valid from the CA's own start: the certificate is re-issued on
		// every hub start, and an agent whose clock lags the hub must not
		// be locked out by a NotBefore of "a few minutes ago".
		NotBefore:             ca.cert.NotBefore,
		NotAfter:              ca.clampNotAfter(now.Add(ttl)),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: server cert for %v: sign: %w", hosts, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki: server cert: parse: %w", err)
	}
	return tls.Certificate{
		Certificate: [][]byte{der, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// SignAgentCSR verifies the CSR's self-signature and key strength and
// issues a client certificate for cluster, valid from now for ttl (capped at
// the CA's own expiry). Everything in the CSR except its public key is
// ignored: the identity is set as described in the package comment.
func (ca *CA) SignAgentCSR(csrDER []byte, cluster string, ttl time.Duration, now time.Time) (certDER []byte, notAfter time.Time, err error) {
	if err := ValidateCluster(cluster); err != nil {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: %w", cluster, err)
	}
	if ttl <= 0 {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: ttl %s must be positive", cluster, ttl)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: %w: %v", cluster, ErrInvalidCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: %w: signature: %v", cluster, ErrInvalidCSR, err)
	}
	if err := checkKey(csr.PublicKey); err != nil {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: %w", cluster, err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: %w", cluster, err)
	}
	notAfter = ca.clampNotAfter(now.Add(ttl))
	if !notAfter.After(now) {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: CA expires at %s", cluster, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	keyUsage := x509.KeyUsageDigitalSignature
	if _, isRSA := csr.PublicKey.(*rsa.PublicKey); isRSA {
		keyUsage |= x509.KeyUsageKeyEncipherment
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cluster, Organization: []string{AgentOrganization}},
		URIs:                  []*url.URL{agentURI(cluster)},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              keyUsage,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	certDER, err = x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("pki: sign agent CSR for %q: %w", cluster, err)
	}
	return certDER, notAfter, nil
}

// VerifyAgentCert checks that cert chains to roots for client auth at now
// and carries an agent identity, and returns its cluster. The hub calls it
// on every connection, after the TLS handshake.
func VerifyAgentCert(cert *x509.Certificate, roots *x509.CertPool, now time.Time) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("pki: verify agent cert: %w: no certificate", ErrNotAgentCert)
	}
	_, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", fmt.Errorf("pki: verify agent cert %q (serial %x): %w: %v", cert.Subject.CommonName, cert.SerialNumber, ErrNotAgentCert, err)
	}
	return ClusterFromCert(cert)
}

// ClusterFromCert returns the cluster an agent certificate names. It checks
// the identity fields only, not the chain; use VerifyAgentCert for that.
func ClusterFromCert(cert *x509.Certificate) (string, error) {
	if cert == nil {
		return "", fmt.Errorf("pki: agent identity: %w: no certificate", ErrNotAgentCert)
	}
	fail := func(format string, args ...any) (string, error) {
		return "", fmt.Errorf("pki: agent identity of %q: %w: %s", cert.Subject.CommonName, ErrNotAgentCert, fmt.Sprintf(format, args...))
	}
	orgs := cert.Subject.Organization
	if len(orgs) != 1 || orgs[0] != AgentOrganization {
		return fail("subject O is %q, want [%q]", orgs, AgentOrganization)
	}
	if len(cert.URIs) != 1 {
		return fail("want exactly one URI SAN, got %d", len(cert.URIs))
	}
	u := cert.URIs[0]
	if u.Scheme != URIScheme || u.Host != URIHost || !strings.HasPrefix(u.Path, "/") {
		return fail("URI SAN %q is not %s://%s/<cluster>", u, URIScheme, URIHost)
	}
	cluster := strings.TrimPrefix(u.Path, "/")
	if err := ValidateCluster(cluster); err != nil {
		return fail("URI SAN %q: %v", u, err)
	}
	if cert.Subject.CommonName != cluster {
		return fail("subject CN %q does not match URI SAN cluster %q", cert.Subject.CommonName, cluster)
	}
	return cluster, nil
}

// ValidateCluster reports whether name can be a cluster identity: "name" or
// "namespace/name", each part 1–63 characters of [a-z0-9.-] starting and
// ending with a letter or digit.
func ValidateCluster(name string) error {
	parts := strings.Split(name, "/")
	if len(parts) > 2 {
		return fmt.Errorf("%w %q: at most one '/'", ErrInvalidCluster, name)
	}
	for _, p := range parts {
		if p == "" || len(p) > 63 {
			return fmt.Errorf("%w %q: each part must be 1-63 characters", ErrInvalidCluster, name)
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
			if !alnum && c != '-' && c != '.' {
				return fmt.Errorf("%w %q: character %q not in [a-z0-9.-]", ErrInvalidCluster, name, c)
			}
			if !alnum && (i == 0 || i == len(p)-1) {
				return fmt.Errorf("%w %q: must start and end with [a-z0-9]", ErrInvalidCluster, name)
			}
		}
	}
	return nil
}

func agentURI(cluster string) *url.URL {
	return &url.URL{Scheme: URIScheme, Host: URIHost, Path: "/" + cluster}
}

func checkKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < MinRSABits {
			return fmt.Errorf("%w: RSA key has %d bits, want at least %d", ErrWeakKey, n, MinRSABits)
		}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
		default:
			return fmt.Errorf("%w: ECDSA curve %s", ErrWeakKey, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("%w: key type %T", ErrWeakKey, pub)
	}
	return nil
}

func (ca *CA) clampNotAfter(t time.Time) time.Time {
	if t.After(ca.cert.NotAfter) {
		return ca.cert.NotAfter
	}
	return t
}

func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("random serial: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func validDNSName(h string) bool {
	if len(h) > 253 {
		return false
	}
	h = strings.TrimPrefix(h, "*.") // wildcard allowed in the leftmost label
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}
