package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// The supervisor tests start this test binary as the worker: with
// childEnv set, TestMain serves testEngine on the inherited socket instead
// of running tests. The engine is a stand-in for Helm (this package never
// links it); what is under test is the real process, socket, yamux and
// gRPC plumbing, supervision and the records round trip. The real worker
// with Helm is tested in agent/internal/helmworker and e2e.
const childEnv = "TETHER_WORKER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		err := ServeChild(log, func(r RemoteRecords) (workerv1.EngineServer, error) {
			if os.Getenv(childEnv) == "broken" {
				return nil, errors.New("kubeconfig: no cluster named \"x\"")
			}
			return &testEngine{records: r}, nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testEngine answers Apply by what the release name asks for.
type testEngine struct {
	workerv1.UnimplementedEngineServer
	records RemoteRecords
}

func (e *testEngine) Hello(context.Context, *workerv1.HelloRequest) (*workerv1.HelloResponse, error) {
	return &workerv1.HelloResponse{WorkerVersion: "test", Pid: int32(os.Getpid())}, nil
}

func (e *testEngine) Apply(ctx context.Context, in *workerv1.ApplyRequest) (*workerv1.ApplyResponse, error) {
	r := in.GetRelease()
	switch r.GetName() {
	case "crash":
		fmt.Fprintln(os.Stderr, "panic: the chart broke the worker")
		os.Exit(3)
	case "record":
		// Record a revision in the agent's cache, then read it back.
		rec := cache.ReleaseRecord{Namespace: r.GetNamespace(), Name: r.GetName(),
			Revisions: []cache.ReleaseRevision{{Revision: 1, Digest: "sha256:ab", Written: time.Unix(1, 0)}}}
		if err := e.records.SaveReleaseRecord(rec); err != nil {
			return &workerv1.ApplyResponse{Error: errorToProto(err)}, nil
		}
		got, err := e.records.ReleaseRecord(r.GetNamespace(), r.GetName())
		if err != nil {
			return &workerv1.ApplyResponse{Error: errorToProto(err)}, nil
		}
		return &workerv1.ApplyResponse{Action: "installed", Revision: int32(got.Revisions[0].Revision)}, nil
	case "bad-record":
		// A revision without a digest: the agent's cache must refuse it.
		rec := cache.ReleaseRecord{Namespace: r.GetNamespace(), Name: r.GetName(), Revisions: []cache.ReleaseRevision{{Revision: 1}}}
		return &workerv1.ApplyResponse{Error: errorToProto(e.records.SaveReleaseRecord(rec))}, nil
	case "missing":
		_, err := e.records.ReleaseRecord(r.GetNamespace(), "nothing-here")
		return &workerv1.ApplyResponse{Error: errorToProto(err)}, nil
	case "slow":
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(len(r.GetValuesYaml())) * time.Millisecond):
		}
	}
	return &workerv1.ApplyResponse{Action: "unchanged", Manifest: fmt.Sprint(os.Getpid())}, nil
}

func newTestSupervisor(t *testing.T, mode string, mut func(*Config)) (*Supervisor, *cache.Cache) {
	t.Helper()
	c, err := cache.Open(filepath.Join(t.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Path = exe
	cfg.Env = append(os.Environ(), childEnv+"="+mode)
	cfg.Records = c
	cfg.Stderr = testWriter{t}
	cfg.MinBackoff, cfg.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	cfg.IdleTimeout = -1
	if mut != nil {
		mut(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("worker: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// apply calls the worker's Apply for a release named name.
func apply(ctx context.Context, s *Supervisor, name string, values []byte) (*workerv1.ApplyResponse, error) {
	var resp *workerv1.ApplyResponse
	err := s.Do(ctx, "apply "+name, func(ctx context.Context, c workerv1.EngineClient) error {
		var err error
		resp, err = c.Apply(ctx, &workerv1.ApplyRequest{Release: &workerv1.Release{Name: name, Namespace: "ns", ValuesYaml: values}})
		if err == nil {
			err = errorFromProto(resp.GetError())
		}
		return err
	})
	return resp, err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNoWorkerRunsBeforeTheFirstCall(t *testing.T) {
	s, _ := newTestSupervisor(t, "ok", nil)
	if st := s.Stats(); st.State != "stopped" || st.Starts != 0 {
		t.Fatalf("before any call: %+v, want stopped with 0 starts", st)
	}
	if _, err := apply(t.Context(), s, "a", nil); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.State != "running" || st.Starts != 1 || st.PID == 0 {
		t.Fatalf("after a call: %+v, want running, 1 start, a pid", st)
	}
}

func TestIdleWorkerIsStoppedAndStartedAgainOnDemand(t *testing.T) {
	s, _ := newTestSupervisor(t, "ok", func(c *Config) { c.IdleTimeout = 50 * time.Millisecond })
	r1, err := apply(t.Context(), s, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the idle worker to stop", func() bool { return s.Stats().State == "stopped" })
	r2, err := apply(t.Context(), s, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.Starts != 2 || st.Crashes != 0 {
		t.Fatalf("stats %+v: want 2 starts and no crash (an idle stop is not a crash)", st)
	}
	if r1.GetManifest() == r2.GetManifest() {
		t.Fatalf("both calls were served by pid %s; the second should have had a new worker", r1.GetManifest())
	}
}

func TestWorkerIsNotStoppedWhileACallRuns(t *testing.T) {
	s, _ := newTestSupervisor(t, "ok", func(c *Config) { c.IdleTimeout = 10 * time.Millisecond })
	// A call of 300 ms outlives the idle timeout many times over.
	if _, err := apply(t.Context(), s, "slow", make([]byte, 300)); err != nil {
		t.Fatalf("a call longer than the idle timeout failed: %v", err)
	}
	if st := s.Stats(); st.Starts != 1 {
		t.Fatalf("stats %+v: want 1 start", st)
	}
}

func TestCrashedWorkerIsReportedAndRestarted(t *testing.T) {
	s, _ := newTestSupervisor(t, "ok", nil)
	_, err := apply(t.Context(), s, "crash", nil)
	if err == nil {
		t.Fatal("a call whose worker died succeeded")
	}
	for _, want := range []string{"exited during apply crash", "exit status 3", "the chart broke the worker"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	waitFor(t, "the crash to be counted", func() bool { return s.Stats().Crashes == 1 })
	st := s.Stats()
	if !strings.Contains(st.LastCrash, "exit status 3") || st.LastCrashAt.IsZero() {
		t.Errorf("stats %+v: the crash is not reported", st)
	}
	if _, err := apply(t.Context(), s, "a", nil); err != nil {
		t.Fatalf("the call after a crash: %v", err)
	}
	if st := s.Stats(); st.Starts != 2 || st.State != "running" {
		t.Fatalf("stats %+v: want a restarted worker", st)
	}
}

func TestConcurrentCallsShareOneWorker(t *testing.T) {
	s, _ := newTestSupervisor(t, "ok", nil)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := apply(t.Context(), s, "slow", make([]byte, 20))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Starts != 1 {
		t.Fatalf("8 concurrent first calls started %d workers, want 1", st.Starts)
	}
}

func TestWorkerRecordsLandInTheAgentsCache(t *testing.T) {
	s, c := newTestSupervisor(t, "ok", nil)
	resp, err := apply(t.Context(), s, "record", nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRevision() != 1 {
		t.Fatalf("revision read back by the worker: %d, want 1", resp.GetRevision())
	}
	rec, err := c.ReleaseRecord("ns", "record")
	if err != nil {
		t.Fatalf("the agent's cache has no record the worker saved: %v", err)
	}
	if len(rec.Revisions) != 1 || rec.Revisions[0].Digest != "sha256:ab" {
		t.Fatalf("record %+v", rec)
	}
}

func TestErrorsKeepTheirKindAcrossTheProcessBoundary(t *testing.T) {
	s, c := newTestSupervisor(t, "ok", nil)
	_, err := apply(t.Context(), s, "bad-record", nil)
	if !errors.Is(err, cache.ErrInvalid) || !strings.Contains(err.Error(), "no digest") {
		t.Fatalf("invalid record from the worker: %v, want cache.ErrInvalid saying 'no digest'", err)
	}
	if _, err := c.ReleaseRecord("ns", "bad-record"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("an invalid record was stored: %v", err)
	}
	_, err = apply(t.Context(), s, "missing", nil)
	if !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("missing record: %v, want cache.ErrNotFound", err)
	}
}

func TestMissingWorkerBinaryIsAClearError(t *testing.T) {
	s, _ := newTestSupervisor(t, "ok", func(c *Config) { c.Path = filepath.Join(t.TempDir(), "tether-agent-helm") })
	_, err := apply(t.Context(), s, "a", nil)
	if err == nil || !strings.Contains(err.Error(), "start helm worker") || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("error %v: want it to say the worker binary could not start", err)
	}
	if st := s.Stats(); st.StartError == "" || st.State != "stopped" {
		t.Fatalf("stats %+v: the failed start is not reported", st)
	}
}

func TestEngineThatCannotBeBuiltFailsTheStartWithItsReason(t *testing.T) {
	s, _ := newTestSupervisor(t, "broken", nil)
	_, err := apply(t.Context(), s, "a", nil)
	if err == nil || !strings.Contains(err.Error(), `no cluster named "x"`) {
		t.Fatalf("error %v: want the engine's reason", err)
	}
	waitFor(t, "the broken worker to be reaped", func() bool { return s.Stats().State == "stopped" })
	if st := s.Stats(); st.Crashes != 0 || st.Starts != 0 {
		t.Fatalf("stats %+v: a failed start is neither a start nor a crash", st)
	}
}

func TestCloseStopsTheWorker(t *testing.T) {
	s, _ := newTestSupervisor(t, "ok", nil)
	resp, err := apply(t.Context(), s, "a", nil)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(resp.GetManifest(), &pid)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Fatalf("worker pid %d still exists after Close", pid)
	}
	if _, err := apply(t.Context(), s, "a", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
