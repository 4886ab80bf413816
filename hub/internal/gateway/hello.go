package gateway

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds of what an agent says about itself; the hub stores and shows it.
const (
	// MaxHostnameLen is a DNS name's longest form.
	MaxHostnameLen = 253
	// MaxAgentVersionLen is far above any semantic version with metadata.
	MaxAgentVersionLen = 64
)

// checkAgentInfo refuses an agent version or hostname over its bound.
func checkAgentInfo(what, version, hostname string) error {
	if len(version) > MaxAgentVersionLen {
		return status.Errorf(codes.InvalidArgument, "%s: agent version is %d bytes, at most %d", what, len(version), MaxAgentVersionLen)
	}
	if len(hostname) > MaxHostnameLen {
		return status.Errorf(codes.InvalidArgument, "%s: hostname is %d bytes, at most %d", what, len(hostname), MaxHostnameLen)
	}
	return nil
}
