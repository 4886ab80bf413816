package sources

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/ignore"
)

// ErrInvalidChart: a chart directory that Helm does not load, or whose
// dependencies are not in it.
var ErrInvalidChart = errors.New("invalid chart")

// PackageChart packages the files of a chart directory (paths relative to
// it, as GitTree.Under returns them: Chart.yaml, values.yaml, templates/,
// charts/, ...) into a Helm chart archive, as `helm package` does: the
// .helmignore patterns are honoured, files go under NAME/ with fixed
// times and modes, so the same files give the same digest. Dependencies
// must be in charts/ (the hub fetches nothing a chart names): a
// dependency of Chart.yaml with no subchart there is ErrInvalidChart.
func PackageChart(files map[string][]byte) ([]byte, error) {
	if _, ok := files["Chart.yaml"]; !ok {
		return nil, fmt.Errorf("no Chart.yaml: %w", ErrInvalidChart)
	}
	size := 0
	for _, b := range files {
		size += len(b)
	}
	if size > MaxSourceSize {
		return nil, fmt.Errorf("chart files: %d bytes, more than %d: %w", size, MaxSourceSize, ErrTooLarge)
	}
	rules := ignore.Empty()
	if b, ok := files[ignore.HelmIgnore]; ok {
		r, err := ignore.Parse(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %v: %w", ignore.HelmIgnore, err, ErrInvalidChart)
		}
		rules = r
	}
	rules.AddDefaults()
	var kept []*loader.BufferedFile
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if name != path.Clean(name) || strings.HasPrefix(name, "../") || path.IsAbs(name) {
			return nil, fmt.Errorf("file %q: not a path in the chart: %w", name, ErrInvalidChart)
		}
		if ignored(rules, name) {
			continue
		}
		kept = append(kept, &loader.BufferedFile{Name: name, Data: files[name]})
	}
	ch, err := loadFiles(kept)
	if err != nil {
		return nil, err
	}
	if err := ch.Validate(); err != nil {
		return nil, fmt.Errorf("chart metadata: %v: %w", err, ErrInvalidChart)
	}
	have := map[string]bool{}
	for _, d := range ch.Dependencies() {
		have[d.Name()] = true
	}
	for _, d := range ch.Metadata.Dependencies {
		if !have[d.Name] {
			return nil, fmt.Errorf("dependency %s %s is not in charts/ (the hub does not fetch dependencies; vendor them with `helm dependency build`): %w", d.Name, d.Version, ErrInvalidChart)
		}
	}
	name := ch.Metadata.Name
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range kept {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name + "/" + f.Name, Mode: 0o644, Size: int64(len(f.Data)), ModTime: archiveTime}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("chart %s: %w", name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("chart %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	if _, err := loader.LoadArchive(bytes.NewReader(buf.Bytes())); err != nil {
		return nil, fmt.Errorf("chart %s: packaged archive does not load: %v: %w", name, err, ErrInvalidChart)
	}
	return buf.Bytes(), nil
}

// ignored applies .helmignore rules to a file and each of its parent
// directories, as helm package's walk does.
func ignored(rules *ignore.Rules, name string) bool {
	parts := strings.Split(name, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		if rules.Ignore(p, fileInfo{name: parts[i], dir: i < len(parts)-1}) {
			return true
		}
	}
	return false
}

// loadFiles is Helm's loader on untrusted files; it never panics.
func loadFiles(files []*loader.BufferedFile) (c *chart.Chart, err error) {
	defer func() {
		if r := recover(); r != nil {
			c, err = nil, fmt.Errorf("load panicked: %v: %w", r, ErrInvalidChart)
		}
	}()
	c, err = loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrInvalidChart)
	}
	return c, nil
}

// fileInfo is the os.FileInfo .helmignore rules look at: a name and
// whether it is a directory.
type fileInfo struct {
	name string
	dir  bool
}

func (f fileInfo) Name() string { return f.name }
func (f fileInfo) Size() int64  { return 0 }
func (f fileInfo) Mode() fs.FileMode {
	if f.dir {
		return fs.ModeDir | 0o755
	}
	return 0o644
}
func (f fileInfo) ModTime() time.Time { return archiveTime }
func (f fileInfo) IsDir() bool        { return f.dir }
func (f fileInfo) Sys() any           { return nil }
