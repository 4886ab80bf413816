package desired

import (
	"testing"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// TestCompileHonoursAdmissions: each cluster gets the revision of a
// rollout-managed MultiClusterService it is admitted to; one not
// admitted keeps exactly what it had; a gradual rollout without an
// admission yet changes nothing anywhere.
func TestCompileHonoursAdmissions(t *testing.T) {
	clusters := []Cluster{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	v1 := mcs("web", 1, 100, objects.LabelSelector{}, svc("web", "t1"))
	v2 := mcs("web", 1, 100, objects.LabelSelector{}, svc("web", "t2"))
	v2.Spec.Rollout = &objects.Rollout{Strategy: objects.RolloutProgressive}
	templates := []*objects.ServiceTemplate{tmpl("t1", true), tmpl("t2", true)}
	first, _ := Compile(Inputs{Clusters: clusters, MultiClusterServices: []*objects.MultiClusterService{v1}, ServiceTemplates: templates})
	prev := map[string][]Service{}
	for name, cd := range first {
		prev[name] = cd.Services
	}
	ref := Ref{Kind: objects.KindMultiClusterService, Namespace: ns, Name: "web"}

	t.Run("no admission yet", func(t *testing.T) {
		out, _ := Compile(Inputs{Clusters: clusters, MultiClusterServices: []*objects.MultiClusterService{v2}, ServiceTemplates: templates, Previous: prev})
		for _, cl := range clusters {
			if got := out[cl.Name].Services; len(got) != 1 || got[0].Template != "t1" {
				t.Errorf("cluster %s: %+v, want t1 kept", cl.Name, got)
			}
		}
	})
	t.Run("per cluster", func(t *testing.T) {
		adm := &Admission{Specs: map[uint64]*objects.MultiClusterService{2: v2}, Clusters: map[string]uint64{"a": 2, "c": 0}}
		out, _ := Compile(Inputs{Clusters: clusters, MultiClusterServices: []*objects.MultiClusterService{v2}, ServiceTemplates: templates,
			Previous: prev, Admissions: map[Ref]*Admission{ref: adm}})
		if got := out["a"].Services; len(got) != 1 || got[0].Template != "t2" {
			t.Errorf("a (admitted to 2): %+v", got)
		}
		if got := out["b"].Services; len(got) != 1 || got[0].Template != "t1" {
			t.Errorf("b (not admitted): %+v, want t1 kept", got)
		}
		if got := out["c"].Services; len(got) != 0 {
			t.Errorf("c (admitted to none): %+v", got)
		}
	})
}
