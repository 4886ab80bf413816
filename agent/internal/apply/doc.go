// Package apply installs, upgrades, checks and repairs the Helm releases of
// one cluster: the agent's Helm SDK engine.
//
// # Releases
//
// A [Release] is a chart archive, values and a hash over both. [Engine.Apply]
// installs a release that is absent (creating its namespace), upgrades it
// when the hash recorded on the stored release differs, and leaves it alone
// otherwise. Release records live in Secrets (Helm's default driver) with at
// most [Config.MaxHistory] revisions. Every release the engine writes carries
// the labels [LabelManagedBy]=tether and [LabelHash] with the hash; the
// labels are informational only (see Ownership).
//
// # Ownership
//
// Release Secrets live in the release's namespace, which a tenant may be
// allowed to write, and the engine runs with cluster-wide credentials:
// a planted Secret whose hooks bind cluster-admin, or whose manifest lists
// objects in other namespaces, would make the engine create or delete them
// on install, upgrade or uninstall. So the releases the engine owns come
// from its own record ([Config.Records], the agent's bbolt file), never
// from labels. Helm gets a storage driver that records every revision it
// writes (a digest of its manifest, hooks, chart and values, before the
// Secret is written) and checks every revision it reads: a revision the
// record does not know, or whose content differs from the recorded digest,
// fails the read with [ErrForeignRelease]. Apply, Repair, Uninstall, Drift,
// Health and Get therefore refuse a release with any such revision (also
// one planted between the engine's check and Helm's read: Helm's upgrade
// never reads a forged "previous release"), and leave it in place. [Engine.List]
// lists the recorded releases only. [Engine.Adopt] takes over a release
// installed before the record existed, only when it is exactly what the
// engine would write (see the cache package's Adoption).
//
// Helm runs without Wait and without Atomic: Apply returns once Helm has sent
// the objects, and readiness is a separate question ([Engine.Health],
// [Engine.WaitHealthy]). A failed upgrade leaves a failed release and
// whatever objects the API server accepted; the next Apply upgrades again
// (Action "repaired"). Rolling back on failure (Atomic) would need Helm's
// Wait and would hide the error on an edge site that should converge
// forward. Render and validation errors happen before Helm stores or sends
// anything, so they change nothing.
//
// # Interrupted operations
//
// A release left in pending-install, pending-upgrade, pending-rollback or
// uninstalling state can only come from a process that died during a Helm
// call: the engine holds a per-release lock for as long as Helm runs,
// including after the caller's context is done. Apply therefore marks such
// a release failed and upgrades it with the desired chart and values. This
// is non-destructive (no uninstall, no window without the workload) and
// works also for a pending-install with no deployed revision, because Helm
// upgrades from a failed revision when none is deployed; the three-way merge
// creates what the interrupted call did not create and patches the rest.
// Objects created by the interrupted call and absent from the desired
// manifest are left in place.
//
// # Cancellation
//
// Helm's RunWithContext returns when its context is done but leaves the
// work running (and, for upgrades, a goroutine blocked forever). The engine
// therefore gives Helm context.WithoutCancel and runs it on a goroutine it
// owns: when the caller's context ends first, the call returns the
// context's error while Helm finishes in the background still holding the
// release lock, and [Engine.Close] waits for it. Helm's own timeout
// ([Config.Timeout]) bounds its hooks and waits.
//
// # Drift
//
// [Engine.Drift] compares each object of the stored manifest with the live
// object by the rules in package observe's doc (a subset match: fields the
// live object adds are ignored, status never counts), and [Engine.Health]
// checks its workloads; both read the manifest from Helm's storage and
// leave the objects to observe's Observer, which the Helm-free read side
// uses too. [Engine.Repair] upgrades with the same chart and values:
// Helm's three-way merge between the stored manifest, the new manifest and
// the live object re-creates deleted objects and resets changed fields.
//
// # What the record holds for the read side
//
// Besides each revision's digest, the record keeps what Helm stored: the
// hash, the chart's name and version, the newest revision's manifest, and
// the status, recorded only after Helm's write of it succeeded (before it,
// and when the write fails, the revision has no status, which the read
// side takes as "ask Helm"). The hash of a revision is fixed when it is
// created: an update never takes it from the Secret's label.
package apply
