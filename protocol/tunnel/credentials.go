package tunnel

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// AuthInfo is the peer information gRPC handlers and clients on a tunnel
// see in peer.FromContext(ctx).AuthInfo.
type AuthInfo struct {
	credentials.CommonAuthInfo
	// TLS is the tunnel connection's TLS state (the peer's certificates are
	// in TLS.PeerCertificates); nil when the connection is not TLS.
	TLS *tls.ConnectionState
	// Session is the tunnel the call came in on: the hub uses it to call
	// back into the same agent, or to close the tunnel on revocation.
	Session *Session
}

// AuthType implements credentials.AuthInfo.
func (AuthInfo) AuthType() string { return authType }

const authType = "tether-tunnel"

// FromContext returns the tunnel AuthInfo of the gRPC call ctx belongs to;
// false if the call did not come through a tunnel session whose server was
// built with ServerOptions.
func FromContext(ctx context.Context) (AuthInfo, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return AuthInfo{}, false
	}
	ai, ok := p.AuthInfo.(AuthInfo)
	return ai, ok
}

// transportCredentials does no handshake of its own (the tunnel's TLS
// already protects every stream); it attaches the session and TLS state to
// each gRPC connection.
type transportCredentials struct{}

func (transportCredentials) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return handshake(conn)
}

func (transportCredentials) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return handshake(conn)
}

func handshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	sc, ok := conn.(*streamConn)
	if !ok {
		return nil, nil, fmt.Errorf("%w: got %T from %s", ErrNotTunnelConn, conn, addrString(conn.RemoteAddr()))
	}
	level := credentials.NoSecurity
	if sc.s.tls != nil {
		level = credentials.PrivacyAndIntegrity
	}
	return sc, AuthInfo{
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: level},
		TLS:            sc.s.tls,
		Session:        sc.s,
	}, nil
}

func (transportCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: authType}
}

func (c transportCredentials) Clone() credentials.TransportCredentials { return c }

func (transportCredentials) OverrideServerName(string) error { return nil }
