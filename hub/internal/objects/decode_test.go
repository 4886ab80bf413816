package objects

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

const validManifest = `
apiVersion: tether.dev/v1alpha1
kind: HelmRepository
metadata: {name: public-charts, namespace: acme}
spec: {url: "https://charts.example.com"}
---
# a comment-only document is skipped but counted
---
apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: simple-nginx-1.0.0, namespace: acme}
spec:
  helm:
    chartSpec: {chart: simple-nginx, version: 1.0.0,
                sourceRef: {kind: HelmRepository, name: public-charts}}
--- # separator with a comment
apiVersion: tether.dev/v1alpha1
kind: ClusterDeployment
metadata: {name: edge-paris-1, namespace: acme}
spec:
  template: adopted
  config: {a: [1, 2]}
  serviceSpec:
    services:
      - template: simple-nginx-1.0.0
        name: nginx-web
        namespace: applications-web
        values: |
          replicaCount: 2
          region: "{{ .Cluster.Region }}"
        valuesFrom: [{kind: ConfigMap, name: web-values}]
        dependsOn: [db]
      - template: simple-nginx-1.0.0
        name: db
        values: {persistence: {size: 1Gi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-values, namespace: acme}
data:
  values.yaml: |
    image: {tag: "1.25"}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: acme}
data: {password: aHVudGVyMg==}
stringData: {user: admin}
---
apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: monitoring}
spec:
  clusterSelector:
    matchLabels: {tier: edge}
    matchExpressions:
      - {key: region, operator: In, values: [eu-west, eu-central]}
      - {key: legacy, operator: DoesNotExist}
  serviceSpec:
    priority: 200
    services:
      - {template: simple-nginx-1.0.0, name: agent}
  rollout: {strategy: Progressive, maxConcurrency: 10%}
`

func TestDecodeValid(t *testing.T) {
	objs, err := Decode([]byte(validManifest), "web.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 6 {
		t.Fatalf("got %d objects, want 6", len(objs))
	}
	st := objs[1].(*ServiceTemplate)
	if st.APIVersion != APIVersion || st.Spec.Helm.ChartSpec.Version != "1.0.0" {
		t.Errorf("ServiceTemplate not normalised: %+v", st.Header)
	}
	cd := objs[2].(*ClusterDeployment)
	if cd.Spec.ServiceSpec.Priority != DefaultPriority {
		t.Errorf("priority = %d, want default %d", cd.Spec.ServiceSpec.Priority, DefaultPriority)
	}
	if got := cd.Spec.ServiceSpec.Services[1].Namespace; got != DefaultNamespace {
		t.Errorf("service namespace = %q, want default", got)
	}
	if got := string(cd.Spec.ServiceSpec.Services[1].Values); got != "persistence:\n  size: 1Gi\n" {
		t.Errorf("mapping values kept as %q", got)
	}
	if string(cd.Spec.Config) != `{"a":[1,2]}` {
		t.Errorf("config = %s", cd.Spec.Config)
	}
	sec := objs[4].(*Secret)
	if string(sec.Data["password"]) != "hunter2" || string(sec.Data["user"]) != "admin" || sec.StringData != nil {
		t.Errorf("secret data = %q stringData = %v", sec.Data, sec.StringData)
	}
	mcs := objs[5].(*MultiClusterService)
	if mcs.Metadata.Namespace != DefaultNamespace || mcs.Spec.ServiceSpec.Priority != 200 {
		t.Errorf("mcs = %+v", mcs)
	}
}

func TestDecodeJSON(t *testing.T) {
	in := `[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"},"data":{"values":"x: 1"}},
	        {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b"}}]`
	objs, err := Decode([]byte(in), "in.json")
	if err != nil || len(objs) != 2 {
		t.Fatalf("Decode = %d objects, %v", len(objs), err)
	}
	list := `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}]}`
	if objs, err := Decode([]byte(list), "list.json"); err != nil || len(objs) != 1 {
		t.Fatalf("Decode List = %d objects, %v", len(objs), err)
	}
}

func TestDecodeErrors(t *testing.T) {
	const st = "apiVersion: tether.dev/v1alpha1\nkind: ServiceTemplate\nmetadata: {name: nginx, namespace: acme}\n"
	tests := []struct {
		name, in, want string
	}{
		{"unknown kind", "apiVersion: tether.dev/v1alpha1\nkind: Foo\nmetadata: {name: x}\n",
			`web.yaml: document 1: unknown kind "Foo" (known: AccessManagement, Bucket, ClusterAuditPolicy, ClusterAuthentication, ClusterDataSource, ClusterDeployment, ClusterIPAM, ClusterIPAMClaim, ClusterTemplate, ClusterTemplateChain, ConfigMap, Credential, DataSource, GitRepository, HelmChart, HelmRepository, MultiClusterService, NotificationPolicy, OCIRepository, PrometheusRule, ScrapeConfig, Secret, ServiceTemplate, ServiceTemplateChain)`},
		{"no kind", "metadata: {name: x}\n", `web.yaml: document 1: kind: required`},
		{"bad apiVersion", "apiVersion: apps/v1\nkind: ServiceTemplate\nmetadata: {name: x}\n",
			`web.yaml: document 1 (ServiceTemplate default/x): apiVersion: "apps/v1" is not accepted for ServiceTemplate`},
		{"unknown field", st + "spec: {helm: {chartSpec: {chart: a, version: 1.0.0, sourceRef: {name: r}, bogus: 1}}}\n",
			`web.yaml: document 1 (ServiceTemplate acme/nginx): spec.helm.chartSpec.bogus: unknown field`},
		{"version required", st + "spec: {helm: {chartSpec: {chart: a, sourceRef: {name: r}}}}\n",
			`web.yaml: document 1 (ServiceTemplate acme/nginx): spec.helm.chartSpec.version: required`},
		{"number for string", st + "spec: {helm: {chartSpec: {chart: a, version: 1.0, sourceRef: {name: r}}}}\n",
			`spec.helm.chartSpec.version: expected a string, got number 1 (quote it)`},
		{"string for int", "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: c}\nspec: {template: adopted, serviceSpec: {priority: high}}\n",
			`spec.serviceSpec.priority: expected an integer, got string`},
		{"list for object", "apiVersion: v1\nkind: ConfigMap\nmetadata: [a]\n", `metadata: expected an object, got list`},
		{"duplicate key", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\nmetadata: {name: b}\n", `web.yaml: document 1: `},
		{"bad yaml line numbers", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: [\n",
			`web.yaml: document 2: yaml: line 7`},
		{"second document", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: B}\n",
			`web.yaml: document 2 (ConfigMap default/B): metadata.name: "B": a lowercase RFC 1123 subdomain`},
		{"duplicate object", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n",
			`web.yaml: document 2 (ConfigMap default/a): duplicate of document 1`},
		{"scalar document", "42\n", `web.yaml: document 1: expected an object, got number 42`},
		{"bad base64", "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {a: '!!!'}\n", `web.yaml: document 1 (Secret default/s): `},
		{"bad resourceVersion", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, resourceVersion: abc}\n", `metadata.resourceVersion: expected a non-negative integer, got string`},
		{"values list", "apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: c}\nspec: {template: adopted, serviceSpec: {services: [{template: t, name: a, values: [1]}]}}\n",
			`spec.serviceSpec.services[0].values: expected a string or a mapping, got list`},
		{"bad time", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, creationTimestamp: yesterday}\n", `metadata.creationTimestamp: expected an RFC 3339 time`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			objs, err := Decode([]byte(tt.in), "web.yaml")
			if err == nil {
				t.Fatalf("Decode succeeded with %d objects, want error containing %q", len(objs), tt.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error:\n%v\nwant it to contain:\n%s", err, tt.want)
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	big := make([]byte, MaxInputBytes+1)
	if _, err := Decode(big, "big"); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized input: %v", err)
	}
	many := strings.Repeat("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n", MaxDocuments+1)
	if _, err := Decode([]byte(many), "many"); err == nil || !strings.Contains(err.Error(), "more than 1000 documents") {
		t.Errorf("too many documents: %v", err)
	}
}

func TestDecodeReportsEveryBadDocument(t *testing.T) {
	in := "kind: Foo\n---\nkind: Bar\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n"
	_, err := Decode([]byte(in), "f")
	if err == nil || !strings.Contains(err.Error(), "document 1") || !strings.Contains(err.Error(), "document 2") {
		t.Fatalf("err = %v", err)
	}
}

func TestRoundTrip(t *testing.T) {
	objs, err := Decode([]byte(validManifest), "web.yaml")
	if err != nil {
		t.Fatal(err)
	}
	checkRoundTrip(t, objs)
}

// checkRoundTrip encodes objs as a JSON list and YAML documents, decodes
// both, and compares.
func checkRoundTrip(t testing.TB, objs []Object) {
	t.Helper()
	var docs []string
	for _, o := range objs {
		y, err := Encode(o, "yaml")
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		docs = append(docs, string(y))
	}
	again, err := Decode([]byte(strings.Join(docs, "---\n")), "re-encoded")
	if err != nil {
		t.Fatalf("decode re-encoded YAML: %v\n%s", err, strings.Join(docs, "---\n"))
	}
	if len(again) != len(objs) {
		t.Fatalf("re-decoded %d objects, want %d", len(again), len(objs))
	}
	for i := range objs {
		a, _ := json.Marshal(objs[i])
		b, _ := json.Marshal(again[i])
		var av, bv any
		_ = json.Unmarshal(a, &av)
		_ = json.Unmarshal(b, &bv)
		if !reflect.DeepEqual(av, bv) {
			t.Fatalf("object %d changed in a round trip:\n%s\n%s", i, a, b)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte(validManifest))
	f.Add([]byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}`))
	f.Add([]byte("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n"))
	f.Add([]byte("kind: Foo\n---\n---\n[1, 2]\n"))
	f.Add([]byte("apiVersion: tether.dev/v1alpha1\nkind: ScrapeConfig\nmetadata: {name: s}\nspec: {targets: [{kind: Pod, port: 8080, selector: {matchLabels: {a: b}}}], interval: 15s, metricRelabelConfigs: [{source_labels: [__name__], regex: 'go_.*', action: drop}]}\n"))
	f.Add([]byte("apiVersion: tether.dev/v1alpha1\nkind: ClusterDeployment\nmetadata: {name: c}\nspec: {template: adopted, serviceSpec: {services: [{template: t, name: a, values: '{{ range .Cluster.Labels }}x{{ end }}'}]}}\n"))
	f.Add([]byte("apiVersion: source.toolkit.fluxcd.io/v1beta2\nkind: OCIRepository\nmetadata: {name: o}\nspec: {url: \"oci://h/p/c\", interval: 1m, ref: {semver: \">=1\"}, layerSelector: {operation: copy}}\nstatus: {x: 1}\n"))
	f.Add([]byte("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata: {name: h}\nspec: {chart: ./c, interval: 1m, sourceRef: {kind: GitRepository, name: g}, verify: {provider: cosign}}\n"))
	f.Add([]byte("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: ServiceTemplate\nmetadata: {name: t}\nspec: {helm: {chartSource: {path: c, remoteSourceSpec: {oci: {url: \"oci://h/p\", interval: 1m}}}}}\n"))
	f.Add([]byte("apiVersion: k0rdent.mirantis.com/v1beta1\nkind: AccessManagement\nmetadata: {name: kcm}\nspec: {accessRules: [{targetNamespaces: {stringSelector: \"a in (b), !c\"}, resources: [{kind: ServiceTemplate, selector: {matchExpressions: [{key: k, operator: Exists}]}}]}]}\n"))
	f.Add([]byte("apiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\nmetadata: {name: r}\nspec: {groups: [{name: g, interval: 1m, rules: [{alert: A, expr: 'up == 0', for: 5m, labels: {s: x}, annotations: {d: '{{ $value }}'}}, {record: 'a:b', expr: 'sum(up)'}]}]}\n"))
	f.Add([]byte("apiVersion: tether.dev/v1alpha1\nkind: NotificationPolicy\nmetadata: {name: p}\nspec: {route: {receiver: r, groupBy: ['...'], matchers: ['a=~\"b|c\"'], routes: [{receiver: r, continue: true}]}, receivers: [{name: r, webhook: {url: 'http://h/x?t=1'}, slack: {urlSecretRef: {name: s, key: k}}, email: {to: [a@b.c], from: x@y.z, smarthost: 'h:25'}}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := Decode(data, "fuzz")
		if err != nil {
			return
		}
		checkRoundTrip(t, objs)
	})
}

// TestStatusInInputIsDropped: a manifest copied from `kubectl get -o
// yaml` (k0rdent's status, which Tether's types do not have) decodes, as
// Kubernetes drops a status on create; only the hub writes status.
// ConfigMaps and Secrets have no status: there it is an unknown field.
func TestStatusInInputIsDropped(t *testing.T) {
	objs, err := Decode([]byte(`apiVersion: k0rdent.mirantis.com/v1beta1
kind: ServiceTemplate
metadata: {name: kyverno-3-2-6, namespace: kcm-system}
spec: {helm: {chartSpec: {chart: kyverno, version: 3.2.6, sourceRef: {name: r}}}}
status:
  chartRef: {kind: HelmChart, name: kyverno-3-2-6}
  valid: true
  chartDigest: sha256:forged
`), "st.yaml")
	if err != nil {
		t.Fatalf("a manifest with k0rdent's status: %v", err)
	}
	if st := objs[0].(*ServiceTemplate).Status; st.ChartDigest != "" || st.Valid {
		t.Errorf("status from input kept: %+v", st)
	}
	_, err = Decode([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nstatus: {}\n"), "cm.yaml")
	if err == nil || !strings.Contains(err.Error(), "status: unknown field") {
		t.Errorf("a ConfigMap with status: %v", err)
	}
}
