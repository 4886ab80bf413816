package remotewrite

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

// hub is the part of a hub remote write needs: its TSDB and a Forwarder
// running over it, restartable on the same directories.
type hub struct {
	t      *testing.T
	dir    string
	cfg    Config
	db     *telemetry.DB
	f      *Forwarder
	cancel context.CancelFunc
	done   chan struct{}
}

func startHub(t *testing.T, dir string, cfg Config) *hub {
	t.Helper()
	h := &hub{t: t, dir: dir, cfg: cfg}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *hub) start() {
	h.t.Helper()
	db, err := telemetry.Open(telemetry.Options{Dir: filepath.Join(h.dir, "tsdb")})
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := h.cfg
	cfg.Dir = Dir(h.dir)
	f, err := New(cfg, db)
	if err != nil {
		db.Close()
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.db, h.f, h.cancel, h.done = db, f, cancel, make(chan struct{})
	go func() { defer close(h.done); _ = f.Run(ctx) }()
}

func (h *hub) stop() {
	if h.f == nil {
		return
	}
	h.cancel()
	<-h.done
	if err := h.f.Close(); err != nil {
		h.t.Error(err)
	}
	if err := h.db.Close(); err != nil {
		h.t.Error(err)
	}
	h.f = nil
}

// appendSamples appends n samples to each series, at step spacing from
// start, committing every 50 samples as a receiver does per batch.
func (h *hub) appendSamples(series []labels.Labels, start time.Time, step time.Duration, n int) {
	h.t.Helper()
	for i := 0; i < n; i += 50 {
		a := h.f.Appender(context.Background())
		for j := i; j < min(n, i+50); j++ {
			ts := start.Add(time.Duration(j) * step).UnixMilli()
			for k, l := range series {
				if _, err := a.Append(0, l, ts, float64(j*10+k)); err != nil {
					h.t.Fatal(err)
				}
			}
		}
		if err := a.Commit(); err != nil {
			h.t.Fatal(err)
		}
	}
}

func (h *hub) status() Status {
	st := h.f.Status()
	if len(st) != 1 {
		h.t.Fatalf("status of %d endpoints, want 1", len(st))
	}
	return st[0]
}

// authProxy fronts Prometheus' receiver as a store behind a bearer token
// would be, and checks every request speaks remote write 1.0.
func authProxy(t *testing.T, target, token string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // Prometheus down is expected
	var once sync.Once
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		want := map[string]string{
			"Authorization":                     "Bearer " + token,
			"Content-Encoding":                  "snappy",
			"Content-Type":                      "application/x-protobuf",
			"X-Prometheus-Remote-Write-Version": "0.1.0",
		}
		for k, v := range want {
			if got := r.Header.Get(k); got != v || r.Method != http.MethodPost {
				once.Do(func() { t.Errorf("%s %s: header %s = %q, want %q", r.Method, r.URL, k, got, v) })
				http.Error(w, "bad request", http.StatusUnauthorized)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})}
	addr := e2etest.FreeAddr(t)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "http://" + addr
}

// TestRealPrometheus: samples the hub stores reach a real Prometheus;
// while Prometheus is down the hub goes on storing, restarts itself, and
// once Prometheus is back every sample of the down period arrives (each
// series' count checked, so no gaps), through a bearer-token front that
// also checks the remote-write 1.0 headers.
func TestRealPrometheus(t *testing.T) {
	prom := e2etest.StartPrometheus(t, e2etest.PrometheusOptions{})
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	front := authProxy(t, prom.URL, "s3cret")

	cfg := DefaultConfig()
	cfg.Endpoints = []Endpoint{{Name: "prom", URL: front + "/api/v1/write", BearerTokenFile: tokFile, Timeout: 5 * time.Second}}
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, time.Second
	cfg.MaxSamplesPerSend = 500
	cfg.SegmentBytes = 16 << 10 // several segments, so release and rotation run
	cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h := startHub(t, t.TempDir(), cfg)

	series := []labels.Labels{
		labels.FromStrings("__name__", "rw_test", "cluster", "edge-1", "i", "0"),
		labels.FromStrings("__name__", "rw_test", "cluster", "edge-1", "i", "1"),
		labels.FromStrings("__name__", "rw_test", "cluster", "edge-2", "i", "0"),
	}
	start := time.Now().Add(-30 * time.Minute).Truncate(time.Second)
	const step = time.Second
	counts := func() map[string]float64 {
		m := map[string]float64{}
		for _, s := range prom.Query(t, `count_over_time(rw_test[2h])`, time.Time{}) {
			v, _ := s.Value[1].(string)
			var f float64
			fmt.Sscan(v, &f)
			m[s.Metric["cluster"]+"/"+s.Metric["i"]] = f
		}
		return m
	}
	waitCounts := func(want float64) {
		t.Helper()
		e2etest.Eventually(t, fmt.Sprintf("%v samples per series at Prometheus", want), 2*time.Minute, func() (bool, string) {
			c := counts()
			for _, l := range series {
				if c[l.Get("cluster")+"/"+l.Get("i")] != want {
					return false, fmt.Sprintf("counts %v, status %+v", c, h.status())
				}
			}
			return len(c) == len(series), ""
		})
		e2etest.Eventually(t, "empty queue", time.Minute, func() (bool, string) {
			st := h.status()
			return st.Pending == 0 && st.PendingBytes == 0, fmt.Sprintf("%+v", st)
		})
	}

	// 1. Up: 300 samples per series arrive.
	h.appendSamples(series, start, step, 300)
	waitCounts(300)

	// 2. Prometheus down: 300 more per series are stored and queued; the
	// hub keeps retrying.
	prom.Stop(t)
	h.appendSamples(series, start.Add(300*step), step, 300)
	e2etest.Eventually(t, "retries while Prometheus is down", time.Minute, func() (bool, string) {
		st := h.status()
		return st.Retries > 0 && st.LastError != "" && st.Pending > 0, fmt.Sprintf("%+v", st)
	})

	// 3. The hub restarts while Prometheus is still down, and stores 300
	// more per series.
	h.stop()
	h.start()
	if st := h.status(); st.Pending != 300*uint64(len(series)) {
		t.Errorf("after the hub's restart %d samples pending, want %d (the down period's): %+v", st.Pending, 300*len(series), st)
	}
	h.appendSamples(series, start.Add(600*step), step, 300)

	// 4. Prometheus back on the same port and data: everything arrives.
	prom.Restart(t)
	waitCounts(900)
	st := h.status()
	if st.Failed != 0 || st.Dropped != 0 || st.LastError != "" {
		t.Errorf("status after recovery: %+v, want no failed, dropped or last error", st)
	}
	// The first and last timestamps are the ones appended: no shift.
	if v, ok := prom.QueryValue(t, `min(timestamp(rw_test))`, start.Add(899*step)); !ok || int64(v) != start.Add(899*step).Unix() {
		t.Errorf("last timestamp at Prometheus %v (found %v), want %d", v, ok, start.Add(899*step).Unix())
	}
	// Sample 150 of the second call: values 1500+k for series k.
	if v, ok := prom.QueryValue(t, `sum(rw_test)`, start.Add(450*step)); !ok || v != 3*1500+0+1+2 {
		t.Errorf("sum in the middle of the down period %v (found %v), want %d", v, ok, 3*1500+3)
	}

	// 5. The queue released its sent segments.
	ents, _ := os.ReadDir(filepath.Join(Dir(h.dir), "segments"))
	if len(ents) > 1 {
		t.Errorf("%d segment files left after everything was sent, want 1", len(ents))
	}
}

// tWriter sends log lines to t.Log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// BenchmarkToPrometheus measures remote-write throughput to a real
// Prometheus on loopback: b.N samples over 1,000 series appended through
// the Forwarder in commits of 1,000, timed until Prometheus has accepted
// them all (samples/s). append-samples/s is the append path alone (DB
// plus queue), measured in the same run.
func BenchmarkToPrometheus(b *testing.B) {
	prom := e2etest.StartPrometheus(b, e2etest.PrometheusOptions{})
	db, err := telemetry.Open(telemetry.Options{Dir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultConfig()
	cfg.Dir = b.TempDir()
	cfg.Endpoints = []Endpoint{{Name: "prom", URL: prom.URL + "/api/v1/write"}}
	if v := os.Getenv("RW_BENCH_MAX_SAMPLES_PER_SEND"); v != "" {
		fmt.Sscan(v, &cfg.MaxSamplesPerSend)
	}
	f, err := New(cfg, db)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	const nSeries = 1000
	series := make([]labels.Labels, nSeries)
	for i := range series {
		series[i] = labels.FromStrings("__name__", "rw_bench", "cluster", fmt.Sprintf("edge-%d", i%50), "pod", fmt.Sprintf("pod-%d", i))
	}
	ts := time.Now().Add(-time.Hour).UnixMilli()
	b.ResetTimer()
	start := time.Now()
	for n := 0; n < b.N; {
		a := f.Appender(context.Background())
		for i := 0; i < nSeries && n < b.N; i, n = i+1, n+1 {
			if _, err := a.Append(0, series[i], ts, float64(n)); err != nil {
				b.Fatal(err)
			}
		}
		if err := a.Commit(); err != nil {
			b.Fatal(err)
		}
		ts++
	}
	appended := time.Since(start)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(5 * time.Minute)
	for st := f.Status()[0]; st.Pending > 0; st = f.Status()[0] {
		if time.Now().After(deadline) || st.Failed > 0 {
			b.Fatalf("queue not drained: %+v", st)
		}
		<-tick.C
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "samples/s")
	b.ReportMetric(float64(b.N)/appended.Seconds(), "append-samples/s")
}

// TestBacklogForwarded: an agent's backlog after an outage, older than the
// hub's head and than the hub's start (what Prometheus' WAL watcher would
// skip: an out-of-order sample goes to the WBL, and the watcher sends
// only samples newer than its own start), reaches a Prometheus that
// accepts out-of-order samples.
func TestBacklogForwarded(t *testing.T) {
	prom := e2etest.StartPrometheus(t, e2etest.PrometheusOptions{OutOfOrderWindow: 6 * time.Hour})
	cfg := DefaultConfig()
	cfg.Endpoints = []Endpoint{{Name: "prom", URL: prom.URL + "/api/v1/write"}}
	cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, time.Second
	h := startHub(t, t.TempDir(), cfg)

	live := []labels.Labels{labels.FromStrings("__name__", "rw_backlog", "cluster", "edge-live")}
	dark := []labels.Labels{labels.FromStrings("__name__", "rw_backlog", "cluster", "edge-dark")}
	now := time.Now().Truncate(time.Second)
	// Another cluster's live samples move the hub's head to now.
	h.appendSamples(live, now.Add(-time.Minute), time.Second, 60)
	// The dark cluster's backlog: 3 to 2 hours ago, then its newest
	// sample, then older ones again (out of order within the series).
	h.appendSamples(dark, now.Add(-3*time.Hour), time.Minute, 60)
	h.appendSamples(dark, now.Add(-30*time.Minute), time.Minute, 1)
	h.appendSamples(dark, now.Add(-2*time.Hour), time.Minute, 30)
	e2etest.Eventually(t, "backlog at Prometheus", 2*time.Minute, func() (bool, string) {
		v, ok := prom.QueryValue(t, `count_over_time(rw_backlog{cluster="edge-dark"}[4h])`, time.Time{})
		return ok && v == 91, fmt.Sprintf("count %v (found %v), status %+v", v, ok, h.status())
	})
	if st := h.status(); st.Failed != 0 {
		t.Errorf("status %+v: want nothing refused", st)
	}
}
