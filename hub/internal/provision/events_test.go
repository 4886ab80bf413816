package provision

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// TestOutcomeRecordsEvents: applying an outcome records one event per
// change (objects applied, a condition's status or reason, the phase, the
// agent) and none when nothing changed; the list stays bounded.
func TestOutcomeRecordsEvents(t *testing.T) {
	now := time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)
	var st objects.ClusterDeploymentStatus
	pass := func(phase, agent, hash string, conds ...objects.Condition) {
		o := &outcome{phase: phase, conds: conds, fields: func(s *objects.ClusterDeploymentStatus) { s.Agent, s.AppliedHash = agent, hash }}
		o.apply(&st, now)
	}
	reasons := func() string {
		var r []string
		for _, e := range st.Events {
			r = append(r, e.Reason)
		}
		return strings.Join(r, ",")
	}
	infraFalse := objects.Condition{Type: "InfrastructureReady", Status: "False", Reason: "Provisioning", Message: "0 of 1"}
	pass(objects.PhaseProvisioning, "", "sha256:1", infraFalse)
	if got := reasons(); got != "Applied,ConditionChanged,PhaseChanged" {
		t.Fatalf("first pass events %s, want Applied,ConditionChanged,PhaseChanged", got)
	}
	// Same state, a new message: nothing new.
	infraFalse.Message = "still 0 of 1"
	pass(objects.PhaseProvisioning, "", "sha256:1", infraFalse)
	if n := len(st.Events); n != 3 {
		t.Fatalf("unchanged pass added events: %s", reasons())
	}
	pass(objects.PhaseReady, AgentInstalled, "sha256:1", objects.Condition{Type: "InfrastructureReady", Status: "True", Reason: "Ready"})
	pass(objects.PhaseReady, AgentEnrolled, "sha256:1", objects.Condition{Type: "InfrastructureReady", Status: "True", Reason: "Ready"})
	if got := reasons(); got != "Applied,ConditionChanged,PhaseChanged,ConditionChanged,PhaseChanged,AgentInstalled,Enrolled" {
		t.Fatalf("events %s", got)
	}
	if e := st.Events[4]; e.Message != "Provisioning -> Ready" {
		t.Errorf("phase event %q, want Provisioning -> Ready", e.Message)
	}
	// Many condition changes push out older condition changes, not the
	// milestones.
	for i := range 2 * objects.MaxProvisioningEvents {
		status := []string{"True", "False"}[i%2]
		pass(objects.PhaseReady, AgentEnrolled, "sha256:1", objects.Condition{Type: "WorkersAvailable", Status: status})
	}
	if n := len(st.Events); n != objects.MaxProvisioningEvents {
		t.Errorf("%d events after many condition changes, want the bound %d", n, objects.MaxProvisioningEvents)
	}
	milestones := 0
	for _, e := range st.Events {
		if e.Reason != objects.EventConditionChanged {
			milestones++
		}
	}
	if milestones != 5 {
		t.Errorf("%d milestones (Applied, PhaseChanged x2, AgentInstalled, Enrolled) kept, want 5: %s", milestones, reasons())
	}
	for i := range 2 * objects.MaxProvisioningEvents {
		pass(objects.PhaseReady, AgentEnrolled, fmt.Sprintf("sha256:%d", i+2))
	}
	if n := len(st.Events); n != objects.MaxProvisioningEvents {
		t.Errorf("%d events after many applies, want the bound %d", n, objects.MaxProvisioningEvents)
	}
	if last := st.Events[len(st.Events)-1]; !strings.Contains(last.Message, fmt.Sprintf("sha256:%d", 2*objects.MaxProvisioningEvents+1)) {
		t.Errorf("last event %q, want the newest apply", last.Message)
	}
}
