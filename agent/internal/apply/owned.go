package apply

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"

	"github.com/tetherfleet/tether/agent/internal/cache"
)

// Records is where the engine keeps the record of the releases it wrote:
// the agent's bbolt file (cache.Cache). See "Ownership" in doc.go.
type Records interface {
	ReleaseRecord(namespace, name string) (cache.ReleaseRecord, error)
	SaveReleaseRecord(r cache.ReleaseRecord) error
	DeleteReleaseRecord(namespace, name string) error
	ReleaseRecords() ([]cache.ReleaseRecord, error)
}

// releaseDigest is the digest recorded for a release revision: sha256
// over its JSON form as Helm stores it, without what changes after it is
// written (Info: status, times, description; hooks' last run) and without
// the Secret's labels. Helm stores a release as JSON, so the release is
// first passed through JSON to hash what a later read decodes.
func releaseDigest(r *release.Release) (string, error) {
	b, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode release %s/%s revision %d: %w", r.Namespace, r.Name, r.Version, err)
	}
	var c release.Release
	if err := json.Unmarshal(b, &c); err != nil {
		return "", fmt.Errorf("decode release %s/%s revision %d: %w", r.Namespace, r.Name, r.Version, err)
	}
	c.Info, c.Labels = nil, nil
	for _, h := range c.Hooks {
		if h != nil {
			h.LastRun = release.HookExecution{}
		}
	}
	if b, err = json.Marshal(&c); err != nil {
		return "", fmt.Errorf("encode release %s/%s revision %d: %w", r.Namespace, r.Name, r.Version, err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// notOwned is the error for a release revision the engine did not write.
func notOwned(format string, args ...any) error {
	return fmt.Errorf("%w (%s); refusing to touch it", ErrForeignRelease, fmt.Sprintf(format, args...))
}

// verify checks one stored release revision against the record.
func (e *Engine) verify(namespace string, r *release.Release) error {
	if r == nil {
		return notOwned("empty release record")
	}
	if r.Namespace != namespace {
		return notOwned("revision %d of %q claims namespace %q", r.Version, r.Name, r.Namespace)
	}
	rec, err := e.cfg.Records.ReleaseRecord(namespace, r.Name)
	if errors.Is(err, cache.ErrNotFound) {
		return notOwned("revision %d unknown: no release of this name was installed by this agent", r.Version)
	}
	if err != nil {
		return fmt.Errorf("read the agent's release record: %w", err)
	}
	rv, ok := rec.Revision(r.Version)
	if !ok {
		return notOwned("revision %d unknown", r.Version)
	}
	d, err := releaseDigest(r)
	if err != nil {
		return err
	}
	if d != rv.Digest {
		return notOwned("revision %d differs from what this agent wrote", r.Version)
	}
	return nil
}

// record notes a revision the engine is about to write (before Helm
// writes it, so a crash cannot leave a revision the agent wrote but does
// not own). Creating revision v forgets recorded revisions >= v: they
// belonged to an earlier life of the release (its Secrets were deleted).
//
// It also records what the read side needs (package observe): the hash,
// the chart's name and version and, on the newest revision only, the
// manifest. The status it leaves empty ("not known"): confirm sets it
// once Helm's write succeeded, so the record never claims a status Helm
// did not store.
func (e *Engine) record(namespace string, r *release.Release, create bool, chartDigest string) error {
	d, err := releaseDigest(r)
	if err != nil {
		return err
	}
	now := e.cfg.Now()
	rec, err := e.cfg.Records.ReleaseRecord(namespace, r.Name)
	switch {
	case errors.Is(err, cache.ErrNotFound):
		rec = cache.ReleaseRecord{Namespace: namespace, Name: r.Name, Installed: now}
	case err != nil:
		return fmt.Errorf("read the agent's release record: %w", err)
	}
	if create {
		rec.Revisions = slices.DeleteFunc(rec.Revisions, func(v cache.ReleaseRevision) bool { return v.Revision >= r.Version })
		if len(rec.Revisions) == 0 {
			rec.Installed = now
		}
	}
	rv := revisionOf(r, d, chartDigest, now)
	i := slices.IndexFunc(rec.Revisions, func(v cache.ReleaseRevision) bool { return v.Revision == r.Version })
	if i >= 0 {
		prev := rec.Revisions[i]
		if rv.Chart == "" {
			rv.Chart = prev.Chart
		}
		if prev.Hash != "" {
			// A revision's hash is fixed when it is created; on an update
			// the label comes from the Secret Helm read, which anyone who
			// can write Secrets in the namespace can change.
			rv.Hash = prev.Hash
		}
		if prev.Digest == d {
			rv.ManifestGzip = prev.ManifestGzip
		}
	}
	newest := !slices.ContainsFunc(rec.Revisions, func(v cache.ReleaseRevision) bool { return v.Revision > r.Version })
	if newest && rv.ManifestGzip == nil {
		if err := rv.SetManifest(r.Manifest); err != nil {
			e.log.Warn("manifest not recorded; health and drift of this revision will need Helm", "release", namespace+"/"+r.Name, "revision", r.Version, "err", err)
		}
	}
	if !newest {
		rv.ManifestGzip = nil
	}
	if i >= 0 {
		rec.Revisions[i] = rv
	} else {
		rec.Revisions = append(rec.Revisions, rv)
		slices.SortFunc(rec.Revisions, func(a, b cache.ReleaseRevision) int { return a.Revision - b.Revision })
	}
	for j := range rec.Revisions[:len(rec.Revisions)-1] {
		rec.Revisions[j].ManifestGzip = nil // only the newest keeps its manifest
	}
	rec.Updated = now
	if err := e.cfg.Records.SaveReleaseRecord(rec); err != nil {
		return fmt.Errorf("record release %s/%s revision %d: %w", namespace, r.Name, r.Version, err)
	}
	return nil
}

// revisionOf is the record of revision r with content digest d, without
// its status (see confirm) and manifest.
func revisionOf(r *release.Release, d, chartDigest string, now time.Time) cache.ReleaseRevision {
	rv := cache.ReleaseRevision{Revision: r.Version, Digest: d, Chart: chartDigest, Written: now, Hash: r.Labels[LabelHash]}
	if r.Chart != nil && r.Chart.Metadata != nil {
		rv.ChartName, rv.ChartVersion = r.Chart.Metadata.Name, r.Chart.Metadata.Version
	}
	if r.Info != nil {
		rv.Deployed = r.Info.LastDeployed.Time
	}
	return rv
}

// confirm records the status of revision r once Helm stored it. When
// that fails the revision keeps no status, which the read side takes as
// "ask Helm"; the error is only logged, since Helm's write did happen.
func (e *Engine) confirm(namespace string, r *release.Release) {
	err := func() error {
		if r.Info == nil {
			return nil
		}
		rec, err := e.cfg.Records.ReleaseRecord(namespace, r.Name)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(rec.Revisions, func(v cache.ReleaseRevision) bool { return v.Revision == r.Version })
		if i < 0 {
			return fmt.Errorf("revision %d is not recorded", r.Version)
		}
		rv := &rec.Revisions[i]
		rv.Status, rv.Description, rv.Deployed = r.Info.Status.String(), r.Info.Description, r.Info.LastDeployed.Time
		return e.cfg.Records.SaveReleaseRecord(rec)
	}()
	if err != nil {
		e.log.Warn("Helm stored a release revision but its status was not recorded; the read side will ask Helm",
			"release", namespace+"/"+r.Name, "revision", r.Version, "err", err)
	}
}

// forget removes a deleted revision from the record, and the record when
// no revision is left.
func (e *Engine) forget(namespace, name string, version int) error {
	rec, err := e.cfg.Records.ReleaseRecord(namespace, name)
	if errors.Is(err, cache.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	rec.Revisions = slices.DeleteFunc(rec.Revisions, func(v cache.ReleaseRevision) bool { return v.Revision == version })
	if len(rec.Revisions) == 0 {
		return e.cfg.Records.DeleteReleaseRecord(namespace, name)
	}
	rec.Updated = e.cfg.Now()
	return e.cfg.Records.SaveReleaseRecord(rec)
}

// ownedDriver is the Helm storage driver the engine gives Helm: every
// release it reads must match the agent's record (else the read fails with
// ErrForeignRelease, so Helm never acts on a forged or altered revision,
// also not one planted between the engine's check and Helm's read), and
// every release Helm writes is recorded first.
type ownedDriver struct {
	driver.Driver
	e         *Engine
	namespace string
	// chart is the chart archive digest of the operation, recorded with
	// the revisions it writes; may be empty.
	chart string
}

func (d *ownedDriver) Create(key string, r *release.Release) error {
	if err := d.e.record(d.namespace, r, true, d.chart); err != nil {
		return err
	}
	if err := d.Driver.Create(key, r); err != nil {
		return err
	}
	d.e.confirm(d.namespace, r)
	return nil
}

func (d *ownedDriver) Update(key string, r *release.Release) error {
	if err := d.e.record(d.namespace, r, false, d.chart); err != nil {
		return err
	}
	if err := d.Driver.Update(key, r); err != nil {
		return err
	}
	d.e.confirm(d.namespace, r)
	return nil
}

func (d *ownedDriver) Delete(key string) (*release.Release, error) {
	r, err := d.Driver.Delete(key)
	if err != nil {
		return r, err
	}
	name, version, ok := parseStorageKey(key)
	if !ok {
		return r, fmt.Errorf("delete release %q: not a Helm storage key", key)
	}
	if err := d.e.forget(d.namespace, name, version); err != nil {
		return r, fmt.Errorf("forget release %s/%s revision %d: %w", d.namespace, name, version, err)
	}
	return r, nil
}

func (d *ownedDriver) Get(key string) (*release.Release, error) {
	r, err := d.Driver.Get(key)
	if err != nil {
		return r, err
	}
	if err := d.check(r, ""); err != nil {
		return nil, err
	}
	return r, nil
}

func (d *ownedDriver) List(filter func(*release.Release) bool) ([]*release.Release, error) {
	rs, err := d.Driver.List(filter)
	if err != nil {
		return rs, err
	}
	for _, r := range rs {
		if err := d.check(r, ""); err != nil {
			return nil, err
		}
	}
	return rs, nil
}

func (d *ownedDriver) Query(labels map[string]string) ([]*release.Release, error) {
	rs, err := d.Driver.Query(labels)
	if err != nil {
		return rs, err
	}
	for _, r := range rs {
		if err := d.check(r, labels["name"]); err != nil {
			return nil, err
		}
	}
	return rs, nil
}

// check verifies r, logging a refusal; name, when set, is the release
// name the read asked for.
func (d *ownedDriver) check(r *release.Release, name string) error {
	err := d.e.verify(d.namespace, r)
	if err == nil && name != "" && r.Name != name {
		err = notOwned("a Secret labelled as release %q holds release %q", name, r.Name)
	}
	if err != nil {
		rn, v := name, 0
		if r != nil {
			rn, v = r.Name, r.Version
		}
		d.e.log.Warn("refusing a Helm release secret this agent did not write", "release", d.namespace+"/"+rn, "revision", v, "err", err)
	}
	return err
}

// parseStorageKey splits Helm's storage key "sh.helm.release.v1.NAME.vN".
func parseStorageKey(key string) (name string, version int, ok bool) {
	rest, ok := strings.CutPrefix(key, "sh.helm.release.v1.")
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndex(rest, ".v")
	if i <= 0 {
		return "", 0, false
	}
	v, err := strconv.Atoi(rest[i+2:])
	if err != nil || v <= 0 {
		return "", 0, false
	}
	return rest[:i], v, true
}

// Adopt records as owned a release installed by an agent whose cache had
// no release record (schema 1), when it is exactly what this engine would
// have written for r: the latest stored revision has tether's labels and
// r's hash, is deployed, and its content (manifest, hooks, chart, values)
// equals a server-side dry-run render of r at that revision. Older
// revisions are deleted first (they cannot be verified, and Helm would
// trust one as "previous release"). It returns true when it adopted,
// false with nil when there is nothing to adopt (no such release, or the
// agent already owns it), and an error wrapping ErrForeignRelease when the
// release does not match; other errors are worth a retry.
func (e *Engine) Adopt(ctx context.Context, r Release) (bool, error) {
	p, err := prepare(r)
	if err != nil {
		return false, fmt.Errorf("adopt release %s/%s: %w", r.Namespace, r.Name, err)
	}
	ok, err := runLocked(e, ctx, p.key, func(ctx context.Context) (bool, error) { return e.adoptLocked(ctx, p) })
	if err != nil {
		return false, fmt.Errorf("adopt release %s: %w", p.key, err)
	}
	if ok {
		e.log.Info("adopted release installed before the release record existed", "release", p.key.String())
	}
	return ok, nil
}

func (e *Engine) adoptLocked(ctx context.Context, p prepared) (bool, error) {
	ns, name := p.key.namespace, p.key.name
	if _, err := e.cfg.Records.ReleaseRecord(ns, name); err == nil {
		return false, nil
	} else if !errors.Is(err, cache.ErrNotFound) {
		return false, err
	}
	raw, err := e.rawHelmConfig(ns)
	if err != nil {
		return false, err
	}
	hist, err := raw.Releases.History(name)
	if errors.Is(err, driver.ErrReleaseNotFound) || (err == nil && len(hist) == 0) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read release: %w", err)
	}
	slices.SortFunc(hist, func(a, b *release.Release) int { return a.Version - b.Version })
	last := hist[len(hist)-1]
	switch {
	case last.Name != name || last.Namespace != ns:
		return false, notOwned("revision %d holds release %s/%s", last.Version, last.Namespace, last.Name)
	case last.Labels[LabelManagedBy] != ManagedByValue:
		return false, notOwned("revision %d has no %s=%s label", last.Version, LabelManagedBy, ManagedByValue)
	case last.Labels[LabelHash] != p.hash:
		return false, notOwned("revision %d has hash %q, the desired state %q", last.Version, last.Labels[LabelHash], p.hash)
	case last.Info == nil || last.Info.Status != release.StatusDeployed:
		return false, notOwned("revision %d is not deployed", last.Version)
	case len(hist) > 1 && hist[len(hist)-2].Version == last.Version:
		return false, notOwned("two Secrets claim revision %d", last.Version)
	}
	want, err := e.render(ctx, raw, p, last.Version)
	if err != nil {
		return false, fmt.Errorf("render revision %d to compare: %w", last.Version, err)
	}
	dWant, err := releaseDigest(want)
	if err != nil {
		return false, err
	}
	dHave, err := releaseDigest(last)
	if err != nil {
		return false, err
	}
	if dWant != dHave {
		return false, notOwned("revision %d is not what this agent renders from the desired chart and values", last.Version)
	}
	for _, old := range hist[:len(hist)-1] {
		if _, err := raw.Releases.Delete(old.Name, old.Version); err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
			return false, fmt.Errorf("delete unverifiable revision %d: %w", old.Version, err)
		}
	}
	now := e.cfg.Now()
	rv := revisionOf(last, dHave, p.digest, now)
	rv.Status, rv.Description = last.Info.Status.String(), last.Info.Description // deployed, as read
	if err := rv.SetManifest(last.Manifest); err != nil {
		e.log.Warn("manifest not recorded; health and drift of this revision will need Helm", "release", p.key.String(), "revision", last.Version, "err", err)
	}
	rec := cache.ReleaseRecord{Namespace: ns, Name: name, Installed: now, Updated: now, Adopted: true,
		Revisions: []cache.ReleaseRevision{rv}}
	if err := e.cfg.Records.SaveReleaseRecord(rec); err != nil {
		return false, err
	}
	return true, nil
}

// render returns the release Helm would write for p as revision version,
// by a dry run against the cluster with release storage in memory.
func (e *Engine) render(ctx context.Context, raw *action.Configuration, p prepared, version int) (*release.Release, error) {
	cfg := *raw
	mem := driver.NewMemory()
	mem.SetNamespace(p.key.namespace)
	cfg.Releases = storage.Init(mem)
	if version == 1 {
		in := action.NewInstall(&cfg)
		in.ReleaseName, in.Namespace = p.key.name, p.key.namespace
		in.DryRun, in.DryRunOption = true, "server"
		in.Labels = p.labels()
		return in.RunWithContext(ctx, p.chart, p.values)
	}
	seed := &release.Release{Name: p.key.name, Namespace: p.key.namespace, Version: version - 1,
		Info: &release.Info{Status: release.StatusDeployed}, Chart: p.chart, Config: map[string]any{}}
	if err := cfg.Releases.Create(seed); err != nil {
		return nil, err
	}
	up := action.NewUpgrade(&cfg)
	up.Namespace = p.key.namespace
	up.DryRun, up.DryRunOption = true, "server"
	up.ResetValues = true
	up.Labels = p.labels()
	return up.RunWithContext(ctx, p.key.name, p.chart, p.values)
}
