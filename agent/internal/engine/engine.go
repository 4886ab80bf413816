// Package engine holds what the reconciler and the engines that act on a
// cluster's Helm releases share: the release the agent wants installed
// ([Release]), what an operation did ([Result], [Action]), what the agent
// knows of an installed release ([ReleaseInfo], [Health], [Drift], [Plan]),
// the labels and the errors they agree on.
//
// It links no Helm and no Kubernetes client: the long-running agent
// imports it without paying for either. The Helm engine (package apply)
// and the Helm-free read side (package observe) both speak these types;
// each consumer declares the interface it calls (reconcile.Engine).
package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Errors the engines return, wrapped with the release they concern; check
// with errors.Is.
var (
	// ErrInvalidRelease: the Release is unusable (bad name, namespace,
	// chart archive or values). Nothing was changed.
	ErrInvalidRelease = errors.New("invalid release")
	// ErrForeignRelease: a Helm release secret of that name exists that
	// this agent did not write (no record of it, an unknown revision, or
	// content that differs from what the agent wrote); no engine installs
	// over, upgrades, uninstalls or reads such a release.
	ErrForeignRelease = errors.New("release secret not written by this agent")
	// ErrReleaseNotFound: no release of that name in that namespace.
	ErrReleaseNotFound = errors.New("release not found")
	// ErrNotReady: a wait for readiness gave up; the message says what is
	// not ready.
	ErrNotReady = errors.New("release not ready")
	// ErrUnknown: the agent's release record cannot answer the question
	// with certainty (a record written before it held Helm's status and
	// manifest, a revision whose write was not confirmed, or a release
	// Secret gone from the cluster); ask the Helm engine.
	ErrUnknown = errors.New("not known from the release record; ask Helm")
)

// Labels the Helm engine puts on the Helm release records (the storage
// Secrets), not on the chart's objects. They are informational only:
// anyone who can write a Secret in the namespace can set them.
const (
	// LabelManagedBy marks releases tether owns; its value is ManagedByValue.
	LabelManagedBy = "tether.dev/managed-by"
	ManagedByValue = "tether"
	// LabelHash holds the release's hash in label form (see HashLabel).
	LabelHash = "tether.dev/hash"
)

// Release statuses the engines report in ReleaseInfo.Status besides
// Helm's own (deployed, failed, pending-install, pending-upgrade, ...).
const (
	// StatusDeployed is Helm's status of a release that installed or
	// upgraded successfully.
	StatusDeployed = "deployed"
	// StatusMissing: the agent recorded the release but its Secrets are
	// gone from the cluster.
	StatusMissing = "missing"
	// StatusUnverified: a stored revision of the release is not one this
	// agent wrote; Description says why.
	StatusUnverified = "unverified"
	// StatusUnknown: the record does not say (see ErrUnknown).
	StatusUnknown = "unknown"
)

// Release is what should be installed: one chart with values, as a Helm
// release name in a namespace.
type Release struct {
	Name      string
	Namespace string
	// Chart is the chart archive (.tgz).
	Chart []byte
	// Values override the chart's values. At most one of Values and
	// ValuesYAML may be set.
	Values     map[string]any
	ValuesYAML []byte
	// Hash identifies chart and values (the hub's values hash + chart
	// digest). It is recorded on the release so an engine can skip a
	// release that is up to date without rendering. Empty: computed from
	// Chart and the values.
	Hash string
	// ChartDigest is the digest of Chart in the agent's cache, recorded
	// with each revision the engine writes so the cache keeps the archive
	// (see cache.CollectCharts). Optional.
	ChartDigest string
	// Options are per-release Helm settings (k0rdent's helmOptions); the
	// zero value is the engine's defaults.
	Options Options
	// Drift: the paths it excludes keep their live values when the
	// release is upgraded or repaired (k0rdent's driftExclusions).
	Drift DriftRules
}

// Options are per-release Helm settings.
type Options struct {
	// Timeout bounds one install or upgrade (hooks and, with Atomic, the
	// readiness wait); 0: the engine's default.
	Timeout time.Duration
	// SkipCRDs: do not install the chart's crds/ directory.
	SkipCRDs bool
	// DisableHooks: do not run the chart's hooks.
	DisableHooks bool
	// Atomic: an upgrade that fails (or does not become ready within
	// Timeout) is rolled back to the previous revision, a failed install
	// is uninstalled; Helm waits for readiness.
	Atomic bool
}

// Action says what Apply or Repair did.
type Action string

const (
	ActionInstalled Action = "installed"
	ActionUpgraded  Action = "upgraded"  // the hash changed
	ActionUnchanged Action = "unchanged" // deployed with this hash: nothing done
	ActionRepaired  Action = "repaired"  // same hash, re-applied (Repair, or a failed or interrupted release)
)

// Result describes the release after Apply or Repair.
type Result struct {
	Action   Action
	Revision int
	// Manifest is the rendered manifest Helm stored for the revision.
	Manifest string
	// Hash is the label form of the hash now recorded (see HashLabel).
	Hash string
}

// ReleaseInfo describes a release tether manages.
type ReleaseInfo struct {
	Name, Namespace string
	Revision        int
	Status          string // Helm's: deployed, failed, pending-upgrade, ...; or a Status* above
	Chart, Version  string
	Hash            string // label form, see HashLabel
	Updated         time.Time
	Description     string
}

// Health says whether a release is ready: Helm succeeded and every
// Deployment, StatefulSet and DaemonSet in it is available and every Job
// complete.
type Health struct {
	Ready bool
	// Message names the first object that is not ready and why, and when
	// its Pods say more, the first such Pod and its reason. Empty when
	// Ready.
	Message string
}

// Drift says whether the cluster differs from the release's manifest.
type Drift struct {
	Drifted bool
	// Reasons, one line each: "Deployment web/nginx is missing",
	// "Deployment web/nginx: spec.replicas is 5, want 2".
	Reasons []string
}

// Plan is what Apply (or, for drift, Repair) would do to a release, found
// without changing anything on the cluster (syncMode DryRun).
type Plan struct {
	// Action is what would be done: ActionInstalled, ActionUpgraded,
	// ActionRepaired (drift or a failed release) or ActionUnchanged.
	Action Action
	// Changes lists the objects that would be created, changed or
	// deleted ("create ConfigMap ns/name"), or the drift that would be
	// repaired.
	Changes []string
}

// HashLabel returns how a hash is recorded in LabelHash: the hash itself
// when it is a valid label value, else a digest of it that is.
func HashLabel(hash string) string {
	if len(validation.IsValidLabelValue(hash)) == 0 {
		return hash
	}
	sum := sha256.Sum256([]byte(hash))
	return "sha256-" + hex.EncodeToString(sum[:])[:56]
}
