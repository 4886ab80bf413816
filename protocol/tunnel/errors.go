package tunnel

import (
	"crypto/tls"
	"errors"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrClosed is returned by Session.Err and Session.ClientConn after the
	// session was closed locally with Close.
	ErrClosed = errors.New("tunnel: session closed")
	// ErrNotTunnelConn is returned by the transport credentials when gRPC
	// hands them a connection that did not come from a tunnel Session: the
	// grpc.Server was given to something other than NewServer or Dial.
	ErrNotTunnelConn = errors.New("tunnel: connection was not accepted by a tunnel session")
	// ErrInvalidConfig wraps every Config.Validate failure.
	ErrInvalidConfig = errors.New("tunnel: invalid config")
)

// BusyPrefix starts the plaintext line a hub sends, in place of its TLS
// ServerHello, to a connection it refuses because of its admission limits
// (too many connections, or too many new ones from one address), before
// closing it. An agent that reads it in its handshake knows the hub is up
// and refusing, and backs off.
const BusyPrefix = "tether hub busy"

// IsBusyRefusal reports whether err, from a TLS client handshake, is a
// hub's busy refusal: the first bytes read were BusyPrefix, not a record.
func IsBusyRefusal(err error) bool {
	var rhe tls.RecordHeaderError
	return errors.As(err, &rhe) && string(rhe.RecordHeader[:]) == BusyPrefix[:len(rhe.RecordHeader)]
}
