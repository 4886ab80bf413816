package charts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"testing"
)

// FuzzParseIndex: untrusted index.yaml bytes never panic, and a parsed
// index can be searched.
func FuzzParseIndex(f *testing.F) {
	f.Add(packagedRepo(f)["/index.yaml"])
	f.Add([]byte("apiVersion: v1\nentries:\n  podinfo:\n  - null\n  - {}\n  - version: 1.0.0\n"))
	f.Add([]byte(`{"apiVersion":"v1","entries":{"podinfo":[{"version":"1.0.0","urls":["x.tgz"],"digest":"zz"}]}}`))
	f.Add([]byte("apiVersion: v1\nentries: {a: [&x {name: a, version: '1'}, *x]}\n"))
	f.Add([]byte("<html>"))
	f.Fuzz(func(t *testing.T, data []byte) {
		idx, err := parseIndex(data)
		if err != nil {
			return
		}
		for name := range idx.Entries {
			for _, v := range []string{"1.0.0", "~1", "*", ">=0.0.0-0"} {
				if cv, err := findVersion(idx, name, v); err == nil {
					_, _ = normalizeDigest(cv.Digest)
				}
			}
		}
	})
}

// FuzzLoadChart: untrusted archive bytes never panic.
func FuzzLoadChart(f *testing.F) {
	f.Add(packagedRepo(f)["/podinfo-6.14.1.tgz"])
	simple, err := PackageDir(simpleNginxDir(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(simple)
	f.Add(tgz(f, map[string]string{"c/Chart.yaml": "apiVersion: v2\nname: c\nversion: 1.0.0\n", "c/charts/sub/Chart.yaml": "name: [", "c/values.yaml": "a: b"}))
	f.Add(tgz(f, map[string]string{"c/Chart.yaml": "apiVersion: v2\nname: c\nversion: 1.0.0\n", "c/Chart.lock": "null", "c/requirements.lock": "- 1"}))
	f.Add(tgz(f, map[string]string{"Chart.yaml": "x"}))
	f.Add([]byte{0x1f, 0x8b, 0x08})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := loadChart(data)
		if err == nil && c.Metadata == nil {
			t.Fatal("loadChart returned a chart without metadata")
		}
	})
}

func tgz(tb testing.TB, files map[string]string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, body := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			tb.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}
