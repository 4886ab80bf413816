// Package rollout decides, for every MultiClusterService with a
// spec.rollout, which revision of its services each matching cluster is
// allowed to receive, and keeps that decision and the rollout's progress
// in the hub's store, so a restarted hub (even after SIGKILL) resumes
// where it was and never redoes a cluster that succeeded. With
// Config.ClusterDeploymentRollout it also rolls out ClusterDeployment
// changes under that one hub-wide policy (cd.go), with the same step
// logic.
//
// The desired-state compiler consults it through desired.Admitter: a
// cluster not admitted to a new revision keeps the services it has. The
// model, the per-cluster state machine, the supersede rule and the
// treatment of offline clusters are in docs/design/rollouts.md.
package rollout
