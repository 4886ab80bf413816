package desired

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

const ns = "acme"

func tmpl(name string, ready bool) *objects.ServiceTemplate {
	t := objects.New(objects.KindServiceTemplate).(*objects.ServiceTemplate)
	t.Metadata.Name, t.Metadata.Namespace = name, ns
	t.Spec.Helm.ChartSpec = objects.ChartSpec{Chart: "chart-" + name, Version: "1.0.0", SourceRef: objects.SourceRef{Kind: "HelmRepository", Name: "tether-local"}}
	if ready {
		t.Status = objects.ServiceTemplateStatus{ChartDigest: "sha256:" + name, ChartName: "chart-" + name, ChartVersion: "1.0.0", Valid: true}
	}
	return t
}

func svc(name, template string, deps ...string) objects.Service {
	return objects.Service{Name: name, Namespace: "apps", Template: template, DependsOn: deps}
}

func cd(name string, createRev uint64, prio int32, services ...objects.Service) *objects.ClusterDeployment {
	o := objects.New(objects.KindClusterDeployment).(*objects.ClusterDeployment)
	o.Metadata.Name, o.Metadata.Namespace, o.Metadata.CreateRevision = name, ns, createRev
	o.Spec.Template = objects.TemplateAdopted
	o.Spec.ServiceSpec = objects.ServiceSpec{Priority: prio, Services: services}
	return o
}

func mcs(name string, createRev uint64, prio int32, sel objects.LabelSelector, services ...objects.Service) *objects.MultiClusterService {
	o := objects.New(objects.KindMultiClusterService).(*objects.MultiClusterService)
	o.Metadata.Name, o.Metadata.Namespace, o.Metadata.CreateRevision = name, ns, createRev
	o.Spec.ClusterSelector = sel
	o.Spec.ServiceSpec = objects.ServiceSpec{Priority: prio, Services: services}
	return o
}

func configMap(name, values string) *objects.ConfigMap {
	o := objects.New(objects.KindConfigMap).(*objects.ConfigMap)
	o.Metadata.Name, o.Metadata.Namespace = name, ns
	o.Data = map[string]string{"values.yaml": values}
	return o
}

func secret(name, values string) *objects.Secret {
	o := objects.New(objects.KindSecret).(*objects.Secret)
	o.Metadata.Name, o.Metadata.Namespace = name, ns
	o.Data = map[string][]byte{"values": []byte(values)}
	return o
}

// summary renders a cluster's services as "name@source" in order.
func summary(cd ClusterDesired) string {
	var parts []string
	for _, s := range cd.Services {
		parts = append(parts, s.Name+"@"+s.Source.Name)
	}
	return strings.Join(parts, " ")
}

func problemCodes(ps []Problem) string {
	var parts []string
	for _, p := range ps {
		parts = append(parts, fmt.Sprintf("%s/%s/%s:%s", p.Cluster, p.Source.Name, p.Service, p.Code))
	}
	return strings.Join(parts, " ")
}

func TestCompile(t *testing.T) {
	clusters := []Cluster{
		{Name: "edge-1", Labels: map[string]string{"tier": "edge", "region": "eu-west"}},
		{Name: "edge-2", Labels: map[string]string{"tier": "edge", "topology.kubernetes.io/region": "us-east"}},
		{Name: "core-1", Labels: map[string]string{"tier": "core"}},
	}
	templates := []*objects.ServiceTemplate{tmpl("nginx", true), tmpl("redis", true), tmpl("pending", false)}
	edge := objects.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}}
	tests := []struct {
		name     string
		in       Inputs
		want     map[string]string // cluster -> summary
		problems string
	}{
		{
			name: "selector matching",
			in: Inputs{MultiClusterServices: []*objects.MultiClusterService{
				mcs("edge-web", 1, 100, edge, svc("web", "nginx")),
				mcs("not-eu", 2, 100, objects.LabelSelector{MatchExpressions: []objects.LabelExpression{{Key: "region", Operator: "NotIn", Values: []string{"eu-west"}}}}, svc("cache", "redis")),
			}},
			want: map[string]string{"edge-1": "web@edge-web", "edge-2": "cache@not-eu web@edge-web", "core-1": "cache@not-eu"},
		},
		{
			name: "cluster deployment binds by name",
			in: Inputs{ClusterDeployments: []*objects.ClusterDeployment{
				cd("edge-1", 1, 100, svc("web", "nginx")),
				cd("gone", 2, 100, svc("web", "nginx")),
			}},
			want:     map[string]string{"edge-1": "web@edge-1", "edge-2": "", "core-1": ""},
			problems: "gone/gone/:ClusterNotFound",
		},
		{
			name: "higher priority wins (mcs over cd)",
			in: Inputs{
				ClusterDeployments:   []*objects.ClusterDeployment{cd("edge-1", 1, 100, svc("web", "nginx"))},
				MultiClusterServices: []*objects.MultiClusterService{mcs("edge-web", 2, 200, edge, svc("web", "redis"))},
			},
			want:     map[string]string{"edge-1": "web@edge-web", "edge-2": "web@edge-web", "core-1": ""},
			problems: "edge-1/edge-1/apps/web:Conflict",
		},
		{
			name: "higher priority wins (cd over mcs)",
			in: Inputs{
				ClusterDeployments:   []*objects.ClusterDeployment{cd("edge-1", 2, 300, svc("web", "nginx"))},
				MultiClusterServices: []*objects.MultiClusterService{mcs("edge-web", 1, 200, edge, svc("web", "redis"))},
			},
			want:     map[string]string{"edge-1": "web@edge-1", "edge-2": "web@edge-web", "core-1": ""},
			problems: "edge-1/edge-web/apps/web:Conflict",
		},
		{
			name: "tie: older object wins",
			in: Inputs{MultiClusterServices: []*objects.MultiClusterService{
				mcs("a-newer", 9, 100, edge, svc("web", "nginx")),
				mcs("b-older", 3, 100, edge, svc("web", "redis")),
			}},
			want:     map[string]string{"edge-1": "web@b-older", "edge-2": "web@b-older", "core-1": ""},
			problems: "edge-1/a-newer/apps/web:Conflict edge-2/a-newer/apps/web:Conflict",
		},
		{
			name: "stopOnConflict drops the loser entirely",
			in: Inputs{MultiClusterServices: []*objects.MultiClusterService{
				mcs("winner", 1, 500, objects.LabelSelector{MatchLabels: map[string]string{"region": "eu-west"}}, svc("web", "nginx")),
				func() *objects.MultiClusterService {
					m := mcs("stopper", 2, 100, edge, svc("web", "nginx"), svc("cache", "redis"))
					m.Spec.ServiceSpec.StopOnConflict = true
					return m
				}(),
			}},
			want:     map[string]string{"edge-1": "web@winner", "edge-2": "cache@stopper web@stopper", "core-1": ""},
			problems: "edge-1/stopper/:Conflict edge-1/stopper/apps/web:Conflict",
		},
		{
			name: "dependsOn order",
			in: Inputs{ClusterDeployments: []*objects.ClusterDeployment{
				cd("core-1", 1, 100, svc("a-frontend", "nginx", "m-api"), svc("m-api", "nginx", "z-db"), svc("z-db", "redis"), svc("b-other", "nginx")),
			}},
			want: map[string]string{"core-1": "b-other@core-1 z-db@core-1 m-api@core-1 a-frontend@core-1", "edge-1": "", "edge-2": ""},
		},
		{
			name: "template not ready and missing",
			in: Inputs{ClusterDeployments: []*objects.ClusterDeployment{
				cd("core-1", 1, 100, svc("web", "pending"), svc("db", "nope"), svc("ok", "nginx")),
			}},
			want:     map[string]string{"core-1": "ok@core-1", "edge-1": "", "edge-2": ""},
			problems: "core-1/core-1/apps/db:TemplateNotReady core-1/core-1/apps/web:TemplateNotReady",
		},
		{
			name: "dependency on a service that is not deployable",
			in: Inputs{ClusterDeployments: []*objects.ClusterDeployment{
				cd("core-1", 1, 100, svc("web", "nginx", "db"), svc("db", "pending")),
			}},
			want:     map[string]string{"core-1": "web@core-1", "edge-1": "", "edge-2": ""},
			problems: "core-1/core-1/apps/db:TemplateNotReady core-1/core-1/apps/web:DependencyError",
		},
		{
			name: "missing valuesFrom",
			in: Inputs{ClusterDeployments: []*objects.ClusterDeployment{
				cd("core-1", 1, 100, func() objects.Service {
					s := svc("web", "nginx")
					s.ValuesFrom = []objects.ValuesFrom{{Kind: "ConfigMap", Name: "absent"}}
					return s
				}()),
			}},
			want:     map[string]string{"core-1": "", "edge-1": "", "edge-2": ""},
			problems: "core-1/core-1/apps/web:ValuesError",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.Clusters, in.ServiceTemplates = clusters, templates
			got, problems := Compile(in)
			for cl, want := range tt.want {
				if s := summary(got[cl]); s != want {
					t.Errorf("%s: %q, want %q", cl, s, want)
				}
			}
			if p := problemCodes(problems); p != tt.problems {
				t.Errorf("problems:\n%s\nwant:\n%s\n(%v)", p, tt.problems, problems)
			}
		})
	}
}

func TestCompileValues(t *testing.T) {
	s := svc("web", "nginx")
	s.ValuesFrom = []objects.ValuesFrom{{Kind: "ConfigMap", Name: "base"}, {Kind: "Secret", Name: "over"}}
	s.Values = `image: {tag: "1.27"}
cluster: {{ .Cluster.Name }}
region: {{ .Cluster.Region }}
tier: {{ index .Cluster.Labels "tier" }}
big: 12345678901234567890
`
	in := Inputs{
		Clusters: []Cluster{
			{Name: "edge-1", Labels: map[string]string{"tier": "edge", "region": "eu-west"}},
			{Name: "edge-2", Labels: map[string]string{"tier": "edge", "topology.kubernetes.io/region": "us-east"}},
		},
		ServiceTemplates:     []*objects.ServiceTemplate{tmpl("nginx", true)},
		MultiClusterServices: []*objects.MultiClusterService{mcs("m", 1, 100, objects.LabelSelector{}, s)},
		ConfigMaps:           []*objects.ConfigMap{configMap("base", "image: {repo: nginx, tag: '1.25'}\nreplicas: 1\nlist: [a, b]\n")},
		Secrets:              []*objects.Secret{secret("over", "replicas: 3\nlist: [c]\nimage: {pullPolicy: Always}\n")},
	}
	out, problems := Compile(in)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	want := `big: 12345678901234567890
cluster: edge-1
image:
  pullPolicy: Always
  repo: nginx
  tag: "1.27"
list:
- c
region: eu-west
replicas: 3
tier: edge
`
	got := out["edge-1"].Services[0]
	if string(got.Values) != want {
		t.Errorf("values:\n%s\nwant:\n%s", got.Values, want)
	}
	if got.ValuesHash != valuesHash([]byte(want), "sha256:nginx") || !strings.HasPrefix(got.ValuesHash, "sha256:") {
		t.Errorf("hash %s", got.ValuesHash)
	}
	if e2 := out["edge-2"].Services[0]; !strings.Contains(string(e2.Values), "region: us-east") || e2.ValuesHash == got.ValuesHash {
		t.Errorf("edge-2 values:\n%s", e2.Values)
	}
	if got.ChartDigest != "sha256:nginx" || got.ChartName != "chart-nginx" || got.ChartVersion != "1.0.0" || got.Priority != 100 {
		t.Errorf("service = %+v", got)
	}
	// Deterministic: same inputs, same bytes.
	again, _ := Compile(in)
	if string(again["edge-1"].Services[0].Values) != string(got.Values) {
		t.Error("Compile is not deterministic")
	}
	// The hash covers the chart digest.
	in.ServiceTemplates = []*objects.ServiceTemplate{tmpl("nginx", true)}
	in.ServiceTemplates[0].Status.ChartDigest = "sha256:other"
	other, _ := Compile(in)
	if other["edge-1"].Services[0].ValuesHash == got.ValuesHash {
		t.Error("values hash does not change with the chart digest")
	}
}

func TestCompileValuesTemplateError(t *testing.T) {
	s := svc("web", "nginx")
	s.Values = `a: {{ required "label gpu is required" .Cluster.Labels.gpu }}`
	in := Inputs{
		Clusters:             []Cluster{{Name: "with", Labels: map[string]string{"gpu": "a100"}}, {Name: "without"}},
		ServiceTemplates:     []*objects.ServiceTemplate{tmpl("nginx", true)},
		MultiClusterServices: []*objects.MultiClusterService{mcs("m", 1, 100, objects.LabelSelector{}, s)},
	}
	out, problems := Compile(in)
	if summary(out["with"]) != "web@m" || summary(out["without"]) != "" {
		t.Errorf("with: %q without: %q", summary(out["with"]), summary(out["without"]))
	}
	if len(problems) != 1 || problems[0].Cluster != "without" || problems[0].Code != ProblemValues || !strings.Contains(problems[0].Reason, "label gpu is required") {
		t.Errorf("problems = %v", problems)
	}
}

func TestCompileKeepsLastGood(t *testing.T) {
	in := Inputs{
		Clusters:           []Cluster{{Name: "c"}},
		ServiceTemplates:   []*objects.ServiceTemplate{tmpl("nginx", true)},
		ClusterDeployments: []*objects.ClusterDeployment{cd("c", 1, 100, svc("web", "nginx"))},
	}
	out, _ := Compile(in)
	prev := out["c"].Services
	// The template moves to a version whose chart is not resolved yet.
	up := tmpl("nginx", true)
	up.Spec.Helm.ChartSpec.Version = "2.0.0"
	in.ServiceTemplates = []*objects.ServiceTemplate{up}
	in.Previous = map[string][]Service{"c": prev}
	out, problems := Compile(in)
	if len(out["c"].Services) != 1 || out["c"].Services[0].ChartVersion != "1.0.0" {
		t.Fatalf("services = %+v", out["c"].Services)
	}
	if len(problems) != 1 || problems[0].Code != ProblemTemplateNotReady || !strings.Contains(problems[0].Reason, "keeping the last good version") {
		t.Errorf("problems = %v", problems)
	}
}

// benchInputs builds clusters × services: half from per-cluster
// ClusterDeployments, half from MultiClusterServices with templated
// values.
func benchInputs(clusters, services int) Inputs {
	var in Inputs
	for i := range services {
		in.ServiceTemplates = append(in.ServiceTemplates, tmpl(fmt.Sprintf("t%d", i), true))
	}
	for c := range clusters {
		name := fmt.Sprintf("edge-%04d", c)
		in.Clusters = append(in.Clusters, Cluster{Name: name, Labels: map[string]string{"region": fmt.Sprintf("r%d", c%10), "tier": "edge"}})
		var svcs []objects.Service
		for i := range services / 2 {
			s := svc(fmt.Sprintf("cd-%d", i), fmt.Sprintf("t%d", i))
			s.Values = "replicas: 2\nresources: {limits: {cpu: 100m}}\n"
			if i > 0 {
				s.DependsOn = []string{fmt.Sprintf("cd-%d", i-1)}
			}
			svcs = append(svcs, s)
		}
		in.ClusterDeployments = append(in.ClusterDeployments, cd(name, uint64(c+1), 100, svcs...))
	}
	for i := range services - services/2 {
		s := svc(fmt.Sprintf("mcs-%d", i), fmt.Sprintf("t%d", i))
		s.Values = "region: {{ .Cluster.Region }}\nname: {{ .Cluster.Name }}\n"
		in.MultiClusterServices = append(in.MultiClusterServices, mcs(fmt.Sprintf("m%d", i), 1, 100, objects.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}}, s))
	}
	return in
}

func BenchmarkCompile1000x20(b *testing.B) {
	in := benchInputs(1000, 20)
	b.ReportAllocs()
	for b.Loop() {
		out, problems := Compile(in)
		if len(out) != 1000 || len(problems) > 0 || len(out["edge-0001"].Services) != 20 {
			b.Fatalf("%d clusters, problems %v", len(out), problems)
		}
	}
}

func TestBenchInputs(t *testing.T) {
	out, problems := Compile(benchInputs(3, 4))
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	got := summary(out["edge-0001"])
	if want := "cd-0@edge-0001 cd-1@edge-0001 mcs-0@m0 mcs-1@m1"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	if !slices.Equal(out["edge-0001"].Services[1].DependsOn, []string{"apps/cd-0"}) {
		t.Errorf("dependsOn = %v", out["edge-0001"].Services[1].DependsOn)
	}
}

func TestCompileSystemNamespaceTemplates(t *testing.T) {
	inNS := func(name, namespace, digest string) *objects.ServiceTemplate {
		x := tmpl(name, true)
		x.Metadata.Namespace = namespace
		x.Status.ChartDigest = digest
		return x
	}
	clusters := []Cluster{{Name: "edge-1"}}
	for _, tc := range []struct {
		name      string
		templates []*objects.ServiceTemplate
		want      string // chart digest of the service, "" for a problem
	}{
		{"own namespace first", []*objects.ServiceTemplate{inNS("nginx", "kcm-system", "sha256:kcm"), inNS("nginx", ns, "sha256:own")}, "sha256:own"},
		{"first system namespace in order", []*objects.ServiceTemplate{inNS("nginx", "k0rdent-system", "sha256:k0rdent"), inNS("nginx", "kcm-system", "sha256:kcm")}, "sha256:kcm"},
		{"k0rdent-system serves every namespace", []*objects.ServiceTemplate{inNS("nginx", "k0rdent-system", "sha256:k0rdent")}, "sha256:k0rdent"},
		{"other namespaces do not", []*objects.ServiceTemplate{inNS("nginx", "other", "sha256:other")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, problems := Compile(Inputs{
				Clusters:           clusters,
				ServiceTemplates:   tc.templates,
				ClusterDeployments: []*objects.ClusterDeployment{cd("edge-1", 1, 100, svc("web", "nginx"))},
				SystemNamespaces:   objects.DefaultSystemNamespaces(),
			})
			svcs := out["edge-1"].Services
			if tc.want == "" {
				if len(svcs) != 0 || len(problems) != 1 || problems[0].Code != ProblemTemplateNotReady {
					t.Fatalf("services %+v, problems %+v; want one %s problem", svcs, problems, ProblemTemplateNotReady)
				}
				return
			}
			if len(svcs) != 1 || svcs[0].ChartDigest != tc.want {
				t.Fatalf("services %+v (problems %+v); want chart %s", svcs, problems, tc.want)
			}
		})
	}
}

// TestCompileHonoursAccessManagement: in a namespace an AccessManagement
// rule manages, a service gets a system template only when the rule
// distributes it (through a ServiceTemplateChain); elsewhere the system
// templates serve as before.
func TestCompileHonoursAccessManagement(t *testing.T) {
	inNS := func(name, namespace, digest string) *objects.ServiceTemplate {
		x := tmpl(name, true)
		x.Metadata.Namespace = namespace
		x.Status.ChartDigest = digest
		return x
	}
	chain := &objects.ServiceTemplateChain{Header: objects.Header{Kind: objects.KindServiceTemplateChain, Metadata: objects.Metadata{Name: "web-chain", Namespace: "kcm-system"}},
		Spec: objects.TemplateChainSpec{SupportedTemplates: []objects.SupportedTemplate{{Name: "nginx"}}}}
	am := &objects.AccessManagement{Header: objects.Header{Kind: objects.KindAccessManagement, Metadata: objects.Metadata{Name: "kcm"}},
		Spec: objects.AccessManagementSpec{AccessRules: []objects.AccessRule{{TargetNamespaces: &objects.ResourceSelector{List: []string{ns}}, ServiceTemplateChains: []string{"web-chain"}}}}}
	other := cd("edge-2", 1, 100, svc("db", "postgres"))
	other.Metadata.Namespace = "prod"
	out, problems := Compile(Inputs{
		Clusters:              []Cluster{{Name: "edge-1"}, {Name: "edge-2"}},
		ServiceTemplates:      []*objects.ServiceTemplate{inNS("nginx", "kcm-system", "sha256:nginx"), inNS("postgres", "kcm-system", "sha256:pg")},
		ClusterDeployments:    []*objects.ClusterDeployment{cd("edge-1", 1, 100, svc("web", "nginx"), svc("db", "postgres")), other},
		AccessManagements:     []*objects.AccessManagement{am},
		ServiceTemplateChains: []*objects.ServiceTemplateChain{chain},
		SystemNamespaces:      objects.DefaultSystemNamespaces(),
	})
	if svcs := out["edge-1"].Services; len(svcs) != 1 || svcs[0].ChartDigest != "sha256:nginx" {
		t.Errorf("edge-1 services %+v; want only the distributed nginx", svcs)
	}
	if svcs := out["edge-2"].Services; len(svcs) != 1 || svcs[0].ChartDigest != "sha256:pg" {
		t.Errorf("edge-2 (unmanaged namespace prod) services %+v; want postgres from kcm-system", svcs)
	}
	if len(problems) != 1 || problems[0].Code != ProblemTemplateNotReady || !strings.Contains(problems[0].Reason, "ServiceTemplate postgres is not distributed to it (its ServiceTemplateChains: web-chain)") {
		t.Errorf("problems %+v; want postgres not distributed to %s", problems, ns)
	}
}

func TestCompileSveltosClusterValues(t *testing.T) {
	s := svc("web", "nginx")
	s.Values = `name: {{ .Cluster.metadata.name }}
namespace: "{{ .Cluster.metadata.namespace }}"
host: {{ .Cluster.spec.controlPlaneEndpoint.host }}
port: {{ .Cluster.spec.controlPlaneEndpoint.port }}
`
	in := Inputs{
		Clusters: []Cluster{
			{Name: "edge-1", Labels: map[string]string{"tier": "edge"}, APIServer: "https://edge-1.example:6443"},
			{Name: "edge-2", Labels: map[string]string{"tier": "edge"}},
		},
		ServiceTemplates:     []*objects.ServiceTemplate{tmpl("nginx", true)},
		ClusterDeployments:   []*objects.ClusterDeployment{cd("edge-1", 1, 100, svc("other", "nginx"))},
		MultiClusterServices: []*objects.MultiClusterService{mcs("m", 2, 100, objects.LabelSelector{}, s)},
	}
	out, problems := Compile(in)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	valuesOf := func(cluster string) string {
		for _, sv := range out[cluster].Services {
			if sv.Name == "web" {
				return string(sv.Values)
			}
		}
		t.Fatalf("%s: no service web in %+v", cluster, out[cluster].Services)
		return ""
	}
	// edge-1 has a ClusterDeployment in acme (its namespace) and reported
	// its API server; edge-2 has neither.
	if got, want := valuesOf("edge-1"), "host: edge-1.example\nname: edge-1\nnamespace: acme\nport: 6443\n"; got != want {
		t.Errorf("edge-1 values:\n%s\nwant:\n%s", got, want)
	}
	if got, want := valuesOf("edge-2"), "host: null\nname: edge-2\nnamespace: \"\"\nport: 0\n"; got != want {
		t.Errorf("edge-2 values:\n%s\nwant:\n%s", got, want)
	}
}

func TestCompileDisabledServiceIsNotDeployed(t *testing.T) {
	off := svc("web", "nginx")
	off.Disable = true
	on := svc("cache", "redis", "web")
	out, problems := Compile(Inputs{
		Clusters:           []Cluster{{Name: "edge-1"}},
		ServiceTemplates:   []*objects.ServiceTemplate{tmpl("nginx", true), tmpl("redis", true)},
		ClusterDeployments: []*objects.ClusterDeployment{cd("edge-1", 1, 100, off, on)},
	})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	svcs := out["edge-1"].Services
	if len(svcs) != 1 || svcs[0].Name != "cache" || len(svcs[0].DependsOn) != 0 {
		t.Fatalf("services %+v; want only cache, not waiting on the disabled web", svcs)
	}
}

func TestValuesRenderFromTemplateResourceRefsPerCluster(t *testing.T) {
	clusters := []Cluster{
		{Name: "edge-1", Labels: map[string]string{"tier": "edge"}},
		{Name: "edge-2", Labels: map[string]string{"tier": "edge"}},
	}
	web := svc("web", "web")
	web.Values = objects.Values(`endpoint: {{ (getResource "Cfg").data.endpoint }}
password: {{ (getResource "Db").data.password | b64dec }}
extra: {{ with (getResource "Extra").data }}{{ .x }}{{ else }}none{{ end }}
`)
	m := mcs("fleet", 1, 100, objects.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}}, web)
	m.Spec.ServiceSpec.TemplateResourceRefs = []objects.TemplateResourceRef{
		{Identifier: "Cfg", Resource: objects.TemplateResource{Kind: objects.KindConfigMap, Name: "{{ .Cluster.metadata.name }}-config"}},
		{Identifier: "Db", Resource: objects.TemplateResource{Kind: objects.KindSecret, Name: "db-{{ .Cluster.metadata.name }}"}},
		{Identifier: "Extra", Optional: true, Resource: objects.TemplateResource{Kind: objects.KindConfigMap, Name: "extra"}},
	}
	cfg := func(cluster string) *objects.ConfigMap {
		o := configMap(cluster+"-config", "")
		o.Data = map[string]string{"endpoint": "https://" + cluster + ".example"}
		return o
	}
	db := secret("db-edge-1", "")
	db.Data = map[string][]byte{"password": []byte("pw-1")}
	in := Inputs{
		Clusters:             clusters,
		MultiClusterServices: []*objects.MultiClusterService{m},
		ServiceTemplates:     []*objects.ServiceTemplate{tmpl("web", true)},
		ConfigMaps:           []*objects.ConfigMap{cfg("edge-1"), cfg("edge-2")},
		Secrets:              []*objects.Secret{db},
	}
	out, problems := Compile(in)
	if got := string(out["edge-1"].Services[0].Values); got != "endpoint: https://edge-1.example\nextra: none\npassword: pw-1\n" {
		t.Errorf("edge-1 values = %q", got)
	}
	// edge-2 has its ConfigMap but no Secret: a values problem naming it.
	if len(out["edge-2"].Services) != 0 || len(problems) != 1 {
		t.Fatalf("edge-2 services %v, problems %v", out["edge-2"].Services, problems)
	}
	p := problems[0]
	want := "values: templateResourceRefs[1] (Db): Secret acme/db-edge-2 not found (set optional: true to render without it)"
	if p.Cluster != "edge-2" || p.Code != ProblemValues || p.Reason != want {
		t.Errorf("problem = %+v; want cluster edge-2, %s, %q", p, ProblemValues, want)
	}

	// The Secret and the optional ConfigMap appear: both clusters render
	// from their own objects.
	db2 := secret("db-edge-2", "")
	db2.Data = map[string][]byte{"password": []byte("pw-2")}
	extra := configMap("extra", "")
	extra.Data = map[string]string{"x": "shared"}
	in.Secrets = append(in.Secrets, db2)
	in.ConfigMaps = append(in.ConfigMaps, extra)
	out, problems = Compile(in)
	if len(problems) != 0 {
		t.Fatalf("problems: %v", problems)
	}
	for cluster, want := range map[string]string{
		"edge-1": "endpoint: https://edge-1.example\nextra: shared\npassword: pw-1\n",
		"edge-2": "endpoint: https://edge-2.example\nextra: shared\npassword: pw-2\n",
	} {
		if got := string(out[cluster].Services[0].Values); got != want {
			t.Errorf("%s values = %q; want %q", cluster, got, want)
		}
	}

	// A missing referenced object keeps the last good version.
	in.Previous = map[string][]Service{"edge-1": out["edge-1"].Services}
	in.ConfigMaps = in.ConfigMaps[1:] // drops edge-1-config
	out, problems = Compile(in)
	if len(problems) != 1 || !strings.Contains(problems[0].Reason, "ConfigMap acme/edge-1-config not found") ||
		!strings.HasSuffix(problems[0].Reason, "keeping the last good version") {
		t.Fatalf("problems: %v", problems)
	}
	if got := string(out["edge-1"].Services[0].Values); !strings.Contains(got, "edge-1.example") {
		t.Errorf("edge-1 did not keep its last good values: %q", got)
	}
}
