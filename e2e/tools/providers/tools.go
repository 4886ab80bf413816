//go:build tools

// Package tools pins the Cluster API infrastructure providers (CAPA, CAPZ,
// CAPV, CAPO) in this module's go.mod. Only their CRD manifests are used: the
// build script fetches the module zips with `go mod download` and copies
// config/crd/bases/*.yaml; no provider code is compiled, so nothing is
// imported here.
package tools
