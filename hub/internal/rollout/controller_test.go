package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/hub/internal/desired"
	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/reports"
	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// hubEnv is a hub's store with the real objects repository, the real
// desired-state compiler consulting the rollout controller, and fake
// agents that report what their desired state holds as Deployed.
type hubEnv struct {
	t    *testing.T
	ctx  context.Context
	path string
	st   *boltstore.Store
	repo *objects.Repo
	comp *desired.Compiler
	ctl  *Controller
	rep  *reports.Reports
	mu   sync.Mutex
	now  time.Time
	seq  uint64
	// offline agents neither connect nor report.
	offline map[string]bool
	// clusters are the fleet's names; reported the revision each last
	// reported.
	clusters []string
	reported map[string]uint64
	// cdPolicy is the hub-wide ClusterDeployment rollout (nil: none);
	// agents of failing clusters report failTemplate's services Failed.
	cdPolicy     *objects.Rollout
	failing      map[string]bool
	failTemplate string
}

func newHubEnv(t *testing.T) *hubEnv {
	t.Helper()
	e := &hubEnv{t: t, ctx: context.Background(), path: filepath.Join(t.TempDir(), "hub.db"),
		now: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC), offline: map[string]bool{}, reported: map[string]uint64{}, failing: map[string]bool{}}
	e.start()
	t.Cleanup(func() { e.st.Close() })
	return e
}

func (e *hubEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

// start (re)builds every component from the store file, as a hub does
// when it starts.
func (e *hubEnv) start() {
	e.t.Helper()
	var err error
	if e.st, err = boltstore.Open(e.path, boltstore.Options{NoSync: true}); err != nil {
		e.t.Fatal(err)
	}
	if e.repo, err = objects.NewRepo(objects.RepoConfig{Store: e.st}); err != nil {
		e.t.Fatal(err)
	}
	if e.ctl, err = New(Config{Store: e.st, Now: e.clock, Online: func(c string) bool { return !e.offline[c] }, ClusterDeploymentRollout: e.cdPolicy}); err != nil {
		e.t.Fatal(err)
	}
	if e.comp, err = desired.New(desired.Config{Store: e.st, Now: e.clock, Admitter: e.ctl}); err != nil {
		e.t.Fatal(err)
	}
	e.ctl.SetCompiled(e.comp.Compiled)
	e.rep = &reports.Reports{Store: e.st, Now: e.clock}
}

// restart closes the store without any shutdown step (as after
// SIGKILL: every write was committed by its transaction) and starts
// again.
func (e *hubEnv) restart() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.start()
}

func (e *hubEnv) apply(y string) {
	e.t.Helper()
	objs, err := objects.Decode([]byte(y), "test")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.Apply(e.ctx, objs); err != nil {
		e.t.Fatal(err)
	}
}

func (e *hubEnv) resolve(template string) {
	e.t.Helper()
	_, err := e.repo.UpdateStatus(e.ctx, objects.KindServiceTemplate, "acme", template, func(o objects.Object) error {
		st := o.(*objects.ServiceTemplate)
		cs := st.Spec.Helm.ChartSpec
		st.Status = objects.ServiceTemplateStatus{ChartDigest: "sha256:" + template, ChartName: cs.Chart, ChartVersion: cs.Version, Valid: true}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *hubEnv) putCluster(name string, labels map[string]string) {
	e.t.Helper()
	v, _ := json.Marshal(map[string]any{"name": name, "labels": labels})
	if _, err := e.st.Create(e.ctx, store.Object{Kind: kindCluster, Name: name, Value: v}); err != nil {
		e.t.Fatal(err)
	}
	e.clusters = append(e.clusters, name)
}

// report has every online agent report its desired services Deployed
// at their revision.
func (e *hubEnv) report() {
	e.t.Helper()
	for _, name := range e.clusters {
		if e.offline[name] {
			continue
		}
		st, err := e.comp.State(e.ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		if e.reported[name] == st.Revision {
			continue // nothing new to report
		}
		e.reported[name] = st.Revision
		e.seq++
		rep := &fleetv1.StatusReport{Revision: st.Revision, Seq: e.seq, Observed: timestamppb.New(e.clock())}
		for _, s := range st.Services {
			state := "Deployed"
			if e.failing[name] && s.Template == e.failTemplate {
				state = "Failed"
			}
			rep.Services = append(rep.Services, &fleetv1.ServiceStatus{Name: s.Name, Namespace: s.Namespace, State: state, Revision: s.Revision, Message: "boom"})
		}
		if err := e.rep.SaveReport(e.ctx, name, rep); err != nil {
			e.t.Fatal(err)
		}
	}
}

// round is one turn of the hub: the controller decides, the compiler
// compiles, the agents report.
func (e *hubEnv) round() {
	e.t.Helper()
	if _, err := e.ctl.Reconcile(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.comp.Recompile(e.ctx); err != nil {
		e.t.Fatal(err)
	}
	e.report()
	e.mu.Lock()
	e.now = e.now.Add(time.Minute)
	e.mu.Unlock()
}

func (e *hubEnv) status() *Record {
	e.t.Helper()
	rec, err := e.ctl.Status(e.ctx, "acme", "web")
	if err != nil {
		e.t.Fatal(err)
	}
	return rec
}

func (e *hubEnv) template(cluster string) string {
	st, err := e.comp.State(e.ctx, cluster)
	if err != nil {
		return ""
	}
	for _, s := range st.Services {
		if s.Source.Name == "web" {
			return s.Template
		}
	}
	return ""
}

const templates = `apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: web-1, namespace: acme}
spec: {helm: {chartSpec: {chart: web, version: 1.0.0, sourceRef: {name: tether-local}}}}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: web-2, namespace: acme}
spec: {helm: {chartSpec: {chart: web, version: 2.0.0, sourceRef: {name: tether-local}}}}
`

func webMCS(template string) string { return webMCSWith(template, "2") }

func webMCSWith(template, maxConcurrency string) string {
	return `apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: web, namespace: acme}
spec:
  clusterSelector: {matchLabels: {tier: edge}}
  serviceSpec:
    services: [{template: ` + template + `, name: web, namespace: apps}]
  rollout: {strategy: Progressive, maxConcurrency: ` + maxConcurrency + `, maxFailures: 0, offlineClusters: Skip}
`
}

// TestRolloutThroughCompilerSurvivesRestart: a Progressive rollout
// through the real compiler and store: agents get the new template at
// most two at a time, clusters not admitted keep the old one, an offline
// one is deferred and catches up; the hub is rebuilt from its store
// mid-rollout and no cluster that succeeded is redone.
func TestRolloutThroughCompilerSurvivesRestart(t *testing.T) {
	e := newHubEnv(t)
	e.apply(templates)
	e.resolve("web-1")
	e.resolve("web-2")
	for i := range 8 {
		e.putCluster(fmt.Sprintf("edge-%02d", i), map[string]string{"tier": "edge"})
	}
	e.apply(webMCS("web-1"))
	for range 10 {
		e.round()
	}
	if rec := e.status(); rec.Phase != PhaseComplete || rec.Counts()[Succeeded] != 8 {
		t.Fatalf("first revision: %s %v", rec.Phase, rec.Counts())
	}

	e.offline["edge-05"] = true
	e.apply(webMCS("web-2"))
	for range 2 {
		e.round()
		n := 0
		for i := range 8 {
			if e.template(fmt.Sprintf("edge-%02d", i)) == "web-2" {
				n++
			}
		}
		if n > 4 {
			t.Fatalf("%d clusters on web-2 after two rounds of maxConcurrency 2", n)
		}
	}
	before := e.status()
	succeeded := map[string]ClusterStatus{}
	for name, c := range before.Clusters {
		if c.State == Succeeded {
			succeeded[name] = *c
		}
	}
	if len(succeeded) == 0 || len(succeeded) == 8 {
		t.Fatalf("want the restart mid-rollout; succeeded %d", len(succeeded))
	}
	if got := e.template("edge-07"); got != "web-1" {
		t.Errorf("edge-07, not admitted yet, has %q; want web-1 kept", got)
	}

	e.restart()
	for range 12 {
		e.round()
		for name, was := range succeeded {
			c := e.status().Clusters[name]
			if c.State != Succeeded || c.AdmittedAt != was.AdmittedAt || !c.Since.Equal(was.Since) {
				t.Fatalf("%s redone after restart: was %+v, now %+v", name, was, c)
			}
		}
	}
	rec := e.status()
	if rec.Phase != PhaseComplete || rec.Counts()[Succeeded] != 7 || rec.Clusters["edge-05"].State != Deferred {
		t.Fatalf("after restart: %s %v %+v", rec.Phase, rec.Counts(), rec.Clusters["edge-05"])
	}
	if got := e.template("edge-05"); got != "web-1" {
		t.Errorf("offline edge-05 has %q, want web-1 until it returns", got)
	}
	delete(e.offline, "edge-05")
	for range 3 {
		e.round()
	}
	if c := e.status().Clusters["edge-05"]; c.State != Succeeded || e.template("edge-05") != "web-2" {
		t.Errorf("edge-05 after return: %+v on %q", c, e.template("edge-05"))
	}
}

// TestThousandClusters: 1,000 clusters, Progressive at maxConcurrency
// 10%, every tenth cluster offline with Skip. After every round, at most
// 100 clusters hold the new revision without having succeeded with it;
// the rollout completes with the offline ones deferred on the old
// revision, and they catch up when they return, within the same bound.
func TestThousandClusters(t *testing.T) {
	const n = 1000
	e := newHubEnv(t)
	e.apply(templates)
	e.resolve("web-1")
	e.resolve("web-2")
	for i := range n {
		e.putCluster(fmt.Sprintf("edge-%04d", i), map[string]string{"tier": "edge"})
	}
	e.apply(webMCSWith("web-1", `"100%"`))
	for range 3 {
		e.round()
	}
	if rec := e.status(); rec.Phase != PhaseComplete || rec.Counts()[Succeeded] != n {
		t.Fatalf("first revision: %s %v", rec.Phase, rec.Counts())
	}
	for i := 0; i < n; i += 10 {
		e.offline[fmt.Sprintf("edge-%04d", i)] = true
	}
	e.apply(webMCSWith("web-2", `"10%"`))
	check := func(round int) *Record {
		rec := e.status()
		unfinished := 0
		for _, name := range e.clusters {
			if e.template(name) == "web-2" && rec.Clusters[name].State != Succeeded {
				unfinished++
			}
		}
		if unfinished > n/10 {
			t.Fatalf("round %d: %d clusters on the new revision without having succeeded, over maxConcurrency %d", round, unfinished, n/10)
		}
		if c := rec.Counts()[Progressing]; c > n/10 {
			t.Fatalf("round %d: %d Progressing", round, c)
		}
		return rec
	}
	var rec *Record
	for round := 0; round < 40; round++ {
		e.round()
		if rec = check(round); rec.Phase == PhaseComplete {
			break
		}
	}
	if c := rec.Counts(); rec.Phase != PhaseComplete || c[Succeeded] != n-n/10 || c[Deferred] != n/10 {
		t.Fatalf("rollout: %s %v", rec.Phase, c)
	}
	if got := e.template("edge-0000"); got != "web-1" {
		t.Errorf("offline edge-0000 has %q, want web-1", got)
	}
	clear(e.offline)
	for round := 0; round < 10; round++ {
		e.round()
		if rec = check(round); rec.Counts()[Succeeded] == n {
			break
		}
	}
	if c := rec.Counts(); c[Succeeded] != n {
		t.Fatalf("after the offline ones returned: %v", c)
	}
}
