package api

import (
	"strings"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

func TestRedactURLHidesEveryFormOfUserinfo(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"https://charts.example.com/stable", "https://charts.example.com/stable"},
		{"https://user:pass@charts.example.com/x?y=1", "https://" + Redacted + "@charts.example.com/x?y=1"},
		{"oci://tokenonly@ghcr.io/acme", "oci://" + Redacted + "@ghcr.io/acme"},
		{"https://u:p%40ss@h:8443/", "https://" + Redacted + "@h:8443/"},
		{"https://:@h/", "https://" + Redacted + "@h/"},
		{"%zz://a:b@h", Redacted},
	} {
		got, _ := redactURL(tt.in)
		if got != tt.want {
			t.Errorf("redactURL(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestRedactForAdminChangesNothing(t *testing.T) {
	s := &objects.Secret{Data: map[string][]byte{"k": []byte("v")}}
	redactFor(RoleAdmin, s)
	if string(s.Data["k"]) != "v" || s.StringData != nil || s.Metadata.Annotations != nil {
		t.Fatalf("admin view changed: %+v", s)
	}
	redactFor(RoleViewer, s)
	if s.Data != nil || s.StringData["k"] != Redacted || !strings.Contains(s.Metadata.Annotations[AnnotationRedacted], "role viewer") {
		t.Fatalf("viewer view: %+v", s)
	}
	empty := &objects.Secret{}
	redactFor(RoleViewer, empty)
	if empty.Metadata.Annotations != nil {
		t.Fatalf("a secret with no data got annotated: %+v", empty)
	}
}
