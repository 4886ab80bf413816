package objects

import (
	"context"
	"errors"
	"strings"
	"testing"
)

const goodRules = `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: app, namespace: ops}
spec:
  groups:
  - name: app
    interval: 1m
    rules:
    - alert: HighErrors
      expr: rate(http_errors_total[5m]) > 1
      for: 10m
      keep_firing_for: 5m
      labels: {severity: page}
      annotations: {summary: "{{ $labels.job }} errors"}
    - record: job:errors:rate5m
      expr: sum by (job) (rate(http_errors_total[5m]))
    - record: slo:availability:target
      expr: 0.999
`

// TestPrometheusRuleValidation: rules are checked with Prometheus'
// rulefmt and PromQL parser; each error names the group and the rule and
// says why, at the rule's path.
func TestPrometheusRuleValidation(t *testing.T) {
	objs, err := Decode([]byte(goodRules), "rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	Default(objs[0])
	if err := Validate(objs[0]); err != nil {
		t.Fatalf("valid rules refused: %v", err)
	}
	// prometheus-operator's expr is an int-or-string: a bare number.
	if got := objs[0].(*PrometheusRule).Spec.Groups[0].Rules[2].Expr; got != "0.999" {
		t.Fatalf("numeric expr decoded as %q", got)
	}
	if _, err := Decode([]byte(strings.Replace(goodRules, "expr: 0.999", "expr: [1]", 1)), "rules.yaml"); err == nil || !strings.Contains(err.Error(), "spec.groups[0].rules[2].expr: expected a PromQL expression (a string or a number), got list") {
		t.Fatalf("list expr: %v", err)
	}
	if objs[0].GetHeader().APIVersion != MonitoringAPIVersion {
		t.Fatalf("apiVersion %q", objs[0].GetHeader().APIVersion)
	}
	for name, tc := range map[string]struct{ edit, want string }{
		"bad expr":       {"expr: rate(http_errors_total[5m]) > 1", `spec.groups[0].rules[0]: group "app", alert "HighErrors": could not parse expression`},
		"bad for":        {"for: 10m", `spec.groups[0].rules[0].for: "ten": `},
		"bad template":   {`annotations: {summary: "{{ $labels.job }} errors"}`, `spec.groups[0].rules[0]: group "app", alert "HighErrors": annotation "summary"`},
		"record and for": {"- record: job:errors:rate5m\n      expr: sum by (job) (rate(http_errors_total[5m]))", `spec.groups[0].rules[1]: group "app", record "job:errors:rate5m": invalid field 'for' in recording rule`},
		"bad interval":   {"interval: 1m", `spec.groups[0].interval: "0s"`},
		"bad label name": {"labels: {severity: page}", `invalid label name`},
	} {
		t.Run(name, func(t *testing.T) {
			bad := goodRules
			switch name {
			case "bad expr":
				bad = strings.Replace(bad, tc.edit, "expr: rate(http_errors_total[5m] > 1", 1)
			case "bad for":
				bad = strings.Replace(bad, tc.edit, "for: ten", 1)
			case "bad template":
				bad = strings.Replace(bad, tc.edit, `annotations: {summary: "{{ $labels.job "}`, 1)
			case "record and for":
				bad = strings.Replace(bad, tc.edit, tc.edit+"\n      for: 1m", 1)
			case "bad interval":
				bad = strings.Replace(bad, tc.edit, "interval: 0s", 1)
			case "bad label name":
				bad = strings.Replace(bad, tc.edit, `labels: {__name__: x}`, 1)
			}
			_, err := Decode([]byte(bad), "rules.yaml")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestBadAlertingObjectsChangeNothing: an apply with one bad rule or a
// policy naming a missing Secret stores nothing of the batch; a Secret a
// policy uses cannot be deleted.
func TestBadAlertingObjectsChangeNothing(t *testing.T) {
	r, _ := newRepo(t)
	ctx := context.Background()
	policy := `apiVersion: tether.dev/v1alpha1
kind: NotificationPolicy
metadata: {name: ops, namespace: ops}
spec:
  route:
    receiver: pager
    groupBy: [alertname, cluster]
    routes: [{matchers: ['severity="critical"'], receiver: pager, continue: true}]
  receivers:
  - name: pager
    pagerduty: {routingKeySecretRef: {name: pd, key: key}}
    webhook: {url: "https://hooks.example/x?token=abc"}
`
	objs, err := Decode([]byte(goodRules+"---\n"+policy), "batch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Apply(ctx, objs)
	if err == nil || !strings.Contains(err.Error(), "spec.receivers[0].pagerduty.routingKeySecretRef.name: Secret ops/pd not found") {
		t.Fatalf("apply without the Secret: %v", err)
	}
	if l, _ := r.List(ctx, KindPrometheusRule, ""); len(l) != 0 {
		t.Fatalf("a refused batch stored %d PrometheusRules", len(l))
	}
	sec, err := Decode([]byte("apiVersion: v1\nkind: Secret\nmetadata: {name: pd, namespace: ops}\nstringData: {key: routing}\n"), "s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Apply(ctx, append(sec, objs...)); err != nil {
		t.Fatal(err)
	}
	np, err := r.Get(ctx, KindNotificationPolicy, "ops", "ops")
	if err != nil {
		t.Fatal(err)
	}
	if got := np.(*NotificationPolicy).Spec.Route.GroupWait; got != DefaultGroupWait {
		t.Fatalf("groupWait defaulted to %q", got)
	}
	if err := r.Delete(ctx, KindSecret, "ops", "pd"); !errors.Is(err, ErrInUse) {
		t.Fatalf("delete of a Secret a policy uses: %v", err)
	}
	hidden := r.Kinds().Get(KindNotificationPolicy).Redact(np, "REDACTED")
	if u := np.(*NotificationPolicy).Spec.Receivers[0].Webhook.URL; strings.Contains(u, "abc") || len(hidden) != 1 {
		t.Fatalf("redacted webhook URL %q (hidden %v)", u, hidden)
	}

	// The API applies decoded objects without Decode's checks: Apply
	// validates again.
	bad := DeepCopy(np).(*NotificationPolicy)
	bad.Metadata.ResourceVersion = 0
	bad.Spec.Route.Receiver = "nobody"
	bad.Spec.Route.Routes[0].Matchers[0] = `severity=~"("`
	_, err = r.Apply(ctx, []Object{bad})
	for _, want := range []string{`spec.route.receiver: receiver "nobody" is not in spec.receivers`, "spec.route.routes[0].matchers[0]: matcher"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("bad policy: %v; want %q", err, want)
		}
	}
	np2, _ := r.Get(ctx, KindNotificationPolicy, "ops", "ops")
	if np2.GetHeader().Metadata.Generation != 1 {
		t.Fatal("a refused apply changed the stored policy")
	}
}
