//go:build tools

// Package tools pins sigs.k8s.io/kwok in this module's go.mod; the binary
// is built straight from sigs.k8s.io/kwok/cmd/kwok.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
