package charts

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/repo"
	"sigs.k8s.io/yaml"
)

// RepoRef names the repository a chart comes from (a HelmRepository's
// spec). Name LocalRepo selects pushed charts and ignores the rest.
type RepoRef struct {
	Name string
	// URL is the http(s) URL of the directory holding index.yaml, or
	// oci://HOST/PATH for an OCI registry (the chart is HOST/PATH/NAME).
	URL string
	// Type is "" (from the URL's scheme), "default" (index.yaml) or "oci".
	Type string
	// Credentials, if set, are the repository's basic-auth username and
	// password, or the registry login.
	Credentials *Credentials
	// PassCredentials sends Credentials to chart URLs of an index.yaml
	// repository on other hosts too (Flux's passCredentials).
	PassCredentials bool
	// TLS, if set, is the repository's CA and client certificate.
	TLS *TLS
	// Insecure allows plain HTTP to an OCI registry (Flux's insecure);
	// without it the registry is reached over HTTPS only.
	Insecure bool
	// InsecureSkipTLSVerify skips verification of the repository's
	// certificate.
	InsecureSkipTLSVerify bool
}

// Resolve returns the stored chart for (repository, chart, version),
// fetching and storing it on first use. version is an exact version or a
// semver constraint ("~1.2", ">=1.0 <2"). An exact version already stored
// for this repository URL is answered from the store without any request;
// a constraint fetches index.yaml (or the registry's tags) again, to pick
// the newest match, but downloads the archive only if that version is not
// stored yet. A repository with credentials or a client certificate is
// always asked once (index.yaml, or the registry's manifest), so a wrong
// password never resolves a chart that someone else fetched.
//
// Concurrent calls for the same key share one fetch. Errors start with
// "chart NAME VERSION from URL:" and wrap one of the package's sentinels
// (or the context's error).
func (s *Store) Resolve(ctx context.Context, ref RepoRef, name, version string) (Chart, error) {
	from := ref.URL
	if ref.Name == LocalRepo {
		from = LocalRepo
	}
	c, err := s.resolve(ctx, ref, name, version)
	if err != nil {
		return Chart{}, scrub(fmt.Errorf("chart %s %s from %s: %w", name, version, redact(from), err), ref.Credentials)
	}
	return c, nil
}

func (s *Store) resolve(ctx context.Context, ref RepoRef, name, version string) (Chart, error) {
	if err := checkRequest(name, version); err != nil {
		return Chart{}, err
	}
	if ref.Name == LocalRepo {
		return s.resolveLocal(ctx, name, version)
	}
	base, oci, err := checkRepo(ref)
	if err != nil {
		return Chart{}, err
	}
	key := base + "\x00" + name + "\x00" + version + "\x00" + ref.accessKey()
	return s.flight.do(ctx, key, func(ctx context.Context) (Chart, error) {
		if oci {
			return s.resolveOCI(ctx, ref, base, name, version)
		}
		return s.resolveRemote(ctx, ref, base, name, version)
	})
}

func checkRequest(name, version string) error {
	switch {
	case name == "":
		return fmt.Errorf("chart name is empty: %w", ErrInvalidRequest)
	case len(name) > 250 || strings.ContainsAny(name, "/\\ \t\r\n\x00"):
		return fmt.Errorf("chart name %.60q is not a chart name: %w", name, ErrInvalidRequest)
	case version == "":
		return fmt.Errorf("version is empty: %w", ErrInvalidRequest)
	case len(version) > 128:
		return fmt.Errorf("version %.60q is too long: %w", version, ErrInvalidRequest)
	}
	return nil
}

// checkRepo returns the repository URL without a trailing slash (the
// source recorded for its charts) and whether it is an OCI registry.
func checkRepo(ref RepoRef) (base string, oci bool, err error) {
	if ref.URL == "" {
		return "", false, fmt.Errorf("repository %q has no URL: %w", ref.Name, ErrInvalidRequest)
	}
	u, err := url.Parse(ref.URL)
	if err != nil {
		return "", false, fmt.Errorf("repository URL: %v: %w", err, ErrInvalidRequest)
	}
	switch ref.Type {
	case "":
		oci = u.Scheme == "oci"
	case "default":
	case "oci":
		oci = true
	default:
		return "", false, fmt.Errorf("repository type %q (want default or oci): %w", ref.Type, ErrInvalidRequest)
	}
	switch {
	case oci && u.Scheme != "oci":
		return "", false, fmt.Errorf("repository type oci needs an oci:// URL, not %s://: %w", u.Scheme, ErrInvalidRequest)
	case !oci && u.Scheme == "oci":
		return "", false, fmt.Errorf("an oci:// URL needs repository type oci, not %q: %w", ref.Type, ErrInvalidRequest)
	case !oci && u.Scheme != "http" && u.Scheme != "https":
		return "", false, fmt.Errorf("repository URL scheme %q (want http, https or oci): %w", u.Scheme, ErrUnsupported)
	case u.Host == "":
		return "", false, fmt.Errorf("repository URL has no host: %w", ErrInvalidRequest)
	case oci && (u.User != nil || u.RawQuery != "" || u.Fragment != ""):
		return "", false, fmt.Errorf("oci:// URL %s: want oci://HOST/PATH without user, query or fragment (credentials go in secretRef): %w", redact(ref.URL), ErrInvalidRequest)
	}
	return strings.TrimRight(ref.URL, "/"), oci, nil
}

// isExactVersion reports whether v names one version rather than a
// constraint; exact requests can be answered from the store alone.
func isExactVersion(v string) bool {
	if strings.ContainsAny(v, "~^<>=*,| ") {
		return false
	}
	core, _, _ := strings.Cut(v, "-")
	core, _, _ = strings.Cut(core, "+")
	for p := range strings.SplitSeq(core, ".") {
		if p == "x" || p == "X" {
			return false
		}
	}
	return true
}

func (s *Store) resolveRemote(ctx context.Context, ref RepoRef, base, name, version string) (Chart, error) {
	exact := isExactVersion(version)
	var expect string // digest recorded earlier whose blob is missing here
	// A repository read with credentials is asked (for its index) even
	// for a stored version, so that only who can read it gets the chart;
	// the archive is still downloaded once.
	if exact {
		c, ok, err := s.find(ctx, base, name, version)
		if err != nil {
			return Chart{}, err
		}
		if ok && s.Has(c.Digest) && !ref.authenticated() && !c.authOnly(base) {
			return c, nil
		}
	}

	client, done, err := s.client(ref)
	if err != nil {
		return Chart{}, err
	}
	defer done()
	indexURL, err := repo.ResolveReferenceURL(base, "index.yaml")
	if err != nil {
		return Chart{}, fmt.Errorf("repository URL: %v: %w", err, ErrInvalidRequest)
	}
	data, err := s.get(ctx, client, indexURL, s.cfg.MaxIndexSize, ref.Credentials)
	if err != nil {
		return Chart{}, err
	}
	idx, err := parseIndex(data)
	if err != nil {
		return Chart{}, fmt.Errorf("index %s: %w", redact(indexURL), err)
	}
	cv, err := findVersion(idx, name, version)
	if err != nil {
		return Chart{}, fmt.Errorf("index %s: %w", redact(indexURL), err)
	}
	// The index answered (so any credentials are good): a stored archive
	// of this version is the chart, pinned by its digest.
	if c, ok, err := s.find(ctx, base, name, cv.Version); err != nil {
		return Chart{}, err
	} else if ok {
		if s.Has(c.Digest) {
			return c, nil
		}
		expect = c.Digest
	}

	if len(cv.URLs) == 0 || cv.URLs[0] == "" {
		return Chart{}, fmt.Errorf("index %s: %s %s has no urls: %w", redact(indexURL), name, cv.Version, ErrInvalidIndex)
	}
	archiveURL, err := repo.ResolveReferenceURL(base+"/", cv.URLs[0])
	if err != nil {
		return Chart{}, fmt.Errorf("index %s: url %.100q: %v: %w", redact(indexURL), cv.URLs[0], err, ErrInvalidIndex)
	}
	if u, err := url.Parse(archiveURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return Chart{}, fmt.Errorf("index %s: archive url %.100q is not http(s): %w", redact(indexURL), cv.URLs[0], ErrUnsupported)
	}
	var want string
	if cv.Digest != "" {
		if want, err = normalizeDigest(cv.Digest); err != nil {
			return Chart{}, fmt.Errorf("index %s: %s %s: %w", redact(indexURL), name, cv.Version, err)
		}
	}

	cred := ref.Credentials
	if !ref.PassCredentials && !sameOrigin(base, archiveURL) {
		cred = nil // as Helm: credentials go to the repository's own host only
	}
	archive, err := s.get(ctx, client, archiveURL, s.cfg.MaxChartSize, cred)
	if err != nil {
		return Chart{}, err
	}
	digest := Digest(archive)
	if want != "" && want != digest {
		return Chart{}, fmt.Errorf("%w: index says %s, archive is %s", ErrDigestMismatch, want, digest)
	}
	if expect != "" && expect != digest {
		return Chart{}, fmt.Errorf("%w: resolved earlier to %s, archive is now %s", ErrDigestMismatch, expect, digest)
	}
	ch, err := loadChart(archive)
	if err != nil {
		return Chart{}, fmt.Errorf("archive %s: %w", redact(archiveURL), err)
	}
	if got := ch.Metadata; got.Name != name || got.Version != cv.Version {
		return Chart{}, fmt.Errorf("archive %s holds chart %s %s: %w", redact(archiveURL), got.Name, got.Version, ErrInvalidChart)
	}
	if err := s.writeBlob(digest, archive); err != nil {
		return Chart{}, fmt.Errorf("store %s: %w", digest, err)
	}
	c, err := s.record(ctx, Chart{Digest: digest, Name: name, Version: cv.Version, Size: int64(len(archive))}, base, ref.authenticated())
	if err != nil {
		return Chart{}, err
	}
	s.log.Info("chart fetched", "chart", name, "version", cv.Version, "digest", c.Digest, "size", len(archive), "url", redact(archiveURL))
	return c, nil
}

// resolveLocal looks version up among pushed charts.
func (s *Store) resolveLocal(ctx context.Context, name, version string) (Chart, error) {
	all, err := s.List(ctx)
	if err != nil {
		return Chart{}, err
	}
	byVersion := map[string]Chart{}
	idx := &repo.IndexFile{APIVersion: repo.APIVersionV1, Entries: map[string]repo.ChartVersions{}}
	for _, c := range all {
		if c.Name == name && c.hasSource(SourcePush) {
			byVersion[c.Version] = c
			idx.Entries[name] = append(idx.Entries[name], &repo.ChartVersion{Metadata: &chart.Metadata{Name: name, Version: c.Version}})
		}
	}
	cv, err := findVersion(idx, name, version)
	if err != nil {
		return Chart{}, fmt.Errorf("pushed charts: %w", err)
	}
	c := byVersion[cv.Version]
	if !s.Has(c.Digest) {
		return Chart{}, fmt.Errorf("archive %s is missing from %s: %w", c.Digest, s.blobDir, ErrNotFound)
	}
	return c, nil
}

// get reads url's body, at most max bytes, sending cred as basic auth if
// set.
func (s *Store) get(ctx context.Context, client *http.Client, rawURL string, max int64, cred *Credentials) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %v: %w", redact(rawURL), err, ErrInvalidRequest)
	}
	req.Header.Set("User-Agent", "tether-hub")
	if cred != nil {
		req.SetBasicAuth(cred.Username, cred.Password)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("GET %s: %w", redact(rawURL), context.Cause(ctx))
		}
		return nil, fmt.Errorf("GET %s: %v: %w", redact(rawURL), err, ErrFetch)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("GET %s: HTTP %s: %w", redact(rawURL), resp.Status, ErrNotFound)
	case isUnauthorized(resp.StatusCode):
		return nil, fmt.Errorf("GET %s: HTTP %s: %s: %w: %w", redact(rawURL), resp.Status, authHint(cred), ErrUnauthorized, ErrFetch)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, fmt.Errorf("GET %s: HTTP %s: %w", redact(rawURL), resp.Status, ErrFetch)
	case resp.ContentLength > max:
		return nil, fmt.Errorf("GET %s: %d bytes, more than the limit of %d: %w", redact(rawURL), resp.ContentLength, max, ErrTooLarge)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("GET %s: %w", redact(rawURL), context.Cause(ctx))
		}
		return nil, fmt.Errorf("GET %s: read body: %v: %w", redact(rawURL), err, ErrFetch)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("GET %s: more than the limit of %d bytes: %w", redact(rawURL), max, ErrTooLarge)
	}
	return data, nil
}

// redact hides a password in a URL used in errors and logs.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	return u.Redacted()
}

// normalizeDigest turns an index digest (hex, with or without "sha256:")
// into the package's form.
func normalizeDigest(d string) (string, error) {
	h := strings.ToLower(strings.TrimPrefix(d, "sha256:"))
	if CheckDigest("sha256:"+h) != nil {
		return "", fmt.Errorf("index digest %.80q is not a sha256 digest: %w", d, ErrInvalidIndex)
	}
	return "sha256:" + h, nil
}

// parseIndex decodes an untrusted index.yaml the way Helm does (JSON if
// it is valid JSON, else strict YAML). It never panics.
func parseIndex(data []byte) (idx *repo.IndexFile, err error) {
	defer func() {
		if r := recover(); r != nil {
			idx, err = nil, fmt.Errorf("parse panicked: %v: %w", r, ErrInvalidIndex)
		}
	}()
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("empty: %w", ErrInvalidIndex)
	}
	idx = &repo.IndexFile{}
	if json.Valid(data) {
		err = json.Unmarshal(data, idx)
	} else {
		err = yaml.UnmarshalStrict(data, idx)
	}
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrInvalidIndex)
	}
	if idx.APIVersion == "" {
		return nil, fmt.Errorf("no apiVersion: %w", ErrInvalidIndex)
	}
	return idx, nil
}

// findVersion picks name's entry for version (exact, else the newest
// matching constraint), skipping malformed entries.
func findVersion(idx *repo.IndexFile, name, version string) (*repo.ChartVersion, error) {
	var cvs repo.ChartVersions
	for _, cv := range idx.Entries[name] {
		if cv != nil && cv.Metadata != nil && cv.Version != "" {
			cvs = append(cvs, cv)
		}
	}
	if len(cvs) == 0 {
		return nil, fmt.Errorf("no chart %s: %w", name, ErrNotFound)
	}
	for _, cv := range cvs {
		if cv.Version == version {
			return cv, nil
		}
	}
	sub := repo.IndexFile{Entries: map[string]repo.ChartVersions{name: cvs}}
	sub.SortEntries()
	if !isExactVersion(version) {
		cv, err := sub.Get(name, version)
		if err == nil {
			return cv, nil
		}
		if !strings.HasPrefix(err.Error(), "no chart version found") {
			return nil, fmt.Errorf("version constraint %q: %v: %w", version, err, ErrInvalidRequest)
		}
	}
	var have []string
	for _, cv := range sub.Entries[name] {
		if len(have) == 5 {
			have = append(have, "...")
			break
		}
		have = append(have, cv.Version)
	}
	return nil, fmt.Errorf("no version %s of chart %s (have %s): %w", version, name, strings.Join(have, ", "), ErrNotFound)
}

// loadChart checks that an untrusted archive is a loadable chart. Helm's
// loader bounds the decompressed size. It never panics.
func loadChart(archive []byte) (c *chart.Chart, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("load panicked: %v: %w", r, ErrInvalidChart)
		}
	}()
	c, err = loader.LoadArchive(bytes.NewReader(archive))
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrInvalidChart)
	}
	if c.Metadata == nil {
		return nil, fmt.Errorf("no Chart.yaml: %w", ErrInvalidChart)
	}
	return c, nil
}
