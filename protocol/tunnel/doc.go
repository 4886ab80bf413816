// Package tunnel carries gRPC in both directions over the one connection an
// agent dials to the hub: TLS 1.3, then a hashicorp/yamux session, then one
// gRPC transport per yamux stream.
//
// # Roles
//
// The agent is the yamux client and the hub the yamux server, but both ends
// serve gRPC: the agent opens streams to call the hub (Enrollment, Fleet),
// and the hub opens streams to call the agent (Agent). On either end,
// [Session.ClientConn] returns a *grpc.ClientConn whose dialer opens a yamux
// stream, and a *grpc.Server given to [Server] or [Dial] is served on the
// streams the peer opens.
//
//	hub:   srv := grpc.NewServer(tunnel.ServerOptions(cfg)...)
//	       ts, _ := tunnel.NewServer(cfg, srv)
//	       sess, err := ts.ServeConn(ctx, tlsConn)   // per accepted agent
//	       agentCC, err := sess.ClientConn()         // hub→agent, on demand
//
//	agent: srv := grpc.NewServer(tunnel.ServerOptions(cfg)...) // hub→agent services, or nil
//	       sess, err := tunnel.Dial(ctx, tlsConn, cfg, srv)
//	       hubCC, err := sess.ClientConn()           // agent→hub
//
// The package does no PKI: it takes an established net.Conn (normally a
// *tls.Conn after the handshake) and reports its TLS state to handlers.
// Handlers learn which session and certificate a call came from with
// [FromContext], because the server is built with [ServerOptions], whose
// transport credentials attach an [AuthInfo] to every gRPC connection.
//
// # Liveness and bounds
//
// yamux keepalive pings are the tunnel's liveness check (gRPC keepalive
// pings are off): a peer that stops answering within
// ConnectionWriteTimeout ends the session, which resets every stream on
// it, so long-lived RPCs such as Fleet.Sync need no deadline of their own.
// With Config.NoKeepAlive an end sends no pings (it still answers the
// peer's) and liveness is the caller's: the hub's gateway closes a session
// whose agent heartbeats stop, the agent keeps its pings. Message sizes, header sizes,
// concurrent gRPC streams, and concurrent gRPC transports per session are
// bounded by [Config].
//
// # Memory
//
// An idle agent costs goroutines and buffers on the hub. The hub runs no
// goroutine per session of its own: one grpc.Server.Serve serves every
// session of a [Server], a stream the peer opens is accepted by a
// goroutine that lives only until it is handed over, and the end of a
// session is noticed when yamux closes its connection. The hub reads a
// *tls.Conn without a buffer of its own (TLS holds a record). The
// hub→agent ClientConn is created only when first asked for and its
// transport is dropped after ClientIdleTimeout without RPCs; gRPC read
// buffers are off and write buffers are shared from a pool. Receive
// windows are credit, not buffers: the hub keeps yamux's smallest
// (DefaultConfig), the agent, which receives charts, a larger one
// (DefaultAgentConfig).
//
// # Throughput
//
// Writes reach TLS in whole records where they can: yamux writes each data
// frame's 12-byte header and body separately, and the tunnel sends the
// header with the start of the body (copying one record's worth, not the
// body); gRPC's write buffer is sized so that a full buffer and its header
// fill whole records. See docs/BENCHMARKS.md ("Tunnel vs plain gRPC") for
// the measurements.
package tunnel
