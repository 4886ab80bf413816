package charts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/repo"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

func TestResolveFetchesOnce(t *testing.T) {
	ctx := context.Background()
	r := newHelmRepo(t)
	e := newEnv(t, func(c *Config) { c.Now = func() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC) } })

	c, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
	if err != nil {
		t.Fatal(err)
	}
	archive := r.file("/podinfo-6.14.1.tgz")
	want := Chart{Digest: Digest(archive), Name: "podinfo", Version: "6.14.1", Size: int64(len(archive)),
		Source: r.srv.URL, Sources: []string{r.srv.URL}, Added: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	if fmt.Sprint(c) != fmt.Sprint(want) {
		t.Errorf("Resolve = %+v\nwant       %+v", c, want)
	}
	if n := r.total(); n != 2 {
		t.Errorf("first Resolve made %d requests, want 2 (index + archive)", n)
	}

	// Again, and with a trailing slash on the repository URL: no request.
	for _, u := range []string{r.srv.URL, r.srv.URL + "/"} {
		again, err := e.cs.Resolve(ctx, RepoRef{Name: "x", URL: u}, "podinfo", "6.14.1")
		if err != nil {
			t.Fatal(err)
		}
		if again.Digest != c.Digest {
			t.Errorf("second Resolve digest %s, want %s", again.Digest, c.Digest)
		}
	}
	if n := r.total(); n != 2 {
		t.Errorf("after repeated Resolve: %d requests, want still 2", n)
	}

	// The archive is stored under its digest, byte for byte.
	if !e.cs.Has(c.Digest) {
		t.Error("Has = false after Resolve")
	}
	rc, size, err := e.cs.Open(c.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if size != int64(len(archive)) || !bytes.Equal(got, archive) {
		t.Errorf("Open returned %d bytes (size %d), want the %d archive bytes", len(got), size, len(archive))
	}
	if _, err := os.Stat(filepath.Join(e.dir, "sha256", strings.TrimPrefix(c.Digest, "sha256:")+".tgz")); err != nil {
		t.Errorf("blob not at the documented path: %v", err)
	}
	if got, err := e.cs.Get(ctx, c.Digest); err != nil || got.Name != "podinfo" {
		t.Errorf("Get = %+v, %v", got, err)
	}
}

func TestResolveAbsoluteURLAndSecondChart(t *testing.T) {
	ctx := context.Background()
	r := newHelmRepo(t)
	// Index with absolute URLs, as repositories behind a CDN publish them.
	r.editIndex(t, func(idx *repo.IndexFile) {
		for _, cvs := range idx.Entries {
			for _, cv := range cvs {
				cv.URLs = []string{r.srv.URL + "/" + cv.URLs[0]}
			}
		}
	})
	e := newEnv(t)
	c, err := e.cs.Resolve(ctx, r.ref(), "ingress-nginx", "4.15.1")
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest != Digest(r.file("/ingress-nginx-4.15.1.tgz")) || c.Name != "ingress-nginx" {
		t.Errorf("Resolve = %+v", c)
	}
}

func TestResolveConstraint(t *testing.T) {
	ctx := context.Background()
	r := newHelmRepo(t)
	e := newEnv(t)
	for _, v := range []string{"~6.14", ">=6.0.0 <7.0.0", "6.x", "^6"} {
		c, err := e.cs.Resolve(ctx, r.ref(), "podinfo", v)
		if err != nil {
			t.Fatalf("Resolve %q: %v", v, err)
		}
		if c.Version != "6.14.1" {
			t.Errorf("Resolve %q = version %s, want 6.14.1", v, c.Version)
		}
	}
	// Constraints re-read the index but download the archive once.
	r.mu.Lock()
	idxN, arcN := r.requests["/index.yaml"], r.requests["/podinfo-6.14.1.tgz"]
	r.mu.Unlock()
	if idxN != 4 || arcN != 1 {
		t.Errorf("index fetched %d times (want 4), archive %d (want 1)", idxN, arcN)
	}
	_, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "~7.0")
	wantErr(t, err, ErrNotFound, "no version ~7.0 of chart podinfo (have 6.14.1)")
	_, err = e.cs.Resolve(ctx, r.ref(), "podinfo", ">=>1")
	wantErr(t, err, ErrInvalidRequest, "version constraint")
}

func TestResolveConcurrent(t *testing.T) {
	ctx := context.Background()
	r := newHelmRepo(t)
	e := newEnv(t)
	const n = 8
	var wg sync.WaitGroup
	digests := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			c, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
			digests[i], errs[i] = c.Digest, err
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || digests[i] != digests[0] {
			t.Errorf("call %d: %s, %v", i, digests[i], errs[i])
		}
	}
	if got := r.total(); got != 2 {
		t.Errorf("%d concurrent Resolves made %d requests, want 2", n, got)
	}
}

func TestResolveErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		setup   func(t *testing.T, r *helmRepo)
		cfg     func(*Config)
		ref     func(r *helmRepo) RepoRef
		chart   string
		version string
		target  error
		msg     func(r *helmRepo) []string
	}{{
		name: "digest mismatch",
		setup: func(t *testing.T, r *helmRepo) {
			r.editIndex(t, func(idx *repo.IndexFile) { idx.Entries["podinfo"][0].Digest = strings.Repeat("ab", 32) })
		},
		target: ErrDigestMismatch,
		msg: func(r *helmRepo) []string {
			return []string{fmt.Sprintf("chart podinfo 6.14.1 from %s: digest mismatch: index says sha256:%s, archive is %s",
				r.srv.URL, strings.Repeat("ab", 32), Digest(r.file("/podinfo-6.14.1.tgz")))}
		},
	}, {
		name:    "version not in index",
		version: "9.9.9",
		target:  ErrNotFound,
		msg: func(r *helmRepo) []string {
			return []string{"chart podinfo 9.9.9 from " + r.srv.URL + ": index " + r.srv.URL + "/index.yaml: no version 9.9.9 of chart podinfo (have 6.14.1)"}
		},
	}, {
		name:   "chart not in index",
		chart:  "nope",
		target: ErrNotFound,
		msg:    func(*helmRepo) []string { return []string{"no chart nope"} },
	}, {
		name:   "archive too big",
		cfg:    func(c *Config) { c.MaxChartSize = 1000 },
		target: ErrTooLarge,
		msg: func(r *helmRepo) []string {
			return []string{"GET " + r.srv.URL + "/podinfo-6.14.1.tgz", "limit of 1000"}
		},
	}, {
		name:   "index too big",
		cfg:    func(c *Config) { c.MaxIndexSize = 100 },
		target: ErrTooLarge,
		msg:    func(r *helmRepo) []string { return []string{"/index.yaml"} },
	}, {
		name: "not a chart",
		setup: func(t *testing.T, r *helmRepo) {
			junk := []byte("this is not a gzipped tarball\n")
			r.set("/podinfo-6.14.1.tgz", junk)
			r.editIndex(t, func(idx *repo.IndexFile) {
				idx.Entries["podinfo"][0].Digest = strings.TrimPrefix(Digest(junk), "sha256:")
			})
		},
		target: ErrInvalidChart,
		msg:    func(r *helmRepo) []string { return []string{"archive " + r.srv.URL + "/podinfo-6.14.1.tgz"} },
	}, {
		name: "archive holds another chart",
		setup: func(t *testing.T, r *helmRepo) {
			r.editIndex(t, func(idx *repo.IndexFile) {
				idx.Entries["podinfo"][0].URLs = []string{"ingress-nginx-4.15.1.tgz"}
				idx.Entries["podinfo"][0].Digest = ""
			})
		},
		target: ErrInvalidChart,
		msg:    func(*helmRepo) []string { return []string{"holds chart ingress-nginx 4.15.1"} },
	}, {
		name:   "archive 404",
		setup:  func(t *testing.T, r *helmRepo) { r.set("/podinfo-6.14.1.tgz", nil) },
		target: ErrNotFound,
		msg:    func(r *helmRepo) []string { return []string{"GET " + r.srv.URL + "/podinfo-6.14.1.tgz: HTTP 404"} },
	}, {
		name:   "index 404",
		setup:  func(t *testing.T, r *helmRepo) { r.set("/index.yaml", nil) },
		target: ErrNotFound,
		msg:    func(r *helmRepo) []string { return []string{"GET " + r.srv.URL + "/index.yaml: HTTP 404 Not Found"} },
	}, {
		name:   "index garbage",
		setup:  func(t *testing.T, r *helmRepo) { r.set("/index.yaml", []byte("<html><body>login</body></html>")) },
		target: ErrInvalidIndex,
		msg:    func(r *helmRepo) []string { return []string{"index " + r.srv.URL + "/index.yaml"} },
	}, {
		name:   "index without apiVersion",
		setup:  func(t *testing.T, r *helmRepo) { r.set("/index.yaml", []byte("entries: {}\n")) },
		target: ErrInvalidIndex,
		msg:    func(*helmRepo) []string { return []string{"no apiVersion"} },
	}, {
		name: "index digest malformed",
		setup: func(t *testing.T, r *helmRepo) {
			r.editIndex(t, func(idx *repo.IndexFile) { idx.Entries["podinfo"][0].Digest = "md5:1234" })
		},
		target: ErrInvalidIndex,
		msg:    func(*helmRepo) []string { return []string{`"md5:1234" is not a sha256 digest`} },
	}, {
		name: "archive URL not http",
		setup: func(t *testing.T, r *helmRepo) {
			r.editIndex(t, func(idx *repo.IndexFile) { idx.Entries["podinfo"][0].URLs = []string{"file:///etc/passwd"} })
		},
		target: ErrUnsupported,
	}, {
		name:   "oci type with an http URL",
		ref:    func(r *helmRepo) RepoRef { return RepoRef{Name: "reg", URL: r.srv.URL, Type: "oci"} },
		target: ErrInvalidRequest,
		msg:    func(*helmRepo) []string { return []string{"repository type oci needs an oci:// URL, not http://"} },
	}, {
		name: "oci URL with type default",
		ref: func(r *helmRepo) RepoRef {
			return RepoRef{Name: "reg", URL: "oci://127.0.0.1:1/charts", Type: "default"}
		},
		target: ErrInvalidRequest,
		msg:    func(*helmRepo) []string { return []string{`an oci:// URL needs repository type oci, not "default"`} },
	}, {
		name: "oci URL with a password",
		ref: func(r *helmRepo) RepoRef {
			return RepoRef{Name: "reg", URL: "oci://user:hunter2@127.0.0.1:1/charts", Type: "oci"}
		},
		target: ErrInvalidRequest,
		msg: func(*helmRepo) []string {
			return []string{"oci://user:xxxxx@127.0.0.1:1/charts", "credentials go in secretRef"}
		},
	}, {
		name:   "ftp URL",
		ref:    func(r *helmRepo) RepoRef { return RepoRef{Name: "reg", URL: "ftp://127.0.0.1:1/charts"} },
		target: ErrUnsupported,
	}, {
		name:   "unknown type",
		ref:    func(r *helmRepo) RepoRef { return RepoRef{Name: "reg", URL: r.srv.URL, Type: "git"} },
		target: ErrInvalidRequest,
	}, {
		name:   "empty version",
		ref:    func(r *helmRepo) RepoRef { return r.ref() },
		target: ErrInvalidRequest,
		msg:    func(*helmRepo) []string { return []string{"version is empty"} },
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newHelmRepo(t)
			if tc.setup != nil {
				tc.setup(t, r)
			}
			var mut []func(*Config)
			if tc.cfg != nil {
				mut = append(mut, tc.cfg)
			}
			e := newEnv(t, mut...)
			ref := r.ref()
			if tc.ref != nil {
				ref = tc.ref(r)
			}
			chart, version := "podinfo", "6.14.1"
			if tc.chart != "" {
				chart = tc.chart
			}
			if tc.version != "" {
				version = tc.version
			}
			if tc.name == "empty version" {
				version = ""
			}
			_, err := e.cs.Resolve(ctx, ref, chart, version)
			var msg []string
			if tc.msg != nil {
				msg = tc.msg(r)
			}
			wantErr(t, err, tc.target, msg...)
			e.assertEmpty(t)
		})
	}
}

func TestResolveCancelled(t *testing.T) {
	r := newHelmRepo(t)
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
	wantErr(t, err, context.Canceled)
	// A later call with a live context does the work.
	if _, err := e.cs.Resolve(context.Background(), r.ref(), "podinfo", "6.14.1"); err != nil {
		t.Fatal(err)
	}
}

func TestPushAndResolveLocal(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	archive, err := PackageDir(testChart(t, "podinfo"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.cs.Push(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest != Digest(archive) || c.Name != "podinfo" || c.Version != "6.14.1" || c.Source != SourcePush {
		t.Errorf("Push = %+v", c)
	}
	// Idempotent.
	again, err := e.cs.Push(ctx, archive)
	if err != nil || again.Digest != c.Digest {
		t.Errorf("second Push = %+v, %v", again, err)
	}
	for _, v := range []string{"6.14.1", "~6.14"} {
		got, err := e.cs.Resolve(ctx, RepoRef{Name: LocalRepo}, "podinfo", v)
		if err != nil {
			t.Fatalf("Resolve tether-local %s: %v", v, err)
		}
		if got.Digest != c.Digest {
			t.Errorf("Resolve tether-local %s = %s, want %s", v, got.Digest, c.Digest)
		}
	}
	_, err = e.cs.Resolve(ctx, RepoRef{Name: LocalRepo}, "podinfo", "6.14.2")
	wantErr(t, err, ErrNotFound, "chart podinfo 6.14.2 from tether-local: pushed charts: no version 6.14.2 of chart podinfo (have 6.14.1)")
	_, err = e.cs.Resolve(ctx, RepoRef{Name: LocalRepo}, "ingress-nginx", "4.15.1")
	wantErr(t, err, ErrNotFound, "no chart ingress-nginx")

	// Different bytes under the same name and version: refused, nothing changes.
	helmBuilt, err := helmPackage(testChart(t, "podinfo"), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(helmBuilt)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.cs.Push(ctx, other)
	wantErr(t, err, ErrExists, "chart podinfo 6.14.1: pushed before as "+c.Digest)
	if e.cs.Has(Digest(other)) {
		t.Error("refused push left a blob")
	}

	// A chart fetched from a repository is not in tether-local.
	r := newHelmRepo(t)
	if _, err := e.cs.Resolve(ctx, r.ref(), "ingress-nginx", "4.15.1"); err != nil {
		t.Fatal(err)
	}
	_, err = e.cs.Resolve(ctx, RepoRef{Name: LocalRepo}, "ingress-nginx", "4.15.1")
	wantErr(t, err, ErrNotFound)
}

func TestPushSameBytesAsRepository(t *testing.T) {
	ctx := context.Background()
	r := newHelmRepo(t)
	e := newEnv(t)
	fetched, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := e.cs.Push(ctx, r.file("/podinfo-6.14.1.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if pushed.Digest != fetched.Digest || fmt.Sprint(pushed.Sources) != fmt.Sprint([]string{r.srv.URL, SourcePush}) {
		t.Errorf("Push of fetched bytes = %+v", pushed)
	}
	list, err := e.cs.List(ctx)
	if err != nil || len(list) != 1 {
		t.Errorf("List = %+v, %v; want one chart", list, err)
	}
}

func TestPushInvalid(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, func(c *Config) { c.MaxChartSize = 4096 })
	_, err := e.cs.Push(ctx, []byte("hello"))
	wantErr(t, err, ErrInvalidChart, "push chart")
	_, err = e.cs.Push(ctx, nil)
	wantErr(t, err, ErrInvalidChart)
	_, err = e.cs.Push(ctx, make([]byte, 5000))
	wantErr(t, err, ErrTooLarge, "5000 bytes, more than the limit of 4096")
	e.assertEmpty(t)
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	r := newHelmRepo(t)
	e := newEnv(t)
	fetched, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
	if err != nil {
		t.Fatal(err)
	}
	archive, err := PackageDir(filepath.Join(e2etest.RepoRoot(t), "bundles", "services", "simple-nginx"))
	if err != nil {
		t.Fatal(err)
	}
	pushed, err := e.cs.Push(ctx, archive)
	if err != nil {
		t.Fatal(err)
	}
	url := r.srv.URL
	r.srv.Close() // everything must now come from disk

	e.reopen(t)
	got, err := e.cs.Resolve(ctx, RepoRef{Name: "public-charts", URL: url}, "podinfo", "6.14.1")
	if err != nil || got.Digest != fetched.Digest {
		t.Errorf("Resolve after reopen = %+v, %v; want %s", got, err, fetched.Digest)
	}
	got, err = e.cs.Resolve(ctx, RepoRef{Name: LocalRepo}, "simple-nginx", "1.0.0")
	if err != nil || got.Digest != pushed.Digest {
		t.Errorf("Resolve tether-local after reopen = %+v, %v; want %s", got, err, pushed.Digest)
	}
	list, err := e.cs.List(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "podinfo" || list[1].Name != "simple-nginx" {
		t.Errorf("List after reopen = %+v, %v", list, err)
	}
}

func TestResolveRefetchesLostBlob(t *testing.T) {
	ctx := context.Background()
	r := newHelmRepo(t)
	e := newEnv(t)
	c, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(e.cs.blobPath(c.Digest)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.cs.Open(c.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of lost blob: %v, want ErrNotFound", err)
	}
	again, err := e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
	if err != nil || again.Digest != c.Digest || !e.cs.Has(c.Digest) {
		t.Errorf("Resolve after losing the blob = %+v, %v", again, err)
	}
	// If upstream now serves other bytes, the recorded resolution stands.
	if err := os.Remove(e.cs.blobPath(c.Digest)); err != nil {
		t.Fatal(err)
	}
	r.set("/podinfo-6.14.1.tgz", r.file("/ingress-nginx-4.15.1.tgz"))
	r.editIndex(t, func(idx *repo.IndexFile) { idx.Entries["podinfo"][0].Digest = "" })
	_, err = e.cs.Resolve(ctx, r.ref(), "podinfo", "6.14.1")
	wantErr(t, err, ErrDigestMismatch, "resolved earlier to "+c.Digest)
}

func TestOpenBadDigest(t *testing.T) {
	e := newEnv(t)
	for _, d := range []string{"", "sha256:", "sha256:../../etc/passwd", "md5:" + strings.Repeat("a", 64),
		"sha256:" + strings.Repeat("A", 64), "sha256:" + strings.Repeat("a", 63)} {
		if _, _, err := e.cs.Open(d); !errors.Is(err, ErrInvalidDigest) {
			t.Errorf("Open(%q) = %v, want ErrInvalidDigest", d, err)
		}
		if e.cs.Has(d) {
			t.Errorf("Has(%q) = true", d)
		}
	}
	if _, _, err := e.cs.Open("sha256:" + strings.Repeat("a", 64)); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open(unknown) = %v, want ErrNotFound", err)
	}
}

func TestConfigValidate(t *testing.T) {
	e := newEnv(t)
	for _, cfg := range []Config{{}, {Dir: t.TempDir()}, {Store: e.st}, {Dir: t.TempDir(), Store: e.st, MaxChartSize: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}
