package scrape

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/model/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// sink collects emitted batches.
type sink struct {
	mu      sync.Mutex
	batches []*telemetryv1.MetricBatch
	fail    error
}

func (s *sink) emit(b *telemetryv1.MetricBatch) error {
	// The hub's own check: every emitted batch must pass it.
	if _, err := telemetryv1.Encode(b); err != nil {
		return fmt.Errorf("batch the hub would refuse: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	s.batches = append(s.batches, b)
	return nil
}

func (s *sink) all() []*telemetryv1.MetricBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*telemetryv1.MetricBatch(nil), s.batches...)
}

// find returns the last sample of the series with the given name whose
// labels include want.
func (s *sink) find(name string, want map[string]string) (*telemetryv1.Series, bool) {
	var found *telemetryv1.Series
	for _, b := range s.all() {
		for _, ser := range b.GetSeries() {
			if labelsOf(ser)["__name__"] != name {
				continue
			}
			ok := true
			for k, v := range want {
				ok = ok && labelsOf(ser)[k] == v
			}
			if ok {
				found = ser
			}
		}
	}
	return found, found != nil
}

func labelsOf(s *telemetryv1.Series) map[string]string {
	m := map[string]string{}
	for _, l := range s.GetLabels() {
		m[l.GetName()] = l.GetValue()
	}
	return m
}

// unusedKube is a real dynamic client of an address nothing listens on:
// tests of scraping alone never list.
func unusedKube(t *testing.T) dynamic.Interface {
	t.Helper()
	dc, err := dynamic.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	return dc
}

func newScraper(t *testing.T, cfg Config) (*Scraper, *sink) {
	t.Helper()
	sk := &sink{}
	cfg.Cluster = "edge-1"
	if cfg.Kube == nil {
		cfg.Kube = unusedKube(t)
	}
	cfg.Emit = sk.emit
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, sk
}

func wireConfig(name string, metricRelabel ...*fleetv1.RelabelConfig) *fleetv1.ScrapeConfig {
	return &fleetv1.ScrapeConfig{Namespace: "acme", Name: name, Path: "/metrics", Scheme: "http", IntervalSeconds: 1, TimeoutSeconds: 1, SampleLimit: 10000,
		Targets:              []*fleetv1.ScrapeTarget{{Kind: "Pod", Port: "metrics", LabelSelector: "app=web"}},
		MetricRelabelConfigs: metricRelabel}
}

func rule(action, regex string, src ...string) *fleetv1.RelabelConfig {
	return &fleetv1.RelabelConfig{SourceLabels: src, Separator: ";", Regex: regex, Replacement: "$1", Action: action}
}

// targetFor builds the target discovery would give a pod at addr.
func targetFor(t *testing.T, c *fleetv1.ScrapeConfig, addr string) *target {
	t.Helper()
	j, err := compileJob(c)
	if err != nil {
		t.Fatal(err)
	}
	tg := finishTarget(j, withJob(j, map[string]string{addressLabel: addr, "namespace": "web", "pod": "web-0", "container": "app"}), "edge-1")
	if tg == nil {
		t.Fatal("target dropped")
	}
	return tg
}

func exporter(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// registry is a real client_golang exporter.
func registry(t *testing.T) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "Requests served."}, []string{"code", "cluster"})
	c.WithLabelValues("200", "spoofed").Add(7)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "go_goroutines_fake", Help: "Dropped by relabelling."})
	g.Set(3)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "request_seconds", Help: "Latency.", Buckets: []float64{0.1, 1}})
	h.Observe(0.5)
	reg.MustRegister(c, g, h)
	return reg
}

// TestScrapeClientGolangExporterTextAndOpenMetrics scrapes a real
// client_golang registry in both formats and checks the labels
// Prometheus would give: target labels, exported_cluster for a scraped
// cluster label, cluster set by the agent, metric relabelling.
func TestScrapeClientGolangExporterTextAndOpenMetrics(t *testing.T) {
	reg := registry(t)
	for _, tc := range []struct {
		name   string
		opts   promhttp.HandlerOpts
		wantCT string
	}{
		{"text", promhttp.HandlerOpts{}, "text/plain"},
		{"openmetrics", promhttp.HandlerOpts{EnableOpenMetrics: true}, "application/openmetrics-text"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gotCT string
			var mu sync.Mutex
			h := promhttp.HandlerFor(reg, tc.opts)
			addr := exporter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				h.ServeHTTP(w, r)
				mu.Lock()
				gotCT = w.Header().Get("Content-Type")
				mu.Unlock()
			}))
			s, _ := newScraper(t, Config{})
			tg := targetFor(t, wireConfig("web", rule("drop", "go_.*", "__name__")), addr)
			res, err := s.scrape(t.Context(), tg, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			if !strings.HasPrefix(gotCT, tc.wantCT) {
				t.Fatalf("exporter answered %q, want %s", gotCT, tc.wantCT)
			}
			mu.Unlock()
			var req map[string]string
			for _, ser := range res.series {
				if l := labelsOf(ser); l["__name__"] == "http_requests_total" {
					req = l
				}
				if l := labelsOf(ser); strings.HasPrefix(l["__name__"], "go_") {
					t.Errorf("metric relabelling kept %v", l)
				}
			}
			want := map[string]string{"__name__": "http_requests_total", "code": "200", "cluster": "edge-1", "exported_cluster": "spoofed",
				"job": "acme/web", "instance": addr, "namespace": "web", "pod": "web-0", "container": "app"}
			if fmt.Sprint(req) != fmt.Sprint(want) {
				t.Fatalf("labels %v\nwant %v", req, want)
			}
			if res.kept == 0 || res.scraped <= res.kept {
				t.Fatalf("scraped %d, kept %d: relabelling should drop one", res.scraped, res.kept)
			}
			metaTypes := map[string]string{}
			for _, m := range res.metadata {
				metaTypes[m.GetMetric()] = m.GetType()
			}
			if metaTypes["request_seconds"] != "histogram" {
				t.Fatalf("metadata %v", metaTypes)
			}
		})
	}
}

// TestScrapeFailures: a hanging target is cut by its timeout, a huge body
// by the body limit, an HTTP error and a sample limit fail the scrape,
// each with a clear error.
func TestScrapeFailures(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hanging := exporter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(200)
		_, _ = w.Write([]byte("a 1\n"))
		w.(http.Flusher).Flush()
		select { // hangs in the middle of the body
		case <-r.Context().Done():
		case <-release:
		}
	}))
	huge := exporter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		line := []byte("huge_metric{i=\"" + strings.Repeat("x", 100) + "\"} 1\n")
		for i := 0; i < 20000; i++ {
			if _, err := w.Write(line); err != nil {
				return
			}
		}
	}))
	failing := exporter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }))
	many := exporter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		for i := 0; i < 50; i++ {
			fmt.Fprintf(w, "m{i=\"%d\"} 1\n", i)
		}
	}))
	s, _ := newScraper(t, Config{MaxBodyBytes: 1 << 20})
	limited := wireConfig("web")
	limited.SampleLimit = 10
	for _, tc := range []struct {
		name, addr string
		cfg        *fleetv1.ScrapeConfig
		want       string
	}{
		{"hanging", hanging, wireConfig("web"), "cut after its timeout of 1s"},
		{"huge", huge, wireConfig("web"), "response body is over the limit of 1048576 bytes"},
		{"http error", failing, wireConfig("web"), "server returned HTTP status 500"},
		{"sample limit", many, limited, "sample limit exceeded: more than 10 samples"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.scrape(t.Context(), targetFor(t, tc.cfg, tc.addr), time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	// Through a scrape loop: the target is down with that error, up=0,
	// and no sample of the failed scrape is kept.
	l := &loop{t: targetFor(t, limited, many)}
	s.scrapeAndBuffer(t.Context(), l)
	if l.status.Health != HealthDown || !strings.Contains(l.status.LastError, "sample limit exceeded") {
		t.Fatalf("status %+v", l.status)
	}
	names := map[string]float64{}
	for _, ser := range s.buffer {
		names[labelsOf(ser)["__name__"]] = ser.GetSamples()[0].GetValue()
	}
	if _, ok := names["m"]; ok || names["up"] != 0 || len(names) != 5 {
		t.Fatalf("buffered after a failed scrape: %v", names)
	}
}

// TestScrapeDropsSeriesIllegalOnTheWire: names the hub would refuse are
// dropped and counted, the rest kept.
func TestScrapeDropsSeriesIllegalOnTheWire(t *testing.T) {
	body := "ok_metric 1\n" +
		"{\"utf8.name\"} 2\n" + // a UTF-8 metric name (legal for Prometheus 3, not on the wire)
		"bad_label{\"a.b\"=\"x\"} 3\n" +
		"bad_value{a=\"" + strings.Repeat("v", telemetryv1.MaxLabelValueBytes+1) + "\"} 4\n" +
		"ok_metric 5\n" // duplicate
	res, err := parse(parseInput{body: []byte(body), contentType: "text/plain; version=0.0.4", sampleLimit: 100, defaultMs: 1000, cluster: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	if res.kept != 1 || res.invalid != 4 || res.scraped != 5 {
		t.Fatalf("kept %d invalid %d scraped %d", res.kept, res.invalid, res.scraped)
	}
	if got := labelsOf(res.series[0]); got["__name__"] != "ok_metric" || got["cluster"] != "edge-1" {
		t.Fatalf("kept %v", got)
	}
}

// TestScraperRunEmitsBatchesWithHealth runs the loop: batches reach the
// sink with up, the scrape_* series and every target's health; a config
// that cannot run is reported; Close-by-cancel returns.
func TestScraperRunEmitsBatchesWithHealth(t *testing.T) {
	up := exporter(t, promhttp.HandlerFor(registry(t), promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String()
	ln.Close() // nothing listens: connection refused

	s, sk := newScraper(t, Config{FlushInterval: 50 * time.Millisecond})
	cfg := wireConfig("web")
	bad := wireConfig("bad", &fleetv1.RelabelConfig{Action: "explode"})
	s.Update(&fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{cfg, bad}})
	// Discovery needs a cluster (see the e2e test); here the loops are
	// started from targets built as discovery builds them.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	s.startForTest(ctx, targetFor(t, cfg, up), targetFor(t, cfg, down))

	deadline := time.Now().Add(20 * time.Second)
	for {
		upSer, ok1 := sk.find("up", map[string]string{"instance": up})
		downSer, ok2 := sk.find("up", map[string]string{"instance": down})
		_, ok3 := sk.find("http_requests_total", map[string]string{"instance": up, "cluster": "edge-1"})
		_, ok4 := sk.find("scrape_duration_seconds", map[string]string{"instance": up})
		if ok1 && ok2 && ok3 && ok4 && upSer.GetSamples()[0].GetValue() == 1 && downSer.GetSamples()[0].GetValue() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("batches never showed both targets: %d batches", len(sk.all()))
		}
		time.Sleep(20 * time.Millisecond) // polling the sink, not waiting for time to pass
	}
	// The latest batch carries the health of every target and the bad config.
	bs := sk.all()
	health := map[string]*telemetryv1.TargetHealth{}
	for _, th := range bs[len(bs)-1].GetTargets() {
		health[th.GetJob()+" "+th.GetUrl()] = th
	}
	if h := health["acme/web http://"+up+"/metrics"]; h.GetHealth() != HealthUp || h.GetSamples() == 0 {
		t.Fatalf("up target health %v", h)
	}
	if h := health["acme/web http://"+down+"/metrics"]; h.GetHealth() != HealthDown || !strings.Contains(h.GetLastError(), "connection refused") {
		t.Fatalf("down target health %v", h)
	}
	if h := health["acme/bad "]; !strings.Contains(h.GetLastError(), `action "explode": unknown`) {
		t.Fatalf("bad config health %v", h)
	}
	// The discovery of this test's unreachable API server is reported
	// too, and the running targets stay.
	if h := health["acme/web "]; !strings.Contains(h.GetLastError(), "discovery: list pods in every namespace") {
		t.Fatalf("discovery failure health %v", h)
	}
	if ts := s.Targets(); len(ts) != 4 {
		t.Fatalf("Targets() = %+v", ts)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Batches the sink refuses are counted, not retried.
	sk.mu.Lock()
	sk.fail = errors.New("outbox full")
	sk.mu.Unlock()
	s.mu.Lock()
	s.dirty = true
	s.mu.Unlock()
	s.flush()
	if st := s.Stats(); st.EmitErrors == 0 || st.Scrapes == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// startForTest starts loops for targets as sync does after discovery.
func (s *Scraper) startForTest(ctx context.Context, ts ...*target) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range ts {
		k := t.key()
		lctx, cancel := context.WithCancel(ctx)
		var print string
		for _, js := range s.jobs {
			if js.name == t.job.name {
				print = js.print
			}
		}
		k += "\x00" + print
		l := s.newLoop(t, print, cancel)
		s.loops[k] = l
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.run(lctx, k, l)
		}()
	}
}

// TestMetricRelabellingCannotChangeCluster: a metric relabel rule that
// writes cluster does not move the series to another cluster (the hub
// would refuse the whole batch); it may keep the value elsewhere.
func TestMetricRelabellingCannotChangeCluster(t *testing.T) {
	j, err := compileJob(wireConfig("web",
		&fleetv1.RelabelConfig{SourceLabels: []string{"cluster"}, Separator: ";", Regex: "(.*)", TargetLabel: "origin", Replacement: "$1", Action: "replace"},
		&fleetv1.RelabelConfig{Separator: ";", Regex: "(.*)", TargetLabel: "cluster", Replacement: "elsewhere", Action: "replace"}))
	if err != nil {
		t.Fatal(err)
	}
	res, err := parse(parseInput{body: []byte("m{cluster=\"scraped\"} 1\n"), contentType: "text/plain", target: labels.FromStrings("cluster", "edge-1", "job", "acme/web"),
		relabel: j.metricRelabel, sampleLimit: 10, defaultMs: 1, cluster: "edge-1"})
	if err != nil {
		t.Fatal(err)
	}
	got := labelsOf(res.series[0])
	if got["cluster"] != "edge-1" || got["origin"] != "edge-1" || got["exported_cluster"] != "scraped" {
		t.Fatalf("labels %v", got)
	}
}

// TestScraperResendsMetadata: a family's metadata goes out with the first
// batch after it is scraped, not again while it is unchanged, and again
// once MetadataResendInterval has passed (a restarted hub has lost it).
// Every batch says its target list is whole.
func TestScraperResendsMetadata(t *testing.T) {
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, sk := newScraper(t, Config{Now: clock, MetadataResendInterval: 10 * time.Minute})
	cfg := wireConfig("web")
	s.Update(&fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{cfg}})
	tg := targetFor(t, cfg, exporter(t, promhttp.HandlerFor(registry(t), promhttp.HandlerOpts{})))
	l := &loop{t: tg, status: TargetStatus{Job: tg.job.name, URL: tg.url, Health: HealthUnknown}}
	s.mu.Lock()
	s.loops["test"] = l
	s.mu.Unlock()

	metaOf := func(b *telemetryv1.MetricBatch) string {
		for _, m := range b.GetMetadata() {
			if m.GetMetric() == "http_requests_total" {
				return m.GetHelp()
			}
		}
		return ""
	}
	round := func(advance time.Duration) *telemetryv1.MetricBatch {
		t.Helper()
		mu.Lock()
		now = now.Add(advance)
		mu.Unlock()
		n := len(sk.all())
		s.scrapeAndBuffer(t.Context(), l)
		s.flush()
		bs := sk.all()
		if len(bs) != n+1 {
			t.Fatalf("flush emitted %d batches, want 1", len(bs)-n)
		}
		b := bs[len(bs)-1]
		if !b.GetTargetsReported() || len(b.GetTargets()) != 1 {
			t.Fatalf("batch targets %v reported %v, want the one target, reported", b.GetTargets(), b.GetTargetsReported())
		}
		return b
	}
	if got := metaOf(round(0)); got != "Requests served." {
		t.Fatalf("first batch metadata help %q", got)
	}
	if got := metaOf(round(time.Minute)); got != "" {
		t.Fatalf("unchanged metadata sent again after a minute: %q", got)
	}
	// The interval passes: the next flush forgets what was sent, and the
	// scrape after it carries the metadata again.
	round(10 * time.Minute)
	if got := metaOf(round(time.Second)); got != "Requests served." {
		t.Fatalf("metadata not sent again after the resend interval: %q", got)
	}
	if got := metaOf(round(time.Second)); got != "" {
		t.Fatalf("metadata sent twice after the resend interval: %q", got)
	}
}
