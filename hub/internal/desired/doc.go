// Package desired compiles each fleet cluster's desired state (which Helm
// releases, with which chart and values) from the API objects, keeps it in
// the hub store with per-cluster revisions and tombstones, and answers an
// agent's "I have revision R" with what changed since.
//
// # Compiling
//
// Compile is a pure function from clusters, ClusterDeployments,
// MultiClusterServices, ServiceTemplates, ConfigMaps and Secrets to
// per-cluster service lists and Problems. A ClusterDeployment binds to the
// cluster of the same name; a MultiClusterService to the clusters its
// selector matches. Values: valuesFrom data merged in order, then the
// inline values (a Go template over .Cluster, see objects.TemplateData)
// deep-merged on top, written as canonical YAML with sorted keys; the
// values hash is sha256 over chart digest and those bytes. Two sources
// offering the same namespace/name on a cluster: higher priority wins, on
// a tie the older object (lower creation revision). Services are ordered
// dependencies first, then by namespace/name. A service that cannot be
// compiled (template not ready, values error) keeps its last good entry.
//
// # Revisions
//
// Store layout: kind "DesiredState", cluster-scoped, name = cluster, value
// = State as JSON. State.Revision is the store revision of the write that
// last changed the cluster's services or tombstones, so it only grows, also
// across the deletion and re-creation of a cluster (the store's revision is
// global). Every service and tombstone carries the revision in which it
// last changed. A removed service becomes a tombstone, kept for
// Config.TombstoneGrace; pruning one raises State.Horizon, and an agent
// below the horizon gets a full state. A new State (new or re-created
// cluster) starts with Horizon = Revision, so an agent holding anything
// older is sent everything.
//
// # Epochs and restored stores
//
// Revisions are comparable only within one history. The store's first
// compile writes a random epoch (kind DesiredEpoch, name "epoch"); every
// DesiredState sent carries it and the agent's hello returns the epoch of
// the revision it holds. An agent of another epoch (a new hub) gets the
// full state. A backup of the store keeps its epoch, so State.History (the
// last 64 revisions of the cluster's state; the horizon rises past what it
// drops) tells the rest: an agent revision above the current one, or in
// the recorded range but not in it, comes from the lost future of a
// restored store, and gets the full state too, whose revision may be lower
// than the agent's. A full state is authoritative: the agent deletes what
// is not in it. Known gap: a State stored before History existed cannot
// check revisions older than its first recorded change.
//
// # Size
//
// A cluster's state (every service and tombstone in one message) must fit
// Config.MaxStateBytes, the wire limit less headroom; a compile over it is
// not stored, the cluster keeps its last good state and each service gets
// a DesiredStateTooLarge problem.
package desired
