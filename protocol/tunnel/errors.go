package tunnel

import "errors"

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
