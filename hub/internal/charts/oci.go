package charts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/registry"
	"helm.sh/helm/v3/pkg/repo"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"
)

// resolveOCI pulls chart name at version from the registry repository
// base (oci://HOST/PATH, chart at HOST/PATH/NAME:VERSION) with Helm's
// registry client. It records the chart exactly as resolveRemote does:
// the digest is the sha256 of the .tgz (the chart layer), and an exact
// version already stored for base is answered without any request (with
// one manifest request when the registry needs credentials).
func (s *Store) resolveOCI(ctx context.Context, ref RepoRef, base, name, version string) (Chart, error) {
	exact := isExactVersion(version)
	if !exact {
		v, err := s.ociNewest(ctx, ref, base, name, version)
		if err != nil {
			return Chart{}, err
		}
		version = v
	}
	var expect string // digest recorded earlier whose blob is missing here
	c, ok, err := s.find(ctx, base, name, version)
	if err != nil {
		return Chart{}, err
	}
	if ok {
		if !s.Has(c.Digest) {
			expect = c.Digest
		} else if !ref.authenticated() && !c.authOnly(base) {
			return c, nil
		}
	}

	pullRef := base + "/" + name + ":" + version
	client, bt, done, err := s.registryClient(ctx, ref)
	if err != nil {
		return Chart{}, err
	}
	defer done()
	if ok && expect == "" {
		// Stored, and the registry needs credentials: check that it
		// accepts them (one manifest request), then hand out the pinned
		// chart without downloading it again.
		if _, err := client.Resolve(strings.TrimPrefix(pullRef, "oci://")); err != nil {
			return Chart{}, fmt.Errorf("pull %s: %w", pullRef, s.ociError(ctx, err, bt, ref.Credentials))
		}
		return c, nil
	}
	res, err := client.Pull(strings.TrimPrefix(pullRef, "oci://"), registry.PullOptWithChart(true))
	if err != nil {
		return Chart{}, fmt.Errorf("pull %s: %w", pullRef, s.ociError(ctx, err, bt, ref.Credentials))
	}
	if res.Chart == nil || len(res.Chart.Data) == 0 {
		return Chart{}, fmt.Errorf("pull %s: no chart layer: %w", pullRef, ErrInvalidChart)
	}
	archive := res.Chart.Data
	if int64(len(archive)) > s.cfg.MaxChartSize {
		return Chart{}, fmt.Errorf("pull %s: chart layer of %d bytes, more than the limit of %d: %w", pullRef, len(archive), s.cfg.MaxChartSize, ErrTooLarge)
	}
	digest := Digest(archive)
	if want := res.Chart.Digest; strings.HasPrefix(want, "sha256:") && want != digest {
		return Chart{}, fmt.Errorf("pull %s: %w: manifest says %s, layer is %s", pullRef, ErrDigestMismatch, want, digest)
	}
	if expect != "" && expect != digest {
		return Chart{}, fmt.Errorf("pull %s: %w: resolved earlier to %s, layer is now %s", pullRef, ErrDigestMismatch, expect, digest)
	}
	ch, err := loadChart(archive)
	if err != nil {
		return Chart{}, fmt.Errorf("pull %s: %w", pullRef, err)
	}
	if got := ch.Metadata; got.Name != name || got.Version != version {
		return Chart{}, fmt.Errorf("pull %s: holds chart %s %s: %w", pullRef, got.Name, got.Version, ErrInvalidChart)
	}
	if err := s.writeBlob(digest, archive); err != nil {
		return Chart{}, fmt.Errorf("store %s: %w", digest, err)
	}
	c, err = s.record(ctx, Chart{Digest: digest, Name: name, Version: version, Size: int64(len(archive))}, base, ref.authenticated())
	if err != nil {
		return Chart{}, err
	}
	s.log.Info("chart pulled", "chart", name, "version", version, "digest", c.Digest, "size", len(archive), "ref", pullRef, "manifest", res.Manifest.Digest)
	return c, nil
}

// ociNewest lists the tags of HOST/PATH/NAME and returns the newest
// version matching the constraint.
func (s *Store) ociNewest(ctx context.Context, ref RepoRef, base, name, constraint string) (string, error) {
	repoRef := base + "/" + name
	client, bt, done, err := s.registryClient(ctx, ref)
	if err != nil {
		return "", err
	}
	defer done()
	tags, err := client.Tags(strings.TrimPrefix(repoRef, "oci://"))
	if err != nil {
		return "", fmt.Errorf("list tags of %s: %w", repoRef, s.ociError(ctx, err, bt, ref.Credentials))
	}
	idx := &repo.IndexFile{Entries: map[string]repo.ChartVersions{}}
	for _, t := range tags {
		idx.Entries[name] = append(idx.Entries[name], &repo.ChartVersion{Metadata: &chart.Metadata{Name: name, Version: t}})
	}
	cv, err := findVersion(idx, name, constraint)
	if err != nil {
		return "", fmt.Errorf("tags of %s: %w", repoRef, err)
	}
	return cv.Version, nil
}

// registryClient returns a Helm registry client for one resolution: its
// requests carry ctx and are bounded by MaxChartSize, it logs in with
// ref.Credentials to the registry's host only, never reads the hub
// user's Helm or Docker credential files, and speaks plain HTTP only
// when ref.Insecure is set.
func (s *Store) registryClient(ctx context.Context, ref RepoRef) (*registry.Client, *boundedTransport, func(), error) {
	hc, done, err := s.client(ref)
	if err != nil {
		return nil, nil, nil, err
	}
	rt := hc.Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	bt := &boundedTransport{ctx: ctx, base: rt, max: s.cfg.MaxChartSize}
	bounded := *hc
	bounded.Transport = bt
	authz := auth.Client{Client: &bounded, Cache: auth.NewCache()}
	authz.SetUserAgent("tether-hub")
	if c := ref.Credentials; c != nil {
		host, _, _ := strings.Cut(strings.TrimPrefix(ref.URL, "oci://"), "/")
		authz.Credential = auth.StaticCredential(host, auth.Credential{Username: c.Username, Password: c.Password})
	}
	opts := []registry.ClientOption{
		registry.ClientOptWriter(io.Discard),
		registry.ClientOptHTTPClient(&bounded),
		registry.ClientOptAuthorizer(authz),
		// A path that is never written: the client must not pick up
		// credentials a hub operator stored for their own helm.
		registry.ClientOptCredentialsFile(filepath.Join(s.cfg.Dir, ".registry-credentials-unused.json")),
	}
	if ref.Insecure {
		opts = append(opts, registry.ClientOptPlainHTTP())
	}
	client, err := registry.NewClient(opts...)
	if err != nil {
		done()
		return nil, nil, nil, fmt.Errorf("registry client: %v: %w", err, ErrInvalidRequest)
	}
	return client, bt, done, nil
}

// ociError maps a registry client error onto the package's sentinels.
func (s *Store) ociError(ctx context.Context, err error, bt *boundedTransport, cred *Credentials) error {
	var resp *errcode.ErrorResponse
	switch {
	case bt.hit.Load() || errors.Is(err, ErrTooLarge):
		return fmt.Errorf("more than the limit of %d bytes: %w", s.cfg.MaxChartSize, ErrTooLarge)
	case ctx.Err() != nil:
		return context.Cause(ctx)
	case errors.As(err, &resp) && isUnauthorized(resp.StatusCode), errors.Is(err, auth.ErrBasicCredentialNotFound):
		return fmt.Errorf("%v: %s: %w: %w", err, authHint(cred), ErrUnauthorized, ErrFetch)
	case errors.As(err, &resp) && resp.StatusCode == http.StatusNotFound, errors.Is(err, errdef.ErrNotFound):
		return fmt.Errorf("%v: %w", err, ErrNotFound)
	case strings.Contains(err.Error(), "could not load config with mediatype"),
		strings.Contains(err.Error(), "does not contain a layer with mediatype"),
		strings.Contains(err.Error(), "minimum number of descriptors"):
		return fmt.Errorf("not a Helm chart: %v: %w", err, ErrInvalidChart)
	}
	return fmt.Errorf("%v: %w", err, ErrFetch)
}

// PullOCI pulls the chart NAME of the OCI repository ref.URL
// (oci://HOST/PATH, the chart at HOST/PATH/NAME) by tag or, when digest
// is set, by manifest digest: a Flux OCIRepository's artifact, whose tag
// need not be the chart's version ("latest"). The chart is recorded
// under its own version, as resolveOCI records it, and a digest must be
// the manifest's. Unlike Resolve, it always asks the registry: a tag may
// move.
func (s *Store) PullOCI(ctx context.Context, ref RepoRef, name, tag, digest string) (Chart, error) {
	pullRef := ref.URL + "/" + name + ":" + tag
	if digest != "" {
		pullRef = ref.URL + "/" + name + "@" + digest
	}
	c, err := s.pullOCI(ctx, ref, name, pullRef, digest)
	if err != nil {
		return Chart{}, scrub(fmt.Errorf("chart %s from %s: %w", name, redact(pullRef), err), ref.Credentials)
	}
	return c, nil
}

func (s *Store) pullOCI(ctx context.Context, ref RepoRef, name, pullRef, digest string) (Chart, error) {
	if err := checkRequest(name, "pull"); err != nil {
		return Chart{}, err
	}
	base, oci, err := checkRepo(ref)
	switch {
	case err != nil:
		return Chart{}, err
	case !oci:
		return Chart{}, fmt.Errorf("repository %s is not an OCI registry: %w", redact(ref.URL), ErrInvalidRequest)
	case digest != "" && (!strings.HasPrefix(digest, "sha256:") || CheckDigest(digest) != nil):
		return Chart{}, fmt.Errorf("digest %.80q: want sha256: and 64 hex digits: %w", digest, ErrInvalidRequest)
	}
	key := "pull\x00" + pullRef + "\x00" + ref.accessKey()
	return s.flight.do(ctx, key, func(ctx context.Context) (Chart, error) {
		client, bt, done, err := s.registryClient(ctx, ref)
		if err != nil {
			return Chart{}, err
		}
		defer done()
		res, err := client.Pull(strings.TrimPrefix(pullRef, "oci://"), registry.PullOptWithChart(true))
		if err != nil {
			return Chart{}, fmt.Errorf("pull: %w", s.ociError(ctx, err, bt, ref.Credentials))
		}
		if digest != "" && res.Manifest.Digest != digest {
			return Chart{}, fmt.Errorf("pull: %w: asked for manifest %s, got %s", ErrDigestMismatch, digest, res.Manifest.Digest)
		}
		if res.Chart == nil || len(res.Chart.Data) == 0 {
			return Chart{}, fmt.Errorf("pull: no chart layer: %w", ErrInvalidChart)
		}
		archive := res.Chart.Data
		if int64(len(archive)) > s.cfg.MaxChartSize {
			return Chart{}, fmt.Errorf("pull: chart layer of %d bytes, more than the limit of %d: %w", len(archive), s.cfg.MaxChartSize, ErrTooLarge)
		}
		d := Digest(archive)
		if want := res.Chart.Digest; strings.HasPrefix(want, "sha256:") && want != d {
			return Chart{}, fmt.Errorf("pull: %w: manifest says %s, layer is %s", ErrDigestMismatch, want, d)
		}
		ch, err := loadChart(archive)
		if err != nil {
			return Chart{}, fmt.Errorf("pull: %w", err)
		}
		if ch.Metadata.Name != name {
			return Chart{}, fmt.Errorf("pull: holds chart %s %s, not %s: %w", ch.Metadata.Name, ch.Metadata.Version, name, ErrInvalidChart)
		}
		version := ch.Metadata.Version
		if old, ok, err := s.find(ctx, base, name, version); err != nil {
			return Chart{}, err
		} else if ok && old.Digest != d {
			return Chart{}, fmt.Errorf("pull: %w: %s %s resolved earlier to %s, layer is now %s", ErrDigestMismatch, name, version, old.Digest, d)
		}
		if err := s.writeBlob(d, archive); err != nil {
			return Chart{}, fmt.Errorf("store %s: %w", d, err)
		}
		c, err := s.record(ctx, Chart{Digest: d, Name: name, Version: version, Size: int64(len(archive))}, base, ref.authenticated())
		if err != nil {
			return Chart{}, err
		}
		s.log.Info("chart pulled", "chart", name, "version", version, "digest", c.Digest, "ref", pullRef, "manifest", res.Manifest.Digest)
		return c, nil
	})
}
