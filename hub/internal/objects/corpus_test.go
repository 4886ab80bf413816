package objects

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/k0rdent/EXPECTED.txt from what Tether does now")

// tetherAcceptsBeyondK0rdent lists the corpus documents that k0rdent's
// schema refuses and Tether accepts on purpose, with the reason.
var tetherAcceptsBeyondK0rdent = map[string]string{
	// k0rdent v1alpha1 prunes displayName and description (kubectl's
	// strict validation refuses them) and requires chartSpec.interval;
	// the seed article's example has the first two and not the third,
	// and Tether's promise is that it applies as written (issue 8).
	"seed-article-example.yaml#1": "the seed article's example applies as written",
}

// corpusDoc is one document of a corpus file: what k0rdent's schema says
// and what Tether does.
type corpusDoc struct {
	ref      string // file#index
	kind     string
	key      string // namespace/name as written
	k0rdent  crdVerdict
	err      error    // Tether's Decode of the document alone
	warnings []string // Tether's warnings when accepted
}

// TestK0rdentCorpus decodes and applies every file of testdata/k0rdent
// (k0rdent's and Flux's manifests, copied verbatim; SOURCES.md) and
// holds Tether to what a management cluster with k0rdent installed does
// with each object (k0rdent's CRDs and the kube-apiserver's validation,
// crdschema_test.go):
//   - an object k0rdent accepts is accepted: it decodes, and its file
//     applies (with the ServiceTemplates, HelmRepositories and chains it
//     names made up by the test when the file has none), possibly with
//     warnings;
//   - an object of a kind Tether refuses by design (k0rdent's internal
//     kinds) is refused with the kind's documented reason;
//   - an object k0rdent refuses is refused, with an error that names a
//     field k0rdent's error names (or the object when k0rdent's error is
//     about its kind), except tetherAcceptsBeyondK0rdent;
//   - an object of a kind neither k0rdent, Flux nor Kubernetes' core
//     serves here (a CAPI identity, say) is refused as an unknown kind.
//
// What Tether does with each document (accepted, its warnings, or the
// error) is compared with testdata/k0rdent/EXPECTED.txt, so that a change
// of behaviour shows in review; -update-corpus rewrites it.
func TestK0rdentCorpus(t *testing.T) {
	oracle, err := loadCRDs()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("testdata", "k0rdent", "*.yaml"))
	if err != nil || len(files) < 50 {
		t.Fatalf("corpus: %d files, %v; want 50 or more", len(files), err)
	}
	sources, err := os.ReadFile(filepath.Join("testdata", "k0rdent", "SOURCES.md"))
	if err != nil {
		t.Fatal(err)
	}
	reg := DefaultKinds()
	var all []corpusDoc
	for _, f := range files {
		name := filepath.Base(f)
		if !strings.Contains(string(sources), "| "+name+" |") {
			t.Errorf("%s: not in SOURCES.md; say where it comes from", name)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs := corpusFile(t, oracle, reg, name, b)
		all = append(all, docs...)
		t.Run(name, func(t *testing.T) {
			for _, d := range docs {
				checkCorpusDoc(t, reg, d)
			}
			for _, d := range docs {
				if d.err != nil {
					return // the file as a whole is refused; each document was checked
				}
			}
			applyCorpusFile(t, reg, name, b)
		})
	}
	got := corpusReport(all)
	golden := filepath.Join("testdata", "k0rdent", "EXPECTED.txt")
	if *updateCorpus {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run with -update-corpus to write it)", err)
	}
	if got != string(want) {
		t.Errorf("what Tether does with the corpus changed; if that is intended, run `go test -run TestK0rdentCorpus -update-corpus` and review the diff of %s:\n%s", golden, lineDiff(string(want), got))
	}
}

// corpusFile judges and decodes each document of one file.
func corpusFile(t *testing.T, oracle *crdSchemas, reg *Registry, name string, b []byte) []corpusDoc {
	t.Helper()
	docs, err := splitDocuments(b)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var out []corpusDoc
	for _, d := range docs {
		var m map[string]any
		if err := yaml.Unmarshal([]byte(d.text), &m); err != nil {
			t.Fatalf("%s document %d is not YAML: %v", name, d.index, err)
		}
		if m == nil {
			continue // only comments
		}
		cd := corpusDoc{ref: fmt.Sprintf("%s#%d", name, d.index), k0rdent: oracle.judge(m)}
		cd.kind, _ = m["kind"].(string)
		if md, ok := m["metadata"].(map[string]any); ok {
			ns, _ := md["namespace"].(string)
			n, _ := md["name"].(string)
			cd.key = strings.TrimPrefix(ns+"/"+n, "/")
		}
		objs, err := reg.Decode([]byte(d.text), name)
		cd.err = err
		if err == nil && len(objs) == 1 {
			cd.warnings = reg.Warnings(objs[0])
		}
		out = append(out, cd)
	}
	return out
}

func checkCorpusDoc(t *testing.T, reg *Registry, d corpusDoc) {
	t.Helper()
	refused, byDesign := reg.refused[d.kind]
	switch {
	case byDesign && d.k0rdent.known:
		if !errors.Is(d.err, ErrUnknownKind) || !strings.Contains(fmt.Sprint(d.err), refused.reason) {
			t.Errorf("%s: %s is refused by design; got %v, want the documented reason %q", d.ref, d.kind, d.err, refused.reason)
		}
	case !d.k0rdent.known:
		if !errors.Is(d.err, ErrUnknownKind) || !strings.Contains(d.err.Error(), d.kind) {
			t.Errorf("%s: %s is not a kind of k0rdent, Flux or Kubernetes' core; got %v, want it refused as an unknown kind", d.ref, d.kind, d.err)
		}
	case d.k0rdent.accepted():
		if d.err != nil {
			t.Errorf("%s: k0rdent accepts this %s; Tether refuses it:\n%v", d.ref, d.kind, d.err)
		}
	case tetherAcceptsBeyondK0rdent[d.ref] != "":
		if d.err != nil {
			t.Errorf("%s: Tether accepts this on purpose (%s); got\n%v", d.ref, tetherAcceptsBeyondK0rdent[d.ref], d.err)
		}
	default:
		if d.err == nil {
			t.Errorf("%s: k0rdent refuses this %s (%s); Tether accepts it", d.ref, d.kind, strings.Join(d.k0rdent.errs, "; "))
			return
		}
		if !namesAField(d.err.Error(), d.k0rdent.errs) {
			t.Errorf("%s: Tether's error does not name a field k0rdent's does (%s):\n%v", d.ref, strings.Join(d.k0rdent.errs, "; "), d.err)
		}
	}
}

// namesAField reports whether msg names one of the field paths of the
// k0rdent errors ("spec.x: reason"), or, for errors about the whole
// object, is about the object at all.
func namesAField(msg string, k0rdentErrs []string) bool {
	for _, e := range k0rdentErrs {
		p, _, _ := strings.Cut(e, ": ")
		if p == "" || !strings.Contains(p, ".") && p != "spec" && p != "metadata" {
			return true
		}
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// applyCorpusFile applies a file that decodes, in a fresh repository
// holding the objects it names but does not define.
func applyCorpusFile(t *testing.T, reg *Registry, name string, b []byte) {
	t.Helper()
	objs, err := reg.Decode(b, name)
	if err != nil {
		t.Fatalf("every document decodes alone, but the file is refused:\n%v", err)
	}
	r, _ := newRepo(t)
	ctx := context.Background()
	if fx := corpusFixtures(t, reg, objs); len(fx) > 0 {
		if _, err := r.Apply(ctx, fx); err != nil {
			t.Fatalf("fixtures: %v", err)
		}
	}
	if _, err := r.Apply(ctx, objs); err != nil {
		t.Errorf("apply:\n%v", err)
	}
}

// corpusFixtures makes up what objs refer to and do not define: the
// ServiceTemplates (with a pushed chart), HelmRepositories and
// ServiceTemplateChains a k0rdent user would have installed before.
func corpusFixtures(t *testing.T, reg *Registry, objs []Object) []Object {
	t.Helper()
	have := map[string]bool{}
	for _, o := range objs {
		h := o.GetHeader()
		have[h.Kind+"/"+h.Metadata.Namespace+"/"+h.Metadata.Name] = true
		have[h.Kind+"//"+h.Metadata.Name] = true // a shared kind may come from any namespace
	}
	chains := map[string][]string{} // chain -> templates of the services naming it
	var fx []Object
	for _, o := range objs {
		k := reg.KindOf(o)
		if k.refs == nil {
			continue
		}
		ns := o.GetHeader().Metadata.Namespace
		var ss *ServiceSpec
		if k.serviceSpec != nil {
			ss = k.serviceSpec(o)
		}
		for _, ref := range k.refs(o) {
			rk := reg.Get(ref.Kind)
			if rk == nil || slices.Contains(rk.builtin, ref.Name) {
				continue
			}
			at := ns
			if rk.shared {
				at = "kcm-system"
			}
			if have[ref.Kind+"/"+ns+"/"+ref.Name] || rk.shared && have[ref.Kind+"//"+ref.Name] {
				continue
			}
			switch ref.Kind {
			case KindServiceTemplateChain:
				for _, svc := range ss.Services {
					if svc.TemplateChain == ref.Name {
						chains[ref.Name] = append(chains[ref.Name], svc.Template)
					}
				}
				continue // made below, once every user is known
			case KindServiceTemplate:
				fx = append(fx, mustDecode(t, fmt.Sprintf("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplate\nmetadata: {name: %s, namespace: %s}\nspec: {helm: {chartSpec: {chart: fixture, version: 1.0.0, sourceRef: {name: tether-local}}}}\n", ref.Name, at))...)
			case KindHelmRepository:
				fx = append(fx, mustDecode(t, fmt.Sprintf("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata: {name: %s, namespace: %s}\nspec: {url: \"https://charts.example.com\", interval: 10m}\n", ref.Name, at))...)
			default:
				t.Fatalf("%s names %s %s: the test has no fixture for that kind", o.GetHeader().Key(), ref.Kind, ref.Name)
			}
			have[ref.Kind+"/"+ns+"/"+ref.Name] = true
			have[ref.Kind+"//"+ref.Name] = true
		}
	}
	for _, c := range slices.Sorted(maps.Keys(chains)) {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplateChain\nmetadata: {name: %s, namespace: kcm-system}\nspec:\n  supportedTemplates:\n", c)
		for _, tmpl := range slices.Compact(slices.Sorted(slices.Values(chains[c]))) {
			fmt.Fprintf(&b, "  - name: %s\n", tmpl)
		}
		fx = append(fx, mustDecode(t, b.String())...)
	}
	return fx
}

// corpusReport is EXPECTED.txt: per document, k0rdent's verdict and
// Tether's, with Tether's warnings, then the counts per file.
func corpusReport(docs []corpusDoc) string {
	var b strings.Builder
	b.WriteString("# What Tether does with each document of the k0rdent corpus (TestK0rdentCorpus;\n")
	b.WriteString("# regenerate with `go test ./hub/internal/objects -run TestK0rdentCorpus -update-corpus`).\n")
	b.WriteString("# k0rdent: what k0rdent's CRDs and the kube-apiserver say on create (crdschema_test.go).\n")
	for _, d := range docs {
		fmt.Fprintf(&b, "\n%s %s %s\n", d.ref, orNone(d.kind), orNone(d.key))
		switch {
		case !d.k0rdent.known:
			b.WriteString("  k0rdent: not one of its kinds (or Flux's, or a core ConfigMap or Secret)\n")
		case d.k0rdent.accepted():
			b.WriteString("  k0rdent: accepted\n")
		default:
			b.WriteString("  k0rdent: refused\n")
			for _, e := range d.k0rdent.errs {
				fmt.Fprintf(&b, "    %s\n", e)
			}
		}
		switch {
		case d.err != nil:
			b.WriteString("  tether: refused\n")
			for _, l := range strings.Split(d.err.Error(), "\n") {
				fmt.Fprintf(&b, "    %s\n", stripPrefix(l))
			}
		case len(d.warnings) > 0:
			b.WriteString("  tether: accepted with warnings\n")
			for _, w := range d.warnings {
				fmt.Fprintf(&b, "    %s\n", w)
			}
		default:
			b.WriteString("  tether: accepted\n")
		}
	}
	return b.String()
}

// stripPrefix drops "FILE: document N (KIND NS/NAME): " from an error line.
func stripPrefix(l string) string {
	if i := strings.Index(l, "): "); i >= 0 && strings.Contains(l[:i], ": document ") {
		return l[i+3:]
	}
	if _, rest, ok := strings.Cut(l, ": document 1: "); ok {
		return rest
	}
	return l
}

// lineDiff lists the lines only in want (-) or only in got (+), in order.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	// Longest common subsequence, which is small enough here.
	n, m := len(w), len(g)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if w[i] == g[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && w[i] == g[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			fmt.Fprintf(&b, "+ %s\n", g[j])
			j++
		default:
			fmt.Fprintf(&b, "- %s\n", w[i])
			i++
		}
	}
	return b.String()
}
