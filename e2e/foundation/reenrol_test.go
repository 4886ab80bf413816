package foundation

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestTokenReenrolsAgentWithExistingIdentity: an agent whose cluster was
// deleted (its certificate revoked) is started again on the same data dir
// with a new join token. Before the fix --token was ignored once an
// identity existed, so the agent kept presenting its revoked certificate
// and stayed Refused; now the token re-enrols it.
func TestTokenReenrolsAgentWithExistingIdentity(t *testing.T) {
	hub := bins.StartHub(t, "--heartbeat", "1s")
	dir := t.TempDir()
	agentArgs := []string{"tether-agent", "run", "--data-dir", dir, "--hub", hub.AgentAddr, "--max-backoff", "2s", "--no-cluster"}
	first := start(t, "edge-r", append(agentArgs, "--token", hub.Token(t, "edge-r"))...)
	connected := func() (bool, string) {
		c := clusters(t, hub.Env)["edge-r"]
		return c.State == "Connected", fmt.Sprintf("%+v", c)
	}
	eventually(t, "edge-r Connected", time.Minute, connected)

	mustRun(t, hub.Env, "tether", "delete", "cluster", "edge-r")
	eventually(t, "revoked agent refused", 30*time.Second, func() (bool, string) {
		st := status(t, dir)
		return st.Link.State == "Refused", fmt.Sprintf("%+v", st)
	})
	first.Stop(t)

	// Same data dir, a new token for the same name.
	start(t, "edge-r-again", append(agentArgs, "--token", hub.Token(t, "edge-r"))...)
	eventually(t, "edge-r Connected again after re-enrolment", time.Minute, connected)
	if st := status(t, dir); st.Link.State != "Connected" || strings.Contains(st.Link.LastError, "deleted") {
		t.Errorf("agent status after re-enrolment = %+v", st)
	}
}
