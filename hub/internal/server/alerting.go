package server

import (
	"time"

	"github.com/tetherfleet/tether/hub/internal/alerting"
)

// AlertingConfig configures the hub's alert rules: the built-in fleet
// rules and how often rules are evaluated and the fleet series written;
// zero durations take package alerting's defaults.
type AlertingConfig struct {
	Builtin alerting.BuiltinRules
	// EvalInterval is the rule groups' default evaluation interval.
	EvalInterval time.Duration
	// CollectInterval is how often the hub writes its fleet series
	// (tether_cluster_connected, tether_service_status, ...).
	CollectInterval time.Duration
}

// DefaultAlertingConfig returns the defaults: built-in rules on.
func DefaultAlertingConfig() AlertingConfig {
	d := alerting.DefaultConfig()
	return AlertingConfig{Builtin: d.Builtin, EvalInterval: d.EvalInterval, CollectInterval: d.CollectInterval}
}

// newAlerting builds the alert manager over the TSDB: rule objects,
// notification policies and silences from the store, fleet series from
// the registry, reports and gateway sessions.
func (h *Hub) newAlerting(externalURL string) error {
	acfg := alerting.DefaultConfig()
	a := h.cfg.Alerting
	if a == nil {
		d := DefaultAlertingConfig()
		a = &d
	}
	acfg.Builtin = a.Builtin
	if a.EvalInterval > 0 {
		acfg.EvalInterval = a.EvalInterval
	}
	if a.CollectInterval > 0 {
		acfg.CollectInterval = a.CollectInterval
	}
	acfg.TSDB, acfg.Objects, acfg.Store = h.tsdb, h.objects, h.store
	acfg.Fleet, acfg.Reports, acfg.Sessions = h.fleet, h.reports, h.gw
	acfg.ExternalURL, acfg.Logger = externalURL, h.log.With("component", "alerting")
	acfg.ExternalLabels = externalLabels(h.cfg.ExternalLabels)
	var err error
	h.alerts, err = alerting.New(acfg)
	return err
}
