package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"

	"github.com/Masterminds/sprig/v3"
	"sigs.k8s.io/yaml"
)

// Values templates
//
// Inline values may hold Go template actions over TemplateData, in
// Tether's form (`region: {{ .Cluster.Region }}`, `{{ index .Cluster.Labels
// "tier" }}`) or in the form k0rdent's Sveltos templates use, where
// .Cluster is shaped like a Cluster API Cluster object
// (`{{ .Cluster.metadata.name }}`,
// `{{ .Cluster.spec.controlPlaneEndpoint.host }}`), with sprig's functions
// (see valuesFuncs for the few left out). Validation (CheckValues) parses
// the template, renders it with SampleCluster and requires the result to be
// a YAML mapping, so a manifest whose values cannot work on any cluster is
// refused at apply. An execution error with the sample (for example
// `required` on a label the sample lacks) is not a validation error: it is
// reported per cluster when desired state is compiled. valuesFrom data is
// not templated. getResource reads the serviceSpec's templateResourceRefs
// (see resources.go).

// TemplateData is what a values template sees.
type TemplateData struct {
	// Cluster has Tether's keys (Name, Labels, Region) and a Cluster API
	// Cluster's (metadata, spec); see TemplateCluster.Data.
	Cluster map[string]any
	// InfrastructureProvider is the CAPI infrastructure provider of the
	// cluster's template, "" for adopted clusters (as Sveltos leaves it
	// empty for clusters it did not provision).
	InfrastructureProvider string
	// MgmtResources are the serviceSpec's templateResourceRefs by
	// identifier, as getResource returns them (Sveltos' older form).
	MgmtResources TemplateResources
}

// TemplateCluster is the cluster a values template is rendered for.
type TemplateCluster struct {
	Name   string
	Labels map[string]string
	// Region is label "region", else "topology.kubernetes.io/region".
	Region string
	// Namespace is where the cluster's ClusterDeployment lives ("" for a
	// cluster selected only by MultiClusterServices).
	Namespace   string
	Annotations map[string]string
	// APIServer is the cluster's kube-apiserver URL as its agent reported
	// it; it fills spec.controlPlaneEndpoint.
	APIServer string
	// InfrastructureProvider: see TemplateData.
	InfrastructureProvider string
}

// Data returns the .Cluster a template sees: Tether's Name, Labels and
// Region, and metadata{name, namespace, labels, annotations} and
// spec{controlPlaneEndpoint{host, port}} as on a CAPI Cluster (host ""
// and port 0 when the agent reported no API server).
func (c TemplateCluster) Data() map[string]any {
	host, port := "", int64(0)
	if u, err := url.Parse(c.APIServer); err == nil && c.APIServer != "" {
		host = u.Hostname()
		port = 443
		if u.Scheme == "http" {
			port = 80
		}
		if p, err := strconv.ParseInt(u.Port(), 10, 32); err == nil {
			port = p
		}
	}
	return map[string]any{
		"Name":   c.Name,
		"Labels": orEmpty(c.Labels),
		"Region": c.Region,
		// As in an unstructured object (what Sveltos templates see), so
		// sprig's dict functions (keys, hasKey, pick) work on them.
		"metadata": map[string]any{
			"name": c.Name, "namespace": c.Namespace, "labels": anyMap(c.Labels), "annotations": anyMap(c.Annotations),
		},
		"spec": map[string]any{
			"controlPlaneEndpoint": map[string]any{"host": host, "port": port},
		},
	}
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// SampleCluster is the cluster CheckValues renders templates with.
var SampleCluster = TemplateCluster{Name: "sample", Labels: map[string]string{}, APIServer: "https://sample.invalid:6443"}

// NewTemplateCluster fills Region from labels.
func NewTemplateCluster(name string, labels map[string]string) TemplateCluster {
	if labels == nil {
		labels = map[string]string{}
	}
	region := labels["region"]
	if region == "" {
		region = labels["topology.kubernetes.io/region"]
	}
	return TemplateCluster{Name: name, Labels: labels, Region: region}
}

// maxValuesBytes bounds inline values and rendered output.
const maxValuesBytes = 1 << 20

// HasTemplate reports whether values text contains template actions.
func HasTemplate(values string) bool { return strings.Contains(values, "{{") }

// ParseValuesTemplate parses values text as a Go template with the values
// function set (sprig's, plus toYaml and required; see valuesFuncs).
// Missing map keys render as empty.
func ParseValuesTemplate(values string) (*template.Template, error) {
	t, err := template.New("values").Option("missingkey=zero").Funcs(valuesFuncs).Parse(values)
	if err != nil {
		return nil, fmt.Errorf("template: %s", strings.TrimPrefix(err.Error(), "template: values:"))
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("template: define and block are not allowed")
	}
	if t.Tree != nil {
		if err := checkRanges(t.Tree.Root); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// checkRanges allows range only over fields (.Cluster.Labels) and refuses
// template calls, so a template cannot loop a billion times or recurse.
func checkRanges(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := checkRanges(c); err != nil {
				return err
			}
		}
	case *parse.RangeNode:
		ok := n.Pipe != nil && len(n.Pipe.Cmds) == 1 && len(n.Pipe.Cmds[0].Args) == 1
		if ok {
			switch a := n.Pipe.Cmds[0].Args[0].(type) {
			case *parse.FieldNode:
			case *parse.VariableNode:
				ok = len(a.Ident) > 1 && a.Ident[0] == "$"
			default:
				ok = false
			}
		}
		if !ok {
			return fmt.Errorf("template: line %d: range is allowed only over a field such as .Cluster.Labels", n.Line)
		}
		if err := checkRanges(n.List); err != nil {
			return err
		}
		return checkRanges(n.ElseList)
	case *parse.TemplateNode:
		return fmt.Errorf("template: line %d: template calls are not allowed", n.Line)
	case *parse.IfNode:
		if err := checkRanges(n.List); err != nil {
			return err
		}
		return checkRanges(n.ElseList)
	case *parse.WithNode:
		if err := checkRanges(n.List); err != nil {
			return err
		}
		return checkRanges(n.ElseList)
	}
	return nil
}

// RenderValues executes a parsed values template for one cluster, without
// templateResourceRefs (see RenderValuesWith).
func RenderValues(t *template.Template, c TemplateCluster) (string, error) {
	return execValues(t, TemplateData{Cluster: c.Data(), InfrastructureProvider: c.InfrastructureProvider})
}

func execValues(t *template.Template, d TemplateData) (string, error) {
	var b limitedBuffer
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("template: %s", strings.TrimPrefix(err.Error(), "template: values:"))
	}
	return b.String(), nil
}

// CheckValues validates inline values text; see "Values templates".
func CheckValues(values string) error {
	if values == "" {
		return nil
	}
	if len(values) > maxValuesBytes {
		return fmt.Errorf("%d bytes, more than the limit of %d", len(values), maxValuesBytes)
	}
	text := values
	if HasTemplate(values) {
		t, err := ParseValuesTemplate(values)
		if err != nil {
			return err
		}
		out, err := RenderValues(t, SampleCluster)
		if err != nil {
			return nil // depends on cluster data; reported at compile time
		}
		if _, err := ParseValues([]byte(out)); err != nil {
			return fmt.Errorf("rendered for a sample cluster: %w", err)
		}
		return nil
	}
	_, err := ParseValues([]byte(text))
	return err
}

// ParseValues parses values YAML into a map (numbers as json.Number, so
// integers keep their precision). Empty input is an empty map; anything
// but a mapping is an error.
func ParseValues(y []byte) (map[string]any, error) {
	j, err := yaml.YAMLToJSONStrict(y)
	if err != nil {
		return nil, fmt.Errorf("not valid YAML: %s", strings.TrimPrefix(err.Error(), "error converting YAML to JSON: "))
	}
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	switch v := v.(type) {
	case nil:
		return map[string]any{}, nil
	case map[string]any:
		return v, nil
	}
	return nil, fmt.Errorf("must be a YAML mapping, got %s", jsonType(v))
}

var errTooLarge = errors.New("rendered values are larger than 1 MiB")

type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > maxValuesBytes {
		return 0, errTooLarge
	}
	return b.Buffer.Write(p)
}

// valuesFuncs are sprig's functions, as Helm and Sveltos templates know
// them, less those that would make a compile depend on more than its
// inputs or reach outside the hub's store: the hub's environment (env,
// expandenv), DNS (getHostByName), the clock (now, ago) and randomness
// (rand*, uuidv4, shuffle, gen* keys and certificates, bcrypt, htpasswd,
// encryptAES): a cluster's values must render the same on every compile,
// or every recompile would redeploy it. Functions that build output from a
// count (repeat, indent, nindent, until, untilStep, seq) refuse counts over
// maxTemplateCount. Tether's own default, quote, replace, toYaml, toJson
// and required keep their meaning.
var valuesFuncs = newValuesFuncs()

// maxTemplateCount bounds the counts a values template may pass to the
// functions that build output from them.
const maxTemplateCount = 100_000

func newValuesFuncs() template.FuncMap {
	f := sprig.TxtFuncMap()
	for _, name := range []string{
		"env", "expandenv", "getHostByName", "now", "ago",
		"randAlphaNum", "randAlpha", "randAscii", "randNumeric", "randBytes", "randInt", "uuidv4", "shuffle",
		"genPrivateKey", "genCA", "genCAWithKey", "genSelfSignedCert", "genSelfSignedCertWithKey",
		"genSignedCert", "genSignedCertWithKey", "buildCustomCert", "bcrypt", "htpasswd", "encryptAES",
	} {
		delete(f, name)
	}
	count := func(fn string, n int) error {
		if n < 0 || n > maxTemplateCount {
			return fmt.Errorf("%s: count %d is outside 0..%d", fn, n, maxTemplateCount)
		}
		return nil
	}
	f["repeat"] = func(n int, s string) (string, error) {
		if err := count("repeat", n); err != nil {
			return "", err
		}
		return strings.Repeat(s, n), nil
	}
	for _, name := range []string{"indent", "nindent"} {
		lead := ""
		if name == "nindent" {
			lead = "\n"
		}
		f[name] = func(n int, s string) (string, error) {
			if err := count(name, n); err != nil {
				return "", err
			}
			pad := strings.Repeat(" ", n)
			return lead + pad + strings.ReplaceAll(s, "\n", "\n"+pad), nil
		}
	}
	until, untilStep, seq := f["until"].(func(int) []int), f["untilStep"].(func(int, int, int) []int), f["seq"].(func(...int) string)
	f["until"] = func(n int) ([]int, error) {
		if err := count("until", n); err != nil {
			return nil, err
		}
		return until(n), nil
	}
	f["untilStep"] = func(start, stop, step int) ([]int, error) {
		if step == 0 || (stop-start)/step > maxTemplateCount {
			return nil, fmt.Errorf("untilStep: more than %d elements", maxTemplateCount)
		}
		return untilStep(start, stop, step), nil
	}
	f["seq"] = func(params ...int) (string, error) {
		lo, hi := 1, 0
		switch len(params) {
		case 1:
			hi = params[0]
		case 2, 3:
			lo, hi = params[0], params[len(params)-1]
		}
		if d := hi - lo; d > maxTemplateCount || -d > maxTemplateCount {
			return "", fmt.Errorf("seq: more than %d elements", maxTemplateCount)
		}
		return seq(params...), nil
	}
	for name, fn := range tetherFuncs {
		f[name] = fn
	}
	// getResource is replaced per render by RenderValuesWith.
	f["getResource"] = getResourceFunc(nil)
	return f
}

// tetherFuncs are the functions values templates had before sprig; they
// agree with sprig's where both have one.
var tetherFuncs = template.FuncMap{
	"default": func(def any, v ...any) any {
		if len(v) == 0 || v[0] == nil || v[0] == "" {
			return def
		}
		return v[0]
	},
	"quote": func(v any) string { return fmt.Sprintf("%q", fmt.Sprint(v)) },
	"lower": strings.ToLower,
	"upper": strings.ToUpper,
	"trim":  strings.TrimSpace,
	"replace": func(old, new, s string) string {
		return strings.ReplaceAll(s, old, new)
	},
	"toYaml": func(v any) (string, error) {
		b, err := yaml.Marshal(v)
		return strings.TrimSuffix(string(b), "\n"), err
	},
	"toJson": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"required": func(msg string, v any) (any, error) {
		if v == nil || v == "" {
			return nil, errors.New(msg)
		}
		return v, nil
	},
}
