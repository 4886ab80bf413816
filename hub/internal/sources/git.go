package sources

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/memory"
)

// ErrGit: a git repository could not be read, or has no such reference.
var ErrGit = errors.New("git")

// GitRef selects a commit as Flux's GitRepository ref does: Commit, then
// Name, SemVer, Tag, Branch; none: the remote's HEAD.
type GitRef struct {
	Branch, Tag, SemVer, Name, Commit string
}

// GitAuth is a repository's credentials (a GitRepository's secretRef):
// basic auth, or a bearer token, and an extra CA. Never logged.
type GitAuth struct {
	Username, Password, BearerToken string
	CA                              []byte
}

// String implements fmt.Stringer without the secret.
func (GitAuth) String() string { return "GitAuth{redacted}" }

// GitRequest names what to fetch.
type GitRequest struct {
	URL     string
	Ref     GitRef
	Auth    *GitAuth
	Timeout time.Duration // 0: 60s
}

// GitTree is a commit's files.
type GitTree struct {
	Commit string
	Files  map[string][]byte // slash paths from the repository root
}

// Under returns the files under dir ("" or "." for all), with paths
// relative to dir.
func (t GitTree) Under(dir string) map[string][]byte {
	d := strings.Trim(path.Clean("/"+dir), "/")
	out := map[string][]byte{}
	for p, b := range t.Files {
		if d == "" {
			out[p] = b
		} else if rest, ok := strings.CutPrefix(p, d+"/"); ok {
			out[rest] = b
		}
	}
	return out
}

// ManifestFiles keeps the files whose names end in .yaml, .yml or .json
// (the manifests of a directory in a repository).
func ManifestFiles(files map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for p, b := range files {
		switch path.Ext(p) {
		case ".yaml", ".yml", ".json":
			out[p] = b
		}
	}
	return out
}

// GitFetcher fetches commits over http(s) with go-git, in memory.
type GitFetcher struct{}

// Fetch resolves req.Ref to a commit and returns its files (at most
// MaxSourceSize bytes in all). Errors wrap ErrGit and name the URL
// without credentials.
func (GitFetcher) Fetch(ctx context.Context, req GitRequest) (GitTree, error) {
	u := RedactedURL(req.URL)
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var auth transport.AuthMethod
	var ca []byte
	if a := req.Auth; a != nil {
		switch {
		case a.BearerToken != "":
			auth = &githttp.TokenAuth{Token: a.BearerToken}
		case a.Username != "" || a.Password != "":
			auth = &githttp.BasicAuth{Username: a.Username, Password: a.Password}
		}
		ca = a.CA
	}
	refName, hash, err := resolveRef(ctx, req, auth, ca)
	if err != nil {
		return GitTree{}, fmt.Errorf("%s: %w", u, err)
	}
	opts := &git.CloneOptions{URL: req.URL, Auth: auth, CABundle: ca, Tags: git.NoTags, NoCheckout: true}
	if refName != "" {
		opts.ReferenceName, opts.SingleBranch, opts.Depth = refName, true, 1
	}
	repo, err := git.CloneContext(ctx, memory.NewStorage(), nil, opts)
	if err != nil {
		return GitTree{}, fmt.Errorf("%s: clone: %v: %w", u, err, ErrGit)
	}
	if refName != "" {
		// What was cloned is the truth (the listing may be older); an
		// annotated tag names its commit.
		if r, err := repo.Reference(refName, true); err == nil {
			hash = r.Hash()
		}
		if tag, err := repo.TagObject(hash); err == nil {
			if c, err := tag.Commit(); err == nil {
				hash = c.Hash
			}
		}
	}
	commit, err := repo.CommitObject(hash)
	if err != nil {
		return GitTree{}, fmt.Errorf("%s: commit %s: %v: %w", u, hash, err, ErrGit)
	}
	tree, err := commit.Tree()
	if err != nil {
		return GitTree{}, fmt.Errorf("%s: commit %s: %v: %w", u, hash, err, ErrGit)
	}
	out := GitTree{Commit: hash.String(), Files: map[string][]byte{}}
	size := 0
	err = tree.Files().ForEach(func(f *object.File) error {
		if !f.Mode.IsFile() {
			return nil
		}
		size += int(f.Size)
		if size > MaxSourceSize {
			return fmt.Errorf("more than %d bytes: %w", MaxSourceSize, ErrTooLarge)
		}
		r, err := f.Reader()
		if err != nil {
			return err
		}
		defer r.Close()
		b, err := io.ReadAll(io.LimitReader(r, MaxSourceSize+1))
		if err != nil {
			return err
		}
		out.Files[f.Name] = b
		return nil
	})
	if err != nil {
		return GitTree{}, fmt.Errorf("%s: commit %s: %w", u, hash, err)
	}
	return out, nil
}

// resolveRef lists the remote's references and picks the commit ref
// selects, with the reference to clone ("" for a bare commit: then the
// whole history is fetched).
func resolveRef(ctx context.Context, req GitRequest, auth transport.AuthMethod, ca []byte) (plumbing.ReferenceName, plumbing.Hash, error) {
	ref := req.Ref
	if ref.Commit != "" {
		return "", plumbing.NewHash(ref.Commit), nil
	}
	rem := git.NewRemote(memory.NewStorage(), &config.RemoteConfig{Name: "origin", URLs: []string{req.URL}})
	refs, err := rem.ListContext(ctx, &git.ListOptions{Auth: auth, CABundle: ca})
	if err != nil {
		return "", plumbing.ZeroHash, fmt.Errorf("list references: %v: %w", err, ErrGit)
	}
	byName := map[plumbing.ReferenceName]*plumbing.Reference{}
	for _, r := range refs {
		byName[r.Name()] = r
	}
	// target follows a symbolic reference and prefers a tag's peeled commit.
	target := func(n plumbing.ReferenceName) (plumbing.ReferenceName, plumbing.Hash, error) {
		r, ok := byName[n]
		for i := 0; ok && r.Type() == plumbing.SymbolicReference && i < 5; i++ {
			n = r.Target()
			r, ok = byName[n]
		}
		if !ok {
			return "", plumbing.ZeroHash, fmt.Errorf("no reference %s: %w", n, ErrGit)
		}
		if p, ok := byName[plumbing.ReferenceName(string(n)+"^{}")]; ok {
			return n, p.Hash(), nil
		}
		return n, r.Hash(), nil
	}
	switch {
	case ref.Name != "":
		return target(plumbing.ReferenceName(ref.Name))
	case ref.SemVer != "":
		c, err := semver.NewConstraint(ref.SemVer)
		if err != nil {
			return "", plumbing.ZeroHash, fmt.Errorf("semver %q: %v: %w", ref.SemVer, err, ErrGit)
		}
		var best *semver.Version
		var bestName plumbing.ReferenceName
		names := slices.Sorted(func(yield func(plumbing.ReferenceName) bool) {
			for n := range byName {
				if !yield(n) {
					return
				}
			}
		})
		for _, n := range names {
			if !n.IsTag() || strings.HasSuffix(string(n), "^{}") {
				continue
			}
			v, err := semver.NewVersion(n.Short())
			if err != nil || !c.Check(v) {
				continue
			}
			if best == nil || v.GreaterThan(best) {
				best, bestName = v, n
			}
		}
		if best == nil {
			return "", plumbing.ZeroHash, fmt.Errorf("no tag matches semver %q: %w", ref.SemVer, ErrGit)
		}
		return target(bestName)
	case ref.Tag != "":
		return target(plumbing.NewTagReferenceName(ref.Tag))
	case ref.Branch != "":
		return target(plumbing.NewBranchReferenceName(ref.Branch))
	}
	return target(plumbing.HEAD)
}

// RedactedURL returns u without its password, for messages.
func RedactedURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return u
	}
	return p.Redacted()
}
