package link

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/tetherfleet/tether/protocol/jointoken"
)

// ErrPinMismatch: the hub's certificate does not chain to the pinned CA.
var ErrPinMismatch = errors.New("hub certificate does not chain to the pinned CA")

// ErrClockSkew: the hub's certificate is not valid at this agent's clock,
// even allowing MaxClockSkew; fix the clock. Retried, never permanent.
var ErrClockSkew = errors.New("hub certificate is not valid at this agent's clock")

// MaxClockSkew bounds how far the agent's clock may be off the hub's and
// still verify the hub's certificate: its validity is checked at the
// agent's estimate of hub time (its clock plus the skew measured from
// Welcome.server_time), and a chain valid within MaxClockSkew of that is
// accepted with a warning.
const MaxClockSkew = 24 * time.Hour

// verifyChain checks the hub's certificate against roots without a host
// name check: agents reach hubs by IP, NAT address or load-balancer name,
// and the pinned private CA is what proves the hub. now is the agent's
// estimate of hub time.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool, now time.Time, log *slog.Logger) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("hub presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	verify := func(at time.Time) error {
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: at,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		return err
	}
	err := verify(now)
	if err == nil {
		return nil
	}
	var inv x509.CertificateInvalidError
	if !errors.As(err, &inv) || inv.Reason != x509.Expired {
		return fmt.Errorf("%w: %v", ErrPinMismatch, err)
	}
	// Only the time is wrong: find when the presented chain is valid.
	from, until := time.Time{}, time.Time{}
	for _, c := range cs.PeerCertificates {
		if c.NotBefore.After(from) {
			from = c.NotBefore
		}
		if until.IsZero() || c.NotAfter.Before(until) {
			until = c.NotAfter
		}
	}
	at := from.Add(time.Second)
	if now.After(until) {
		at = until.Add(-time.Second)
	}
	if d := at.Sub(now).Abs(); d > MaxClockSkew || verify(at) != nil {
		return fmt.Errorf("%w: the hub's certificate is valid %s to %s, this agent's clock says %s (more than %s off)",
			ErrClockSkew, from.UTC().Format(time.RFC3339), until.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), MaxClockSkew)
	}
	log.Warn("hub certificate is valid only at a time this agent's clock has not reached (or passed); accepting it within the clock skew bound; fix the clock (NTP)",
		"valid_from", from, "valid_until", until, "agent_time", now, "skew_at_least", at.Sub(now).Round(time.Second), "bound", MaxClockSkew)
	return nil
}

// enrollTLS trusts the hub whose chain holds the CA the token pins.
func enrollTLS(tok jointoken.Token, now func() time.Time, log *slog.Logger) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates {
				if tok.MatchesCA(c.Raw) {
					pool := x509.NewCertPool()
					pool.AddCert(c)
					return verifyChain(cs, pool, now(), log)
				}
			}
			return fmt.Errorf("%w: no certificate from the hub has the fingerprint sha256:%s in the join token (wrong hub, or wrong token?)",
				ErrPinMismatch, hex.EncodeToString(tok.CAFingerprint[:]))
		},
	}
}

// mutualTLS presents the agent's certificate and trusts only its hub CA.
func mutualTLS(cert tls.Certificate, ca *x509.Certificate, now func() time.Time, log *slog.Logger) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // replaced by verifyChain against the hub CA
		VerifyConnection:   func(cs tls.ConnectionState) error { return verifyChain(cs, pool, now(), log) },
	}
}

// newKey makes the agent's private key and a CSR for it. The key never
// leaves the agent; the hub sets the identity, not the CSR.
func newKey() (keyPEM, csrDER []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "tether-agent"}}, key)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), csrDER, nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func parseCertPEM(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(blk.Bytes)
}
