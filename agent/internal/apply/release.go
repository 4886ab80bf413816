package apply

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/tetherfleet/tether/agent/internal/engine"
	"github.com/tetherfleet/tether/agent/internal/observe"
)

// The types the reconciler and the engines share live in package engine;
// these aliases keep apply's API as it was.
type (
	Release     = engine.Release
	Options     = engine.Options
	Action      = engine.Action
	Result      = engine.Result
	ReleaseInfo = engine.ReleaseInfo
	Health      = engine.Health
	Drift       = engine.Drift
	Plan        = engine.Plan
	DriftRules  = engine.DriftRules
	// DriftExclusion is one entry of DriftRules.Exclude.
	DriftExclusion = engine.DriftExclusion
)

// What an Apply or Repair did (see engine.Action).
const (
	ActionInstalled = engine.ActionInstalled
	ActionUpgraded  = engine.ActionUpgraded
	ActionUnchanged = engine.ActionUnchanged
	ActionRepaired  = engine.ActionRepaired
)

// HashLabel returns how a hash is recorded in LabelHash (see
// engine.HashLabel).
func HashLabel(hash string) string { return engine.HashLabel(hash) }

// prepared is a validated Release, ready for Helm.
type prepared struct {
	key    releaseKey
	digest string // chart archive digest, may be empty
	chart  *chart.Chart
	values map[string]any
	hash   string // label form
	opts   Options
	drift  engine.DriftRules
	filter *observe.DriftFilter // drift compiled
}

func keyOf(r Release) releaseKey { return releaseKey{namespace: r.Namespace, name: r.Name} }

func checkName(name, namespace string) error {
	if err := chartutil.ValidateReleaseName(name); err != nil {
		return fmt.Errorf("%w: release name %q: %v", ErrInvalidRelease, name, err)
	}
	if errs := validation.IsDNS1123Label(namespace); len(errs) > 0 {
		return fmt.Errorf("%w: namespace %q: %s", ErrInvalidRelease, namespace, errs[0])
	}
	return nil
}

// prepare checks r and loads its chart and values.
func prepare(r Release) (prepared, error) {
	if err := checkName(r.Name, r.Namespace); err != nil {
		return prepared{}, err
	}
	if len(r.Chart) == 0 {
		return prepared{}, fmt.Errorf("%w: no chart archive", ErrInvalidRelease)
	}
	ch, err := loader.LoadArchive(bytes.NewReader(r.Chart))
	if err != nil {
		return prepared{}, fmt.Errorf("%w: load chart archive: %v", ErrInvalidRelease, err)
	}
	vals := r.Values
	if len(r.ValuesYAML) > 0 {
		if len(r.Values) > 0 {
			return prepared{}, fmt.Errorf("%w: both Values and ValuesYAML set", ErrInvalidRelease)
		}
		v, err := chartutil.ReadValues(r.ValuesYAML)
		if err != nil {
			return prepared{}, fmt.Errorf("%w: values: %v", ErrInvalidRelease, err)
		}
		vals = v
	}
	if vals == nil {
		vals = map[string]any{}
	}
	hash := r.Hash
	if hash == "" {
		js, err := json.Marshal(vals) // map keys sorted: canonical
		if err != nil {
			return prepared{}, fmt.Errorf("%w: values: %v", ErrInvalidRelease, err)
		}
		h := sha256.New()
		h.Write(r.Chart)
		h.Write([]byte{0})
		h.Write(js)
		hash = hex.EncodeToString(h.Sum(nil))[:40]
	}
	if r.Options.Timeout < 0 {
		return prepared{}, fmt.Errorf("%w: negative timeout %s", ErrInvalidRelease, r.Options.Timeout)
	}
	filter, err := observe.CompileDriftRules(r.Drift)
	if err != nil {
		return prepared{}, fmt.Errorf("%w: %v", ErrInvalidRelease, err)
	}
	return prepared{key: keyOf(r), digest: r.ChartDigest, chart: ch, values: vals, hash: HashLabel(hash), opts: r.Options,
		drift: r.Drift, filter: filter}, nil
}

func (p prepared) labels() map[string]string {
	return map[string]string{LabelManagedBy: ManagedByValue, LabelHash: p.hash}
}

func resultOf(a Action, r *release.Release) Result {
	return Result{Action: a, Revision: r.Version, Manifest: r.Manifest, Hash: r.Labels[LabelHash]}
}

// Apply makes the release match r: install when absent, upgrade when its
// hash differs or it is failed or was interrupted, nothing when it is
// deployed with r's hash. It does not wait for readiness (see WaitHealthy).
func (e *Engine) Apply(ctx context.Context, r Release) (Result, error) {
	return e.apply(ctx, r, false)
}

// Repair re-applies r even when it is up to date: Helm's three-way merge
// re-creates deleted objects and resets changed fields (see Drift).
func (e *Engine) Repair(ctx context.Context, r Release) (Result, error) {
	return e.apply(ctx, r, true)
}

func (e *Engine) apply(ctx context.Context, r Release, force bool) (Result, error) {
	op := "apply"
	if force {
		op = "repair"
	}
	p, err := prepare(r)
	if err != nil {
		return Result{}, fmt.Errorf("%s release %s/%s: %w", op, r.Namespace, r.Name, err)
	}
	res, err := runLocked(e, ctx, p.key, func(ctx context.Context) (Result, error) {
		return e.applyLocked(ctx, p, force)
	})
	if err != nil {
		return res, fmt.Errorf("%s release %s: %w", op, p.key, err)
	}
	e.log.Info("release applied", "release", p.key.String(), "action", res.Action, "revision", res.Revision)
	return res, nil
}

func (e *Engine) applyLocked(ctx context.Context, p prepared, force bool) (Result, error) {
	hc, err := e.helmConfig(p.key.namespace, p.digest)
	if err != nil {
		return Result{}, err
	}
	// Every stored revision must be one this agent wrote (the ownedDriver
	// checks each one Helm reads, also during the upgrade below).
	last, err := hc.Releases.Last(p.key.name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return e.install(ctx, hc, p, false, force)
	}
	if errors.Is(err, ErrForeignRelease) {
		return Result{}, err
	}
	if err != nil {
		return Result{}, fmt.Errorf("read release: %w", err)
	}
	sameHash := last.Labels[LabelHash] == p.hash
	act := ActionUpgraded
	if sameHash {
		act = ActionRepaired
	}
	switch st := last.Info.Status; {
	case st == release.StatusDeployed && sameHash && !force:
		return resultOf(ActionUnchanged, last), nil
	case st == release.StatusUninstalled:
		// Only with KeepHistory, which the engine never uses.
		return e.install(ctx, hc, p, true, force)
	case st.IsPending() || st == release.StatusUninstalling:
		// Interrupted by a crash: see "Interrupted operations" in doc.go.
		e.log.Warn("recovering interrupted release", "release", p.key.String(), "status", st, "revision", last.Version)
		last.SetStatus(release.StatusFailed, fmt.Sprintf("interrupted while %s; recovered by tether", st))
		if err := hc.Releases.Update(last); err != nil {
			return Result{}, fmt.Errorf("mark interrupted revision %d failed: %w", last.Version, err)
		}
	}
	if last.Info.Status == release.StatusFailed {
		if err := e.restoreDeployed(hc, p, last); err != nil {
			return Result{}, err
		}
	}
	up := action.NewUpgrade(hc)
	up.Namespace = p.key.namespace
	up.MaxHistory = e.cfg.MaxHistory
	up.Timeout = cmp.Or(p.opts.Timeout, e.cfg.Timeout)
	up.SkipCRDs = p.opts.SkipCRDs
	up.DisableHooks = p.opts.DisableHooks
	up.Atomic = p.opts.Atomic
	up.Wait = p.opts.Atomic
	up.CleanupOnFail = p.opts.Atomic
	up.ResetValues = true // exactly p.values over the chart's, never the previous release's
	up.Labels = p.labels()
	if p.filter != nil {
		// Fields other controllers own (driftExclusions) keep their live
		// values: Helm's three-way merge would reset them otherwise.
		up.PostRenderer = keepExcluded{ctx: ctx, obs: e.obs, namespace: p.key.namespace, filter: p.filter}
	}
	rel, err := up.RunWithContext(ctx, p.key.name, p.chart, p.values)
	if err != nil {
		return Result{}, fmt.Errorf("upgrade: %w", err)
	}
	return resultOf(act, rel), nil
}

// restoreDeployed rolls a failed release back to its last deployed
// revision before it is upgraded. Helm computes an upgrade as a three-way
// merge from the last *deployed* revision, so whatever a failed revision
// applied and the deployed one does not set (a nodeSelector, a sidecar)
// would otherwise stay on the live objects through every later upgrade,
// unseen by drift checks (they compare the fields the manifest sets). A
// rollback merges from the failed revision, so it removes them; this is
// what an atomic upgrade does on failure, done here also when the agent
// (or its Helm worker) died before it could. Without a deployed revision
// (a failed install) there is nothing to restore.
func (e *Engine) restoreDeployed(hc *action.Configuration, p prepared, failed *release.Release) error {
	dep, err := hc.Releases.Deployed(p.key.name)
	if errors.Is(err, driver.ErrNoDeployedReleases) || errors.Is(err, driver.ErrReleaseNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find the last deployed revision of failed release %s: %w", p.key, err)
	}
	e.log.Info("restoring the last deployed revision before upgrading a failed release", "release", p.key.String(),
		"failed_revision", failed.Version, "deployed_revision", dep.Version)
	rb := action.NewRollback(hc)
	rb.Version = dep.Version
	rb.MaxHistory = e.cfg.MaxHistory
	rb.Timeout = cmp.Or(p.opts.Timeout, e.cfg.Timeout)
	rb.DisableHooks = p.opts.DisableHooks
	if err := rb.Run(p.key.name); err != nil {
		return fmt.Errorf("restore revision %d of %s before upgrading its failed revision %d: %w", dep.Version, p.key, failed.Version, err)
	}
	return nil
}

func (e *Engine) install(ctx context.Context, hc *action.Configuration, p prepared, replace, force bool) (Result, error) {
	in := action.NewInstall(hc)
	in.ReleaseName = p.key.name
	in.Namespace = p.key.namespace
	in.CreateNamespace = true
	in.Replace = replace
	in.Timeout = cmp.Or(p.opts.Timeout, e.cfg.Timeout)
	in.SkipCRDs = p.opts.SkipCRDs
	in.DisableHooks = p.opts.DisableHooks
	in.Atomic = p.opts.Atomic
	in.Wait = p.opts.Atomic
	in.Labels = p.labels()
	rel, err := in.RunWithContext(ctx, p.chart, p.values)
	if err != nil {
		return Result{}, fmt.Errorf("install: %w", err)
	}
	act := ActionInstalled
	if force {
		act = ActionRepaired
	}
	return resultOf(act, rel), nil
}

// Uninstall removes a release and its objects, and waits (up to
// Config.Timeout) until they are gone. An absent release is not an error.
// The namespace stays.
func (e *Engine) Uninstall(ctx context.Context, name, namespace string) error {
	if err := checkName(name, namespace); err != nil {
		return fmt.Errorf("uninstall release %s/%s: %w", namespace, name, err)
	}
	k := releaseKey{namespace: namespace, name: name}
	_, err := runLocked(e, ctx, k, func(context.Context) (struct{}, error) {
		hc, err := e.helmConfig(namespace, "")
		if err != nil {
			return struct{}{}, err
		}
		// Helm uninstalls what the latest revision's manifest lists and
		// runs its hooks: it must be one this agent wrote.
		_, err = hc.Releases.Last(name)
		if errors.Is(err, driver.ErrReleaseNotFound) {
			return struct{}{}, e.cfg.Records.DeleteReleaseRecord(namespace, name)
		}
		if errors.Is(err, ErrForeignRelease) {
			return struct{}{}, err
		}
		if err != nil {
			return struct{}{}, fmt.Errorf("read release: %w", err)
		}
		un := action.NewUninstall(hc)
		un.Timeout = e.cfg.Timeout
		un.Wait = true
		un.IgnoreNotFound = true
		if _, err = un.Run(name); err != nil {
			return struct{}{}, err
		}
		return struct{}{}, e.cfg.Records.DeleteReleaseRecord(namespace, name)
	})
	if err != nil {
		return fmt.Errorf("uninstall release %s: %w", k, err)
	}
	e.log.Info("release uninstalled", "release", k.String())
	return nil
}

// List returns the releases this agent installed, by its own record (never
// by labels on the cluster, which anyone who can write a Secret can set),
// latest revision of each, sorted by namespace and name. A recorded
// release whose Secrets are gone has Status "missing"; one whose stored
// revisions this agent did not write has Status "unverified" and the
// reason in Description (Uninstall refuses it).
func (e *Engine) List(ctx context.Context) ([]ReleaseInfo, error) {
	recs, err := e.cfg.Records.ReleaseRecords()
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	out := make([]ReleaseInfo, 0, len(recs))
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r, err := e.lastRelease(ctx, rec.Name, rec.Namespace)
		switch {
		case err == nil:
			out = append(out, infoOf(r))
		case errors.Is(err, ErrReleaseNotFound):
			out = append(out, ReleaseInfo{Name: rec.Name, Namespace: rec.Namespace, Status: engine.StatusMissing})
		case errors.Is(err, ErrForeignRelease):
			out = append(out, ReleaseInfo{Name: rec.Name, Namespace: rec.Namespace, Status: engine.StatusUnverified, Description: err.Error()})
		default:
			return nil, fmt.Errorf("list releases: %w", err)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

func infoOf(r *release.Release) ReleaseInfo {
	ri := ReleaseInfo{Name: r.Name, Namespace: r.Namespace, Revision: r.Version, Hash: r.Labels[LabelHash]}
	if r.Info != nil {
		ri.Status = r.Info.Status.String()
		ri.Updated = r.Info.LastDeployed.Time
		ri.Description = r.Info.Description
	}
	if r.Chart != nil && r.Chart.Metadata != nil {
		ri.Chart, ri.Version = r.Chart.Metadata.Name, r.Chart.Metadata.Version
	}
	return ri
}

// Get returns the latest revision of a release this agent wrote; the error
// wraps ErrReleaseNotFound or ErrForeignRelease when it cannot.
func (e *Engine) Get(ctx context.Context, name, namespace string) (ReleaseInfo, error) {
	r, err := e.lastRelease(ctx, name, namespace)
	if err != nil {
		return ReleaseInfo{}, err
	}
	return infoOf(r), nil
}

// lastRelease reads the latest revision of a release this agent wrote.
func (e *Engine) lastRelease(ctx context.Context, name, namespace string) (*release.Release, error) {
	if err := checkName(name, namespace); err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", namespace, name, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	hc, err := e.helmConfig(namespace, "")
	if err != nil {
		return nil, err
	}
	last, err := hc.Releases.Last(name)
	if errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, fmt.Errorf("release %s/%s: %w", namespace, name, ErrReleaseNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("release %s/%s: %w", namespace, name, err)
	}
	return last, nil
}
