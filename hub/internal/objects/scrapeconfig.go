package objects

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"k8s.io/apimachinery/pkg/util/validation"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// KindScrapeConfig is the kind of a ScrapeConfig.
const KindScrapeConfig = "ScrapeConfig"

// ScrapeConfig defaults and bounds.
const (
	DefaultScrapePath        = "/metrics"
	DefaultScrapeScheme      = "http"
	DefaultScrapeInterval    = 30 * time.Second
	DefaultScrapeTimeout     = 10 * time.Second // or the interval, if shorter
	DefaultScrapeSampleLimit = 10000
	// MinScrapeInterval is the shortest interval a ScrapeConfig may ask
	// for: every target of every matching cluster is scraped that often.
	MinScrapeInterval = 5 * time.Second
)

// ScrapeConfig tells the agents of the clusters its selector matches to
// scrape Prometheus endpoints of pods or services in their cluster; the
// series go to the hub's TSDB with the agent's other telemetry. It is one
// Prometheus scrape job ("<namespace>/<name>").
type ScrapeConfig struct {
	Header `json:",inline"`
	Spec   ScrapeConfigSpec `json:"spec"`
}

// ScrapeConfigSpec says which clusters, which endpoints, how often and
// with what relabelling.
type ScrapeConfigSpec struct {
	// ClusterSelector matches fleet cluster labels; empty matches all.
	ClusterSelector LabelSelector  `json:"clusterSelector,omitzero"`
	Targets         []ScrapeTarget `json:"targets"`
	// Path defaults to /metrics; Scheme (http or https) to http.
	Path   string `json:"path,omitempty"`
	Scheme string `json:"scheme,omitempty"`
	// Interval (default 30s, at least 5s) and ScrapeTimeout (default 10s
	// or the interval if shorter; at most the interval) are Prometheus
	// durations: 30s, 1m, 1m30s.
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	// SampleLimit is per target (default 10000): a scrape with more
	// samples after metric relabelling fails and keeps none, like
	// Prometheus' sample_limit.
	SampleLimit *int `json:"sampleLimit,omitempty"`
	// RelabelConfigs apply to discovered targets, MetricRelabelConfigs to
	// scraped series; Prometheus' relabel_config.
	RelabelConfigs       []RelabelConfig `json:"relabelConfigs,omitempty"`
	MetricRelabelConfigs []RelabelConfig `json:"metricRelabelConfigs,omitempty"`
}

// ScrapeTarget selects pods or services of the cluster.
type ScrapeTarget struct {
	// Kind is Pod (status.podIP and a container port) or Service (its
	// EndpointSlices' addresses and the service port).
	Kind string `json:"kind"`
	// Namespaces to look in; empty: every namespace.
	Namespaces []string      `json:"namespaces,omitempty"`
	Selector   LabelSelector `json:"selector,omitzero"`
	// Port is a port name or number (container port of a pod, port of a
	// service).
	Port json.RawMessage `json:"port"`
}

// PortString is the port as written: a name or a decimal number; "" when
// it is neither.
func (t *ScrapeTarget) PortString() string {
	var v any
	d := json.NewDecoder(strings.NewReader(string(t.Port)))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return ""
	}
	switch v := v.(type) {
	case string:
		return v
	case json.Number:
		return v.String()
	}
	return ""
}

// RelabelConfig is Prometheus' relabel_config, in its own field names.
// Absent separator, regex and replacement take Prometheus' defaults (";",
// "(.*)", "$1"), absent action is replace.
type RelabelConfig struct {
	SourceLabels []string `json:"source_labels,omitempty"`
	Separator    *string  `json:"separator,omitempty"`
	Regex        *string  `json:"regex,omitempty"`
	Modulus      uint64   `json:"modulus,omitempty"`
	TargetLabel  string   `json:"target_label,omitempty"`
	Replacement  *string  `json:"replacement,omitempty"`
	Action       string   `json:"action,omitempty"`
}

func scrapeConfigKind() KindDef[*ScrapeConfig] {
	return KindDef[*ScrapeConfig]{
		Kind: KindScrapeConfig, New: func() *ScrapeConfig { return &ScrapeConfig{} },
		APIVersion: APIVersion,
		Plural:     "scrapeconfigs", Short: []string{"scfg"},
		Spec:     func(o *ScrapeConfig) any { return &o.Spec },
		Default:  (*ScrapeConfig).setDefaults,
		Validate: (*ScrapeConfig).validateSpec,
		Columns: []Column[*ScrapeConfig]{
			{Header: "SELECTOR", Value: func(o *ScrapeConfig) string { return orNone(selectorString(o.Spec.ClusterSelector)) }},
			{Header: "TARGETS", Value: func(o *ScrapeConfig) string { return fmt.Sprint(len(o.Spec.Targets)) }},
			{Header: "INTERVAL", Value: func(o *ScrapeConfig) string { return o.Spec.Interval }},
			AgeColumn[*ScrapeConfig](),
			{Header: "PATH", Wide: true, Value: func(o *ScrapeConfig) string { return o.Spec.Scheme + " " + o.Spec.Path }},
		},
		Describe:     describeScrapeConfig,
		CompileInput: true,
	}
}

func (o *ScrapeConfig) setDefaults() {
	s := &o.Spec
	if s.Path == "" {
		s.Path = DefaultScrapePath
	}
	if s.Scheme == "" {
		s.Scheme = DefaultScrapeScheme
	}
	if s.Interval == "" {
		s.Interval = model.Duration(DefaultScrapeInterval).String()
	}
	if s.ScrapeTimeout == "" {
		to := DefaultScrapeTimeout
		if iv, err := model.ParseDuration(s.Interval); err == nil && time.Duration(iv) < to && iv > 0 {
			to = time.Duration(iv)
		}
		s.ScrapeTimeout = model.Duration(to).String()
	}
	if s.SampleLimit == nil {
		n := DefaultScrapeSampleLimit
		s.SampleLimit = &n
	}
	for _, rs := range [][]RelabelConfig{s.RelabelConfigs, s.MetricRelabelConfigs} {
		for i := range rs {
			rs[i].setDefaults()
		}
	}
}

func (r *RelabelConfig) setDefaults() {
	d := relabel.DefaultRelabelConfig
	if r.Separator == nil {
		r.Separator = &d.Separator
	}
	if r.Regex == nil {
		re := d.Regex.String()
		r.Regex = &re
	}
	if r.Replacement == nil {
		r.Replacement = &d.Replacement
	}
	if r.Action == "" {
		r.Action = string(d.Action)
	}
}

func (o *ScrapeConfig) validateSpec() FieldErrors {
	var (
		errs FieldErrors
		p    path
	)
	s := &o.Spec
	sp := p.child("spec")
	validateSelector(&s.ClusterSelector, sp.child("clusterSelector"), &errs)
	switch n := len(s.Targets); {
	case n == 0:
		errs.add(sp.child("targets"), "required: at least one Pod or Service selector")
	case n > fleetv1.MaxScrapeTargets:
		errs.add(sp.child("targets"), "%d targets, at most %d", n, fleetv1.MaxScrapeTargets)
	}
	for i := range s.Targets {
		validateScrapeTarget(&s.Targets[i], sp.child("targets").index(i), &errs)
	}
	if !strings.HasPrefix(s.Path, "/") {
		errs.add(sp.child("path"), "%q: must start with /", s.Path)
	}
	if s.Scheme != "http" && s.Scheme != "https" {
		errs.add(sp.child("scheme"), "%q: want http or https", s.Scheme)
	}
	iv, ierr := model.ParseDuration(s.Interval)
	if ierr != nil {
		errs.add(sp.child("interval"), "%q: not a duration (such as 30s, 1m): %v", s.Interval, ierr)
	} else if time.Duration(iv) < MinScrapeInterval {
		errs.add(sp.child("interval"), "%s: less than the minimum %s", s.Interval, model.Duration(MinScrapeInterval))
	}
	to, terr := model.ParseDuration(s.ScrapeTimeout)
	switch {
	case terr != nil:
		errs.add(sp.child("scrapeTimeout"), "%q: not a duration (such as 10s): %v", s.ScrapeTimeout, terr)
	case to <= 0:
		errs.add(sp.child("scrapeTimeout"), "%s: must be positive", s.ScrapeTimeout)
	case ierr == nil && to > iv:
		errs.add(sp.child("scrapeTimeout"), "%s: longer than the interval %s", s.ScrapeTimeout, s.Interval)
	}
	if s.SampleLimit != nil && (*s.SampleLimit < 1 || *s.SampleLimit > fleetv1.MaxScrapeSampleLimit) {
		errs.add(sp.child("sampleLimit"), "%d: want 1 to %d", *s.SampleLimit, fleetv1.MaxScrapeSampleLimit)
	}
	validateRelabelConfigs(s.RelabelConfigs, sp.child("relabelConfigs"), &errs)
	validateRelabelConfigs(s.MetricRelabelConfigs, sp.child("metricRelabelConfigs"), &errs)
	return errs
}

func validateScrapeTarget(t *ScrapeTarget, p path, errs *FieldErrors) {
	switch t.Kind {
	case "Pod", "Service":
	case "":
		errs.add(p.child("kind"), "required (Pod or Service)")
	default:
		errs.add(p.child("kind"), "%q: want Pod or Service", t.Kind)
	}
	for i, ns := range t.Namespaces {
		for _, msg := range validation.IsDNS1123Label(ns) {
			errs.add(p.child("namespaces").index(i), "%q: %s", ns, msg)
		}
	}
	validateSelector(&t.Selector, p.child("selector"), errs)
	port := t.PortString()
	switch {
	case len(t.Port) == 0:
		errs.add(p.child("port"), "required: a port name or number")
	case port == "":
		errs.add(p.child("port"), "%s: want a port name or number", t.Port)
	default:
		if n, err := strconv.Atoi(port); err == nil {
			if n < 1 || n > 65535 {
				errs.add(p.child("port"), "%d: want 1 to 65535", n)
			}
		} else {
			for _, msg := range validation.IsValidPortName(port) {
				errs.add(p.child("port"), "%q: %s", port, msg)
			}
		}
	}
}

func validateRelabelConfigs(rs []RelabelConfig, p path, errs *FieldErrors) {
	if len(rs) > fleetv1.MaxRelabelRules {
		errs.add(p, "%d rules, at most %d", len(rs), fleetv1.MaxRelabelRules)
	}
	for i := range rs {
		if _, err := rs[i].Prometheus(); err != nil {
			errs.add(p.index(i), "%v", err)
		}
	}
}

// Prometheus returns the rule as Prometheus' relabel.Config, validated
// as Prometheus validates it (legacy label names). Call it after
// defaulting.
func (r *RelabelConfig) Prometheus() (*relabel.Config, error) {
	return telemetryv1.RelabelConfig(r.Wire())
}

// Wire is the rule as sent to agents (defaults explicit).
func (r *RelabelConfig) Wire() *fleetv1.RelabelConfig {
	deref := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	return &fleetv1.RelabelConfig{SourceLabels: r.SourceLabels, Separator: deref(r.Separator), Regex: deref(r.Regex),
		Modulus: r.Modulus, TargetLabel: r.TargetLabel, Replacement: deref(r.Replacement), Action: r.Action}
}

// WireScrapeConfig is the ScrapeConfig as the agent runs it (call after
// defaulting and validation).
func WireScrapeConfig(o *ScrapeConfig) *fleetv1.ScrapeConfig {
	s := &o.Spec
	iv, _ := model.ParseDuration(s.Interval)
	to, _ := model.ParseDuration(s.ScrapeTimeout)
	w := &fleetv1.ScrapeConfig{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Path: s.Path, Scheme: s.Scheme,
		IntervalSeconds: uint32(time.Duration(iv) / time.Second), TimeoutSeconds: uint32(max(time.Duration(to)/time.Second, 1)),
		Generation: o.Metadata.Generation}
	if s.SampleLimit != nil {
		w.SampleLimit = uint32(*s.SampleLimit)
	}
	for i := range s.Targets {
		t := &s.Targets[i]
		w.Targets = append(w.Targets, &fleetv1.ScrapeTarget{Kind: t.Kind, Namespaces: t.Namespaces,
			LabelSelector: kubeSelectorString(t.Selector), Port: t.PortString()})
	}
	for i := range s.RelabelConfigs {
		w.RelabelConfigs = append(w.RelabelConfigs, s.RelabelConfigs[i].Wire())
	}
	for i := range s.MetricRelabelConfigs {
		w.MetricRelabelConfigs = append(w.MetricRelabelConfigs, s.MetricRelabelConfigs[i].Wire())
	}
	return w
}

// kubeSelectorString writes sel in Kubernetes' selector syntax
// (labels.Parse reads it back).
func kubeSelectorString(sel LabelSelector) string {
	var parts []string
	for _, k := range sortedKeys(sel.MatchLabels) {
		parts = append(parts, k+"="+sel.MatchLabels[k])
	}
	for _, e := range sel.MatchExpressions {
		switch e.Operator {
		case "In", "NotIn":
			parts = append(parts, fmt.Sprintf("%s %s (%s)", e.Key, strings.ToLower(e.Operator), strings.Join(e.Values, ",")))
		case "Exists":
			parts = append(parts, e.Key)
		case "DoesNotExist":
			parts = append(parts, "!"+e.Key)
		}
	}
	return strings.Join(parts, ",")
}

func describeScrapeConfig(o *ScrapeConfig) []Section {
	s := &o.Spec
	sum := Section{Title: "Scrape", Items: []Item{
		{"Job", o.Metadata.Namespace + "/" + o.Metadata.Name},
		{"Clusters", orNone(selectorString(s.ClusterSelector))},
		{"Endpoint", s.Scheme + "://<target>" + s.Path},
		{"Interval", s.Interval + " (timeout " + s.ScrapeTimeout + ")"},
	}}
	if s.SampleLimit != nil {
		sum.Items = append(sum.Items, Item{"Sample limit", fmt.Sprint(*s.SampleLimit) + " per target"})
	}
	sum.Items = append(sum.Items, Item{"Relabelling", fmt.Sprintf("%d target rules, %d metric rules", len(s.RelabelConfigs), len(s.MetricRelabelConfigs))})
	tg := Section{Title: "Targets"}
	for i := range s.Targets {
		t := &s.Targets[i]
		ns := "all namespaces"
		if len(t.Namespaces) > 0 {
			ns = strings.Join(t.Namespaces, ",")
		}
		tg.Items = append(tg.Items, Item{t.Kind, fmt.Sprintf("port %s in %s, selector %s", t.PortString(), ns, orNone(kubeSelectorString(t.Selector)))})
	}
	return []Section{sum, tg}
}
