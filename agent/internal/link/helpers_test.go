package link

import (
	"context"
	"crypto/x509"
	"errors"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// testCA signs certificates for link tests.
type testCA struct{ *linktest.CA }

func newTestCA(t *testing.T, notBefore, notAfter time.Time) *testCA {
	t.Helper()
	return &testCA{linktest.NewCA(t, notBefore, notAfter)}
}

// sign issues a certificate for pub.
func (ca *testCA) sign(t *testing.T, pub any, server bool, notBefore, notAfter time.Time) []byte {
	t.Helper()
	return ca.Sign(t, pub, server, notBefore, notAfter)
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
		CAPEM: certPEM(ca.Cert.Raw), HubAddrs: []string{"hub.invalid:1"}, NotAfter: na,
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
