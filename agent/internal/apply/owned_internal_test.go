package apply

import (
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	helmtime "helm.sh/helm/v3/pkg/time"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/tetherfleet/tether/agent/internal/cache"
)

// TestReleaseDigestSurvivesHelmStorage: the digest the engine records
// when Helm writes a release equals the digest of what Helm's Secrets
// driver reads back, also after Helm changes the status and the hooks'
// last run; a changed manifest changes it.
func TestReleaseDigestSurvivesHelmStorage(t *testing.T) {
	r := &release.Release{
		Name: "web", Namespace: "ns", Version: 2,
		Info: &release.Info{Status: release.StatusPendingUpgrade, LastDeployed: helmtime.Now()},
		Chart: &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "c", Version: "1.0.0"},
			Templates: []*chart.File{{Name: "templates/a.yaml", Data: []byte("kind: ConfigMap\n")}},
			Values:    map[string]any{"n": 3, "big": 1.5, "list": []any{"a", 2}, "m": map[string]any{"x": nil}}},
		Config:   map[string]any{"replicaCount": 2, "image": map[string]any{"tag": "1.2"}},
		Manifest: "---\n# Source: c/templates/a.yaml\nkind: ConfigMap\n",
		Hooks:    []*release.Hook{{Name: "h", Kind: "Job", Path: "c/templates/h.yaml", Manifest: "kind: Job\n", Events: []release.HookEvent{release.HookPreUpgrade}}},
		Labels:   map[string]string{LabelManagedBy: ManagedByValue},
	}
	want, err := releaseDigest(r)
	if err != nil {
		t.Fatal(err)
	}
	d := driver.NewSecrets(fake.NewSimpleClientset().CoreV1().Secrets("ns"))
	key := "sh.helm.release.v1.web.v2"
	if err := d.Create(key, r); err != nil {
		t.Fatal(err)
	}
	r.SetStatus(release.StatusDeployed, "Upgrade complete")
	r.Hooks[0].LastRun = release.HookExecution{StartedAt: helmtime.Now(), CompletedAt: helmtime.Now().Add(time.Second), Phase: release.HookPhaseSucceeded}
	if err := d.Update(key, r); err != nil {
		t.Fatal(err)
	}
	got, err := d.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if g, err := releaseDigest(got); err != nil || g != want {
		t.Fatalf("digest after the Secrets driver = %s, %v; want %s", g, err, want)
	}
	got.Manifest += "---\nkind: Secret\n"
	if g, _ := releaseDigest(got); g == want {
		t.Error("a changed manifest has the same digest")
	}
}

func TestParseStorageKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		name string
		v    int
		ok   bool
	}{
		{"sh.helm.release.v1.web.v3", "web", 3, true},
		{"sh.helm.release.v1.a.vb.v12", "a.vb", 12, true},
		{"sh.helm.release.v1.web.v0", "", 0, false},
		{"sh.helm.release.v1.web", "", 0, false},
		{"other.web.v1", "", 0, false},
	} {
		name, v, ok := parseStorageKey(tc.key)
		if name != tc.name || v != tc.v || ok != tc.ok {
			t.Errorf("parseStorageKey(%q) = %q, %d, %v", tc.key, name, v, ok)
		}
	}
}

// flakyDriver is Helm's memory driver whose writes fail while failing is
// set, as a Secret write does when the API server refuses it or times out.
type flakyDriver struct {
	*driver.Memory
	failing bool
}

func (d *flakyDriver) Create(key string, r *release.Release) error {
	if d.failing {
		return errors.New("the API server is away")
	}
	return d.Memory.Create(key, r)
}

func (d *flakyDriver) Update(key string, r *release.Release) error {
	if d.failing {
		return errors.New("the API server is away")
	}
	return d.Memory.Update(key, r)
}

// failingRecords fails SaveReleaseRecord once armed.
type failingRecords struct {
	*cache.Cache
	failSave bool
}

func (r *failingRecords) SaveReleaseRecord(rec cache.ReleaseRecord) error {
	if r.failSave {
		return errors.New("disk full")
	}
	return r.Cache.SaveReleaseRecord(rec)
}

// TestRecordedStatusIsWhatHelmStored: every revision Helm writes through
// the ownedDriver is recorded with what the read side needs, and the
// recorded status is the one Helm's write stored: none while a write
// fails (the read side then asks Helm), never the status of a write that
// did not happen. The hash of a revision is the one it was created with,
// not a label Helm read back from a Secret; only the newest revision keeps
// its manifest.
func TestRecordedStatusIsWhatHelmStored(t *testing.T) {
	db, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	recs := &failingRecords{Cache: db}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	e := &Engine{cfg: Config{Records: recs, Now: func() time.Time { return now }}.withDefaults()}
	e.log = e.cfg.Logger
	mem := driver.NewMemory()
	mem.SetNamespace("ns")
	fd := &flakyDriver{Memory: mem}
	d := &ownedDriver{Driver: fd, e: e, namespace: "ns", chart: "sha256:chart"}

	rel := func(v int, st release.Status, hash, manifest string) *release.Release {
		return &release.Release{Name: "web", Namespace: "ns", Version: v, Manifest: manifest,
			Info:   &release.Info{Status: st, Description: string(st) + " desc", LastDeployed: helmtime.Time{Time: now.Add(time.Duration(v) * time.Minute)}},
			Chart:  &chart.Chart{Metadata: &chart.Metadata{APIVersion: "v2", Name: "web", Version: "1.0.0"}},
			Labels: map[string]string{LabelManagedBy: ManagedByValue, LabelHash: hash}}
	}
	latest := func(t *testing.T) cache.ReleaseRevision {
		t.Helper()
		rec, err := db.ReleaseRecord("ns", "web")
		if err != nil {
			t.Fatal(err)
		}
		rv, ok := rec.Latest()
		if !ok {
			t.Fatal("no revision recorded")
		}
		return rv
	}
	key := func(v int) string { return "sh.helm.release.v1.web.v" + strconv.Itoa(v) }

	r1 := rel(1, release.StatusPendingInstall, "h1", "kind: ConfigMap\nmetadata: {name: a}\n")
	if err := d.Create(key(1), r1); err != nil {
		t.Fatal(err)
	}
	if rv := latest(t); rv.Status != "pending-install" || rv.Hash != "h1" || rv.ChartName != "web" || rv.ChartVersion != "1.0.0" || rv.Chart != "sha256:chart" {
		t.Fatalf("after Create: %+v", rv)
	}
	r1.SetStatus(release.StatusDeployed, "Install complete")
	if err := d.Update(key(1), r1); err != nil {
		t.Fatal(err)
	}
	rv := latest(t)
	if rv.Status != "deployed" || rv.Description != "Install complete" {
		t.Fatalf("after Update to deployed: %+v", rv)
	}
	if m, err := rv.Manifest(); err != nil || m != r1.Manifest {
		t.Fatalf("recorded manifest = %q, %v", m, err)
	}

	t.Run("a failed write leaves no status", func(t *testing.T) {
		fd.failing = true
		r1.SetStatus(release.StatusFailed, "x")
		if err := d.Update(key(1), r1); err == nil {
			t.Fatal("Update through a failing driver: nil error")
		}
		fd.failing = false
		if rv := latest(t); rv.Status != "" {
			t.Errorf("after a failed Update the record says %q; Helm still holds deployed, so it must not say failed (nor anything)", rv.Status)
		}
		r1.SetStatus(release.StatusDeployed, "Install complete")
		if err := d.Update(key(1), r1); err != nil {
			t.Fatal(err)
		}
		if rv := latest(t); rv.Status != "deployed" {
			t.Errorf("after a successful Update: %q", rv.Status)
		}
	})

	t.Run("a failed confirmation leaves no status", func(t *testing.T) {
		r2 := rel(2, release.StatusPendingUpgrade, "h2", "kind: ConfigMap\nmetadata: {name: b}\n")
		if err := d.Create(key(2), r2); err != nil {
			t.Fatal(err)
		}
		r2.SetStatus(release.StatusFailed, "Upgrade failed")
		recs.failSave = true
		err := d.Update(key(2), r2)
		recs.failSave = false
		if err == nil {
			t.Fatal("Update with a record that cannot be saved: nil error (Helm must not write what the agent could not record)")
		}
		if rv := latest(t); rv.Status != "pending-upgrade" {
			t.Errorf("the record could not be written before Helm's write: it must still say pending-upgrade, says %q", rv.Status)
		}
		// Now the write goes through but its confirmation fails.
		var fails int
		recs.failSave = false
		orig := e.cfg.Records
		e.cfg.Records = saveHook{Records: orig, before: func() error {
			fails++
			if fails == 2 { // 1: the record before the write; 2: the confirmation
				return errors.New("disk full")
			}
			return nil
		}}
		if err := d.Update(key(2), r2); err != nil {
			t.Fatalf("Update whose confirmation fails: %v, want nil (Helm's write happened)", err)
		}
		e.cfg.Records = orig
		if got, err := fd.Memory.Get(key(2)); err != nil || got.Info.Status != release.StatusFailed {
			t.Fatalf("Helm holds %v, %v", got, err)
		}
		if rv := latest(t); rv.Status != "" {
			t.Errorf("confirmation failed: the record says %q, want no status", rv.Status)
		}
		if err := d.Update(key(2), r2); err != nil {
			t.Fatal(err)
		}
		if rv := latest(t); rv.Status != "failed" || rv.Description != "Upgrade failed" {
			t.Errorf("after a confirmed Update: %+v", rv)
		}
	})

	t.Run("the hash is the one the revision was created with", func(t *testing.T) {
		r2, err := fd.Memory.Get(key(2))
		if err != nil {
			t.Fatal(err)
		}
		r2.Labels[LabelHash] = "forged" // as read back from a Secret a tenant relabelled
		r2.SetStatus(release.StatusFailed, "marked by recovery")
		if err := d.Update(key(2), r2); err != nil {
			t.Fatal(err)
		}
		if rv := latest(t); rv.Hash != "h2" {
			t.Errorf("recorded hash %q after an Update with a relabelled release, want h2", rv.Hash)
		}
	})

	t.Run("only the newest revision keeps its manifest", func(t *testing.T) {
		rec, err := db.ReleaseRecord("ns", "web")
		if err != nil {
			t.Fatal(err)
		}
		old, _ := rec.Revision(1)
		if old.ManifestGzip != nil {
			t.Errorf("revision 1 still holds a manifest after revision 2 was created")
		}
		r1.SetStatus(release.StatusSuperseded, "superseded by new release")
		if err := d.Update(key(1), r1); err != nil {
			t.Fatal(err)
		}
		rec, _ = db.ReleaseRecord("ns", "web")
		old, _ = rec.Revision(1)
		newest, _ := rec.Latest()
		if old.ManifestGzip != nil || old.Status != "superseded" {
			t.Errorf("revision 1 after its Update: status %q, manifest %d bytes; want superseded, none", old.Status, len(old.ManifestGzip))
		}
		if m, err := newest.Manifest(); err != nil || !strings.Contains(m, "name: b") {
			t.Errorf("newest manifest = %q, %v", m, err)
		}
	})
}

// saveHook runs before on every SaveReleaseRecord and fails it when
// before does.
type saveHook struct {
	Records
	before func() error
}

func (h saveHook) SaveReleaseRecord(r cache.ReleaseRecord) error {
	if err := h.before(); err != nil {
		return err
	}
	return h.Records.SaveReleaseRecord(r)
}
