package jointoken

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
)

const (
	validID     = "abcdef12"
	validSecret = "abcdefghijklmnopqrstuvwxyz234567"
	validFP     = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	valid       = "tether1." + validID + "." + validSecret + "." + validFP
)

func TestNewRoundTrip(t *testing.T) {
	ca := []byte("pretend this is CA DER")
	fp := sha256.Sum256(ca)
	for range 50 {
		tok, err := New(fp, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if len(tok.ID) != newIDLen || len(tok.Secret) != SecretLen {
			t.Fatalf("New: id %q secret length %d", tok.ID, len(tok.Secret))
		}
		got, err := Parse(tok.String())
		if err != nil {
			t.Fatalf("Parse(New().String()): %v", err)
		}
		if got != tok {
			t.Fatalf("round trip: got %+v, want %+v", got, tok)
		}
		if !got.MatchesCA(ca) {
			t.Fatal("MatchesCA(pinned CA) = false")
		}
		if got.MatchesCA([]byte("another CA")) {
			t.Fatal("MatchesCA(other CA) = true")
		}
	}
}

func TestNewDistinct(t *testing.T) {
	a, err := New([32]byte{}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New([32]byte{}, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == b.ID || a.Secret == b.Secret {
		t.Fatalf("two tokens share ID or secret: %v %v", a.Redacted(), b.Redacted())
	}
}

func TestNewShortRandom(t *testing.T) {
	_, err := New([32]byte{}, bytes.NewReader(make([]byte, 10)))
	if err == nil {
		t.Fatal("New with exhausted random source: want error")
	}
	if _, err := New([32]byte{}, nil); err == nil {
		t.Fatal("New(nil rand): want error")
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string // substring; "" = valid
	}{
		{"valid", valid, ""},
		{"trims whitespace", "  \t" + valid + "\r\n", ""},
		{"min id", "tether1.abc123." + validSecret + "." + validFP, ""},
		{"max id", "tether1.abcdefghij012345." + validSecret + "." + validFP, ""},
		{"empty", "", "empty token"},
		{"only whitespace", " \n ", "empty token"},
		{"garbage", "hello world", "want 4 dot-separated fields, got 1"},
		{"two fields", "tether1.abcdef", "want 4 dot-separated fields, got 2"},
		{"five fields", valid + ".x", "want 4 dot-separated fields, got 5"},
		{"truncated fingerprint", valid[:len(valid)-1], "want 64 hex characters, got 63"},
		{"truncated to id", "tether1." + validID + "..", "field 3 (secret): want 32 characters, got 0"},
		{"wrong version", "tether2." + validID + "." + validSecret + "." + validFP, `unsupported token version "tether2"`},
		{"wrong prefix", "kubeadm." + validID + "." + validSecret + "." + validFP, `want prefix "tether1"`},
		{"upper-case prefix", "TETHER1." + validID + "." + validSecret + "." + validFP, `want prefix "tether1"`},
		{"short id", "tether1.abc12." + validSecret + "." + validFP, "field 2 (id): want 6-16 characters, got 5"},
		{"long id", "tether1.abcdefghij0123456." + validSecret + "." + validFP, "got 17"},
		{"upper-case id", "tether1.abcDef12." + validSecret + "." + validFP, `character 4 'D' is upper-case`},
		{"dash in id", "tether1.abc-ef12." + validSecret + "." + validFP, `character 4 '-'`},
		{"inner space", "tether1.abc ef12." + validSecret + "." + validFP, "byte 0x20"},
		{"short secret", "tether1." + validID + "." + validSecret[1:] + "." + validFP, "want 32 characters, got 31"},
		{"upper-case secret", "tether1." + validID + ".ABCDEFGHIJKLMNOPQRSTUVWXYZ234567." + validFP, "character 1 is not in [a-z2-7]"},
		{"secret with 1", "tether1." + validID + ".abcdefghijklmnopqrstuvwxyz234561." + validFP, "character 32 is not in [a-z2-7]"},
		{"upper-case fingerprint", "tether1." + validID + "." + validSecret + "." + strings.ToUpper(validFP), "is upper-case"},
		{"non-hex fingerprint", "tether1." + validID + "." + validSecret + ".g" + validFP[1:], `character 1 'g'`},
		{"utf8", "tether1.ábcdef1." + validSecret + "." + validFP, "byte 0xc3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Parse(tt.in)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if again, err := Parse(tok.String()); err != nil || again != tok {
					t.Fatalf("re-parse: %v, %+v", err, again)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error containing %q", tt.in, tok, tt.wantErr)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.HasPrefix(err.Error(), "jointoken: parse: ") {
				t.Errorf("error %q lacks the jointoken: parse: prefix", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), validSecret) || strings.Contains(strings.ToLower(err.Error()), "abcdefghijklmnop") {
				t.Errorf("error %q leaks the secret", err)
			}
		})
	}
}

func TestSecretHashAndRedacted(t *testing.T) {
	tok, err := Parse(valid)
	if err != nil {
		t.Fatal(err)
	}
	if tok.SecretHash() != sha256.Sum256([]byte(validSecret)) {
		t.Error("SecretHash is not sha256(secret)")
	}
	r := tok.Redacted()
	if strings.Contains(r, validSecret) || !strings.Contains(r, validID) {
		t.Errorf("Redacted() = %q", r)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(valid)
	f.Add(" " + valid + "\n")
	f.Add("tether1...")
	f.Add("tether2.a.b.c")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		again, err := Parse(tok.String())
		if err != nil {
			t.Fatalf("Parse(%q) ok but re-parse of %q failed: %v", s, tok.String(), err)
		}
		if again != tok {
			t.Fatalf("round trip changed token: %+v != %+v", again, tok)
		}
		if tok.String() != strings.TrimSpace(s) {
			t.Fatalf("accepted non-canonical spelling %q (canonical %q)", s, tok.String())
		}
	})
}
