package gateway

import (
	"net/url"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Bounds of what an agent says about itself; the hub stores and shows it.
const (
	// MaxHostnameLen is a DNS name's longest form.
	MaxHostnameLen = 253
	// MaxAgentVersionLen is far above any semantic version with metadata.
	MaxAgentVersionLen = 64
	// MaxAPIServerLen bounds the kube-apiserver URL an agent reports.
	MaxAPIServerLen = 512
)

// apiServerOf returns the kube-apiserver URL an agent reported if it is a
// plausible one (http or https, a host, within MaxAPIServerLen), else "":
// it only feeds that cluster's own values templates, so a bad one is
// dropped (and logged by the caller), not a reason to refuse the agent.
func apiServerOf(raw string) (string, bool) {
	if raw == "" {
		return "", true
	}
	if len(raw) > MaxAPIServerLen {
		return "", false
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User != nil {
		return "", false
	}
	return u.String(), true
}

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
