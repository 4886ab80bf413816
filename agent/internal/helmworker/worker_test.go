package helmworker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	"github.com/tetherfleet/tether/agent/internal/observe"
	"github.com/tetherfleet/tether/agent/internal/worker"
	"github.com/tetherfleet/tether/e2e/cluster"
	"github.com/tetherfleet/tether/e2e/e2etest"
)

// These tests run the agent's engine as tether-agent runs it: the real
// tether-agent-helm binary (built here) as a child process, real Helm, a
// real kube-apiserver from the harness, the agent's real bbolt cache.

var workerBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "helmworker-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	workerBin = filepath.Join(dir, "tether-agent-helm")
	if out, err := exec.Command("go", "build", "-o", workerBin, "github.com/tetherfleet/tether/agent/cmd/tether-agent-helm").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tether-agent-helm: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type rig struct {
	kube *cluster.Cluster
	db   *cache.Cache
	sup  *worker.Supervisor
	eng  *worker.Engine
}

func newRig(t *testing.T) *rig {
	t.Helper()
	kube := cluster.Start(t, cluster.Options{Name: "helmworker", NodeCount: 1})
	db, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	obs, err := observe.New(observe.Config{RESTConfig: kube.RESTConfig})
	if err != nil {
		t.Fatal(err)
	}
	reader, err := observe.NewReader(observe.ReaderConfig{Records: db, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	cfg := worker.DefaultConfig()
	cfg.Path, cfg.Records = workerBin, db
	cfg.Args = []string{"--kubeconfig", kube.KubeconfigPath, "--log-level", "warn"}
	cfg.IdleTimeout = 200 * time.Millisecond
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	cfg.Stderr = logWriter{t}
	cfg.Logger = slog.New(slog.DiscardHandler)
	sup, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sup.Close() })
	return &rig{kube: kube, db: db, sup: sup, eng: worker.NewEngine(sup, reader, nil)}
}

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Logf("tether-agent-helm: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (r *rig) waitHealthy(t *testing.T, name, ns string) {
	t.Helper()
	e2etest.Eventually(t, "release "+ns+"/"+name+" healthy", 2*time.Minute, func() (bool, string) {
		h, err := r.eng.Health(t.Context(), name, ns)
		if err != nil {
			return false, err.Error()
		}
		rec, _ := r.db.ReleaseRecord(ns, name)
		var revs []string
		for _, v := range rec.Revisions {
			revs = append(revs, fmt.Sprintf("%d:%s:%s", v.Revision, v.Status, v.Hash))
		}
		return h.Ready, fmt.Sprintf("%q; recorded revisions %v", h.Message, revs)
	})
}

func (r *rig) waitStopped(t *testing.T) {
	t.Helper()
	e2etest.Eventually(t, "the idle worker to stop", time.Minute, func() (bool, string) {
		st := r.sup.Stats()
		return st.State == "stopped", st.State
	})
}

func podinfo(t *testing.T, ns, hash, values string) engine.Release {
	return engine.Release{Name: "web", Namespace: ns, Chart: e2etest.PackageChart(t, e2etest.SharedChart(t, "podinfo")),
		ValuesYAML: []byte(values), Hash: hash}
}

// TestSteadyStateNeedsNoWorker: once a release is installed and healthy,
// the questions every reconcile pass asks (up to date? healthy? drifted?)
// are answered from the agent's record and the cluster, with no Helm
// worker running; a drift repair starts one again.
func TestSteadyStateNeedsNoWorker(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	rel := podinfo(t, "steady", "h1", "replicaCount: 1\n")
	res, err := r.eng.Apply(ctx, rel)
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != engine.ActionInstalled || res.Revision != 1 {
		t.Fatalf("first apply: %+v, want installed revision 1", res)
	}
	r.waitHealthy(t, "web", "steady")
	r.waitStopped(t)
	starts := r.sup.Stats().Starts

	res, err = r.eng.Apply(ctx, rel)
	if err != nil || res.Action != engine.ActionUnchanged {
		t.Fatalf("second apply: %+v, %v; want unchanged", res, err)
	}
	d, err := r.eng.Drift(ctx, "web", "steady", engine.DriftRules{})
	if err != nil || d.Drifted {
		t.Fatalf("drift of an untouched release: %+v, %v", d, err)
	}
	infos, err := r.eng.List(ctx)
	if err != nil || len(infos) != 1 || infos[0].Status != engine.StatusDeployed {
		t.Fatalf("list: %+v, %v; want one deployed release", infos, err)
	}
	if st := r.sup.Stats(); st.Starts != starts || st.State != "stopped" {
		t.Fatalf("steady-state questions started a worker: %+v (starts before: %d)", st, starts)
	}

	// Someone deletes the Deployment: drift is seen without Helm, and the
	// repair runs in a new worker.
	err = r.kube.Clientset.AppsV1().Deployments("steady").Delete(ctx, "web-podinfo", metav1.DeleteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d, err = r.eng.Drift(ctx, "web", "steady", engine.DriftRules{})
	if err != nil || !d.Drifted || !strings.Contains(strings.Join(d.Reasons, ";"), "missing") {
		t.Fatalf("drift after delete: %+v, %v; want a missing Deployment", d, err)
	}
	if res, err = r.eng.Repair(ctx, rel); err != nil || res.Action != engine.ActionRepaired {
		t.Fatalf("repair: %+v, %v", res, err)
	}
	if st := r.sup.Stats(); st.Starts != starts+1 {
		t.Fatalf("repair: %d worker starts, want %d", st.Starts, starts+1)
	}
	r.waitHealthy(t, "web", "steady")

	if err := r.eng.Uninstall(ctx, "web", "steady"); err != nil {
		t.Fatal(err)
	}
	if infos, err := r.eng.List(ctx); err != nil || len(infos) != 0 {
		t.Fatalf("list after uninstall: %+v, %v", infos, err)
	}
	_, err = r.kube.Clientset.AppsV1().Deployments("steady").Get(ctx, "web-podinfo", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("deployment after uninstall: %v, want not found", err)
	}
}

// TestWorkerKilledMidUpgradeIsReportedAndRecovered: SIGKILL of the worker
// during an upgrade fails that call with the worker's exit, is counted as
// a crash, and the next apply restarts the worker, which recovers the
// interrupted release and upgrades it.
func TestWorkerKilledMidUpgradeIsReportedAndRecovered(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	if _, err := r.eng.Apply(ctx, podinfo(t, "crash", "h1", "replicaCount: 1\n")); err != nil {
		t.Fatal(err)
	}
	r.waitHealthy(t, "web", "crash")

	// An atomic upgrade to pods that can never be scheduled waits for
	// readiness until its timeout: the worker is busy when it is killed.
	stuck := podinfo(t, "crash", "h2", "replicaCount: 1\nnodeSelector:\n  tether.dev/none: \"true\"\n")
	stuck.Options = engine.Options{Atomic: true, Timeout: 3 * time.Minute}
	done := make(chan error, 1)
	go func() {
		_, err := r.eng.Apply(context.WithoutCancel(ctx), stuck)
		done <- err
	}()
	// The upgrade has started once Helm recorded revision 2.
	e2etest.Eventually(t, "the upgrade to be under way", 2*time.Minute, func() (bool, string) {
		rec, err := r.db.ReleaseRecord("crash", "web")
		if err != nil {
			return false, err.Error()
		}
		_, ok := rec.Revision(2)
		return ok, fmt.Sprint(len(rec.Revisions), " revisions")
	})
	pid := r.sup.Stats().PID
	if pid == 0 {
		t.Fatal("no worker pid while an upgrade runs")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("the upgrade call did not return after its worker was killed")
	}
	if err == nil || !strings.Contains(err.Error(), "signal: killed") || !strings.Contains(err.Error(), "exited during apply") {
		t.Fatalf("upgrade whose worker was killed: %v; want it to say the worker was killed", err)
	}
	if errors.Is(err, engine.ErrInvalidRelease) {
		t.Fatalf("a crash was reported as an invalid release: %v", err)
	}
	e2etest.Eventually(t, "the crash to be counted", 30*time.Second, func() (bool, string) {
		st := r.sup.Stats()
		return st.Crashes == 1, fmt.Sprintf("%+v", st)
	})

	res, err := r.eng.Apply(ctx, podinfo(t, "crash", "h3", "replicaCount: 2\n"))
	if err != nil {
		t.Fatalf("apply after the crash: %v", err)
	}
	if res.Action != engine.ActionUpgraded {
		t.Fatalf("apply after the crash: %+v, want upgraded", res)
	}
	r.waitHealthy(t, "web", "crash")
	info, err := r.eng.Get(ctx, "web", "crash")
	if err != nil || info.Status != engine.StatusDeployed || info.Hash != "h3" {
		t.Fatalf("release after recovery: %+v, %v", info, err)
	}
	if st := r.sup.Stats(); st.Crashes != 1 || st.LastCrash == "" {
		t.Fatalf("stats after recovery: %+v", st)
	}
}
