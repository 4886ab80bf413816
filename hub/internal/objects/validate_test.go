package objects

import (
	"strings"
	"testing"
)

func TestValidationErrors(t *testing.T) {
	const (
		cd  = "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: edge-1, namespace: acme}\nspec:\n  template: adopted\n"
		mcs = "apiVersion: tether.dev/v1alpha1\nkind: MultiClusterService\nmetadata: {name: m, namespace: acme}\nspec:\n"
		st  = "apiVersion: tether.dev/v1alpha1\nkind: ServiceTemplate\nmetadata: {name: t, namespace: acme}\nspec:\n  helm:\n    chartSpec:\n"
		hr  = "apiVersion: tether.dev/v1alpha1\nkind: HelmRepository\nmetadata: {name: r}\nspec:\n"
	)
	svc := func(lines ...string) string {
		return cd + "  serviceSpec:\n    services:\n" + strings.Join(lines, "\n") + "\n"
	}
	tests := []struct {
		name, in, want string
	}{
		// metadata
		{"name required", "apiVersion: v1\nkind: ConfigMap\nmetadata: {namespace: a}\n", "metadata.name: required"},
		{"name not DNS", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: A_b}\n", `metadata.name: "A_b": a lowercase RFC 1123 subdomain`},
		{"namespace not DNS", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: a.b}\n", `metadata.namespace: "a.b": must not contain dots`},
		{"label key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {'-x': v}}\n", "metadata.labels[-x]: key: name part must consist of"},
		{"label value", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, labels: {x: 'a b'}}\n", `metadata.labels[x]: "a b": a valid label must be`},
		{"configmap key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {'a/b': x}\n", "data[a/b]: key: a valid config key must consist of"},
		// HelmRepository
		{"url required", hr + "  type: default\n", "spec.url: required"},
		{"url scheme", hr + "  url: ftp://x.example.com\n", `spec.url: "ftp://x.example.com": want an http:// or https:// URL`},
		{"url oci mismatch", hr + "  url: https://x.example.com\n  type: oci\n", "spec.url: \"https://x.example.com\": type oci needs an oci:// URL"},
		{"repo type", hr + "  url: https://x.example.com\n  type: git\n", `spec.type: "git": want default or oci`},
		{"url no host", hr + "  url: https://\n", `spec.url: "https://" has no host`},
		// ServiceTemplate
		{"chart required", st + "      version: 1.0.0\n      sourceRef: {name: r}\n", "spec.helm.chartSpec.chart: required"},
		{"chart name", st + "      chart: Foo Bar\n      version: 1.0.0\n      sourceRef: {name: r}\n", `spec.helm.chartSpec.chart: "Foo Bar": want lower-case`},
		{"version required", st + "      chart: a\n      sourceRef: {name: r}\n", "spec.helm.chartSpec.version: required"},
		{"version semver", st + "      chart: a\n      version: latest\n      sourceRef: {name: r}\n", `spec.helm.chartSpec.version: "latest" is not a semantic version`},
		{"sourceRef kind", st + "      chart: a\n      version: 1.0.0\n      sourceRef: {kind: OCIRepository, name: r}\n", `spec.helm.chartSpec.sourceRef.kind: "OCIRepository": want HelmRepository, GitRepository or Bucket`},
		{"sourceRef name", st + "      chart: a\n      version: 1.0.0\n      sourceRef: {kind: HelmRepository}\n", "spec.helm.chartSpec.sourceRef.name: required"},
		// ClusterDeployment
		{"template required", "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: c}\nspec: {}\n", "spec.template: required"},
		{"adopted name is cluster name", "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: a.b}\nspec: {template: adopted}\n", `metadata.name: "a.b": an adopted cluster's name must be a cluster name`},
		{"priority range", cd + "  serviceSpec: {priority: -1}\n", "spec.serviceSpec.priority: -1 is out of range [1, 2147483646]"},
		{"priority overflow", cd + "  serviceSpec: {priority: 3000000000}\n", "spec.serviceSpec.priority: expected an integer that fits 32 bits"},
		{"service name required", svc("      - {template: t}"), "spec.serviceSpec.services[0].name: required"},
		{"service name DNS", svc("      - {template: t, name: Web}"), `spec.serviceSpec.services[0].name: "Web": a lowercase RFC 1123 label`},
		{"service name too long", svc("      - {template: t, name: " + strings.Repeat("a", 54) + "}"), "Helm release names are at most 53 characters"},
		{"service template required", svc("      - {name: a}"), "spec.serviceSpec.services[0].template: required"},
		{"service namespace", svc("      - {template: t, name: a, namespace: A}"), `spec.serviceSpec.services[0].namespace: "A"`},
		{"duplicate service", svc("      - {template: t, name: a}", "      - {template: t, name: a, namespace: other}"), `spec.serviceSpec.services[1].name: "a" is also the name of services[0]`},
		{"dependsOn unknown", svc("      - {template: t, name: a}", "      - {template: t, name: web, dependsOn: [db]}"), `spec.serviceSpec.services[1].dependsOn[0]: "db" is not a service in this spec`},
		{"dependsOn self", svc("      - {template: t, name: a, dependsOn: [a]}"), `spec.serviceSpec.services[0].dependsOn[0]: "a": a service cannot depend on itself`},
		{"dependsOn twice", svc("      - {template: t, name: a}", "      - {template: t, name: b, dependsOn: [a, a]}"), `spec.serviceSpec.services[1].dependsOn[1]: "a" is listed twice`},
		{"dependsOn cycle", svc("      - {template: t, name: a, dependsOn: [c]}", "      - {template: t, name: b, dependsOn: [a]}", "      - {template: t, name: c, dependsOn: [b]}"),
			"spec.serviceSpec.services[0].dependsOn: dependency cycle: a -> c -> b -> a"},
		{"valuesFrom kind", svc("      - {template: t, name: a, valuesFrom: [{kind: Pod, name: x}]}"), `spec.serviceSpec.services[0].valuesFrom[0].kind: "Pod": want ConfigMap or Secret`},
		{"valuesFrom name", svc("      - {template: t, name: a, valuesFrom: [{kind: Secret}]}"), "spec.serviceSpec.services[0].valuesFrom[0].name: required"},
		{"values not yaml", svc("      - {template: t, name: a, values: 'a: [1'}"), "spec.serviceSpec.services[0].values: not valid YAML"},
		{"values not mapping", svc("      - {template: t, name: a, values: '- 1'}"), "spec.serviceSpec.services[0].values: must be a YAML mapping, got list"},
		{"values template parse", svc("      - {template: t, name: a, values: 'a: {{ .Cluster.Name '}"), "spec.serviceSpec.services[0].values: template:"},
		{"values template rendered not yaml", svc("      - {template: t, name: a, values: 'a: [{{ .Cluster.Name }}'}"), "spec.serviceSpec.services[0].values: rendered for a sample cluster: not valid YAML"},
		{"values template range over int", svc("      - {template: t, name: a, values: '{{ range 1000000000 }}{{ end }}'}"), "range is allowed only over a field"},
		{"values template define", svc("      - {template: t, name: a, values: '{{ define \"x\" }}{{ template \"x\" }}{{ end }}'}"), "define and block are not allowed"},
		{"values template unknown func", svc("      - {template: t, name: a, values: '{{ exec .Cluster.Name }}'}"), `function "exec" not defined`},
		// MultiClusterService
		{"selector operator", mcs + "  clusterSelector: {matchExpressions: [{key: a, operator: Equals, values: [b]}]}\n", `spec.clusterSelector.matchExpressions[0].operator: "Equals": want In, NotIn, Exists or DoesNotExist`},
		{"selector operator required", mcs + "  clusterSelector: {matchExpressions: [{key: a}]}\n", `spec.clusterSelector.matchExpressions[0].operator: required`},
		{"selector In needs values", mcs + "  clusterSelector: {matchExpressions: [{key: a, operator: In}]}\n", `spec.clusterSelector.matchExpressions[0].values: must be non-empty for operator In`},
		{"selector Exists no values", mcs + "  clusterSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}\n", `spec.clusterSelector.matchExpressions[0].values: must be empty for operator Exists`},
		{"selector key", mcs + "  clusterSelector: {matchExpressions: [{operator: Exists}]}\n", `spec.clusterSelector.matchExpressions[0].key: required`},
		{"selector matchLabels value", mcs + "  clusterSelector: {matchLabels: {a: 'b c'}}\n", `spec.clusterSelector.matchLabels[a]: "b c"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in), "t.yaml")
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
		})
	}
}

func TestValidateTemplatedValues(t *testing.T) {
	ok := []string{
		"replicas: {{ index .Cluster.Labels \"replicas\" | default 1 }}",
		"region: {{ .Cluster.Region | quote }}\nname: {{ .Cluster.Name }}",
		"{{ range $k, $v := .Cluster.Labels }}{{ $k }}: {{ $v | quote }}\n{{ end }}",
		"a: {{ required \"need label x\" .Cluster.Labels.x }}", // fails on the sample: a compile-time problem
		"",
		"# only a comment",
	}
	for _, v := range ok {
		if err := CheckValues(v); err != nil {
			t.Errorf("CheckValues(%q) = %v", v, err)
		}
	}
}

func TestSelectorMatches(t *testing.T) {
	sel := LabelSelector{
		MatchLabels: map[string]string{"tier": "edge"},
		MatchExpressions: []LabelExpression{
			{Key: "region", Operator: "In", Values: []string{"eu", "us"}},
			{Key: "env", Operator: "NotIn", Values: []string{"dev"}},
			{Key: "gpu", Operator: "Exists"},
			{Key: "legacy", Operator: "DoesNotExist"},
		},
	}
	tests := []struct {
		labels map[string]string
		want   bool
	}{
		{map[string]string{"tier": "edge", "region": "eu", "gpu": "a"}, true},
		{map[string]string{"tier": "edge", "region": "eu", "gpu": "a", "env": "prod"}, true},
		{map[string]string{"tier": "edge", "region": "eu", "gpu": "a", "env": "dev"}, false},
		{map[string]string{"tier": "edge", "region": "asia", "gpu": "a"}, false},
		{map[string]string{"tier": "edge", "gpu": "a"}, false},
		{map[string]string{"tier": "core", "region": "eu", "gpu": "a"}, false},
		{map[string]string{"tier": "edge", "region": "eu"}, false},
		{map[string]string{"tier": "edge", "region": "eu", "gpu": "", "legacy": "1"}, false},
	}
	for i, tt := range tests {
		if got := sel.Matches(tt.labels); got != tt.want {
			t.Errorf("%d: Matches(%v) = %v, want %v", i, tt.labels, got, tt.want)
		}
	}
	var empty LabelSelector
	if !empty.Matches(nil) {
		t.Error("empty selector must match everything")
	}
}
