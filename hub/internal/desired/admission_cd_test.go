package desired

import (
	"testing"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// TestCompileHonoursClusterDeploymentAdmissions: under the hub-wide
// rollout a ClusterDeployment's cluster gets the serviceSpec of the
// revision it is admitted to, keeps what it has when listed but not
// admitted, and, with the gate, when not listed at all; without the gate
// and without an admission it gets the live spec at once.
func TestCompileHonoursClusterDeploymentAdmissions(t *testing.T) {
	clusters := []Cluster{{Name: "a"}, {Name: "b"}}
	templates := []*objects.ServiceTemplate{tmpl("t1", true), tmpl("t2", true)}
	old := []*objects.ClusterDeployment{cd("a", 1, 100, svc("web", "t1")), cd("b", 2, 100, svc("web", "t1"))}
	first, _ := Compile(Inputs{Clusters: clusters, ClusterDeployments: old, ServiceTemplates: templates})
	prev := map[string][]Service{}
	for name, c := range first {
		prev[name] = c.Services
	}
	live := []*objects.ClusterDeployment{cd("a", 1, 100, svc("web", "t2")), cd("b", 2, 100, svc("web", "t2"))}
	spec := func(o *objects.ClusterDeployment) *objects.MultiClusterService {
		return &objects.MultiClusterService{Spec: objects.MultiClusterServiceSpec{ServiceSpec: o.Spec.ServiceSpec}}
	}
	refA := Ref{Kind: objects.KindClusterDeployment, Namespace: ns, Name: "a"}
	refB := Ref{Kind: objects.KindClusterDeployment, Namespace: ns, Name: "b"}
	template := func(out map[string]ClusterDesired, cluster string) string {
		if s := out[cluster].Services; len(s) == 1 {
			return s[0].Template
		}
		return ""
	}
	for _, tc := range []struct {
		name   string
		adm    map[Ref]*Admission
		gate   bool
		wantA  string
		wantB  string
		reason string
	}{
		{"a admitted to 1, b to 2", map[Ref]*Admission{
			refA: {Specs: map[uint64]*objects.MultiClusterService{1: spec(old[0])}, Clusters: map[string]uint64{"a": 1}},
			refB: {Specs: map[uint64]*objects.MultiClusterService{2: spec(live[1])}, Clusters: map[string]uint64{"b": 2}},
		}, true, "t1", "t2", "each cluster its admitted revision"},
		{"b listed, not admitted", map[Ref]*Admission{refB: {Specs: map[uint64]*objects.MultiClusterService{}, Clusters: map[string]uint64{}}}, false, "t2", "t1", "b keeps what it has"},
		{"gate, no admission", nil, true, "t1", "t1", "both keep what they have"},
		{"no gate, no admission", nil, false, "t2", "t2", "both take the live spec"},
		{"admitted to none", map[Ref]*Admission{refA: {Specs: map[uint64]*objects.MultiClusterService{}, Clusters: map[string]uint64{"a": 0}}}, true, "", "t1", "a gets none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _ := Compile(Inputs{Clusters: clusters, ClusterDeployments: live, ServiceTemplates: templates, Previous: prev,
				Admissions: tc.adm, GateClusterDeployments: tc.gate})
			if a, b := template(out, "a"), template(out, "b"); a != tc.wantA || b != tc.wantB {
				t.Errorf("%s: a=%q b=%q, want a=%q b=%q", tc.reason, a, b, tc.wantA, tc.wantB)
			}
		})
	}
}
