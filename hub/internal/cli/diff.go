package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/tetherfleet/tether/hub/internal/api"
	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Exit codes of `tether diff`, kubectl's.
const (
	// diffFound: some object differs.
	diffFound = 1
	// diffFailure: the command failed.
	diffFailure = 2
)

// exitCodeError ends the command with code; a nil err prints nothing.
type exitCodeError struct {
	code int
	err  error
}

func (e exitCodeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e exitCodeError) Unwrap() error { return e.err }

// serverSetMetadata are the metadata fields the hub sets, left out of
// diffs.
var serverSetMetadata = []string{"generation", "resourceVersion", "uid", "creationTimestamp"}

func newDiffCmd(g *globals) *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR|-",
		Short: "Show what apply would change, as unified diffs",
		Long: `For each object in the files, print a unified diff of the object as the hub
stores it against the object as 'tether apply' would store it (after
defaulting), both as 'tether get -o yaml' shows them but without status
and the metadata the hub sets (generation, resourceVersion, uid,
creationTimestamp). An object that does not exist yet is diffed against
/dev/null. The hub runs the whole apply to compute this (as 'tether apply
--dry-run=server' does) and stores nothing, so input that apply would
refuse is an error here too. Secret values are shown as "***", or "***
(before)" and "*** (after)" where they differ.

Exit status, as kubectl diff's:
  0  no differences
  1  differences found
  >1 tether or the hub failed (bad flags, unreadable or invalid input)`,
		Example: `  tether diff -f services.yaml
  tether diff -f manifests/
  cat svc.yaml | tether diff -f -`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("%s: pass files with -f, not as arguments", cmd.CommandPath())}
			}
			if len(files) == 0 {
				return usageError{fmt.Errorf("%s: -f FILE|DIR|- is required", cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			differ, err := runDiff(cmd, g, files)
			switch {
			case err != nil:
				return exitCodeError{diffFailure, err}
			case differ:
				return exitCodeError{code: diffFound}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVarP(&files, "filename", "f", nil, "file, directory or - for stdin (repeatable)")
	return cmd
}

// runDiff prints the diffs of files' objects and reports whether any
// differ.
func runDiff(cmd *cobra.Command, g *globals, files []string) (bool, error) {
	srcs, err := readSources(g.stdin, files)
	if err != nil {
		return false, err
	}
	c, err := g.client()
	if err != nil {
		return false, err
	}
	ctx, cancel := g.ctx(cmd)
	defer cancel()
	// Compute every diff before printing one, so an error prints none.
	var diffs []string
	for _, s := range srcs {
		res, err := c.DryRunApply(ctx, s.name, s.data)
		if err != nil {
			return false, fmt.Errorf("diff %s: %w", s.name, err)
		}
		for _, r := range res {
			printWarnings(g.stderr, r.Kind, r.Namespace, r.Name, r.Warnings)
			d, err := objectDiff(r)
			if err != nil {
				return false, fmt.Errorf("diff %s: %s %s/%s: %w", s.name, r.Kind, r.Namespace, r.Name, err)
			}
			if d != "" {
				diffs = append(diffs, d)
			}
		}
	}
	for _, d := range diffs {
		if _, err := io.WriteString(g.stdout, d); err != nil {
			return false, err
		}
	}
	return len(diffs) > 0, nil
}

// objectDiff is the unified diff of one dry-run result, "" when the
// stored object and the would-be one are the same.
func objectDiff(r api.ApplyResult) (string, error) {
	if len(r.Object) == 0 {
		return "", errors.New("the hub's answer has no object (a hub without dry-run support?)")
	}
	merged, err := diffMap(r.Object)
	if err != nil {
		return "", err
	}
	var live map[string]any
	if len(r.Live) > 0 {
		if live, err = diffMap(r.Live); err != nil {
			return "", err
		}
	}
	if r.Kind == objects.KindSecret {
		maskSecret(live, merged)
	}
	name := r.Kind + "/" + r.Name
	if r.Namespace != "" {
		name = r.Kind + "/" + r.Namespace + "/" + r.Name
	}
	from, to := "live/"+name, "merged/"+name
	liveText := ""
	if live != nil {
		if liveText, err = diffYAML(live); err != nil {
			return "", err
		}
	} else {
		from = "/dev/null"
	}
	mergedText, err := diffYAML(merged)
	if err != nil {
		return "", err
	}
	if liveText == mergedText {
		return "", nil
	}
	return unifiedDiff(from, to, liveText, mergedText)
}

// unifiedDiff is a diff -u of a and b with 3 lines of context.
func unifiedDiff(from, to, a, b string) (string, error) {
	d, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: lines(a), B: lines(b),
		FromFile: from, ToFile: to, Context: 3,
	})
	if err != nil {
		return "", fmt.Errorf("diff: %w", err)
	}
	return d, nil
}

// lines splits s after each newline; "" has none.
func lines(s string) []string {
	l := strings.SplitAfter(s, "\n")
	if l[len(l)-1] == "" {
		l = l[:len(l)-1]
	}
	return l
}

// diffMap decodes an object's JSON without its status and the metadata
// the hub sets.
func diffMap(raw json.RawMessage) (map[string]any, error) {
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("decode the hub's answer: %w", err)
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		for _, f := range serverSetMetadata {
			delete(md, f)
		}
	}
	return m, nil
}

func diffYAML(m map[string]any) (string, error) {
	b, err := yaml.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode yaml: %w", err)
	}
	return string(b), nil
}

// maskSecret hides the values of a Secret's data and stringData, and
// kubectl's last-applied annotation (a copy of the manifest), as kubectl
// diff does: "***" where live and merged agree, "*** (before)" and "***
// (after)" where they differ. live may be nil.
func maskSecret(live, merged map[string]any) {
	sub := func(o map[string]any, path ...string) map[string]any {
		for _, p := range path {
			o, _ = o[p].(map[string]any)
		}
		return o
	}
	all := func(string) bool { return true }
	maskValues(sub(live, "data"), sub(merged, "data"), all)
	maskValues(sub(live, "stringData"), sub(merged, "stringData"), all)
	maskValues(sub(live, "metadata", "annotations"), sub(merged, "metadata", "annotations"),
		func(k string) bool { return k == lastApplied })
}

// lastApplied is kubectl's copy of the applied manifest.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// maskValues replaces the values of l's and m's keys that hide accepts
// (either map may be nil).
func maskValues(l, m map[string]any, hide func(string) bool) {
	keys := slices.Collect(maps.Keys(l))
	for k := range m {
		if _, ok := l[k]; !ok {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if !hide(k) {
			continue
		}
		lv, inL := l[k]
		mv, inM := m[k]
		same := inL && inM && fmt.Sprint(lv) == fmt.Sprint(mv)
		if inL {
			l[k] = maskFor(same, " (before)")
		}
		if inM {
			m[k] = maskFor(same, " (after)")
		}
	}
}

func maskFor(same bool, which string) string {
	if same {
		return "***"
	}
	return "***" + which
}
