package desired

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/tetherfleet/tether/hub/internal/objects"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// ProblemTooManyScrapeConfigs: more ScrapeConfigs match a cluster than
// one desired state may carry (fleetv1.MaxScrapeConfigs); those after the
// limit, by namespace and name, are not sent.
const ProblemTooManyScrapeConfigs = "TooManyScrapeConfigs"

// ScrapeConfig is one ScrapeConfig object in a cluster's desired state:
// its spec as applied (defaults filled in).
type ScrapeConfig struct {
	Namespace  string                   `json:"namespace"`
	Name       string                   `json:"name"`
	Generation int64                    `json:"generation,omitempty"`
	Spec       objects.ScrapeConfigSpec `json:"spec"`
}

// compileTelemetry returns the ScrapeConfigs whose clusterSelector
// matches cl, sorted by namespace and name, at most
// fleetv1.MaxScrapeConfigs.
func compileTelemetry(cl Cluster, scs []*objects.ScrapeConfig) ([]ScrapeConfig, []Problem) {
	var out []ScrapeConfig
	var problems []Problem
	sorted := slices.Clone(scs)
	slices.SortFunc(sorted, func(a, b *objects.ScrapeConfig) int {
		return cmp.Or(cmp.Compare(a.Metadata.Namespace, b.Metadata.Namespace), cmp.Compare(a.Metadata.Name, b.Metadata.Name))
	})
	for _, o := range sorted {
		if !o.Spec.ClusterSelector.Matches(cl.Labels) {
			continue
		}
		if len(out) == fleetv1.MaxScrapeConfigs {
			problems = append(problems, Problem{Cluster: cl.Name, Source: Ref{Kind: objects.KindScrapeConfig, Namespace: o.Metadata.Namespace, Name: o.Metadata.Name},
				Code: ProblemTooManyScrapeConfigs, Reason: fmt.Sprintf("more than %d ScrapeConfigs match cluster %s; this one (after the first %d by namespace and name) is not sent", fleetv1.MaxScrapeConfigs, cl.Name, fleetv1.MaxScrapeConfigs)})
			continue
		}
		out = append(out, ScrapeConfig{Namespace: o.Metadata.Namespace, Name: o.Metadata.Name, Generation: o.Metadata.Generation, Spec: o.Spec})
	}
	return out, problems
}

// equalScrapeConfigs compares two compiled sets by content.
func equalScrapeConfigs(a, b []ScrapeConfig) bool {
	if len(a) != len(b) {
		return false
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// wireTelemetry is the Telemetry message of a state: never nil, so a full
// state or a delta that carries it says "this is the whole set".
func wireTelemetry(st *State) *fleetv1.Telemetry {
	t := &fleetv1.Telemetry{}
	for i := range st.ScrapeConfigs {
		sc := &st.ScrapeConfigs[i]
		o := &objects.ScrapeConfig{Spec: sc.Spec}
		o.Metadata.Namespace, o.Metadata.Name, o.Metadata.Generation = sc.Namespace, sc.Name, sc.Generation
		t.ScrapeConfigs = append(t.ScrapeConfigs, objects.WireScrapeConfig(o))
	}
	return t
}
