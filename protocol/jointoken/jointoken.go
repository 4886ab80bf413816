// Package jointoken defines the join token an operator hands to a new agent.
//
// A token is four dot-separated fields:
//
//	tether1.<id>.<secret>.<ca-fingerprint>
//
//	tether1         prefix "tether" and format version 1.
//	id              6–16 characters [a-z0-9]; public, names the token in the
//	                hub's records and in logs.
//	secret          exactly 32 characters of lower-case base32 ([a-z2-7]),
//	                160 random bits. The hub stores only SecretHash.
//	ca-fingerprint  64 lower-case hex characters: SHA-256 of the hub CA
//	                certificate's DER bytes. The agent pins this CA before it
//	                sends anything secret (like kubeadm's discovery hash).
//
// Hub addresses are not part of the token; the agent is given them with --hub.
//
// Parse trims surrounding whitespace, because tokens are pasted by people,
// but is otherwise strict: upper-case letters are rejected rather than
// folded, so every token has exactly one spelling. Parse errors never
// contain the secret.
package jointoken

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Format constants.
const (
	// Prefix is the first field of every token: name and format version.
	Prefix = "tether1"

	// MinIDLen and MaxIDLen bound the length of the token ID.
	MinIDLen = 6
	MaxIDLen = 16

	// SecretLen is the length of the secret field (20 random bytes in base32).
	SecretLen = 32

	// newIDLen is the ID length New generates.
	newIDLen     = 8
	secretBytes  = 20
	idAlphabet   = "abcdefghijklmnopqrstuvwxyz0123456789"
	fingerprintN = 2 * sha256.Size
)

// ErrMalformed is wrapped by every error Parse returns.
var ErrMalformed = errors.New("malformed join token")

// Token is a parsed join token.
type Token struct {
	// ID names the token; it is not secret.
	ID string
	// Secret authenticates the agent to the hub. Never log it; use Redacted.
	Secret string
	// CAFingerprint is the SHA-256 of the hub CA certificate's DER bytes.
	CAFingerprint [32]byte
}

// New returns a token with a random ID and secret read from rand, pinned to
// the CA whose DER SHA-256 is caFingerprint.
func New(caFingerprint [32]byte, rand io.Reader) (Token, error) {
	if rand == nil {
		return Token{}, errors.New("jointoken: new: nil random source")
	}
	id, err := randomID(rand, newIDLen)
	if err != nil {
		return Token{}, fmt.Errorf("jointoken: new: read random ID: %w", err)
	}
	var b [secretBytes]byte
	if _, err := io.ReadFull(rand, b[:]); err != nil {
		return Token{}, fmt.Errorf("jointoken: new: read random secret: %w", err)
	}
	enc := base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	return Token{ID: id, Secret: enc.EncodeToString(b[:]), CAFingerprint: caFingerprint}, nil
}

// randomID draws n characters uniformly from idAlphabet by rejection sampling.
func randomID(rand io.Reader, n int) (string, error) {
	const limit = 256 - 256%len(idAlphabet) // largest multiple of 36 ≤ 256
	out := make([]byte, 0, n)
	var buf [32]byte
	for len(out) < n {
		if _, err := io.ReadFull(rand, buf[:]); err != nil {
			return "", err
		}
		for _, c := range buf {
			if int(c) < limit && len(out) < n {
				out = append(out, idAlphabet[int(c)%len(idAlphabet)])
			}
		}
	}
	return string(out), nil
}

// String returns the token in its wire form. The result contains the secret.
func (t Token) String() string {
	return Prefix + "." + t.ID + "." + t.Secret + "." + hex.EncodeToString(t.CAFingerprint[:])
}

// Redacted returns the token with the secret replaced, for logs and errors.
func (t Token) Redacted() string {
	return Prefix + "." + t.ID + ".<redacted>." + hex.EncodeToString(t.CAFingerprint[:])
}

// SecretHash is the SHA-256 of the secret: what the hub stores and compares.
func (t Token) SecretHash() [32]byte {
	return sha256.Sum256([]byte(t.Secret))
}

// MatchesCA reports, in constant time, whether certDER is the CA the token
// pins.
func (t Token) MatchesCA(certDER []byte) bool {
	sum := sha256.Sum256(certDER)
	return subtle.ConstantTimeCompare(sum[:], t.CAFingerprint[:]) == 1
}

// parseError is the error type returned by Parse; it wraps ErrMalformed.
type parseError struct{ msg string }

func (e *parseError) Error() string { return "jointoken: parse: " + e.msg }
func (e *parseError) Unwrap() error { return ErrMalformed }

func errorf(format string, args ...any) error {
	return &parseError{msg: fmt.Sprintf(format, args...)}
}

// Parse parses a token in the form documented on the package. Surrounding
// whitespace is trimmed. Errors wrap ErrMalformed and never echo the secret.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Token{}, errorf("empty token")
	}
	fields := strings.Split(s, ".")
	if len(fields) != 4 {
		return Token{}, errorf("want 4 dot-separated fields, got %d", len(fields))
	}
	prefix, id, secret, fp := fields[0], fields[1], fields[2], fields[3]

	if prefix != Prefix {
		if strings.HasPrefix(prefix, "tether") && len(prefix) <= len(Prefix)+4 && isDigits(prefix[len("tether"):]) {
			return Token{}, errorf("unsupported token version %q (this build reads %q)", prefix, Prefix)
		}
		return Token{}, errorf("field 1: want prefix %q, got %q", Prefix, clip(prefix))
	}
	if n := len(id); n < MinIDLen || n > MaxIDLen {
		return Token{}, errorf("field 2 (id): want %d-%d characters, got %d", MinIDLen, MaxIDLen, n)
	}
	if i := indexNotIn(id, isIDChar); i >= 0 {
		return Token{}, errorf("field 2 (id): character %d %s: want [a-z0-9]", i+1, describe(id[i]))
	}
	if n := len(secret); n != SecretLen {
		return Token{}, errorf("field 3 (secret): want %d characters, got %d", SecretLen, n)
	}
	if i := indexNotIn(secret, isSecretChar); i >= 0 {
		// Position only: never echo secret material.
		return Token{}, errorf("field 3 (secret): character %d is not in [a-z2-7]", i+1)
	}
	if n := len(fp); n != fingerprintN {
		return Token{}, errorf("field 4 (CA fingerprint): want %d hex characters, got %d", fingerprintN, n)
	}
	if i := indexNotIn(fp, isLowerHex); i >= 0 {
		return Token{}, errorf("field 4 (CA fingerprint): character %d %s: want [0-9a-f]", i+1, describe(fp[i]))
	}
	var t Token
	if _, err := hex.Decode(t.CAFingerprint[:], []byte(fp)); err != nil {
		return Token{}, errorf("field 4 (CA fingerprint): %v", err)
	}
	t.ID, t.Secret = id, secret
	return t, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isIDChar(c byte) bool     { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
func isSecretChar(c byte) bool { return c >= 'a' && c <= 'z' || c >= '2' && c <= '7' }
func isLowerHex(c byte) bool   { return c >= 'a' && c <= 'f' || c >= '0' && c <= '9' }

func indexNotIn(s string, ok func(byte) bool) int {
	for i := 0; i < len(s); i++ {
		if !ok(s[i]) {
			return i
		}
	}
	return -1
}

func describe(c byte) string {
	switch {
	case c >= 'A' && c <= 'Z':
		return fmt.Sprintf("%q is upper-case", c)
	case c > 0x20 && c < 0x7f:
		return fmt.Sprintf("%q", c)
	default:
		return fmt.Sprintf("byte 0x%02x", c)
	}
}

// clip shortens untrusted input echoed in errors.
func clip(s string) string {
	const max = 16
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
