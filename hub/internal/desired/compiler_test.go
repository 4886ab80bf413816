package desired

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tetherfleet/tether/hub/internal/objects"
	"github.com/tetherfleet/tether/hub/internal/store"
	"github.com/tetherfleet/tether/hub/internal/store/boltstore"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

type env struct {
	t     *testing.T
	ctx   context.Context
	store *boltstore.Store
	repo  *objects.Repo
	c     *Compiler
	mu    sync.Mutex
	now   time.Time
}

func newEnv(t *testing.T) *env {
	t.Helper()
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := &env{t: t, ctx: context.Background(), store: s, now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
	e.repo, err = objects.NewRepo(objects.RepoConfig{Store: s})
	if err != nil {
		t.Fatal(err)
	}
	e.c, err = New(Config{Store: s, Now: e.clock, Debounce: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func (e *env) putCluster(name string, labels map[string]string) {
	e.t.Helper()
	v, _ := json.Marshal(map[string]any{"name": name, "labels": labels, "lastSeen": time.Now()})
	err := e.store.Txn(e.ctx, func(tx store.Tx) error {
		cur, err := tx.Get(kindCluster, "", name)
		if errors.Is(err, store.ErrNotFound) {
			_, err = tx.Create(store.Object{Kind: kindCluster, Name: name, Value: v})
			return err
		}
		_, err = tx.Update(store.Object{Kind: kindCluster, Name: name, Value: v, ResourceVersion: cur.ResourceVersion})
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deleteCluster(name string) {
	e.t.Helper()
	if err := e.store.Delete(e.ctx, kindCluster, "", name, 0); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) apply(y string) {
	e.t.Helper()
	objs, err := objects.Decode([]byte(y), "test")
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.repo.Apply(e.ctx, objs); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) resolve(template, digest string) {
	e.t.Helper()
	_, err := e.repo.UpdateStatus(e.ctx, objects.KindServiceTemplate, ns, template, func(o objects.Object) error {
		st := o.(*objects.ServiceTemplate)
		cs := st.Spec.Helm.ChartSpec
		st.Status = objects.ServiceTemplateStatus{ChartDigest: digest, ChartName: cs.Chart, ChartVersion: cs.Version, Valid: true}
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) recompile() uint64 {
	e.t.Helper()
	rev, err := e.c.Recompile(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return rev
}

func (e *env) state(cluster string) *State {
	e.t.Helper()
	st, err := e.c.State(e.ctx, cluster)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

const base = `apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: nginx, namespace: acme}
spec: {helm: {chartSpec: {chart: nginx, version: 1.0.0, sourceRef: {name: tether-local}}}}
---
apiVersion: tether.dev/v1alpha1
kind: ServiceTemplate
metadata: {name: redis, namespace: acme}
spec: {helm: {chartSpec: {chart: redis, version: 7.0.0, sourceRef: {name: tether-local}}}}
`

func mcsYAML(services string) string {
	return `apiVersion: tether.dev/v1alpha1
kind: MultiClusterService
metadata: {name: edge, namespace: acme}
spec:
  clusterSelector: {matchLabels: {tier: edge}}
  serviceSpec:
    services: ` + services + "\n"
}

func names(svcs []*fleetv1.Service) []string {
	var out []string
	for _, s := range svcs {
		out = append(out, s.Namespace+"/"+s.Name)
	}
	return out
}

func TestRevisionsAndTombstones(t *testing.T) {
	e := newEnv(t)
	e.apply(base)
	e.resolve("nginx", "sha256:n1")
	e.resolve("redis", "sha256:r1")
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	e.apply(mcsYAML("[{template: nginx, name: web}, {template: redis, name: cache}]"))
	e.recompile()

	st := e.state("edge-1")
	r1 := st.Revision
	if storeRev, _ := e.store.Revision(e.ctx); r1 != storeRev {
		t.Fatalf("revision %d is not the store revision of its write (%d)", r1, storeRev)
	}
	if len(st.Services) != 2 || st.Horizon != r1 {
		t.Fatalf("state = %+v", st)
	}

	// Nothing changed: no write, same revision.
	e.recompile()
	if st := e.state("edge-1"); st.Revision != r1 {
		t.Fatalf("no-op recompile changed revision %d -> %d", r1, st.Revision)
	}
	// A heartbeat-like write to the cluster (labels unchanged) changes nothing.
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	e.recompile()
	if st := e.state("edge-1"); st.Revision != r1 {
		t.Fatalf("cluster touch changed revision")
	}

	// Remove cache: tombstone; web keeps its revision.
	e.apply(mcsYAML("[{template: nginx, name: web}]"))
	e.recompile()
	st = e.state("edge-1")
	r2 := st.Revision
	if r2 <= r1 || len(st.Services) != 1 || st.Services[0].Revision != r1 || len(st.Tombstones) != 1 ||
		st.Tombstones[0].Name != "cache" || st.Tombstones[0].Revision != r2 || !st.Tombstones[0].DeletedAt.Equal(e.clock()) {
		t.Fatalf("after removal: %+v", st)
	}

	// Delta: have = current -> nil; have = 0 -> full; have = r1 -> tombstone only.
	if d, err := e.c.Delta(e.ctx, "edge-1", r2, ""); err != nil || d != nil {
		t.Fatalf("Delta(current) = %v, %v", d, err)
	}
	d, err := e.c.Delta(e.ctx, "edge-1", 0, "")
	if err != nil || !d.Full || d.Revision != r2 || len(d.Services) != 1 || len(d.Tombstones) != 0 {
		t.Fatalf("Delta(0) = %v, %v", d, err)
	}
	if s := d.Services[0]; s.ChartDigest != "sha256:n1" || s.ChartName != "nginx" || s.ChartVersion != "1.0.0" || s.Template != "nginx" ||
		s.Priority != 100 || s.ValuesHash == "" || string(s.ValuesYaml) != "{}\n" {
		t.Errorf("wire service = %v", s)
	}
	d, err = e.c.Delta(e.ctx, "edge-1", r1, "")
	if err != nil || d.Full || len(d.Services) != 0 || len(d.Tombstones) != 1 || d.Tombstones[0].Revision != r2 {
		t.Fatalf("Delta(r1) = %v, %v", d, err)
	}

	// Re-add cache: tombstone gone, service at a new revision.
	e.apply(mcsYAML("[{template: nginx, name: web}, {template: redis, name: cache}]"))
	e.recompile()
	st = e.state("edge-1")
	r3 := st.Revision
	if r3 <= r2 || len(st.Tombstones) != 0 || len(st.Services) != 2 {
		t.Fatalf("after re-add: %+v", st)
	}
	d, _ = e.c.Delta(e.ctx, "edge-1", r2, "")
	if d.Full || !slices.Equal(names(d.Services), []string{"default/cache"}) {
		t.Fatalf("Delta(r2) = %v", d)
	}

	// Remove again and let the tombstone age past the grace period.
	e.apply(mcsYAML("[{template: nginx, name: web}]"))
	e.recompile()
	r4 := e.state("edge-1").Revision
	e.advance(31 * 24 * time.Hour)
	e.recompile()
	st = e.state("edge-1")
	if len(st.Tombstones) != 0 || st.Horizon != r4 || st.Revision != r4 {
		t.Fatalf("after pruning: %+v", st)
	}
	// An agent that never saw the deletion gets a full state; one that did
	// gets nothing.
	if d, _ := e.c.Delta(e.ctx, "edge-1", r3, ""); d == nil || !d.Full {
		t.Fatalf("Delta below horizon = %v", d)
	}
	if d, _ := e.c.Delta(e.ctx, "edge-1", r4, ""); d != nil {
		t.Fatalf("Delta at horizon = %v", d)
	}
	// An agent ahead of the hub (store restored from a backup) gets a full state.
	if d, _ := e.c.Delta(e.ctx, "edge-1", r4+100, ""); d == nil || !d.Full {
		t.Fatalf("Delta above current = %v", d)
	}

	// Delete and re-create the cluster: the new revision is above every old one.
	e.deleteCluster("edge-1")
	e.recompile()
	if _, err := e.c.State(e.ctx, "edge-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("state of deleted cluster: %v", err)
	}
	if _, err := e.store.Get(e.ctx, KindDesiredState, "", "edge-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("DesiredState of deleted cluster still stored: %v", err)
	}
	if d, err := e.c.Delta(e.ctx, "edge-1", r4, ""); d != nil || err != nil {
		t.Fatalf("Delta of unknown cluster = %v, %v", d, err)
	}
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	e.recompile()
	st = e.state("edge-1")
	if st.Revision <= r4 || st.Horizon != st.Revision {
		t.Fatalf("re-created: %+v (old revision %d)", st, r4)
	}
	if d, _ := e.c.Delta(e.ctx, "edge-1", r4, ""); d == nil || !d.Full {
		t.Fatalf("agent from the old life must get a full state: %v", d)
	}
}

func TestStatePersistsAcrossCompilers(t *testing.T) {
	e := newEnv(t)
	e.apply(base)
	e.resolve("nginx", "sha256:n1")
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	e.apply(mcsYAML("[{template: nginx, name: web}]"))
	e.recompile()
	r1 := e.state("edge-1").Revision

	// A new Compiler (hub restart) answers from the store before compiling,
	// and its first compile does not bump anything.
	c2, err := New(Config{Store: e.store, Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	if rev, err := c2.Revision(e.ctx, "edge-1"); err != nil || rev != r1 {
		t.Fatalf("Revision before compile = %d, %v", rev, err)
	}
	if _, err := c2.Recompile(e.ctx); err != nil {
		t.Fatal(err)
	}
	if rev, _ := c2.Revision(e.ctx, "edge-1"); rev != r1 {
		t.Fatalf("restart bumped revision %d -> %d", r1, rev)
	}
}

func TestProblemsAccessors(t *testing.T) {
	e := newEnv(t)
	e.apply(base) // nginx never resolved
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	e.apply(mcsYAML("[{template: nginx, name: web}]"))
	e.recompile()
	ps := e.c.ProblemsFor(objects.KindMultiClusterService, ns, "edge")
	if len(ps) != 1 || ps[0].Code != ProblemTemplateNotReady || ps[0].Cluster != "edge-1" || ps[0].Service != "default/web" {
		t.Fatalf("ProblemsFor = %v", ps)
	}
	if len(e.c.Problems()) != 1 {
		t.Fatalf("Problems = %v", e.c.Problems())
	}
	e.resolve("nginx", "sha256:n1")
	e.recompile()
	if ps := e.c.Problems(); len(ps) != 0 {
		t.Fatalf("Problems after resolve = %v", ps)
	}
}

func TestRunReactsToChanges(t *testing.T) {
	e := newEnv(t)
	e.apply(base)
	e.resolve("nginx", "sha256:n1")
	e.putCluster("edge-1", map[string]string{"tier": "edge"})

	ctx, cancel := context.WithCancel(e.ctx)
	ch, unsubscribe := e.c.Subscribe("edge-1")
	defer unsubscribe()
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	wait := func(what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification: %s", what)
		}
	}
	wait("initial state") // the first compile creates the cluster's state
	e.apply(mcsYAML("[{template: nginx, name: web}]"))
	wait("service added")
	if st := e.state("edge-1"); len(st.Services) != 1 {
		t.Fatalf("state = %+v", st)
	}
	// Relabelling the cluster out of the selector removes the service.
	e.putCluster("edge-1", map[string]string{"tier": "core"})
	wait("cluster relabelled")
	if st := e.state("edge-1"); len(st.Services) != 0 || len(st.Tombstones) != 1 {
		t.Fatalf("state = %+v", st)
	}
	// A template digest change reaches the cluster.
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	wait("cluster relabelled back")
	e.resolve("nginx", "sha256:n2")
	wait("template resolved to a new digest")
	if st := e.state("edge-1"); st.Services[0].ChartDigest != "sha256:n2" {
		t.Fatalf("state = %+v", st)
	}
	unsubscribe()
	unsubscribe() // idempotent
}

func TestSubscribeCoalesces(t *testing.T) {
	e := newEnv(t)
	ch, cancel := e.c.Subscribe("x")
	defer cancel()
	e.c.mu.Lock()
	e.c.notifyLocked([]string{"x", "x", "x"})
	e.c.mu.Unlock()
	<-ch
	select {
	case <-ch:
		t.Fatal("notifications not coalesced")
	default:
	}
}

func TestSubscribeFunc(t *testing.T) {
	e := newEnv(t)
	var calls []string
	cancel := e.c.SubscribeFunc("x", func() { calls = append(calls, "x") })
	other := e.c.SubscribeFunc("y", func() { calls = append(calls, "y") })
	defer other()
	e.c.mu.Lock()
	e.c.notifyLocked([]string{"x"})
	e.c.mu.Unlock()
	cancel()
	cancel() // idempotent
	e.c.mu.Lock()
	e.c.notifyLocked([]string{"x", "y"})
	e.c.mu.Unlock()
	if strings.Join(calls, ",") != "x,y" {
		t.Fatalf("calls = %v; want x (subscribed), then only y", calls)
	}
}

func TestRunWatchExpired(t *testing.T) {
	// A tiny watch buffer makes the watch expire under a burst; Run must
	// list again and still converge.
	s, err := boltstore.Open(filepath.Join(t.TempDir(), "hub.db"), boltstore.Options{NoSync: true, WatchBuffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := &env{t: t, ctx: context.Background(), store: s, now: time.Now()}
	e.repo, _ = objects.NewRepo(objects.RepoConfig{Store: s})
	e.c, _ = New(Config{Store: s, Debounce: time.Millisecond})
	e.apply(base)
	e.resolve("nginx", "sha256:n1")
	e.apply(mcsYAML("[{template: nginx, name: web}]"))

	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	ch, unsubscribe := e.c.Subscribe("edge-49")
	defer unsubscribe()
	for i := range 50 {
		e.putCluster("edge-"+string(rune('a'+i%26))+string(rune('a'+i/26)), map[string]string{"tier": "edge"})
	}
	e.putCluster("edge-49", map[string]string{"tier": "edge"})
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-ch:
		case <-deadline:
			t.Fatal("edge-49 never got its desired state")
		}
		if st, err := e.c.State(e.ctx, "edge-49"); err == nil && len(st.Services) == 1 {
			return
		}
	}
}

// bigConfigMap is a ConfigMap whose values.yaml is about size bytes.
func bigConfigMap(name string, size int) string {
	return `apiVersion: v1
kind: ConfigMap
metadata: {name: ` + name + `, namespace: acme}
data:
  values.yaml: |
    blob: "` + strings.Repeat("x", size) + `"
`
}

// TestDesiredStateOverWireLimitIsRefusedWithProblem: five services each
// with a 900 KiB valuesFrom source make a desired state over the 4 MiB
// wire limit, which the agent could never receive (it would reconnect
// forever). The compiler must not store it: the cluster keeps its last
// good state, and each service's source gets a clear problem.
func TestDesiredStateOverWireLimitIsRefusedWithProblem(t *testing.T) {
	e := newEnv(t)
	e.apply(base)
	e.resolve("nginx", "sha256:n1")
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	e.apply(mcsYAML("[{template: nginx, name: web}]"))
	e.recompile()
	good := e.state("edge-1").Revision

	var svcs []string
	for i := range 5 {
		e.apply(bigConfigMap(fmt.Sprintf("big-%d", i), 900<<10))
		svcs = append(svcs, fmt.Sprintf("{template: nginx, name: web-%d, valuesFrom: [{kind: ConfigMap, name: big-%d}]}", i, i))
	}
	e.apply(mcsYAML("[" + strings.Join(svcs, ", ") + "]"))
	e.recompile()

	st := e.state("edge-1")
	if st.Revision != good || len(st.Services) != 1 || st.Services[0].Name != "web" {
		t.Fatalf("oversized state was stored: revision %d (last good %d), %d services", st.Revision, good, len(st.Services))
	}
	if d, err := e.c.Delta(e.ctx, "edge-1", 0, ""); err != nil || proto.Size(d) > DefaultConfig().MaxStateBytes {
		t.Fatalf("Delta = %d bytes, %v", proto.Size(d), err)
	}
	probs := e.c.ProblemsFor(objects.KindMultiClusterService, "acme", "edge")
	var too int
	for _, p := range probs {
		if p.Code == ProblemTooLarge {
			too++
			if !strings.Contains(p.Reason, "over the limit of") || !strings.Contains(p.Reason, fmt.Sprintf("last good desired state (revision %d)", good)) {
				t.Errorf("problem reason %q does not say what happened", p.Reason)
			}
		}
	}
	if too != 5 {
		t.Fatalf("problems = %v; want a %s problem per service", probs, ProblemTooLarge)
	}

	// Shrinking the values lets the next compile through.
	for i := range 5 {
		e.apply(bigConfigMap(fmt.Sprintf("big-%d", i), 1<<10))
	}
	e.recompile()
	if st := e.state("edge-1"); st.Revision == good || len(st.Services) != 5 {
		t.Fatalf("after shrinking: revision %d, %d services", st.Revision, len(st.Services))
	}
	for _, p := range e.c.Problems() {
		if p.Code == ProblemTooLarge {
			t.Fatalf("problem left after shrinking: %v", p)
		}
	}
}

func TestReferencedConfigMapChangeRecompilesValues(t *testing.T) {
	e := newEnv(t)
	e.apply(base)
	e.resolve("nginx", "sha256:n1")
	e.putCluster("edge-1", map[string]string{"tier": "edge"})
	cm := func(endpoint string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: edge-1-config, namespace: acme}\ndata: {endpoint: " + endpoint + "}\n"
	}
	e.apply(cm("https://one.example"))
	e.apply(`apiVersion: k0rdent.mirantis.com/v1beta1
kind: MultiClusterService
metadata: {name: edge, namespace: acme}
spec:
  clusterSelector: {matchLabels: {tier: edge}}
  serviceSpec:
    templateResourceRefs:
    - {identifier: Cfg, resource: {apiVersion: v1, kind: ConfigMap, name: "{{ .Cluster.metadata.name }}-config"}}
    services:
    - template: nginx
      name: web
      values: |
        endpoint: {{ (getResource "Cfg").data.endpoint }}
`)

	ctx, cancel := context.WithCancel(e.ctx)
	ch, unsubscribe := e.c.Subscribe("edge-1")
	defer unsubscribe()
	done := make(chan error, 1)
	go func() { done <- e.c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	waitValues := func(want string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			// Before the first compile the cluster has no state.
			if st, err := e.c.State(e.ctx, "edge-1"); err == nil && len(st.Services) == 1 && string(st.Services[0].Values) == want {
				return
			}
			select {
			case <-ch:
			case <-deadline:
				t.Fatalf("edge-1 values never became %q: %+v", want, e.state("edge-1"))
			}
		}
	}
	waitValues("endpoint: https://one.example\n")
	e.apply(cm("https://two.example"))
	waitValues("endpoint: https://two.example\n")
}
