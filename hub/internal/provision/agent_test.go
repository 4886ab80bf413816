package provision

import (
	"strings"
	"testing"
)

func TestAgentChartRenders(t *testing.T) {
	c := &Controller{cfg: Config{HubAddrs: []string{"hub.example:7070", "10.0.0.1:7070"}, AgentImage: "registry.local/agent"}}
	objs, err := c.agentObjects("tok-secret")
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]bool{}
	for _, u := range objs {
		kinds[u.GetKind()] = true
		if u.GetKind() == "Deployment" {
			b, _ := u.MarshalJSON()
			for _, want := range []string{"--hub=hub.example:7070", "--hub=10.0.0.1:7070", "registry.local/agent:", "tether-agent-token"} {
				if !strings.Contains(string(b), want) {
					t.Errorf("Deployment lacks %q: %s", want, b)
				}
			}
		}
		if u.GetKind() == "Secret" {
			b, _ := u.MarshalJSON()
			if !strings.Contains(string(b), "tok-secret") {
				t.Errorf("token Secret lacks the token: %s", b)
			}
		}
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "Secret", "ClusterRoleBinding", "Deployment"} {
		if !kinds[k] {
			t.Errorf("agent chart renders no %s (kinds %v)", k, kinds)
		}
	}
	c.cfg.HubAddrs = nil
	if _, err := c.agentObjects("tok"); err == nil || !strings.Contains(err.Error(), "addresses") {
		t.Errorf("agent chart without hub addresses: err %v, want the schema naming hub.addresses", err)
	}
}
