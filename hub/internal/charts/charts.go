// Package charts is the hub's content-addressed Helm chart store. A chart
// archive (.tgz) is known by the digest "sha256:<hex>" of its bytes and kept
// once on disk; its metadata lives in the hub store. Charts arrive in three
// ways: Resolve fetches them from a Helm HTTP repository (index.yaml plus the
// archive, the digest checked against the index) or pulls them from an OCI
// registry with Helm's registry client (the chart layer's digest checked
// against the manifest), and Push stores an archive uploaded by `tether
// chart push`, which Resolve then finds in the built-in repository
// "tether-local". Repository credentials and TLS material (RepoRef) are
// used for the request and never stored or logged.
//
// # Layout
//
// Blobs: <Config.Dir>/sha256/<hex>.tgz, written to a temp file in the same
// directory, synced, then renamed, so a reader never sees a partial archive.
//
// Metadata: hub store kind "Chart", cluster-scoped, name = the digest, value
// = JSON Chart. Sources lists every origin the same bytes came from: a
// repository URL (without trailing slash; oci://HOST/PATH for a registry)
// or "push". A (source, chart,
// version) triple maps to at most one digest; the first one recorded wins,
// which is what makes a resolution happen once.
package charts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetherfleet/tether/hub/internal/atomicfile"
	"github.com/tetherfleet/tether/hub/internal/store"
)

// Errors, matched with errors.Is. The wrapping error names the chart,
// version and repository or URL involved.
var (
	// ErrNotFound: the chart, version or digest is not in the repository
	// or the store (also an HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrDigestMismatch: the archive's digest differs from the index's.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrTooLarge: an archive or index exceeds its size bound.
	ErrTooLarge = errors.New("too large")
	// ErrInvalidChart: the bytes are not a loadable Helm chart archive, or
	// the chart is not the one requested.
	ErrInvalidChart = errors.New("invalid chart")
	// ErrInvalidIndex: the repository's index.yaml cannot be parsed.
	ErrInvalidIndex = errors.New("invalid repository index")
	// ErrInvalidDigest: a digest is not "sha256:" followed by 64 lowercase
	// hex digits.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrInvalidRequest: a bad repository reference, chart name or version.
	ErrInvalidRequest = errors.New("invalid request")
	// ErrUnsupported: a URL scheme other than http(s) and oci.
	ErrUnsupported = errors.New("not supported")
	// ErrUnauthorized: the repository or registry answered 401 or 403
	// (missing or wrong credentials). It comes with ErrFetch.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrFetch: an HTTP request failed or returned a non-2xx status
	// other than 404.
	ErrFetch = errors.New("fetch failed")
	// ErrExists: Push of a chart name and version already pushed with
	// different content.
	ErrExists = errors.New("already exists")
)

const (
	// Kind is the hub store kind of chart metadata.
	Kind = "Chart"
	// LocalRepo is the built-in repository holding pushed charts.
	LocalRepo = "tether-local"
	// SourcePush is the source recorded for pushed charts.
	SourcePush = "push"
	// DefaultMaxChartSize bounds a chart archive.
	DefaultMaxChartSize = 20 << 20
	// DefaultMaxIndexSize bounds a repository's index.yaml.
	DefaultMaxIndexSize = 32 << 20
)

// Chart is a stored chart archive.
type Chart struct {
	Digest  string `json:"digest"` // sha256:<hex> of the .tgz bytes
	Name    string `json:"name"`
	Version string `json:"version"`
	Size    int64  `json:"size"`
	// Source is where the archive first came from: a repository URL or
	// "push"; Sources lists every origin since.
	Source  string   `json:"source"`
	Sources []string `json:"sources,omitempty"`
	// AuthSources lists the Sources that were read with credentials or a
	// client certificate: the chart is handed out for them only after
	// the repository accepts the caller's (never from the store alone).
	AuthSources []string  `json:"authSources,omitempty"`
	Added       time.Time `json:"added"`
}

// Config configures a Store. Dir and Store are required.
type Config struct {
	Dir          string      // <data-dir>/charts
	Store        store.Store // hub store for metadata
	HTTPClient   *http.Client
	MaxChartSize int64 // default DefaultMaxChartSize
	MaxIndexSize int64 // default DefaultMaxIndexSize
	Logger       *slog.Logger
	Now          func() time.Time
}

// Validate reports a config that cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("charts: config: Dir is required")
	case c.Store == nil:
		return errors.New("charts: config: Store is required")
	case c.MaxChartSize < 0:
		return fmt.Errorf("charts: config: MaxChartSize %d is negative", c.MaxChartSize)
	case c.MaxIndexSize < 0:
		return fmt.Errorf("charts: config: MaxIndexSize %d is negative", c.MaxIndexSize)
	}
	return nil
}

// Store keeps chart archives and their metadata. It is safe for concurrent
// use and starts no goroutines, so it needs no Close.
type Store struct {
	cfg     Config
	blobDir string
	log     *slog.Logger
	flight  flight
}

// New opens (creating if needed) the chart store in cfg.Dir.
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 5 * time.Minute}
	}
	if cfg.MaxChartSize == 0 {
		cfg.MaxChartSize = DefaultMaxChartSize
	}
	if cfg.MaxIndexSize == 0 {
		cfg.MaxIndexSize = DefaultMaxIndexSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{cfg: cfg, blobDir: filepath.Join(cfg.Dir, "sha256"), log: cfg.Logger}
	if err := os.MkdirAll(s.blobDir, 0o755); err != nil {
		return nil, fmt.Errorf("charts: %w", err)
	}
	s.removeStaleTemps()
	return s, nil
}

// removeStaleTemps deletes temp files a crash left behind. Only old ones:
// another Store on the same directory may be writing a fresh one.
func (s *Store) removeStaleTemps() {
	entries, err := os.ReadDir(s.blobDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if fi, err := e.Info(); err == nil && s.cfg.Now().Sub(fi.ModTime()) > time.Hour {
			_ = os.Remove(filepath.Join(s.blobDir, e.Name()))
		}
	}
}

const tempPrefix = atomicfile.TempPrefix

// Digest returns the content address of an archive.
func Digest(archive []byte) string {
	sum := sha256.Sum256(archive)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CheckDigest reports whether d is a well-formed digest (wraps
// ErrInvalidDigest). Use it on digests from the wire before Open.
func CheckDigest(d string) error {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(h) != 64 {
		return fmt.Errorf("digest %.80q: %w", d, ErrInvalidDigest)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("digest %.80q: %w", d, ErrInvalidDigest)
		}
	}
	return nil
}

func (s *Store) blobPath(digest string) string {
	return filepath.Join(s.blobDir, strings.TrimPrefix(digest, "sha256:")+".tgz")
}

// Open returns a stored archive and its size. Callers that need certainty
// about the bytes (the agent) verify the digest as they read.
func (s *Store) Open(digest string) (io.ReadCloser, int64, error) {
	if err := CheckDigest(digest); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(s.blobPath(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, fmt.Errorf("chart %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("chart %s: %w", digest, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("chart %s: %w", digest, err)
	}
	return f, fi.Size(), nil
}

// Has reports whether the archive with this digest is on disk.
func (s *Store) Has(digest string) bool {
	if CheckDigest(digest) != nil {
		return false
	}
	fi, err := os.Stat(s.blobPath(digest))
	return err == nil && fi.Mode().IsRegular()
}

// Get returns a chart's metadata by digest.
func (s *Store) Get(ctx context.Context, digest string) (Chart, error) {
	if err := CheckDigest(digest); err != nil {
		return Chart{}, err
	}
	obj, err := s.cfg.Store.Get(ctx, Kind, "", digest)
	if errors.Is(err, store.ErrNotFound) {
		return Chart{}, fmt.Errorf("chart %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return Chart{}, fmt.Errorf("chart %s: %w", digest, err)
	}
	return decodeRecord(obj)
}

// List returns every stored chart, sorted by name, version, digest.
func (s *Store) List(ctx context.Context) ([]Chart, error) {
	objs, err := s.cfg.Store.List(ctx, Kind, "")
	if err != nil {
		return nil, fmt.Errorf("charts: list: %w", err)
	}
	out := make([]Chart, 0, len(objs))
	for _, o := range objs {
		c, err := decodeRecord(o)
		if err != nil {
			s.log.Warn("skipping unreadable chart record", "name", o.Name, "err", err)
			continue
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Chart) int {
		return cmpChain(strings.Compare(a.Name, b.Name), strings.Compare(a.Version, b.Version), strings.Compare(a.Digest, b.Digest))
	})
	return out, nil
}

func cmpChain(cs ...int) int {
	for _, c := range cs {
		if c != 0 {
			return c
		}
	}
	return 0
}

func decodeRecord(o store.Object) (Chart, error) {
	var c Chart
	if err := json.Unmarshal(o.Value, &c); err != nil {
		return Chart{}, fmt.Errorf("chart record %s: %w", o.Name, err)
	}
	if c.Digest != o.Name {
		return Chart{}, fmt.Errorf("chart record %s: digest field is %q", o.Name, c.Digest)
	}
	return c, nil
}

func (c Chart) hasSource(src string) bool { return slices.Contains(c.Sources, src) }

// authOnly reports whether src was read with credentials.
func (c Chart) authOnly(src string) bool { return slices.Contains(c.AuthSources, src) }

// find returns the record of (source, name, version), if any.
func (s *Store) find(ctx context.Context, source, name, version string) (Chart, bool, error) {
	all, err := s.List(ctx)
	if err != nil {
		return Chart{}, false, err
	}
	for _, c := range all {
		if c.Name == name && c.Version == version && c.hasSource(source) {
			return c, true, nil
		}
	}
	return Chart{}, false, nil
}

// writeBlob stores archive under its digest atomically. Content addressing
// makes an existing file with the same name already correct.
func (s *Store) writeBlob(digest string, archive []byte) error {
	final := s.blobPath(digest)
	if fi, err := os.Stat(final); err == nil && fi.Size() == int64(len(archive)) {
		return nil
	}
	return atomicfile.WriteFile(final, archive, 0o600)
}

// record adds source to the metadata of c (creating it), in one
// transaction; authed marks the source as needing credentials. If (source, name, version) already maps to another digest,
// that record wins: it is returned for a repository source, and for a push
// the call fails with ErrExists.
func (s *Store) record(ctx context.Context, c Chart, source string, authed bool) (Chart, error) {
	var out Chart
	err := s.cfg.Store.Txn(ctx, func(tx store.Tx) error {
		objs, err := tx.List(Kind, "")
		if err != nil {
			return err
		}
		for _, o := range objs {
			other, err := decodeRecord(o)
			if err != nil || other.Digest == c.Digest {
				continue
			}
			if other.Name == c.Name && other.Version == c.Version && other.hasSource(source) {
				if source == SourcePush {
					return fmt.Errorf("chart %s %s: pushed before as %s, this archive is %s; bump the chart version: %w",
						c.Name, c.Version, other.Digest, c.Digest, ErrExists)
				}
				out = other
				return nil
			}
		}
		obj, err := tx.Get(Kind, "", c.Digest)
		switch {
		case errors.Is(err, store.ErrNotFound):
			c.Source, c.Sources, c.Added = source, []string{source}, s.cfg.Now().UTC()
			if authed {
				c.AuthSources = []string{source}
			}
			val, err := json.Marshal(c)
			if err != nil {
				return err
			}
			if _, err := tx.Create(store.Object{Kind: Kind, Name: c.Digest, Value: val}); err != nil {
				return err
			}
			out = c
			return nil
		case err != nil:
			return err
		}
		cur, err := decodeRecord(obj)
		if err != nil {
			return err
		}
		if !cur.hasSource(source) || (authed && !cur.authOnly(source)) {
			if !cur.hasSource(source) {
				cur.Sources = append(cur.Sources, source)
			}
			if authed && !cur.authOnly(source) {
				cur.AuthSources = append(cur.AuthSources, source)
			}
			val, err := json.Marshal(cur)
			if err != nil {
				return err
			}
			obj.Value = val
			if _, err := tx.Update(obj); err != nil {
				return err
			}
		}
		out = cur
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrExists) {
			return Chart{}, err
		}
		return Chart{}, fmt.Errorf("chart %s %s: record %s: %w", c.Name, c.Version, c.Digest, err)
	}
	return out, nil
}

// flight runs one call per key at a time; concurrent callers of the same
// key share its result. If the leader's context ended, a waiter whose own
// context is alive runs the call itself instead of inheriting that error.
type flight struct {
	mu    sync.Mutex
	calls map[string]*call
}

type call struct {
	done      chan struct{}
	val       Chart
	err       error
	leaderCtx bool // the leader's ctx was done when it finished
}

func (g *flight) do(ctx context.Context, key string, fn func(context.Context) (Chart, error)) (Chart, error) {
	for {
		g.mu.Lock()
		if c, ok := g.calls[key]; ok {
			g.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				return Chart{}, context.Cause(ctx)
			}
			if c.err != nil && c.leaderCtx && ctx.Err() == nil {
				continue
			}
			return c.val, c.err
		}
		if g.calls == nil {
			g.calls = make(map[string]*call)
		}
		c := &call{done: make(chan struct{})}
		g.calls[key] = c
		g.mu.Unlock()

		c.err = errors.New("charts: resolve panicked") // kept only if fn panics
		func() {
			defer func() {
				c.leaderCtx = ctx.Err() != nil
				g.mu.Lock()
				delete(g.calls, key)
				g.mu.Unlock()
				close(c.done)
			}()
			c.val, c.err = fn(ctx)
		}()
		return c.val, c.err
	}
}
