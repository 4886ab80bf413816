package rollout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/tetherfleet/tether/hub/internal/objects"
)

// Store kinds this package owns. Both are namespaced and named after
// their MultiClusterService.
//
//	Rollout            Record as JSON: the rollout's whole state (phase,
//	                   stages, clusters, history). Written on every change.
//	RolloutAdmission   admission as JSON: only what the desired-state
//	                   compiler reads (which revision each cluster may
//	                   receive, and those revisions' specs). Written only
//	                   when that changes, so the compiler recompiles only
//	                   then. Staged clusters (preStage) are listed
//	                   under "staged" with their revision and windows.
//
// The hub-wide rollout of ClusterDeployment changes (cd.go) is one pair
// of the same kinds in the reserved namespace ClusterDeploymentsNamespace
// (no object can have it: a namespace is a DNS label), named
// ClusterDeploymentsName: its Record has Scope ClusterDeployments, a
// cluster entry per ClusterDeployment ("namespace/name") and each one's
// revisions under Streams; its admission is a cdAdmission.
//
// A Record's Version is the layout version (1; the ClusterDeployment
// fields are additions that version 1 readers ignore).
const (
	KindRollout   = "Rollout"
	KindAdmission = "RolloutAdmission"
	recordVersion = 1

	ClusterDeploymentsNamespace = "_hub"
	ClusterDeploymentsName      = "clusterdeployments"
	// ScopeClusterDeployments marks the hub-wide ClusterDeployment
	// rollout's Record.
	ScopeClusterDeployments = "ClusterDeployments"
)

// Cluster states (per cluster, for the rollout's revision).
const (
	Pending     = "Pending"
	Progressing = "Progressing"
	Succeeded   = "Succeeded"
	Failed      = "Failed"
	TimedOut    = "TimedOut"
	Skipped     = "Skipped"
	Deferred    = "Deferred"
	// Staged (preStage): its turn came while its windows were closed; it
	// holds Revision and the window times, and its agent activates it
	// at the first window start. It holds a slot like Progressing.
	Staged = "Staged"
)

// Rollout phases.
const (
	PhaseProgressing = "Progressing"
	PhasePaused      = "Paused"
	PhaseHalted      = "Halted"
	PhaseRolledBack  = "RolledBack"
	PhaseComplete    = "Complete"
)

// Stage phases.
const (
	StageWaiting = "Waiting"
	StageActive  = "Active"
	StageDone    = "Done"
)

// Record is one MultiClusterService's rollout, as stored.
type Record struct {
	Version   int    `json:"version"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Revision is the revision being rolled out: the MCS generation at
	// which its selector or services last changed.
	Revision uint64    `json:"revision"`
	Phase    string    `json:"phase"`
	Reason   string    `json:"reason,omitempty"`
	Paused   bool      `json:"paused,omitempty"`
	Started  time.Time `json:"started"`
	// Approved lists the stages approved for Revision.
	Approved []string `json:"approved,omitempty"`
	// Forgiven failures: resuming a halted rollout restarts its budget.
	Forgiven int                       `json:"forgiven,omitempty"`
	Stages   []StageStatus             `json:"stages"`
	Clusters map[string]*ClusterStatus `json:"clusters"`
	// History is every revision still referenced plus the last few,
	// ascending.
	History []RevisionRecord `json:"history"`
	// Scope is ScopeClusterDeployments for the hub-wide ClusterDeployment
	// rollout, whose Revision is then its wave number and whose History
	// is empty: each ClusterDeployment's revisions are in Streams, by
	// "namespace/name".
	Scope   string                      `json:"scope,omitempty"`
	Streams map[string][]RevisionRecord `json:"streams,omitempty"`
}

// StageStatus is one stage of the current rollout.
type StageStatus struct {
	Name   string    `json:"name"`
	Phase  string    `json:"phase"`
	Reason string    `json:"reason,omitempty"`
	DoneAt time.Time `json:"doneAt,omitzero"`
	// Counts by cluster state (filled when read).
	Counts map[string]int `json:"counts,omitempty"`
}

// ClusterStatus is one cluster's place in the rollout.
type ClusterStatus struct {
	Stage  string    `json:"stage"`
	State  string    `json:"state"`
	Reason string    `json:"reason,omitempty"`
	Since  time.Time `json:"since"`
	// Admitted is the revision the cluster may receive; Listed says the
	// admission names it (a cluster never admitted keeps what it has).
	// Admitted 0 with Listed: none of the services (rolled back to
	// before it had any).
	Admitted uint64 `json:"admitted,omitempty"`
	Listed   bool   `json:"listed,omitempty"`
	// AdmittedAt is the store revision that admitted it: its desired
	// state reflects Admitted once the compiler has read past it.
	AdmittedAt uint64 `json:"admittedAt,omitempty"`
	// Before is what the cluster had when admitted to Admitted: where
	// Rollback takes it.
	Before       uint64 `json:"before,omitempty"`
	BeforeListed bool   `json:"beforeListed,omitempty"`
	// Succeeded is the highest revision it succeeded with.
	Succeeded uint64 `json:"succeeded,omitempty"`
	// HealthySince: every service Deployed at Admitted since (soak).
	HealthySince time.Time `json:"healthySince,omitzero"`
	// StagedRev and Windows (State Staged): the revision delivered ahead
	// of time and the window occurrences its agent activates it in.
	StagedRev uint64         `json:"stagedRev,omitempty"`
	Windows   []objects.Span `json:"windows,omitempty"`
	// ClusterDeployment scope: the cluster the ClusterDeployment gives
	// its services to, the revision it asks for now, and the wave the
	// cluster's current change belongs to.
	Cluster string `json:"cluster,omitempty"`
	Target  uint64 `json:"target,omitempty"`
	Wave    uint64 `json:"wave,omitempty"`
}

// RevisionRecord is one revision of the MCS (or of a ClusterDeployment:
// its serviceSpec in Spec.ServiceSpec).
type RevisionRecord struct {
	// ClusterDeployment ("namespace/name") is set in the hub-wide
	// rollout's history as the API returns it.
	ClusterDeployment string                          `json:"clusterDeployment,omitempty"`
	Revision          uint64                          `json:"revision"`
	Hash              string                          `json:"hash"`
	Created           time.Time                       `json:"created"`
	Outcome           string                          `json:"outcome,omitempty"`
	Spec              objects.MultiClusterServiceSpec `json:"spec"`
}

// admission is the stored KindAdmission value.
type admission struct {
	CreateRevision uint64                                     `json:"createRevision"`
	Specs          map[uint64]objects.MultiClusterServiceSpec `json:"specs"`
	Clusters       map[string]uint64                          `json:"clusters"`
	// Staged: clusters that hold a revision ahead of their window.
	Staged map[string]stagedAdmission `json:"staged,omitempty"`
}

type stagedAdmission struct {
	Revision uint64         `json:"revision"`
	Windows  []objects.Span `json:"windows"`
}

// contentHash identifies what a revision deploys: selector and services.
// A change to spec.rollout alone is not a new revision.
func contentHash(spec *objects.MultiClusterServiceSpec) string {
	b, _ := json.Marshal(struct {
		S objects.LabelSelector
		V objects.ServiceSpec
	}{spec.ClusterSelector, spec.ServiceSpec})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

func (r *Record) revision(n uint64) *RevisionRecord {
	for i := range r.History {
		if r.History[i].Revision == n {
			return &r.History[i]
		}
	}
	return nil
}

// Counts returns the number of clusters in each state.
func (r *Record) Counts() map[string]int {
	out := map[string]int{}
	for _, c := range r.Clusters {
		out[c.State]++
	}
	return out
}

// fillCounts sets each stage's counts.
func (r *Record) fillCounts() {
	for i := range r.Stages {
		r.Stages[i].Counts = map[string]int{}
	}
	for _, c := range r.Clusters {
		for i := range r.Stages {
			if r.Stages[i].Name == c.Stage {
				r.Stages[i].Counts[c.State]++
			}
		}
	}
}
