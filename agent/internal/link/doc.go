// Package link keeps an agent connected to its hub: enrolment with a join
// token, then one mutually authenticated TLS connection with a yamux
// session carrying gRPC both ways; heartbeats; certificate rotation; and
// reconnection forever with capped, jittered exponential backoff.
//
// # Layout
//
// One-shot operations, each a single attempt that returns an error, are
// apart from the loops that decide when to try again (as tailscale's
// controlclient keeps direct.go apart from auto.go):
//
//   - direct.go: one attempt each: dial (TCP, TLS, yamux), enrol once,
//     renew the certificate once.
//   - session.go: one connection's session: hello/welcome, desired state
//     received and acknowledged, heartbeats; it ends when the connection
//     does.
//   - drain.go: the outbox drain of one session: batches by kind, acks by
//     sequence number, dead letters.
//   - charts.go, service.go: chart download over the live session, and
//     the hub→agent gRPC service.
//   - auto.go: the loops that own retries: the reconnect loop with its
//     backoff (Run), the enrolment retry loop, and the renewal timer of a
//     session.
//   - identity.go: the stored identity, its renewal time, and the hub's
//     clock as measured from Welcome.
//   - kinds.go: the outbox payload kinds the link sends (one registration
//     per kind; docs/design/outbox.md).
//
// The link owns no goroutine outside Run: a session's goroutines are
// waited for before the session returns, and Close stops the hub→agent
// gRPC server. docs/design/agent.md shows how the link fits the agent.
package link
