package objects

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// HelmOptions are the parts of k0rdent's ServiceHelmOptions that Tether's
// agents act on.
type HelmOptions struct {
	// Timeout bounds one install or upgrade and the health wait after it;
	// 0: the agent's default.
	Timeout      time.Duration
	SkipCRDs     bool
	DisableHooks bool
	Atomic       bool
	// NoWait is helmOptions.wait: false.
	NoWait bool
}

// ParseHelmOptions reads helmOptions layered in order (a ServiceTemplate's,
// then a service's): a field set in a later layer wins. It returns the
// fields present that Tether does not act on, sorted.
func ParseHelmOptions(layers ...json.RawMessage) (HelmOptions, []string, error) {
	var o HelmOptions
	ignored := map[string]bool{}
	for _, raw := range layers {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			return HelmOptions{}, nil, fmt.Errorf("helmOptions: %v", err)
		}
		for k, v := range m {
			if string(v) == "null" {
				continue
			}
			var b bool
			switch k {
			case "timeout":
				var s string
				if err := json.Unmarshal(v, &s); err != nil {
					return HelmOptions{}, nil, fmt.Errorf("helmOptions.timeout: %s is not a duration string such as \"10m\"", v)
				}
				d, err := time.ParseDuration(s)
				if err != nil || d < 0 {
					return HelmOptions{}, nil, fmt.Errorf("helmOptions.timeout: %q is not a non-negative duration such as \"10m\"", s)
				}
				o.Timeout = d
				continue
			case "skipCRDs", "disableHooks", "atomic", "wait":
				if err := json.Unmarshal(v, &b); err != nil {
					return HelmOptions{}, nil, fmt.Errorf("helmOptions.%s: %s is not a boolean", k, v)
				}
			default:
				ignored[k] = true
				continue
			}
			switch k {
			case "skipCRDs":
				o.SkipCRDs = b
			case "disableHooks":
				o.DisableHooks = b
			case "atomic":
				o.Atomic = b
			case "wait":
				o.NoWait = !b
			}
		}
	}
	out := make([]string, 0, len(ignored))
	for k := range ignored {
		out = append(out, k)
	}
	slices.Sort(out)
	return o, out, nil
}

// SyncModeOf returns the sync mode of ss: provider.config.syncMode (where
// k0rdent v1beta1 puts it), else serviceSpec.syncMode (deprecated there),
// else "" (ContinuousWithDriftDetection).
func SyncModeOf(ss *ServiceSpec) (string, error) {
	mode, path := ss.SyncMode, "syncMode"
	if c := providerConfig(ss); c["syncMode"] != nil {
		var s string
		if err := json.Unmarshal(c["syncMode"], &s); err != nil {
			return "", fmt.Errorf("provider.config.syncMode: %s is not a string", c["syncMode"])
		}
		if s != "" {
			mode, path = s, "provider.config.syncMode"
		}
	}
	switch mode {
	case "", SyncOneTime, SyncContinuous, SyncContinuousWithDriftDetection, SyncDryRun:
		return mode, nil
	}
	return "", fmt.Errorf("%s: %q is not one of %s", path, mode,
		strings.Join([]string{SyncOneTime, SyncContinuous, SyncContinuousWithDriftDetection, SyncDryRun}, ", "))
}

// providerConfig is ss.provider.config as an object, nil when absent or
// not an object.
func providerConfig(ss *ServiceSpec) map[string]json.RawMessage {
	if ss.Provider == nil || len(ss.Provider.Config) == 0 {
		return nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(ss.Provider.Config, &m) != nil {
		return nil
	}
	return m
}

// EffectiveServiceSpec is ss with the provider.config knobs that map onto
// Tether's own fields applied: priority, stopOnConflict and
// continueOnError (where k0rdent v1beta1 puts them) win over the spec's
// own fields. A knob of the wrong type or out of range is ignored (and
// warned about, see Warnings). ss itself is returned when nothing applies.
func EffectiveServiceSpec(ss *ServiceSpec) *ServiceSpec {
	cfg := providerConfig(ss)
	if cfg == nil {
		return ss
	}
	out := *ss
	if p, err := configPriority(cfg); err == nil && p != nil {
		out.Priority = *p
	}
	if b, err := configBool(cfg, "stopOnConflict"); err == nil && b != nil {
		out.StopOnConflict = *b
	}
	if b, err := configBool(cfg, "continueOnError"); err == nil && b != nil {
		out.ContinueOnError = *b
	}
	return &out
}

func configPriority(cfg map[string]json.RawMessage) (*int32, error) {
	raw, ok := cfg["priority"]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil || n < MinPriority || n > MaxPriority {
		return nil, fmt.Errorf("%s is not an integer in [%d, %d]", raw, MinPriority, MaxPriority)
	}
	p := int32(n)
	return &p, nil
}

func configBool(cfg map[string]json.RawMessage, k string) (*bool, error) {
	raw, ok := cfg[k]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%s is not a boolean", raw)
	}
	return &b, nil
}
