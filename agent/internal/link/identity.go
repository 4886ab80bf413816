package link

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// certExpired returns an ErrCertExpired error that says what to do when the
// agent's certificate has expired by the hub's clock.
func (l *Link) certExpired() error {
	now := l.hubNow()
	l.mu.Lock()
	notAfter, cluster := l.st.CertExpires, l.id.Cluster
	l.mu.Unlock()
	if notAfter.IsZero() || now.Before(notAfter) {
		return nil
	}
	return fmt.Errorf("%w at %s; re-enrol with a new token: tether token create --cluster %s, then run tether-agent with --token",
		ErrCertExpired, notAfter.UTC().Format(time.RFC3339), cluster)
}

// HubNow is the agent's estimate of the hub's clock (its own before a
// first Welcome).
func (l *Link) HubNow() time.Time { return l.hubNow() }

// hubNow is the agent's estimate of the hub's clock.
func (l *Link) hubNow() time.Time {
	l.mu.Lock()
	skew := l.skew
	l.mu.Unlock()
	return l.cfg.Now().Add(skew)
}

// noteServerTime measures the clock skew from a Welcome.
func (l *Link) noteServerTime(w *fleetv1.Welcome, hub string) {
	if w.GetServerTime() == nil {
		return
	}
	skew := w.GetServerTime().AsTime().Sub(l.cfg.Now())
	if skew.Abs() > MaxClockSkew {
		l.log.Error("agent clock is off the hub's by more than the bound; not correcting for it; fix the clock (NTP)", "hub", hub, "skew", skew.Round(time.Second), "bound", MaxClockSkew)
		skew = 0
	} else if skew.Abs() > time.Minute {
		l.log.Warn("agent clock is off the hub's; certificate times are checked at hub time", "hub", hub, "skew", skew.Round(time.Second))
	}
	l.mu.Lock()
	l.skew = skew
	l.mu.Unlock()
}

func (l *Link) loadIdentity() error {
	id, err := l.cfg.Cache.Identity()
	if err != nil {
		return err
	}
	if len(l.cfg.Hubs) > 0 && !slices.Equal(id.HubAddrs, l.cfg.Hubs) {
		id.HubAddrs = l.cfg.Hubs
		if err := l.cfg.Cache.SaveIdentity(id); err != nil {
			return err
		}
	}
	return l.useIdentity(id)
}

// parsedIdentity is an identity ready for TLS.
type parsedIdentity struct {
	cert tls.Certificate
	ca   *x509.Certificate
	leaf *x509.Certificate
}

func parseIdentity(id cache.Identity) (parsedIdentity, error) {
	cert, err := tls.X509KeyPair(id.CertPEM, id.KeyPEM)
	if err != nil {
		return parsedIdentity{}, fmt.Errorf("link: stored identity of cluster %q: %w", id.Cluster, err)
	}
	ca, err := parseCertPEM(id.CAPEM)
	if err != nil {
		return parsedIdentity{}, fmt.Errorf("link: stored hub CA: %w", err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return parsedIdentity{}, fmt.Errorf("link: stored certificate: %w", err)
	}
	return parsedIdentity{cert: cert, ca: ca, leaf: leaf}, nil
}

func (l *Link) useIdentity(id cache.Identity) error {
	p, err := parseIdentity(id)
	if err != nil {
		return err
	}
	if len(id.HubAddrs) == 0 && len(l.cfg.Hubs) == 0 {
		return fmt.Errorf("link: cluster %q: no hub address stored or given (--hub)", id.Cluster)
	}
	leaf := p.leaf
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	// Renew at about 2/3 of the lifetime, jittered so a fleet enrolled
	// together does not renew together.
	renewAt := leaf.NotBefore.Add(time.Duration(float64(life) * (0.6 + 0.13*rand.Float64())))
	l.mu.Lock()
	l.id, l.cert, l.ca, l.renewAt = id, p.cert, p.ca, renewAt
	l.st.Cluster = id.Cluster
	l.st.CertExpires = leaf.NotAfter
	l.mu.Unlock()
	return nil
}
