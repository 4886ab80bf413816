package charts

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
)

// Push stores an uploaded chart archive with source "push", so Resolve
// finds it in LocalRepo by name and version. Pushing the same bytes again
// returns the stored chart; pushing different bytes under a name and
// version already pushed fails with ErrExists and changes nothing.
func (s *Store) Push(ctx context.Context, archive []byte) (Chart, error) {
	if int64(len(archive)) > s.cfg.MaxChartSize {
		return Chart{}, fmt.Errorf("push chart: %d bytes, more than the limit of %d: %w", len(archive), s.cfg.MaxChartSize, ErrTooLarge)
	}
	ch, err := loadChart(archive)
	if err != nil {
		return Chart{}, fmt.Errorf("push chart: %w", err)
	}
	c := Chart{Digest: Digest(archive), Name: ch.Metadata.Name, Version: ch.Metadata.Version, Size: int64(len(archive))}
	if err := checkRequest(c.Name, c.Version); err != nil {
		return Chart{}, fmt.Errorf("push chart: %w", err)
	}
	// Refuse a conflicting push before writing the blob; record checks
	// again inside its transaction against a concurrent push.
	old, ok, err := s.find(ctx, SourcePush, c.Name, c.Version)
	if err != nil {
		return Chart{}, fmt.Errorf("push chart %s %s: %w", c.Name, c.Version, err)
	}
	if ok && old.Digest != c.Digest {
		return Chart{}, fmt.Errorf("chart %s %s: pushed before as %s, this archive is %s; bump the chart version: %w",
			c.Name, c.Version, old.Digest, c.Digest, ErrExists)
	}
	if err := s.writeBlob(c.Digest, archive); err != nil {
		return Chart{}, fmt.Errorf("push chart %s %s: store %s: %w", c.Name, c.Version, c.Digest, err)
	}
	out, err := s.record(ctx, c, SourcePush, false)
	if err != nil {
		return Chart{}, err
	}
	s.log.Info("chart pushed", "chart", out.Name, "version", out.Version, "digest", out.Digest, "size", out.Size)
	return out, nil
}

// archiveTime is the modification time of every file PackageDir writes,
// so that packaging the same directory twice gives the same digest.
var archiveTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// PackageDir packages the chart directory dir (honouring .helmignore) into
// a .tgz in memory, the layout `helm package` produces. The files are
// written as they are on disk, sorted, with fixed times and modes, so the
// archive, and its digest, depend only on the chart's content.
func PackageDir(dir string) ([]byte, error) {
	ch, err := loader.LoadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", dir, err)
	}
	name := ch.Metadata.Name
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return nil, fmt.Errorf("package %s: chart name %q cannot name a directory: %w", dir, name, ErrInvalidChart)
	}
	files := slices.Clone(ch.Raw)
	slices.SortFunc(files, func(a, b *chart.File) int { return strings.Compare(a.Name, b.Name) })

	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{
			Typeflag: tar.TypeReg,
			Name:     path.Join(name, f.Name),
			Mode:     0o644,
			Size:     int64(len(f.Data)),
			ModTime:  archiveTime,
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("package %s: %s: %w", dir, f.Name, err)
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, fmt.Errorf("package %s: %s: %w", dir, f.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("package %s: %w", dir, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("package %s: %w", dir, err)
	}
	// The archive must load back as the same chart (subcharts included).
	if _, err := loadChart(buf.Bytes()); err != nil {
		return nil, fmt.Errorf("package %s: packaged archive does not load: %w", dir, err)
	}
	return buf.Bytes(), nil
}

// SourceGenerated prefixes the source recorded for a chart the hub
// generated from a ServiceTemplate's manifests ("generated:NS/NAME").
const SourceGenerated = "generated:"

// AddGenerated stores a chart archive the hub generated (package
// sources) with source, which should start with SourceGenerated; authed
// marks it as made from secret material. Its version names its content,
// so the same (source, name, version) with other bytes is refused with
// ErrExists.
func (s *Store) AddGenerated(ctx context.Context, archive []byte, source string, authed bool) (Chart, error) {
	if int64(len(archive)) > s.cfg.MaxChartSize {
		return Chart{}, fmt.Errorf("generated chart from %s: %d bytes, more than the limit of %d: %w", source, len(archive), s.cfg.MaxChartSize, ErrTooLarge)
	}
	ch, err := loadChart(archive)
	if err != nil {
		return Chart{}, fmt.Errorf("generated chart from %s: %w", source, err)
	}
	c := Chart{Digest: Digest(archive), Name: ch.Metadata.Name, Version: ch.Metadata.Version, Size: int64(len(archive))}
	old, ok, err := s.find(ctx, source, c.Name, c.Version)
	if err != nil {
		return Chart{}, fmt.Errorf("generated chart %s %s: %w", c.Name, c.Version, err)
	}
	if ok && old.Digest != c.Digest {
		return Chart{}, fmt.Errorf("generated chart %s %s from %s: stored before as %s, this archive is %s: %w", c.Name, c.Version, source, old.Digest, c.Digest, ErrExists)
	}
	if err := s.writeBlob(c.Digest, archive); err != nil {
		return Chart{}, fmt.Errorf("generated chart %s %s: store %s: %w", c.Name, c.Version, c.Digest, err)
	}
	return s.record(ctx, c, source, authed)
}
