package desired

import (
	"encoding/json"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// TestCompileCarriesDriftRules: a serviceSpec's driftIgnore and
// driftExclusions reach every service of it on the wire; a change of them
// alone is a change of the service; a bad one is a problem and no service.
func TestCompileCarriesDriftRules(t *testing.T) {
	o := cd("edge-1", 1, 100, svc("web", "nginx"))
	o.Spec.ServiceSpec.Provider = &objects.ServiceProvider{Config: json.RawMessage(
		`{"driftExclusions":[{"paths":["/spec/replicas"],"target":{"kind":"Deployment","name":"web"}}],"driftIgnore":[{"kind":"Secret"}]}`)}
	in := Inputs{
		Clusters:           []Cluster{{Name: "edge-1"}},
		ServiceTemplates:   []*objects.ServiceTemplate{tmpl("nginx", true)},
		ClusterDeployments: []*objects.ClusterDeployment{o},
	}
	out, problems := Compile(in)
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	s := out["edge-1"].Services[0]
	w := wireService(&s)
	if len(w.GetDriftExclusions()) != 1 || w.GetDriftExclusions()[0].GetPaths()[0] != "/spec/replicas" ||
		w.GetDriftExclusions()[0].GetTarget().GetKind() != "Deployment" || w.GetDriftExclusions()[0].GetTarget().GetName() != "web" ||
		len(w.GetDriftIgnore()) != 1 || w.GetDriftIgnore()[0].GetKind() != "Secret" {
		t.Fatalf("wire %v", w)
	}
	plain := s
	plain.Drift = nil
	if equalService(&s, &plain) {
		t.Fatal("a change of drift rules alone is not a change of the service")
	}

	o.Spec.ServiceSpec.Provider.Config = json.RawMessage(`{"driftExclusions":[{"paths":["/"]}]}`)
	out, problems = Compile(in)
	if len(problems) != 1 || problems[0].Code != ProblemOptions || len(out["edge-1"].Services) != 0 {
		t.Fatalf("problems %+v services %+v; want one OptionsError and no service", problems, out["edge-1"].Services)
	}
}
