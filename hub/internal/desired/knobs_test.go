package desired

import (
	"encoding/json"
	"testing"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

func TestCompileCarriesHelmOptionsAndSyncMode(t *testing.T) {
	web := svc("web", "nginx")
	web.HelmOptions = json.RawMessage(`{"timeout":"90s","wait":false,"skipCRDs":true}`)
	gone := svc("old", "redis")
	gone.HelmAction = objects.HelmActionUninstall
	nginx := tmpl("nginx", true)
	nginx.Spec.HelmOptions = json.RawMessage(`{"atomic":true,"timeout":"1m"}`)
	o := cd("edge-1", 1, 100, web, gone)
	o.Spec.ServiceSpec.SyncMode = objects.SyncContinuous
	o.Spec.ServiceSpec.Provider = &objects.ServiceProvider{Config: json.RawMessage(`{"syncMode":"OneTime"}`)}
	out, problems := Compile(Inputs{
		Clusters:           []Cluster{{Name: "edge-1"}},
		ServiceTemplates:   []*objects.ServiceTemplate{nginx, tmpl("redis", true)},
		ClusterDeployments: []*objects.ClusterDeployment{o},
	})
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	svcs := out["edge-1"].Services
	if len(svcs) != 1 || svcs[0].Name != "web" {
		t.Fatalf("services %+v; want only web (old has helmAction Uninstall)", svcs)
	}
	want := HelmOptions{TimeoutMS: 90000, SkipCRDs: true, Atomic: true, NoWait: true}
	if s := svcs[0]; s.SyncMode != objects.SyncOneTime || s.Helm == nil || *s.Helm != want {
		t.Fatalf("web: sync mode %q, helm %+v; want OneTime, %+v", s.SyncMode, s.Helm, want)
	}
	w := wireService(&svcs[0])
	if w.GetSyncMode() != objects.SyncOneTime || w.GetHelmOptions().GetTimeoutMs() != 90000 || !w.GetHelmOptions().GetSkipWait() || !w.GetHelmOptions().GetAtomic() {
		t.Fatalf("wire %v", w)
	}
}

func TestCompileBadHelmTimeoutIsAProblem(t *testing.T) {
	web := svc("web", "nginx")
	web.HelmOptions = json.RawMessage(`{"timeout":"soon"}`)
	out, problems := Compile(Inputs{
		Clusters:           []Cluster{{Name: "edge-1"}},
		ServiceTemplates:   []*objects.ServiceTemplate{tmpl("nginx", true)},
		ClusterDeployments: []*objects.ClusterDeployment{cd("edge-1", 1, 100, web)},
	})
	if len(problems) != 1 || problems[0].Code != ProblemOptions || len(out["edge-1"].Services) != 0 {
		t.Fatalf("problems %+v services %+v; want one OptionsError and no service", problems, out["edge-1"].Services)
	}
}

// TestProviderConfigPriorityAndStopOnConflict: k0rdent v1beta1's
// provider.config.priority and stopOnConflict decide conflicts as the
// spec's own fields do.
func TestProviderConfigPriorityAndStopOnConflict(t *testing.T) {
	edge := objects.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}}
	low := cd("edge-1", 1, 200, svc("web", "nginx"), svc("cache", "redis"))
	low.Spec.ServiceSpec.Provider = &objects.ServiceProvider{Config: json.RawMessage(`{"priority":50,"stopOnConflict":true}`)}
	high := mcs("edge-web", 2, 100, edge, svc("web", "nginx"))
	high.Spec.ServiceSpec.Provider = &objects.ServiceProvider{Config: json.RawMessage(`{"priority":300}`)}
	out, problems := Compile(Inputs{
		Clusters:             []Cluster{{Name: "edge-1", Labels: map[string]string{"tier": "edge"}}},
		ServiceTemplates:     []*objects.ServiceTemplate{tmpl("nginx", true), tmpl("redis", true)},
		ClusterDeployments:   []*objects.ClusterDeployment{low},
		MultiClusterServices: []*objects.MultiClusterService{high},
	})
	svcs := out["edge-1"].Services
	if len(svcs) != 1 || svcs[0].Name != "web" || svcs[0].Source.Name != "edge-web" || svcs[0].Priority != 300 {
		t.Fatalf("services %+v; want only web from edge-web at priority 300 (edge-1 lost and stops on conflict)", svcs)
	}
	if len(problems) == 0 {
		t.Fatal("no conflict reported")
	}
}
