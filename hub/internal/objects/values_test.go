package objects

import (
	"strings"
	"testing"
)

func render(t *testing.T, values string, c TemplateCluster) (string, error) {
	t.Helper()
	tpl, err := ParseValuesTemplate(values)
	if err != nil {
		return "", err
	}
	return RenderValues(tpl, c)
}

func TestValuesTemplatesSeeASveltosShapedCluster(t *testing.T) {
	c := NewTemplateCluster("edge-paris-1", map[string]string{"region": "eu-west", "tier": "edge"})
	c.Namespace, c.APIServer = "acme", "https://10.1.2.3:6443"
	for _, tc := range []struct{ values, want string }{
		// k0rdent's (Sveltos') form: .Cluster is a CAPI Cluster object.
		{`name: {{ .Cluster.metadata.name }}`, `name: edge-paris-1`},
		{`ns: {{ .Cluster.metadata.namespace }}`, `ns: acme`},
		{`tier: {{ index .Cluster.metadata.labels "tier" }}`, `tier: edge`},
		{`host: {{ .Cluster.spec.controlPlaneEndpoint.host }}`, `host: 10.1.2.3`},
		{`port: {{ .Cluster.spec.controlPlaneEndpoint.port }}`, `port: 6443`},
		{`missing: "{{ index .Cluster.Labels "nope" }}"`, `missing: ""`},
		{`has: {{ hasKey .Cluster.metadata.labels "tier" }}`, `has: true`},
		// Tether's form keeps working.
		{`r: {{ .Cluster.Region }}-{{ .Cluster.Name }}`, `r: eu-west-edge-paris-1`},
		// sprig.
		{`s: {{ .Cluster.metadata.name | trunc 4 | upper }}`, `s: EDGE`},
		{`h: {{ .Cluster.metadata.name | sha256sum | trunc 8 }}`, `h: 38211118`},
		{`k: {{ keys .Cluster.metadata.labels | sortAlpha | join "," }}`, `k: region,tier`},
		{`p: {{ .InfrastructureProvider | default "none" }}`, `p: none`},
	} {
		got, err := render(t, tc.values, c)
		if err != nil {
			t.Errorf("%s: %v", tc.values, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s rendered %q; want %q", tc.values, got, tc.want)
		}
	}
	// No API server reported: an empty host and port 0, not "<no value>".
	got, err := render(t, `host: "{{ .Cluster.spec.controlPlaneEndpoint.host }}"`, NewTemplateCluster("x", nil))
	if err != nil || got != `host: ""` {
		t.Errorf("without an API server: %q, %v", got, err)
	}
}

func TestValuesTemplatesCannotReachOutsideTheirInputs(t *testing.T) {
	for _, fn := range []string{"env", "expandenv", "getHostByName", "now", "randAlpha", "uuidv4", "genPrivateKey", "shuffle"} {
		if _, err := ParseValuesTemplate(`x: {{ ` + fn + ` "a" }}`); err == nil || !strings.Contains(err.Error(), "not defined") {
			t.Errorf("%s: parse error %v; want the function not defined", fn, err)
		}
	}
	for _, v := range []string{
		`x: {{ repeat 1000000000 "a" }}`,
		`x: {{ indent 1000000000 "a" }}`,
		`x: {{ nindent 1000000000 "a" }}`,
		`x: {{ until 1000000000 }}`,
		`x: {{ untilStep 0 1000000000 1 }}`,
		`x: {{ seq 1000000000 }}`,
	} {
		if _, err := render(t, v, SampleCluster); err == nil || !strings.Contains(err.Error(), "100000") {
			t.Errorf("%s: %v; want a bounded-count error", v, err)
		}
	}
	if got, err := render(t, `x: {{ indent 2 "a" }}`, SampleCluster); err != nil || got != "x:   a" {
		t.Errorf("indent 2: %q, %v", got, err)
	}
}
