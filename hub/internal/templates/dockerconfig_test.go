package templates

import (
	"strings"
	"testing"
)

func TestDockerLogin(t *testing.T) {
	tests := []struct {
		name, data, host, user, pass, err string
	}{
		{"username and password", `{"auths":{"reg.example:5000":{"username":"u","password":"p4ss"}}}`, "reg.example:5000", "u", "p4ss", ""},
		{"auth field", `{"auths":{"https://reg.example/v2/":{"auth":"dTpwNHNz"}}}`, "reg.example", "u", "p4ss", ""},
		{"other host only", `{"auths":{"other.example":{"username":"u","password":"p4ss"}}}`, "reg.example", "", "", `has no auths entry for reg.example`},
		{"not JSON", `p4ss`, "reg.example", "", "", "invalid JSON"},
		{"auth not base64", `{"auths":{"reg.example":{"auth":"p4ss!"}}}`, "reg.example", "", "", "not base64"},
		{"auth without colon", `{"auths":{"reg.example":{"auth":"cDRzcw=="}}}`, "reg.example", "", "", "not username:password"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			u, p, err := dockerLogin([]byte(tc.data), tc.host)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				if strings.Contains(err.Error(), "p4ss") {
					t.Errorf("error shows the secret: %v", err)
				}
				return
			}
			if err != nil || u != tc.user || p != tc.pass {
				t.Fatalf("= %q, %q, %v; want %q, %q", u, p, err, tc.user, tc.pass)
			}
		})
	}
}

// FuzzDockerLogin: a Secret's docker config is untrusted input; decoding
// it never panics and its errors never quote it.
func FuzzDockerLogin(f *testing.F) {
	f.Add([]byte(`{"auths":{"reg.example":{"auth":"dTpwNHNz"}}}`), "reg.example")
	f.Add([]byte(`{"auths":{"https://reg.example/v2/":{"username":"u","password":"p"}}}`), "reg.example")
	f.Add([]byte(`{"auths":null}`), "")
	f.Fuzz(func(t *testing.T, data []byte, host string) {
		_, _, err := dockerLogin(data, host)
		if err != nil && len(data) > 8 && strings.Contains(err.Error(), string(data)) {
			t.Fatalf("error quotes the input: %v", err)
		}
	})
}
