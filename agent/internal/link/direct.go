package link

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/jointoken"
	"github.com/tetherfleet/tether/protocol/tunnel"
	"github.com/tetherfleet/tether/protocol/version"
)

// dialHub opens TCP + TLS + yamux to addr.
func (l *Link) dialHub(ctx context.Context, addr string, tc *tls.Config, srv *grpc.Server) (*tunnel.Session, error) {
	dctx, cancel := context.WithTimeout(ctx, l.cfg.DialTimeout)
	defer cancel()
	raw, err := l.cfg.Dial(dctx, addr)
	if err != nil {
		return nil, fmt.Errorf("dial hub %s: %w", addr, err)
	}
	conn := tls.Client(raw, tc)
	if err := conn.HandshakeContext(dctx); err != nil {
		raw.Close()
		if tunnel.IsBusyRefusal(err) {
			return nil, fmt.Errorf("hub %s: %w", addr, ErrHubBusy)
		}
		if errors.Is(err, ErrPinMismatch) || errors.Is(err, ErrClockSkew) {
			return nil, fmt.Errorf("hub %s: %w", addr, err)
		}
		return nil, fmt.Errorf("hub %s did not complete a TLS handshake as a Tether hub: %w", addr, err)
	}
	sess, err := tunnel.Dial(ctx, conn, l.cfg.Tunnel, srv)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("hub %s: open tunnel: %w", addr, err)
	}
	return sess, nil
}

func (l *Link) curves(tc *tls.Config) {
	if !l.cfg.PostQuantum {
		tc.CurvePreferences = []tls.CurveID{tls.X25519}
	}
}

func (l *Link) enrollOnce(ctx context.Context, hub string, tok jointoken.Token, keyPEM, csr []byte) error {
	tc := enrollTLS(tok, l.hubNow, l.log)
	l.curves(tc)
	sess, err := l.dialHub(ctx, hub, tc, nil)
	if err != nil {
		return err
	}
	defer sess.Close()
	cc, err := sess.ClientConn()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := fleetv1.NewEnrollmentClient(cc).Enroll(cctx, &fleetv1.EnrollRequest{
		Token: l.cfg.Token, CsrDer: csr, AgentVersion: version.Get(),
	})
	if err != nil {
		return err
	}
	if !tok.MatchesCA(resp.GetCaDer()) {
		return fmt.Errorf("%w: enrolment answer carries a CA that is not the one in the join token", ErrPinMismatch)
	}
	id := cache.Identity{
		Cluster:  resp.GetCluster(),
		KeyPEM:   keyPEM,
		CertPEM:  certPEM(resp.GetCertificateDer()),
		CAPEM:    certPEM(resp.GetCaDer()),
		HubAddrs: l.cfg.Hubs,
		NotAfter: resp.GetNotAfter().AsTime(),
		TokenID:  tok.ID,
	}
	if _, err := parseIdentity(id); err != nil {
		return err
	}
	if err := l.cfg.Cache.SaveIdentity(id); err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	if err := l.useIdentity(id); err != nil {
		return err
	}
	l.log.Info("enrolled", "cluster", id.Cluster, "hub", hub, "cert_expires", id.NotAfter)
	return nil
}

// maybeRenew rotates the certificate once it is past its renewal time. The
// new key is made here and never leaves the agent. The renewed identity is
// saved before it is used: if the save fails it is kept pending and only
// the save is retried (renewAt does not move), so a restart never finds
// the old certificate after the agent stopped renewing it.
func (l *Link) maybeRenew(ctx context.Context, client fleetv1.FleetClient) error {
	// renewAt is a point of the certificate's life, which the hub's clock
	// keeps: judge it by the hub's time, not the agent's possibly skewed one.
	now := l.hubNow()
	l.mu.Lock()
	due := !now.Before(l.renewAt)
	id, pending := l.id, l.pendingID
	l.mu.Unlock()
	if pending != nil {
		return l.commitRenewed(*pending)
	}
	if !due {
		return nil
	}
	keyPEM, csr, err := newKey()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := client.Renew(rctx, &fleetv1.RenewRequest{CsrDer: csr})
	if err != nil {
		return err
	}
	id.KeyPEM = keyPEM
	id.CertPEM = certPEM(resp.GetCertificateDer())
	id.NotAfter = resp.GetNotAfter().AsTime()
	if _, err := parseIdentity(id); err != nil {
		return fmt.Errorf("renewed certificate: %w", err)
	}
	return l.commitRenewed(id)
}

// commitRenewed saves a renewed identity, then uses it; on a failed save
// it stays pending for the next attempt.
func (l *Link) commitRenewed(id cache.Identity) error {
	if err := l.cfg.Cache.SaveIdentity(id); err != nil {
		l.mu.Lock()
		l.pendingID = &id
		l.mu.Unlock()
		return fmt.Errorf("save renewed identity (kept in memory; the save is retried): %w", err)
	}
	l.mu.Lock()
	l.pendingID = nil
	l.mu.Unlock()
	if err := l.useIdentity(id); err != nil {
		return err
	}
	l.log.Info("certificate renewed", "cluster", id.Cluster, "expires", id.NotAfter)
	return nil
}
