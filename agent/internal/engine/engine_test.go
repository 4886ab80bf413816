package engine

import "testing"

func TestHashLabel(t *testing.T) {
	if got := HashLabel("v1"); got != "v1" {
		t.Errorf("HashLabel(v1) = %q", got)
	}
	long := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef+values"
	got := HashLabel(long)
	if len(got) > 63 || got == long || got != HashLabel(long) || got == HashLabel(long+"x") {
		t.Errorf("HashLabel(long) = %q: want a stable, distinct label value", got)
	}
}
