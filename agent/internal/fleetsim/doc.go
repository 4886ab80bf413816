// Package fleetsim is the fleet-scale simulator behind tether-fleetsim:
// thousands of simulated agents in one process, each running the real
// agent link (enrolment, TLS, yamux, gRPC, the status outbox drain)
// against a real hub. It is the one agent that does not run Helm: a
// simulated agent keeps its identity, desired state and outbox in memory,
// and "deploys" each changed service after a configurable delay by
// queueing the same StatusReport the reconciler queues (Deployed, or
// Failed for a seeded share of the agents). An outage schedule, chosen by
// the seed, takes agents dark and back; a loopback control API lets tests
// do the same and read every agent's state.
//
// It is a test and measurement tool: never point it at a production hub.
package fleetsim
