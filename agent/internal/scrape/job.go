package scrape

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/prometheus/model/relabel"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// job is one scrape config, converted and checked.
type job struct {
	name          string // "<namespace>/<name>"
	generation    int64
	targets       []selector
	path, scheme  string
	interval      time.Duration
	timeout       time.Duration
	sampleLimit   int
	relabel       []*relabel.Config
	metricRelabel []*relabel.Config
}

// selector is one ScrapeTarget.
type selector struct {
	kind       string // Pod or Service
	namespaces []string
	labels     labels.Selector
	port       string
	portNumber int // 0 when port is a name
}

// Minimum interval and timeout the agent runs, whatever it is sent.
const (
	minInterval = time.Second
	minTimeout  = 100 * time.Millisecond
)

// compileJob converts a wire config; an error names the config and field.
// The hub validates the same things, so an error here means a hub of
// another version or a corrupted cache.
func compileJob(c *fleetv1.ScrapeConfig) (*job, error) {
	j := &job{name: c.GetNamespace() + "/" + c.GetName(), generation: c.GetGeneration(), path: c.GetPath(), scheme: c.GetScheme(),
		interval: time.Duration(c.GetIntervalSeconds()) * time.Second, timeout: time.Duration(c.GetTimeoutSeconds()) * time.Second,
		sampleLimit: int(c.GetSampleLimit())}
	fail := func(format string, args ...any) (*job, error) {
		return nil, fmt.Errorf("scrape config %s: %s", j.name, fmt.Sprintf(format, args...))
	}
	switch {
	case c.GetNamespace() == "" || c.GetName() == "":
		return fail("namespace and name are required")
	case len(c.GetTargets()) == 0:
		return fail("targets: none")
	case len(c.GetTargets()) > fleetv1.MaxScrapeTargets:
		return fail("targets: %d, at most %d", len(c.GetTargets()), fleetv1.MaxScrapeTargets)
	case len(c.GetRelabelConfigs()) > fleetv1.MaxRelabelRules:
		return fail("relabel_configs: %d rules, at most %d", len(c.GetRelabelConfigs()), fleetv1.MaxRelabelRules)
	case len(c.GetMetricRelabelConfigs()) > fleetv1.MaxRelabelRules:
		return fail("metric_relabel_configs: %d rules, at most %d", len(c.GetMetricRelabelConfigs()), fleetv1.MaxRelabelRules)
	case j.scheme != "http" && j.scheme != "https":
		return fail("scheme %q: want http or https", j.scheme)
	case len(j.path) == 0 || j.path[0] != '/':
		return fail("path %q: must start with /", j.path)
	case j.interval < minInterval:
		return fail("interval %s: under %s", j.interval, minInterval)
	case j.sampleLimit <= 0 || j.sampleLimit > fleetv1.MaxScrapeSampleLimit:
		return fail("sample_limit %d: want 1 to %d", j.sampleLimit, fleetv1.MaxScrapeSampleLimit)
	}
	j.timeout = min(max(j.timeout, minTimeout), j.interval)
	for i, t := range c.GetTargets() {
		s := selector{kind: t.GetKind(), namespaces: t.GetNamespaces(), port: t.GetPort()}
		if s.kind != "Pod" && s.kind != "Service" {
			return fail("targets[%d].kind %q: want Pod or Service", i, s.kind)
		}
		for _, ns := range s.namespaces {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return fail("targets[%d].namespaces: %q: %s", i, ns, errs[0])
			}
		}
		sel, err := labels.Parse(t.GetLabelSelector())
		if err != nil {
			return fail("targets[%d].label_selector %q: %v", i, t.GetLabelSelector(), err)
		}
		s.labels = sel
		if n, err := strconv.Atoi(s.port); err == nil {
			if n < 1 || n > 65535 {
				return fail("targets[%d].port %d: want 1 to 65535", i, n)
			}
			s.portNumber = n
		} else if errs := validation.IsValidPortName(s.port); len(errs) > 0 {
			return fail("targets[%d].port %q: %s", i, s.port, errs[0])
		}
		j.targets = append(j.targets, s)
	}
	var err error
	if j.relabel, err = relabelConfigs(c.GetRelabelConfigs()); err != nil {
		return fail("relabel_configs%v", err)
	}
	if j.metricRelabel, err = relabelConfigs(c.GetMetricRelabelConfigs()); err != nil {
		return fail("metric_relabel_configs%v", err)
	}
	return j, nil
}

func relabelConfigs(ws []*fleetv1.RelabelConfig) ([]*relabel.Config, error) {
	out := make([]*relabel.Config, 0, len(ws))
	for i, w := range ws {
		c, err := telemetryv1.RelabelConfig(w)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		out = append(out, c)
	}
	return out, nil
}
