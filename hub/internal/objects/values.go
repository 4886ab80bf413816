package objects

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/template"
	"text/template/parse"

	"sigs.k8s.io/yaml"
)

// Values templates
//
// Inline values may hold Go template actions over TemplateData, e.g.
// `region: {{ .Cluster.Region }}` or `{{ index .Cluster.Labels "tier" }}`.
// Validation (CheckValues) parses the template, renders it with
// SampleCluster and requires the result to be a YAML mapping, so a
// manifest whose values cannot work on any cluster is refused at apply. An
// execution error with the sample (for example `required` on a label the
// sample lacks) is not a validation error: it is reported per cluster when
// desired state is compiled. valuesFrom data is not templated.

// TemplateData is what a values template sees.
type TemplateData struct {
	Cluster TemplateCluster
}

// TemplateCluster is the cluster a values template is rendered for.
type TemplateCluster struct {
	Name   string
	Labels map[string]string
	// Region is label "region", else "topology.kubernetes.io/region".
	Region string
}

// SampleCluster is the cluster CheckValues renders templates with.
var SampleCluster = TemplateCluster{Name: "sample", Labels: map[string]string{}}

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
// function set (default, quote, lower, upper, trim, replace, toYaml,
// toJson, required). Missing map keys render as empty.
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

// RenderValues executes a parsed values template for one cluster.
func RenderValues(t *template.Template, c TemplateCluster) (string, error) {
	var b limitedBuffer
	if err := t.Execute(&b, TemplateData{Cluster: c}); err != nil {
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

var valuesFuncs = template.FuncMap{
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
