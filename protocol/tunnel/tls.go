package tunnel

import (
	"crypto/tls"
	"crypto/x509"
)

// ServerTLSConfig returns a hub TLS config that requires TLS 1.3 and
// asks for (but does not require) a client certificate signed by clientCAs,
// since Enrollment runs before the agent has one. The hub must refuse every
// call but Enroll when TLS.PeerCertificates is empty.
func ServerTLSConfig(cert tls.Certificate, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    clientCAs,
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
}

// ClientTLSConfig returns an agent TLS config that requires TLS 1.3,
// trusts only rootCAs (the pinned hub CA) for serverName, and presents
// cert when it is not nil.
func ClientTLSConfig(serverName string, rootCAs *x509.CertPool, cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		RootCAs:    rootCAs,
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}
