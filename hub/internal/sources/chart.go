// Package sources turns the manifest sources of ServiceTemplates
// (spec.resources, spec.kustomize: plain manifests or a kustomization,
// from a ConfigMap, a Secret or a git repository) into Helm chart
// archives, so the hub stores them in its content-addressed chart store
// and agents install them like any chart (docs/design/sources.md).
//
// A generated chart has a Chart.yaml and one template,
// templates/manifests.yaml, holding the manifests as rendered, with every
// "{{" escaped so Helm outputs them unchanged. Its archive depends only
// on its name, version and manifests, so rendering the same source twice
// gives the same digest.
package sources

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"helm.sh/helm/v3/pkg/chart/loader"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Errors, matched with errors.Is; the wrapping error names the file or
// document.
var (
	// ErrInvalidManifest: a document is not a Kubernetes object
	// (apiVersion, kind and metadata.name), or does not parse.
	ErrInvalidManifest = errors.New("invalid manifest")
	// ErrNoManifests: the source holds no object.
	ErrNoManifests = errors.New("no manifests")
	// ErrNotAllowed: a kustomization reaches outside its source.
	ErrNotAllowed = errors.New("not allowed")
	// ErrTooLarge: a source exceeds its size bound.
	ErrTooLarge = errors.New("too large")
)

// ManifestsFile is the generated chart's one template.
const ManifestsFile = "templates/manifests.yaml"

// MaxSourceSize bounds the bytes of a source (all its files) and of the
// manifests rendered from it.
const MaxSourceSize = 16 << 20

// Resources returns the Kubernetes objects of plain manifest files,
// multi-document YAML or JSON, in the order of the sorted file names,
// as one multi-document YAML text. Empty documents are dropped; any
// other document must be an object with apiVersion, kind and
// metadata.name.
func Resources(files map[string][]byte) ([]byte, error) {
	var out bytes.Buffer
	n := 0
	for _, name := range slices.Sorted(maps.Keys(files)) {
		docs, err := splitDocs(files[name])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		for i, d := range docs {
			ok, err := checkObject(d)
			if err != nil {
				return nil, fmt.Errorf("%s: document %d: %w", name, i+1, err)
			}
			if !ok {
				continue
			}
			if n > 0 {
				out.WriteString("---\n")
			}
			out.Write(d)
			n++
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("%d files: %w", len(files), ErrNoManifests)
	}
	if out.Len() > MaxSourceSize {
		return nil, fmt.Errorf("manifests: %d bytes, more than %d: %w", out.Len(), MaxSourceSize, ErrTooLarge)
	}
	return out.Bytes(), nil
}

// splitDocs returns the documents of a YAML stream, each trimmed and
// ending in a newline.
func splitDocs(b []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	var docs [][]byte
	for {
		d, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
		}
		d = bytes.TrimSpace(d)
		d = bytes.TrimPrefix(d, []byte("---"))
		d = bytes.TrimSpace(d)
		if len(d) == 0 {
			continue
		}
		docs = append(docs, append(d, '\n'))
	}
}

// checkObject reports whether d is an object (false: only comments or
// null), or why it is not a Kubernetes object.
func checkObject(d []byte) (bool, error) {
	var obj map[string]any
	if err := yaml.Unmarshal(d, &obj); err != nil {
		return false, fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	if obj == nil {
		return false, nil
	}
	str := func(v any) string { s, _ := v.(string); return s }
	md, _ := obj["metadata"].(map[string]any)
	switch {
	case str(obj["apiVersion"]) == "":
		return false, fmt.Errorf("no apiVersion: %w", ErrInvalidManifest)
	case str(obj["kind"]) == "":
		return false, fmt.Errorf("no kind: %w", ErrInvalidManifest)
	case str(md["name"]) == "" && str(md["generateName"]) == "":
		return false, fmt.Errorf("%s: no metadata.name: %w", str(obj["kind"]), ErrInvalidManifest)
	}
	return true, nil
}

// Version returns the generated chart's version: specVersion (a
// ServiceTemplate's spec.version, if it is a semantic version) or 0.0.0,
// with build metadata naming the manifests' digest, so a change in the
// source is a new chart version.
func Version(specVersion string, manifests []byte) string {
	sum := sha256.Sum256(manifests)
	build := hex.EncodeToString(sum[:6])
	v, err := semver.StrictNewVersion(strings.TrimPrefix(specVersion, "v"))
	if err != nil {
		return "0.0.0+" + build
	}
	nv, err := v.SetMetadata(build)
	if err != nil {
		return "0.0.0+" + build
	}
	return nv.String()
}

// Escape makes text a Helm template that renders to text: every "{{"
// becomes an action that prints "{{".
func Escape(text string) string {
	return strings.ReplaceAll(text, "{{", `{{"{{"}}`)
}

// archiveTime is the modification time of every file in a generated
// archive, so equal input gives equal bytes.
var archiveTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// Chart packages manifests (from Resources or Kustomize) into a Helm
// chart archive named name at version, with description as the chart's
// description. The archive loads back with Helm's loader.
func Chart(name, version, description string, manifests []byte) ([]byte, error) {
	meta := map[string]any{
		"apiVersion":  "v2",
		"name":        name,
		"version":     version,
		"type":        "application",
		"description": description,
		"annotations": map[string]string{"tether.dev/generated": "true"},
	}
	chartYAML, err := yaml.Marshal(meta)
	if err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	files := []struct {
		name string
		data []byte
	}{
		{"Chart.yaml", chartYAML},
		{ManifestsFile, []byte(Escape(string(manifests)))},
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: name + "/" + f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: archiveTime}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("chart %s: %w", name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("chart %s: %w", name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("chart %s: %w", name, err)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(buf.Bytes()))
	if err != nil {
		return nil, fmt.Errorf("chart %s %s: generated archive does not load: %w", name, version, err)
	}
	if err := ch.Validate(); err != nil {
		return nil, fmt.Errorf("chart %s %s: %w", name, version, err)
	}
	return buf.Bytes(), nil
}
