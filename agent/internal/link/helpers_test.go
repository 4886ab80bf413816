package link

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// testCA signs certificates for link tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: notBefore, NotAfter: notAfter, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

var serials struct {
	sync.Mutex
	n int64
}

// sign issues a certificate for pub.
func (ca *testCA) sign(t *testing.T, pub any, server bool, notBefore, notAfter time.Time) []byte {
	t.Helper()
	serials.Lock()
	serials.n++
	n := serials.n + 1
	serials.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: "edge-1"},
		NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{{Scheme: "tether", Host: "cluster", Path: "/edge-1"}},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.URIs = nil
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// identity returns a cache identity signed by ca, valid over [nb, na].
func (ca *testCA) identity(t *testing.T, nb, na time.Time) cache.Identity {
	t.Helper()
	keyPEM, csrDER, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	return cache.Identity{
		Cluster: "edge-1", KeyPEM: keyPEM, CertPEM: certPEM(ca.sign(t, csr.PublicKey, false, nb, na)),
		CAPEM: certPEM(ca.cert.Raw), HubAddrs: []string{"hub.invalid:1"}, NotAfter: na,
	}
}

// memCache is a Cache in memory whose SaveIdentity fails while failSaves
// is positive.
type memCache struct {
	mu        sync.Mutex
	id        *cache.Identity
	ls        cache.LinkState
	failSaves int
	saves     int
}

func (m *memCache) Identity() (cache.Identity, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.id == nil {
		return cache.Identity{}, cache.ErrNoIdentity
	}
	return *m.id, nil
}

func (m *memCache) SaveIdentity(id cache.Identity) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failSaves > 0 {
		m.failSaves--
		return errors.New("disk full")
	}
	m.saves++
	m.id = &id
	return nil
}

func (m *memCache) SaveLinkState(ls cache.LinkState) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ls = ls
	return nil
}

func (m *memCache) linkState() cache.LinkState {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ls
}

// renewClient is a FleetClient whose Renew signs with ca.
type renewClient struct {
	fleetv1.FleetClient
	t     *testing.T
	ca    *testCA
	now   func() time.Time
	calls int
}

func (c *renewClient) Renew(_ context.Context, req *fleetv1.RenewRequest, _ ...grpc.CallOption) (*fleetv1.RenewResponse, error) {
	c.calls++
	csr, err := x509.ParseCertificateRequest(req.GetCsrDer())
	if err != nil {
		return nil, err
	}
	na := c.now().Add(30 * 24 * time.Hour)
	der := c.ca.sign(c.t, csr.PublicKey, false, c.now().Add(-5*time.Minute), na)
	return &fleetv1.RenewResponse{CertificateDer: der, NotAfter: timestamppb.New(na)}, nil
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func welcomeAt(t time.Time) *fleetv1.Welcome {
	return &fleetv1.Welcome{ServerTime: timestamppb.New(t)}
}
