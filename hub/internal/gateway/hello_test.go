package gateway

import (
	"strings"
	"testing"
)

func TestAgentReportedAPIServerIsCheckedBeforeUse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"", "", true},
		{"https://127.0.0.1:6443", "https://127.0.0.1:6443", true},
		{"http://kube.local", "http://kube.local", true},
		{"https://user:pw@kube.local", "", false},
		{"ftp://kube.local", "", false},
		{"https://", "", false},
		{"not a url at all", "", false},
		{"https://" + strings.Repeat("a", MaxAPIServerLen), "", false},
	} {
		got, ok := apiServerOf(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("apiServerOf(%.40q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
