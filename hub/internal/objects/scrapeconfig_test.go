package objects

import (
	"strings"
	"testing"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

const scrapeHead = "apiVersion: tether.dev/v1alpha1\nkind: ScrapeConfig\nmetadata: {name: web, namespace: acme}\nspec:\n"

// TestScrapeConfigDefaultsAndWire: a minimal ScrapeConfig gets
// Prometheus' defaults, and its wire form carries every field explicitly.
func TestScrapeConfigDefaultsAndWire(t *testing.T) {
	objs, err := Decode([]byte(scrapeHead+`  clusterSelector: {matchLabels: {env: prod}}
  targets:
    - {kind: Pod, namespaces: [web], selector: {matchLabels: {app: web}, matchExpressions: [{key: tier, operator: In, values: [a, b]}, {key: canary, operator: DoesNotExist}]}, port: metrics}
    - {kind: Service, port: 9100}
  relabelConfigs:
    - {source_labels: [__meta_kubernetes_pod_label_team], target_label: team}
  metricRelabelConfigs:
    - {source_labels: [__name__], regex: 'go_.*', action: drop}
`), "test")
	if err != nil {
		t.Fatal(err)
	}
	o := objs[0].(*ScrapeConfig)
	w := WireScrapeConfig(o)
	if w.GetPath() != "/metrics" || w.GetScheme() != "http" || w.GetIntervalSeconds() != 30 || w.GetTimeoutSeconds() != 10 || w.GetSampleLimit() != 10000 {
		t.Fatalf("defaults: %v", w)
	}
	if got := w.GetTargets()[0]; got.GetLabelSelector() != "app=web,tier in (a,b),!canary" || got.GetPort() != "metrics" || got.GetNamespaces()[0] != "web" {
		t.Fatalf("pod target: %v", got)
	}
	if got := w.GetTargets()[1]; got.GetPort() != "9100" || got.GetKind() != "Service" || got.GetLabelSelector() != "" {
		t.Fatalf("service target: %v", got)
	}
	r := w.GetRelabelConfigs()[0]
	if r.GetAction() != "replace" || r.GetRegex() != "(.*)" || r.GetSeparator() != ";" || r.GetReplacement() != "$1" {
		t.Fatalf("relabel defaults: %v", r)
	}
	if m := w.GetMetricRelabelConfigs()[0]; m.GetAction() != "drop" || m.GetRegex() != "go_.*" {
		t.Fatalf("metric relabel: %v", m)
	}
	if w.GetNamespace() != "acme" || w.GetName() != "web" {
		t.Fatalf("job: %s/%s", w.GetNamespace(), w.GetName())
	}
	// A short interval shortens the default timeout to it.
	objs, err = Decode([]byte(scrapeHead+"  interval: 5s\n  targets: [{kind: Pod, port: 80}]\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	if w := WireScrapeConfig(objs[0].(*ScrapeConfig)); w.GetIntervalSeconds() != 5 || w.GetTimeoutSeconds() != 5 {
		t.Fatalf("interval 5s: %v", w)
	}
	if secs := describeScrapeConfig(objs[0].(*ScrapeConfig)); len(secs) != 2 || secs[1].Items[0].Key != "Pod" {
		t.Fatalf("describe: %v", secs)
	}
}

func TestScrapeConfigValidationErrors(t *testing.T) {
	tgt := "  targets: [{kind: Pod, port: 80}]\n"
	rule := func(field, r string) string { return tgt + "  " + field + ":\n    - " + r + "\n" }
	tests := []struct{ name, in, want string }{
		{"targets required", "  path: /m\n", "spec.targets: required"},
		{"target kind", "  targets: [{kind: Deployment, port: 80}]\n", `spec.targets[0].kind: "Deployment": want Pod or Service`},
		{"target kind required", "  targets: [{port: 80}]\n", "spec.targets[0].kind: required"},
		{"port required", "  targets: [{kind: Pod}]\n", "spec.targets[0].port: required"},
		{"port range", "  targets: [{kind: Pod, port: 70000}]\n", "spec.targets[0].port: 70000: want 1 to 65535"},
		{"port name", "  targets: [{kind: Pod, port: Not_A_Name}]\n", `spec.targets[0].port: "Not_A_Name"`},
		{"port type", "  targets: [{kind: Pod, port: [1]}]\n", "spec.targets[0].port: [1]: want a port name or number"},
		{"namespace", "  targets: [{kind: Pod, port: 80, namespaces: [A.b]}]\n", `spec.targets[0].namespaces[0]: "A.b"`},
		{"target selector", "  targets: [{kind: Pod, port: 80, selector: {matchExpressions: [{key: a, operator: Near}]}}]\n", `spec.targets[0].selector.matchExpressions[0].operator: "Near"`},
		{"cluster selector", tgt + "  clusterSelector: {matchLabels: {'-x': v}}\n", "spec.clusterSelector.matchLabels[-x]: key"},
		{"too many targets", "  targets:\n" + strings.Repeat("    - {kind: Pod, port: 80}\n", fleetv1.MaxScrapeTargets+1), "spec.targets: 17 targets, at most 16"},
		{"interval min", tgt + "  interval: 1s\n", "spec.interval: 1s: less than the minimum 5s"},
		{"interval syntax", tgt + "  interval: often\n", `spec.interval: "often": not a duration`},
		{"timeout over interval", tgt + "  interval: 10s\n  scrapeTimeout: 20s\n", "spec.scrapeTimeout: 20s: longer than the interval 10s"},
		{"timeout zero", tgt + "  scrapeTimeout: 0s\n", "spec.scrapeTimeout: 0s: must be positive"},
		{"path", tgt + "  path: metrics\n", `spec.path: "metrics": must start with /`},
		{"scheme", tgt + "  scheme: ftp\n", `spec.scheme: "ftp": want http or https`},
		{"sample limit", tgt + "  sampleLimit: 0\n", "spec.sampleLimit: 0: want 1 to 1000000"},
		{"invalid regex", rule("relabelConfigs", "{source_labels: [a], regex: '(', target_label: b}"), `spec.relabelConfigs[0]: regex "(": invalid`},
		{"unknown action", rule("metricRelabelConfigs", "{action: explode}"), `spec.metricRelabelConfigs[0]: action "explode": unknown`},
		{"replace needs target", rule("relabelConfigs", "{source_labels: [a]}"), "spec.relabelConfigs[0]: action replace: relabel configuration for replace action requires 'target_label' value"},
		{"hashmod modulus", rule("relabelConfigs", "{source_labels: [a], action: hashmod, target_label: b}"), "requires non-zero modulus"},
		{"bad source label", rule("relabelConfigs", "{source_labels: ['a-b'], target_label: c}"), `spec.relabelConfigs[0]: source_labels: "a-b" is not a valid label name`},
		{"labeldrop extra fields", rule("metricRelabelConfigs", "{action: labeldrop, regex: x, target_label: z}"), "labeldrop action requires only 'regex'"},
		{"too many rules", tgt + "  relabelConfigs:\n" + strings.Repeat("    - {action: labeldrop, regex: x}\n", fleetv1.MaxRelabelRules+1), "spec.relabelConfigs: 65 rules, at most 64"},
		{"unknown field", tgt + "  honorLabels: true\n", "spec.honorLabels: unknown field"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(scrapeHead+tc.in), "test")
			if err == nil {
				t.Fatalf("accepted; want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

// TestScrapeConfigAcceptsEveryRelabelAction: each of Prometheus' actions
// in a valid form is accepted.
func TestScrapeConfigAcceptsEveryRelabelAction(t *testing.T) {
	rules := []string{
		"{source_labels: [a], target_label: b}",
		"{source_labels: [a], regex: x, action: keep}",
		"{source_labels: [a], regex: x, action: drop}",
		"{regex: '__meta_kubernetes_pod_label_(.+)', action: labelmap}",
		"{regex: 'tmp_.*', action: labeldrop}",
		"{regex: 'keep_.*', action: labelkeep}",
		"{source_labels: [a], target_label: shard, modulus: 4, action: hashmod}",
		"{source_labels: [a], target_label: a, action: lowercase}",
		"{source_labels: [a], target_label: a, action: uppercase}",
		"{source_labels: [a], target_label: b, action: keepequal}",
		"{source_labels: [a], target_label: b, action: dropequal}",
		"{source_labels: [a], target_label: b, replacement: ''}",
	}
	in := scrapeHead + "  targets: [{kind: Service, port: http}]\n  metricRelabelConfigs:\n"
	for _, r := range rules {
		in += "    - " + r + "\n"
	}
	objs, err := Decode([]byte(in), "test")
	if err != nil {
		t.Fatal(err)
	}
	if w := WireScrapeConfig(objs[0].(*ScrapeConfig)); len(w.GetMetricRelabelConfigs()) != len(rules) || w.GetMetricRelabelConfigs()[11].GetReplacement() != "" {
		t.Fatalf("wire rules: %v", w.GetMetricRelabelConfigs())
	}
}
