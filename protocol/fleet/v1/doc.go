// Package fleetv1 is the wire contract between the Tether hub and its
// agents (protobuf package tether.fleet.v1), generated from fleet.proto.
//
// The agent calls Enrollment (without a client certificate) and Fleet
// (mTLS; identity from the certificate); the hub calls Agent. All of them
// run over one tunnel per agent, see package
// github.com/tetherfleet/tether/protocol/tunnel.
//
// Regenerate with `make proto`; `make proto-check` fails when the
// committed *.pb.go files are stale.
package fleetv1
