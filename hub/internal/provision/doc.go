// Package provision turns ClusterDeployments that name a ClusterTemplate
// into Cluster API objects on a management cluster and follows them.
//
// For each such ClusterDeployment the controller, on the hub's one
// controller loop (hub/internal/controller):
//
//  1. finds the ClusterTemplate (the deployment's namespace, then the
//     system namespaces) and resolves its chart into the hub's chart
//     store;
//  2. checks the Credential, if named, and that its identityRef exists on
//     the management cluster (the Credential's Ready condition);
//  3. renders the chart with spec.config as values, which the chart's
//     values.schema.json must accept;
//  4. server-side applies the objects (field owner "tether-hub") into the
//     deployment's namespace on the management cluster, once per rendered
//     digest (status.appliedHash);
//  5. copies the CAPI Cluster's v1beta2 conditions into status.conditions
//     and sets status.phase: Provisioning, then Ready when the Cluster is
//     Available, or Failed when it is not after the grace period (a False
//     condition is only a warning before that, k0rdent's rule).
//
// Any failure before step 4 is bad input: the condition of that step
// says what and where, the phase is Failed, and nothing is applied.
// Everything the controller knows is in the store or on the management
// cluster's objects, so a restarted hub picks up where it was, and
// server-side apply creates nothing twice.
package provision
