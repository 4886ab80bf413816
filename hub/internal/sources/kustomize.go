package sources

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// kustomizationNames are the file names kustomize reads in a directory.
var kustomizationNames = []string{"kustomization.yaml", "kustomization.yml", "Kustomization"}

// Kustomize builds the kustomization in directory dir ("" or "." for the
// root) of files (slash-separated paths relative to the source's root)
// and returns the objects as multi-document YAML. The build runs on an
// in-memory copy of files with kustomize's plugins (and so helmCharts)
// disabled; a kustomization that names anything not in files (a remote
// base, a URL, a path outside the source) is refused with ErrNotAllowed
// before the build, so the hub never fetches anything on a
// kustomization's say.
func Kustomize(files map[string][]byte, dir string) ([]byte, error) {
	dir = path.Clean("/" + dir)
	fs := filesys.MakeFsInMemory()
	size := 0
	for name, data := range files {
		size += len(data)
		p := path.Clean("/" + name)
		if err := fs.MkdirAll(path.Dir(p)); err != nil {
			return nil, fmt.Errorf("kustomize: %s: %w", name, err)
		}
		if err := fs.WriteFile(p, data); err != nil {
			return nil, fmt.Errorf("kustomize: %s: %w", name, err)
		}
	}
	if size > MaxSourceSize {
		return nil, fmt.Errorf("kustomize: source of %d bytes, more than %d: %w", size, MaxSourceSize, ErrTooLarge)
	}
	found := false
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := path.Clean("/" + name)
		if !slices.Contains(kustomizationNames, path.Base(p)) {
			continue
		}
		if path.Dir(p) == dir {
			found = true
		}
		if err := checkKustomization(fs, p, files[name]); err != nil {
			return nil, fmt.Errorf("kustomize: %s: %w", strings.TrimPrefix(p, "/"), err)
		}
	}
	if !found {
		return nil, fmt.Errorf("kustomize: no kustomization.yaml in %q: %w", strings.TrimPrefix(dir, "/")+"/", ErrNoManifests)
	}
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(fs, dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", strings.TrimPrefix(dir, "/")+"/", err)
	}
	out, err := rm.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", strings.TrimPrefix(dir, "/")+"/", err)
	}
	// The same checks as for plain manifests (and the same form).
	return Resources(map[string][]byte{"kustomize": out})
}

// checkKustomization refuses a kustomization (at p in fs) that names a
// file or directory fs does not have: kustomize would fetch it (a git
// URL, an http URL) instead.
func checkKustomization(fs filesys.FileSystem, p string, data []byte) error {
	var k types.Kustomization
	if err := yaml.Unmarshal(data, &k); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidManifest, err)
	}
	if len(k.HelmCharts) > 0 || len(k.HelmChartInflationGenerator) > 0 || k.HelmGlobals != nil {
		return fmt.Errorf("helmCharts: %w: use a Helm chart template (spec.helm) instead", ErrNotAllowed)
	}
	var refs []string
	add := func(field string, vals ...string) {
		for _, v := range vals {
			if v != "" && !strings.Contains(v, "\n") { // multi-line: an inline patch or config
				refs = append(refs, field+"\x00"+v)
			}
		}
	}
	add("resources", k.Resources...)
	//lint:ignore SA1019 kustomize still reads the deprecated field, so it is checked too
	add("bases", k.Bases...)
	add("components", k.Components...)
	add("crds", k.Crds...)
	add("configurations", k.Configurations...)
	add("generators", k.Generators...)
	add("transformers", k.Transformers...)
	add("validators", k.Validators...)
	add("openapi.path", k.OpenAPI["path"])
	//lint:ignore SA1019 kustomize still reads the deprecated field, so it is checked too
	for _, psm := range k.PatchesStrategicMerge {
		add("patchesStrategicMerge", string(psm))
	}
	for _, pt := range k.Patches {
		add("patches.path", pt.Path)
	}
	//lint:ignore SA1019 kustomize still reads the deprecated field, so it is checked too
	for _, pt := range k.PatchesJson6902 {
		add("patchesJson6902.path", pt.Path)
	}
	for _, r := range k.Replacements {
		add("replacements.path", r.Path)
	}
	gens := make([]types.GeneratorArgs, 0, len(k.ConfigMapGenerator)+len(k.SecretGenerator))
	for _, g := range k.ConfigMapGenerator {
		gens = append(gens, g.GeneratorArgs)
	}
	for _, g := range k.SecretGenerator {
		gens = append(gens, g.GeneratorArgs)
	}
	for _, g := range gens {
		for _, f := range g.FileSources {
			if _, file, ok := strings.Cut(f, "="); ok {
				f = file
			}
			add("files", f)
		}
		add("envs", g.EnvSources...)
		add("env", g.EnvSource)
	}
	base := path.Dir(p)
	for _, r := range refs {
		field, ref, _ := strings.Cut(r, "\x00")
		if strings.Contains(ref, "://") || strings.HasPrefix(ref, "git@") {
			return fmt.Errorf("%s: %q: %w: remote references are not fetched; put the files in the source", field, ref, ErrNotAllowed)
		}
		if !fs.Exists(path.Join(base, ref)) {
			return fmt.Errorf("%s: %q: %w: not in the source (kustomize would fetch it as a remote reference)", field, ref, ErrNotAllowed)
		}
	}
	return nil
}
