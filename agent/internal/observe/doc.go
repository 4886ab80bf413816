// Package observe is the agent's Helm-free read side: it answers, for the
// releases the agent installed, the questions every reconcile pass asks
// (is the release up to date, is it healthy, has it drifted, which
// releases does the agent own) with a dynamic client and the agent's own
// release record, without linking Helm, client-go's discovery or the
// typed clientset. The Helm engine (package apply) uses the same
// [Observer] for its Health and Drift, so both answer alike.
//
// # Observer
//
// An [Observer] works on a rendered manifest: [Observer.Health] reads each
// Deployment, StatefulSet, DaemonSet and Job of it (through the dynamic
// client, converted into the k8s.io/api types) and names the first one
// that is not ready, with the first Pod that says why; [Observer.Drift]
// compares every object with its live form. Kinds are mapped to resources
// by a small [Mapper] that asks the API server for one group-version's
// resources at a time (GET /api/v1, /apis/GROUP/VERSION), caches them, and
// asks once more when a kind is missing (a CRD the chart just installed).
//
// # Drift
//
// Drift compares each object of the manifest with the live object as a
// subset: every field the manifest sets must be present with the same
// value, fields the live object has in addition are ignored. Only metadata
// labels and annotations are compared (the server owns the rest of
// metadata) and status never. Numbers compare by value and resource
// quantities by amount ("0.5" equals "500m"). A manifest field that is
// empty or zero ("", 0, false, {}, [], null) matches an absent live field,
// because the server drops such fields; an empty string also matches any
// live value, because it asks the server for a default (Service clusterIP).
// Lists compare item by item; the live list may be longer (admission
// webhooks inject containers and env). A Secret's stringData is compared
// with its data. An object whose API is gone (a CRD removed) is missing.
//
// # Drift rules
//
// k0rdent's driftIgnore and driftExclusions (Sveltos' PatchSelector and
// DriftExclusion) arrive as engine.DriftRules and are compiled into a
// [DriftFilter]: an ignored object is not compared at all; an excluded
// path (JSON 6902, "*" for any key or index) is pruned from the manifest
// object before the comparison, and [Observer.KeepExcluded] (the Helm
// engine's post-renderer on upgrade and repair) renders it with the live
// value, so Helm's three-way merge leaves it as another controller set it.
//
// # The record is the truth
//
// A [Reader] answers from the agent's release record (the cache's
// ReleaseRecord: for every revision the agent wrote, the status Helm
// stored once the write succeeded, the hash, the chart, and for the newest
// revision the manifest). It never trusts what is on the cluster to say
// a release is the agent's or up to date: release Secrets and their labels
// can be written by any tenant of the namespace. It only uses the cluster
// to decline: [Reader.Unchanged] is true only when the record's newest
// revision is deployed with the wanted hash, Helm's Secret of that
// revision (sh.helm.release.v1.NAME.vREV) still exists with labels that do
// not contradict the record, and no Secret of the release claims a newer
// revision (one metadata-only LIST); a Secret that is gone, disagrees or
// was planted sends the question to the Helm engine, which verifies every
// revision it reads.
// A record written before these fields existed, or a revision whose
// write was not confirmed, has no status: the Reader says
// engine.ErrUnknown (Unchanged says false) and the caller asks Helm.
package observe
