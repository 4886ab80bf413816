package observe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
)

// Records is the agent's record of the releases it wrote (the cache).
type Records interface {
	ReleaseRecord(namespace, name string) (cache.ReleaseRecord, error)
	ReleaseRecords() ([]cache.ReleaseRecord, error)
}

// ReaderConfig configures a Reader.
type ReaderConfig struct {
	// Records is the agent's release record. Required.
	Records Records
	// Observer reaches the cluster. Required.
	Observer *Observer
	// Logger. Default: discard.
	Logger *slog.Logger
}

// Validate reports a configuration that cannot work.
func (c *ReaderConfig) Validate() error {
	switch {
	case c.Records == nil:
		return errors.New("observe reader config: Records is required")
	case c.Observer == nil:
		return errors.New("observe reader config: Observer is required")
	}
	return nil
}

// Reader answers the questions a reconcile pass asks of every release
// (is it up to date, is it healthy, has it drifted, which releases does
// the agent own) from the agent's release record and the cluster, without
// Helm. See "The record is the truth" in the package doc. It is safe for
// concurrent use.
type Reader struct {
	records Records
	obs     *Observer
	log     *slog.Logger
}

// NewReader returns a reader. It does not contact the cluster.
func NewReader(cfg ReaderConfig) (*Reader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Reader{records: cfg.Records, obs: cfg.Observer, log: cfg.Logger}, nil
}

// SecretName is the name of the Secret in which Helm stores revision rev
// of release name.
func SecretName(name string, rev int) string {
	return "sh.helm.release.v1." + name + ".v" + strconv.Itoa(rev)
}

var secretsResource = podsResource.GroupVersion().WithResource("secrets")

// latest returns the newest recorded revision of a release. The error
// wraps engine.ErrReleaseNotFound when the agent has no record of it and
// engine.ErrUnknown when the revision's status is not recorded.
func (r *Reader) latest(name, namespace string) (cache.ReleaseRevision, error) {
	rec, err := r.records.ReleaseRecord(namespace, name)
	if errors.Is(err, cache.ErrNotFound) {
		return cache.ReleaseRevision{}, fmt.Errorf("release %s/%s: %w (no record of it)", namespace, name, engine.ErrReleaseNotFound)
	}
	if err != nil {
		return cache.ReleaseRevision{}, fmt.Errorf("release %s/%s: read the release record: %w", namespace, name, err)
	}
	rv, ok := rec.Latest()
	if !ok {
		return cache.ReleaseRevision{}, fmt.Errorf("release %s/%s: %w (no revision recorded)", namespace, name, engine.ErrReleaseNotFound)
	}
	if rv.Status == "" {
		return rv, fmt.Errorf("release %s/%s: %w: revision %d has no recorded status", namespace, name, engine.ErrUnknown, rv.Revision)
	}
	return rv, nil
}

// manifest returns the recorded manifest of rv, or an error wrapping
// engine.ErrUnknown when none is recorded.
func manifestOf(name, namespace string, rv cache.ReleaseRevision) (string, error) {
	m, err := rv.Manifest()
	if err != nil {
		return "", fmt.Errorf("release %s/%s: %w: revision %d: %w", namespace, name, engine.ErrUnknown, rv.Revision, err)
	}
	return m, nil
}

// stored checks, with one metadata-only LIST of the release's Helm
// Secrets (labels owner=helm, name=NAME, as Helm's own read selects
// them), that the Secret of revision rv still exists with labels that do
// not contradict the record, and that no Secret claims a newer revision
// (one the agent did not write: Helm would read it as the release's
// current state, and refuse it). The labels prove nothing: one that
// disagrees only sends the question to Helm. The error wraps
// engine.ErrUnknown when the Secrets disagree with the record.
func (r *Reader) stored(ctx context.Context, name, namespace string, rv cache.ReleaseRevision) error {
	sel := labels.Set{"owner": "helm", "name": name}.String()
	list, err := r.obs.metadata.Resource(secretsResource).Namespace(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return fmt.Errorf("release %s/%s: list its Helm Secrets: %w", namespace, name, err)
	}
	sn := SecretName(name, rv.Revision)
	found := false
	for _, m := range list.Items {
		l := m.GetLabels()
		if v, err := strconv.Atoi(l["version"]); err == nil && v > rv.Revision {
			return fmt.Errorf("release %s/%s: %w: Secret %s claims revision %d, newer than the %d this agent wrote", namespace, name, engine.ErrUnknown, m.GetName(), v, rv.Revision)
		}
		if m.GetName() != sn {
			continue
		}
		found = true
		for k, want := range map[string]string{"version": strconv.Itoa(rv.Revision), "status": rv.Status} {
			if got := l[k]; got != want {
				return fmt.Errorf("release %s/%s: %w: Secret %s has label %s=%q, the record says %q", namespace, name, engine.ErrUnknown, sn, k, got, want)
			}
		}
		if m.GetDeletionTimestamp() != nil {
			return fmt.Errorf("release %s/%s: %w: Secret %s is being deleted", namespace, name, engine.ErrUnknown, sn)
		}
	}
	if !found {
		return fmt.Errorf("release %s/%s: %w: Secret %s of revision %d is gone", namespace, name, engine.ErrUnknown, sn, rv.Revision)
	}
	return nil
}

func infoOf(name, namespace string, rv cache.ReleaseRevision) engine.ReleaseInfo {
	return engine.ReleaseInfo{Name: name, Namespace: namespace, Revision: rv.Revision, Status: rv.Status,
		Chart: rv.ChartName, Version: rv.ChartVersion, Hash: rv.Hash, Updated: rv.Deployed, Description: rv.Description}
}

// Unchanged reports whether the release is deployed with hash (the
// desired Release.Hash, before HashLabel): its newest recorded revision
// has status deployed and that hash, Helm's Secret of that revision
// still exists, and no Secret claims a newer revision. Then the Result is what Apply returns for a release it
// leaves alone (ActionUnchanged). false with a nil error means "not known
// to be unchanged": let the Helm engine decide (also for an empty hash,
// an old record, or a missing Secret).
func (r *Reader) Unchanged(ctx context.Context, name, namespace, hash string) (engine.Result, bool, error) {
	if hash == "" {
		return engine.Result{}, false, nil
	}
	rv, err := r.latest(name, namespace)
	if errors.Is(err, engine.ErrReleaseNotFound) || errors.Is(err, engine.ErrUnknown) {
		return engine.Result{}, false, nil
	}
	if err != nil {
		return engine.Result{}, false, err
	}
	if rv.Status != engine.StatusDeployed || rv.Hash != engine.HashLabel(hash) {
		return engine.Result{}, false, nil
	}
	m, err := manifestOf(name, namespace, rv)
	if err != nil {
		r.log.Debug("release not known unchanged", "release", namespace+"/"+name, "err", err)
		return engine.Result{}, false, nil
	}
	if err := r.stored(ctx, name, namespace, rv); errors.Is(err, engine.ErrUnknown) {
		r.log.Info("release record not confirmed by the cluster; asking Helm", "release", namespace+"/"+name, "err", err)
		return engine.Result{}, false, nil
	} else if err != nil {
		return engine.Result{}, false, err
	}
	return engine.Result{Action: engine.ActionUnchanged, Revision: rv.Revision, Manifest: m, Hash: rv.Hash}, true, nil
}

// Get returns the newest revision of a release as the agent recorded it,
// once Helm's Secret of it is confirmed to exist. The error wraps
// engine.ErrReleaseNotFound when the agent has no record of the release,
// engine.ErrUnknown when the record cannot tell (ask Helm).
func (r *Reader) Get(ctx context.Context, name, namespace string) (engine.ReleaseInfo, error) {
	rv, err := r.latest(name, namespace)
	if err != nil {
		return engine.ReleaseInfo{}, err
	}
	if err := r.stored(ctx, name, namespace, rv); err != nil {
		return engine.ReleaseInfo{}, err
	}
	return infoOf(name, namespace, rv), nil
}

// List returns the releases the agent recorded, newest revision of each,
// sorted by namespace and name, from the record alone (no request to the
// cluster): a release whose Secrets were deleted still shows its recorded
// status (Unchanged and Get find that out). A revision whose status is not
// recorded has Status engine.StatusUnknown.
func (r *Reader) List(ctx context.Context) ([]engine.ReleaseInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	recs, err := r.records.ReleaseRecords()
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	out := make([]engine.ReleaseInfo, 0, len(recs))
	for _, rec := range recs {
		rv, ok := rec.Latest()
		if !ok {
			continue
		}
		ri := infoOf(rec.Name, rec.Namespace, rv)
		if ri.Status == "" {
			ri.Status = engine.StatusUnknown
		}
		out = append(out, ri)
	}
	return out, nil // the cache returns records sorted by namespace/name
}

// Health checks the release once: the recorded status must be deployed
// and the workloads of the recorded manifest ready (Observer.Health). It
// does not check that Helm's Secret still exists (Unchanged does). The
// error wraps engine.ErrReleaseNotFound or engine.ErrUnknown when the
// record cannot answer.
func (r *Reader) Health(ctx context.Context, name, namespace string) (engine.Health, error) {
	rv, err := r.latest(name, namespace)
	if err != nil {
		return engine.Health{}, err
	}
	if rv.Status != engine.StatusDeployed {
		p := Problem{Object: "release " + namespace + "/" + name, What: rv.Status + ": " + rv.Description}
		return engine.Health{Message: p.Message("")}, nil
	}
	m, err := manifestOf(name, namespace, rv)
	if err != nil {
		return engine.Health{}, err
	}
	h, err := r.obs.Health(ctx, m, namespace)
	if err != nil {
		return engine.Health{}, fmt.Errorf("release %s/%s: %w", namespace, name, err)
	}
	return h, nil
}

// Drift compares the live objects with the recorded manifest of the
// release's newest revision, as the Helm engine's Drift does: a release
// the agent has no record of is not installed, and one not deployed has
// drifted. The error wraps engine.ErrUnknown when the record cannot
// answer, also when Helm's Secret of that revision is gone (Helm would
// then compare with an older revision, or find none).
func (r *Reader) Drift(ctx context.Context, name, namespace string, rules engine.DriftRules) (engine.Drift, error) {
	f, err := CompileDriftRules(rules)
	if err != nil {
		return engine.Drift{}, fmt.Errorf("drift: release %s/%s: %w", namespace, name, err)
	}
	rv, err := r.latest(name, namespace)
	if errors.Is(err, engine.ErrReleaseNotFound) {
		return engine.Drift{Drifted: true, Reasons: []string{fmt.Sprintf("release %s/%s is not installed", namespace, name)}}, nil
	}
	if err != nil {
		return engine.Drift{}, fmt.Errorf("drift: %w", err)
	}
	m, err := manifestOf(name, namespace, rv)
	if err != nil {
		return engine.Drift{}, fmt.Errorf("drift: %w", err)
	}
	if err := r.stored(ctx, name, namespace, rv); err != nil {
		return engine.Drift{}, fmt.Errorf("drift: %w", err)
	}
	var reasons []string
	if rv.Status != engine.StatusDeployed {
		reasons = append(reasons, fmt.Sprintf("release %s/%s is %s", namespace, name, rv.Status))
	}
	d, err := r.obs.Drift(ctx, m, namespace, f)
	if err != nil {
		return engine.Drift{}, fmt.Errorf("drift: release %s/%s: %w", namespace, name, err)
	}
	reasons = append(reasons, d.Reasons...)
	return engine.Drift{Drifted: len(reasons) > 0, Reasons: reasons}, nil
}
