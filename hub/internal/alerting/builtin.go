package alerting

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/spf13/pflag"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// BuiltinRules configures the built-in fleet rules (group "tether-fleet").
type BuiltinRules struct {
	// Disabled turns them off.
	Disabled bool
	// ClusterOffline: TetherClusterOffline fires for an enrolled cluster
	// whose agent is not connected and was last seen longer ago.
	ClusterOffline time.Duration
	// ServiceFailedFor: TetherServiceFailed fires for a service reported
	// Failed this long.
	ServiceFailedFor time.Duration
	// OutboxDropWindow: TetherOutboxDrops fires while an agent's dropped
	// counter grew within this window.
	OutboxDropWindow time.Duration
	// CertificateExpiry: TetherAgentCertificateExpiring fires for an agent
	// certificate that expires within it.
	CertificateExpiry time.Duration
}

// DefaultBuiltinRules returns the defaults.
func DefaultBuiltinRules() BuiltinRules {
	return BuiltinRules{ClusterOffline: 15 * time.Minute, ServiceFailedFor: 5 * time.Minute, OutboxDropWindow: 15 * time.Minute, CertificateExpiry: 14 * 24 * time.Hour}
}

// RegisterFlags adds the `tether serve` flags of the built-in rules, with
// b's values as defaults.
func (b *BuiltinRules) RegisterFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&b.Disabled, "alerts-builtin-disabled", b.Disabled, "turn off the built-in fleet alert rules")
	fs.DurationVar(&b.ClusterOffline, "alert-cluster-offline-after", b.ClusterOffline, "TetherClusterOffline fires for a cluster offline longer than this")
	fs.DurationVar(&b.ServiceFailedFor, "alert-service-failed-for", b.ServiceFailedFor, "TetherServiceFailed fires for a service Failed this long")
	fs.DurationVar(&b.OutboxDropWindow, "alert-outbox-drop-window", b.OutboxDropWindow, "TetherOutboxDrops fires while an agent's outbox dropped entries within this window")
	fs.DurationVar(&b.CertificateExpiry, "alert-cert-expiry-within", b.CertificateExpiry, "TetherAgentCertificateExpiring fires for an agent certificate expiring within this (336h = 14 days)")
}

// Validate reports thresholds that cannot work.
func (b *BuiltinRules) Validate() error {
	if b.Disabled {
		return nil
	}
	d := DefaultBuiltinRules()
	for _, p := range []*time.Duration{&b.ClusterOffline, &b.ServiceFailedFor, &b.OutboxDropWindow, &b.CertificateExpiry} {
		if *p < 0 {
			return errors.New("alerting: built-in rule thresholds must not be negative")
		}
	}
	if b.ClusterOffline == 0 {
		b.ClusterOffline = d.ClusterOffline
	}
	if b.OutboxDropWindow == 0 {
		b.OutboxDropWindow = d.OutboxDropWindow
	}
	if b.CertificateExpiry == 0 {
		b.CertificateExpiry = d.CertificateExpiry
	}
	return nil
}

func promDuration(d time.Duration) string { return model.Duration(d).String() }

// Spec returns the built-in rules as a PrometheusRule spec.
func (b *BuiltinRules) Spec() objects.PrometheusRuleSpec {
	warn := map[string]string{"severity": "warning", "source": "tether"}
	crit := map[string]string{"severity": "critical", "source": "tether"}
	return objects.PrometheusRuleSpec{Groups: []objects.RuleGroup{{
		Name: "tether-fleet",
		Rules: []objects.Rule{
			{
				Alert:  "TetherClusterOffline",
				Expr:   objects.RuleExpr(fmt.Sprintf("(time() - %s) > %g and on(cluster) %s == 0", SeriesLastSeen, b.ClusterOffline.Seconds(), SeriesConnected)),
				Labels: warn,
				Annotations: map[string]string{
					"summary":     "Cluster {{ $labels.cluster }} is offline",
					"description": "The agent of cluster {{ $labels.cluster }} was last seen {{ $value | humanizeDuration }} ago.",
				},
			},
			{
				Alert:  "TetherServiceFailed",
				Expr:   objects.RuleExpr(SeriesService + `{state="Failed"} == 1`),
				For:    promDuration(b.ServiceFailedFor),
				Labels: crit,
				Annotations: map[string]string{
					"summary": "Service {{ $labels.namespace }}/{{ $labels.service }} failed on cluster {{ $labels.cluster }}",
				},
			},
			{
				Alert:  "TetherOutboxDrops",
				Expr:   objects.RuleExpr(fmt.Sprintf("increase(%s[%s]) > 0", SeriesDropped, promDuration(b.OutboxDropWindow))),
				Labels: warn,
				Annotations: map[string]string{
					"summary":     "Cluster {{ $labels.cluster }} dropped outbox entries ({{ $labels.kind }})",
					"description": "The agent's outbox was full and dropped {{ $value }} {{ $labels.kind }} entries; that data is lost.",
				},
			},
			{
				Alert:  "TetherAgentCertificateExpiring",
				Expr:   objects.RuleExpr(fmt.Sprintf("(%s - time()) < %g", SeriesCertExpiry, b.CertificateExpiry.Seconds())),
				Labels: warn,
				Annotations: map[string]string{
					"summary": "The agent certificate of cluster {{ $labels.cluster }} expires in {{ $value | humanizeDuration }}",
				},
			},
		},
	}}}
}

func (b *BuiltinRules) groups() (*rulefmt.RuleGroups, error) {
	s := b.Spec()
	g, fe := s.ParseRules()
	if len(fe) > 0 {
		return nil, fmt.Errorf("built-in rules: %v", fe)
	}
	return g, nil
}
