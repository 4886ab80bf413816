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

	"github.com/tetherfleet/tether/protocol/jointoken"
)

// ErrPinMismatch: the hub's certificate does not chain to the pinned CA.
var ErrPinMismatch = errors.New("hub certificate does not chain to the pinned CA")

// verifyChain checks the hub's certificate against roots without a host
// name check: agents reach hubs by IP, NAT address or load-balancer name,
// and the pinned private CA is what proves the hub.
func verifyChain(cs tls.ConnectionState, roots *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("hub presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPinMismatch, err)
	}
	return nil
}

// enrollTLS trusts the hub whose chain holds the CA the token pins.
func enrollTLS(tok jointoken.Token) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyConnection: func(cs tls.ConnectionState) error {
			for _, c := range cs.PeerCertificates {
				if tok.MatchesCA(c.Raw) {
					pool := x509.NewCertPool()
					pool.AddCert(c)
					return verifyChain(cs, pool)
				}
			}
			return fmt.Errorf("%w: no certificate from the hub has the fingerprint sha256:%s in the join token (wrong hub, or wrong token?)",
				ErrPinMismatch, hex.EncodeToString(tok.CAFingerprint[:]))
		},
	}
}

// mutualTLS presents the agent's certificate and trusts only its hub CA.
func mutualTLS(cert tls.Certificate, ca *x509.Certificate) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{cert},
		InsecureSkipVerify: true, // replaced by verifyChain against the hub CA
		VerifyConnection:   func(cs tls.ConnectionState) error { return verifyChain(cs, pool) },
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
