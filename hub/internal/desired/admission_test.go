package desired

import (
	"testing"
	"time"

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
	t.Run("staged", func(t *testing.T) {
		start := time.Date(2026, 12, 3, 2, 0, 0, 0, time.UTC)
		ws := []objects.Span{{Start: start, End: start.Add(2 * time.Hour)}, {Start: start.AddDate(0, 0, 1), End: start.AddDate(0, 0, 1).Add(2 * time.Hour)}}
		// b is not listed (keeps what it has); c is admitted to revision
		// 1 (as after a baseline rollout); both are staged to 2.
		adm := &Admission{Specs: map[uint64]*objects.MultiClusterService{1: v1, 2: v2}, Clusters: map[string]uint64{"c": 1},
			Staged: map[string]Staging{"b": {Revision: 2, Windows: ws}, "c": {Revision: 2, Windows: ws}}}
		out, _ := Compile(Inputs{Clusters: clusters, MultiClusterServices: []*objects.MultiClusterService{v2}, ServiceTemplates: templates,
			Previous: prev, Admissions: map[Ref]*Admission{ref: adm}})
		got := out["b"].Services
		if len(got) != 1 || got[0].Template != "t1" || got[0].Staged == nil {
			t.Fatalf("b (staged): %+v, want t1 kept with t2 staged", got)
		}
		if st := got[0].Staged; st.Next.Template != "t2" || st.Next.Key() != got[0].Key() || len(st.Windows) != 2 || !st.Windows[0].Start.Equal(start) {
			t.Errorf("b staged = %+v", st)
		}
		if c := out["c"].Services; len(c) != 1 || c[0].Template != "t1" || c[0].Staged == nil || c[0].Staged.Next.Template != "t2" {
			t.Errorf("c (admitted to 1, staged to 2): %+v", c)
		}
		if a := out["a"].Services; len(a) != 1 || a[0].Staged != nil {
			t.Errorf("a (not staged): %+v", a)
		}
		w := wireService(&got[0])
		if w.GetStaged().GetNext().GetTemplate() != "t2" || len(w.GetStaged().GetWindows()) != 2 ||
			!w.GetStaged().GetWindows()[0].GetStart().AsTime().Equal(start) || !w.GetStaged().GetWindows()[0].GetEnd().AsTime().Equal(start.Add(2*time.Hour)) {
			t.Errorf("wire staged = %v", w.GetStaged())
		}
		// The staged version is a change of the service: its revision moves.
		old := &State{Cluster: "b", Revision: 5, Horizon: 5, History: []uint64{5}, Services: prev["b"]}
		old.Services[0].Revision = 5
		next, changed := nextState(old, out["b"], 6, start, time.Hour)
		if !changed || next.Services[0].Revision != 6 {
			t.Errorf("nextState: changed %v, revision %d; want the staged service sent at 6", changed, next.Services[0].Revision)
		}
	})
}
