package charts

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
)

// Credentials are a repository's username and password (Flux's secretRef
// Secret). They are sent as HTTP basic auth to an index.yaml repository's
// own host (other hosts only with RepoRef.PassCredentials) and used to log
// in to an OCI registry. They never appear in errors or logs: String and
// LogValue redact them.
type Credentials struct {
	Username, Password string
}

// String implements fmt.Stringer without the secret.
func (Credentials) String() string { return "Credentials{redacted}" }

// GoString implements fmt.GoStringer without the secret.
func (Credentials) GoString() string { return "charts.Credentials{redacted}" }

// LogValue implements slog.LogValuer without the secret.
func (Credentials) LogValue() slog.Value { return slog.StringValue("redacted") }

// MarshalJSON keeps the secret out of JSON (a JSON log line).
func (Credentials) MarshalJSON() ([]byte, error) { return []byte(`"redacted"`), nil }

// TLS is a repository's TLS material in PEM (Flux's certSecretRef Secret):
// CA (ca.crt) is trusted besides the system roots; Cert and Key (tls.crt,
// tls.key) are presented as a client certificate. Either part may be
// empty, but Cert and Key go together.
type TLS struct {
	CA, Cert, Key []byte
}

// String implements fmt.Stringer without the key.
func (TLS) String() string { return "TLS{redacted}" }

// GoString implements fmt.GoStringer without the key.
func (TLS) GoString() string { return "charts.TLS{redacted}" }

// LogValue implements slog.LogValuer without the key.
func (TLS) LogValue() slog.Value { return slog.StringValue("redacted") }

// MarshalJSON keeps the key out of JSON (a JSON log line).
func (TLS) MarshalJSON() ([]byte, error) { return []byte(`"redacted"`), nil }

// Config returns the client TLS configuration, or an error (wrapping
// ErrInvalidRequest) naming the part that does not parse. Errors never
// quote the material.
func (t *TLS) Config() (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(t.CA) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(t.CA) {
			return nil, fmt.Errorf("ca.crt holds no PEM certificate: %w", ErrInvalidRequest)
		}
		c.RootCAs = pool
	}
	switch {
	case len(t.Cert) > 0 && len(t.Key) > 0:
		pair, err := tls.X509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, fmt.Errorf("tls.crt/tls.key: %v: %w", err, ErrInvalidRequest)
		}
		c.Certificates = []tls.Certificate{pair}
	case len(t.Cert) > 0:
		return nil, fmt.Errorf("tls.crt without tls.key: %w", ErrInvalidRequest)
	case len(t.Key) > 0:
		return nil, fmt.Errorf("tls.key without tls.crt: %w", ErrInvalidRequest)
	}
	return c, nil
}

// authenticated reports whether the repository is read with credentials
// or a client certificate: then a stored chart is only handed out after
// the repository accepted them.
func (r RepoRef) authenticated() bool {
	return r.Credentials != nil || (r.TLS != nil && len(r.TLS.Cert) > 0)
}

// accessKey distinguishes concurrent resolutions of the same chart with
// different credentials or TLS settings, so one never inherits another's
// result. It is kept in memory only.
func (r RepoRef) accessKey() string {
	h := sha256.New()
	for _, s := range []string{r.Type, fmt.Sprint(r.Insecure, r.InsecureSkipTLSVerify, r.PassCredentials)} {
		h.Write([]byte(s + "\x00"))
	}
	if c := r.Credentials; c != nil {
		h.Write([]byte("creds\x00" + c.Username + "\x00" + c.Password + "\x00"))
	}
	if t := r.TLS; t != nil {
		for _, b := range [][]byte{t.CA, t.Cert, t.Key} {
			h.Write([]byte(fmt.Sprintf("%d\x00", len(b))))
			h.Write(b)
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// scrub removes the repository's password (and its basic-auth encoding)
// from an error's text, in case a server or library echoed it; errors.Is
// and errors.As still see the original chain.
func scrub(err error, c *Credentials) error {
	if err == nil || c == nil || len(c.Password) < 4 {
		return err
	}
	msg := err.Error()
	basic := base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password))
	clean := strings.ReplaceAll(strings.ReplaceAll(msg, basic, "[redacted]"), c.Password, "[redacted]")
	if clean == msg {
		return err
	}
	return &scrubbed{msg: clean, err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// client returns the HTTP client for ref: the configured one, or a copy
// with its own transport when the repository has TLS settings. done
// releases the copy's idle connections.
func (s *Store) client(ref RepoRef) (c *http.Client, done func(), err error) {
	base := s.cfg.HTTPClient
	if ref.TLS == nil && !ref.InsecureSkipTLSVerify {
		return base, func() {}, nil
	}
	var tr *http.Transport
	switch t := base.Transport.(type) {
	case nil:
		tr = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		tr = t.Clone()
	default:
		return nil, nil, fmt.Errorf("repository TLS settings need an *http.Transport, the hub's HTTP client has %T: %w", t, ErrUnsupported)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if tr.TLSClientConfig != nil {
		tc = tr.TLSClientConfig.Clone()
	}
	if ref.TLS != nil {
		rc, err := ref.TLS.Config()
		if err != nil {
			return nil, nil, fmt.Errorf("certSecretRef: %w", err)
		}
		if rc.RootCAs != nil {
			tc.RootCAs = rc.RootCAs
		}
		if len(rc.Certificates) > 0 {
			tc.Certificates = rc.Certificates
		}
	}
	tc.InsecureSkipVerify = ref.InsecureSkipTLSVerify
	tr.TLSClientConfig = tc
	cp := *base
	cp.Transport = tr
	return &cp, tr.CloseIdleConnections, nil
}

// sameOrigin reports whether two URLs have the same scheme and host:port,
// the test for sending a repository's credentials (as Helm's).
func sameOrigin(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	return err1 == nil && err2 == nil && ua.Scheme == ub.Scheme && strings.EqualFold(ua.Host, ub.Host)
}

// boundedTransport is the OCI client's transport. Helm's registry client
// makes its requests with context.Background, so this ties every request
// to the resolution's context, and it caps every response body at max
// bytes (the registry client keeps whole blobs in memory), remembering
// when it did.
type boundedTransport struct {
	ctx  context.Context
	base http.RoundTripper
	max  int64
	hit  atomic.Bool
}

func (b *boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rctx, cancel := context.WithCancelCause(req.Context())
	stop := context.AfterFunc(b.ctx, func() { cancel(context.Cause(b.ctx)) })
	release := func() { stop(); cancel(nil) }
	resp, err := b.base.RoundTrip(req.WithContext(rctx))
	if err != nil {
		release()
		if b.ctx.Err() != nil {
			return nil, context.Cause(b.ctx)
		}
		return nil, err
	}
	if resp.ContentLength > b.max {
		resp.Body.Close()
		release()
		b.hit.Store(true)
		return nil, fmt.Errorf("%s %s: %d bytes, more than the limit of %d: %w", req.Method, req.URL.Redacted(), resp.ContentLength, b.max, ErrTooLarge)
	}
	resp.Body = &boundedBody{r: resp.Body, left: b.max, t: b, release: release}
	return resp, nil
}

type boundedBody struct {
	r       io.ReadCloser
	left    int64
	t       *boundedTransport
	release func()
	closed  bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, fmt.Errorf("response body more than the limit of %d bytes: %w", b.t.max, ErrTooLarge)
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		b.t.hit.Store(true)
		return 0, fmt.Errorf("response body more than the limit of %d bytes: %w", b.t.max, ErrTooLarge)
	}
	return n, err
}

func (b *boundedBody) Close() error {
	err := b.r.Close()
	if !b.closed {
		b.closed = true
		b.release()
	}
	return err
}

// isUnauthorized is the status test shared by both repository kinds.
func isUnauthorized(code int) bool {
	return code == http.StatusUnauthorized || code == http.StatusForbidden
}

// authHint tells, in an unauthorized error, whether credentials were
// sent, without showing them.
func authHint(c *Credentials) string {
	if c == nil {
		return "sent without credentials"
	}
	return "credentials refused"
}
