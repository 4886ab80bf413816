package scrape

import (
	"context"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/prometheus/model/value"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/tetherfleet/tether/e2e/e2etest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

func isStale(v float64) bool { return math.Float64bits(v) == value.StaleNaN }

// markersIn returns the staleness markers of batches by metric name and
// pod label ("" for none), each with its timestamp; it fails on a series
// of a marker with more than one sample.
func markersIn(t *testing.T, bs []*telemetryv1.MetricBatch) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, b := range bs {
		for _, ser := range b.GetSeries() {
			for _, smp := range ser.GetSamples() {
				if !isStale(smp.GetValue()) {
					continue
				}
				l := labelsOf(ser)
				if l["cluster"] != "edge-1" || l["job"] != "acme/web" {
					t.Errorf("marker without the target's labels: %v", l)
				}
				out[l["__name__"]+"/"+l["pod_name"]] = smp.GetTimestampMs()
			}
		}
	}
	return out
}

// TestScrapeStalenessMarkers: a series that goes from the exporter gets a
// StaleNaN sample at the next scrape's time; a failed scrape marks every
// series but up and scrape_*; series with the exposition's timestamps are
// not tracked; the batches pass the hub's checks (the sink encodes them).
func TestScrapeStalenessMarkers(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kube_pod_info", Help: "Pods."}, []string{"pod_name"})
	g.WithLabelValues("web-0").Set(1)
	g.WithLabelValues("web-1").Set(1)
	reg.MustRegister(g)
	var fail, stamped atomic.Bool
	stamped.Store(true)
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{DisableCompression: true})
	addr := exporter(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fail.Load() {
			http.Error(w, "boom", 500)
			return
		}
		h.ServeHTTP(w, r)
		if stamped.Load() {
			_, _ = w.Write([]byte("with_timestamp 1 1700000000000\n"))
		}
	}))

	var mu sync.Mutex
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s, sk := newScraper(t, Config{Now: clock})
	cfg := wireConfig("web")
	tg := targetFor(t, cfg, addr)
	l := s.newLoop(tg, "", func() {})
	round := func() (map[string]int64, int64) {
		t.Helper()
		mu.Lock()
		now = now.Add(15 * time.Second)
		ms := now.UnixMilli()
		mu.Unlock()
		n := len(sk.all())
		s.scrapeAndBuffer(t.Context(), l)
		s.flush()
		return markersIn(t, sk.all()[n:]), ms
	}
	if m, _ := round(); len(m) != 0 || l.status.Health != HealthUp {
		t.Fatalf("first scrape has markers %v, status %+v", m, l.status)
	}
	// A pod goes; the exposition's timestamped series goes too, unmarked.
	g.DeleteLabelValues("web-1")
	stamped.Store(false)
	m, ms := round()
	if len(m) != 1 || m["kube_pod_info/web-1"] != ms {
		t.Fatalf("markers %v; want kube_pod_info{pod_name=web-1} at %d", m, ms)
	}
	if ser, ok := sk.find("kube_pod_info", map[string]string{"pod_name": "web-0"}); !ok || ser.GetSamples()[0].GetValue() != 1 {
		t.Fatalf("web-0 sample %v", ser)
	}
	if m, _ := round(); len(m) != 0 {
		t.Fatalf("nothing went, markers %v", m)
	}
	// A failed scrape: everything but the synthetic series is stale.
	fail.Store(true)
	m, ms = round()
	if len(m) != 1 || m["kube_pod_info/web-0"] != ms {
		t.Fatalf("failed scrape markers %v; want kube_pod_info{pod_name=web-0} only, at %d", m, ms)
	}
	if up, _ := sk.find("up", nil); up.GetSamples()[0].GetValue() != 0 {
		t.Fatalf("up %v", up)
	}
	fail.Store(false)
	if m, _ := round(); len(m) != 0 {
		t.Fatalf("recovered scrape markers %v", m)
	}
	if st := s.Stats(); st.StaleMarkers != 2 || st.UntrackedSeries != 0 {
		t.Fatalf("stats %+v; want 2 markers", st)
	}
}

// TestScrapeStalenessBound: past MaxStaleSeries a target's series are
// scraped but not tracked, and counted.
func TestScrapeStalenessBound(t *testing.T) {
	addr := exporter(t, promhttp.HandlerFor(registry(t), promhttp.HandlerOpts{}))
	s, _ := newScraper(t, Config{MaxStaleSeries: 3})
	l := s.newLoop(targetFor(t, wireConfig("web"), addr), "", func() {})
	s.scrapeAndBuffer(t.Context(), l)
	st := s.Stats()
	if l.stale.Len() != 3 || st.UntrackedSeries == 0 || int(st.UntrackedSeries)+3 != len(s.buffer) {
		t.Fatalf("tracked %d, stats %+v, buffered %d", l.stale.Len(), st, len(s.buffer))
	}
}

// TestScrapeStalenessOnRemovalNotOnShutdown: a target sync removes (its
// config went) has every series marked stale, up and scrape_* included;
// a scraper that stops marks nothing.
func TestScrapeStalenessOnRemovalNotOnShutdown(t *testing.T) {
	addr := exporter(t, promhttp.HandlerFor(registry(t), promhttp.HandlerOpts{}))
	for _, tc := range []struct {
		name   string
		remove bool
	}{{"removed", true}, {"shutdown", false}} {
		t.Run(tc.name, func(t *testing.T) {
			s, sk := newScraper(t, Config{FlushInterval: 20 * time.Millisecond})
			cfg := wireConfig("web")
			s.Update(&fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{cfg}})
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			s.startForTest(ctx, targetFor(t, cfg, addr))
			waitFor(t, "a scrape", func() bool { _, ok := sk.find("http_requests_total", nil); return ok })
			if tc.remove {
				s.Update(nil) // the config is gone: sync removes its target
				waitFor(t, "markers", func() bool { return len(markersIn(t, sk.all())) > 0 })
				m := markersIn(t, sk.all())
				for _, name := range []string{"http_requests_total/", "request_seconds_bucket/", "up/", "scrape_duration_seconds/", "scrape_samples_scraped/"} {
					if _, ok := m[name]; !ok {
						t.Errorf("no marker for %s: %v", name, m)
					}
				}
				if len(s.Targets()) != 0 {
					t.Errorf("targets %v after removal", s.Targets())
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if m := markersIn(t, sk.all()); !tc.remove && len(m) != 0 {
				t.Fatalf("markers at shutdown: %v", m)
			}
		})
	}
}

// waitFor waits until cond holds, for at most 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	e2etest.Eventually(t, what, 20*time.Second, func() (bool, string) { return cond(), "" })
}

// fakePod is a running pod at 127.0.0.1 whose container port "metrics"
// is addr's port, labelled app=web (wireConfig's selector).
func fakePod(t *testing.T, name, addr string) *unstructured.Unstructured {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(port)
	pod := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "web", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Ports: []corev1.ContainerPort{{Name: "metrics", ContainerPort: int32(n)}}}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1"},
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pod)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: obj}
}

// TestScrapeStalenessThroughSync runs discovery (a fake dynamic client's
// pods) and the loops: a config change that keeps the target keeps its
// series (no marker; a series the new config drops is marked at its
// first scrape), and a pod discovery no longer finds has all its series
// marked.
func TestScrapeStalenessThroughSync(t *testing.T) {
	addr := exporter(t, promhttp.HandlerFor(registry(t), promhttp.HandlerOpts{}))
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	kube := dynamicfake.NewSimpleDynamicClient(scheme, fakePod(t, "web-0", addr))
	s, sk := newScraper(t, Config{Kube: kube, FlushInterval: 20 * time.Millisecond})
	cfg := wireConfig("web")
	s.Update(&fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{cfg}})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "a scrape", func() bool { _, ok := sk.find("request_seconds_count", nil); return ok })

	// The config changes (metric relabelling drops request_seconds_*),
	// the target stays: one loop goes on with the old one's series.
	changed := wireConfig("web", rule("drop", "request_seconds.*", "__name__"))
	n := len(sk.all())
	s.Update(&fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{changed}})
	waitFor(t, "markers of the dropped series", func() bool { _, ok := markersIn(t, sk.all()[n:])["request_seconds_count/"]; return ok })
	for k := range markersIn(t, sk.all()[n:]) {
		if !strings.HasPrefix(k, "request_seconds") {
			t.Errorf("config change marked %s", k)
		}
	}
	if ts := s.Targets(); len(ts) != 1 {
		t.Fatalf("targets %+v", ts)
	}

	// The pod goes: every series of its target is marked.
	n = len(sk.all())
	if err := kube.Resource(podsGVR).Namespace("web").Delete(t.Context(), "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Update(&fleetv1.Telemetry{ScrapeConfigs: []*fleetv1.ScrapeConfig{changed}}) // sync now
	waitFor(t, "markers of the gone target", func() bool { _, ok := markersIn(t, sk.all()[n:])["up/"]; return ok })
	m := markersIn(t, sk.all()[n:])
	for _, k := range []string{"http_requests_total/", "up/", "scrape_samples_scraped/"} {
		if _, ok := m[k]; !ok {
			t.Errorf("no marker for %s: %v", k, m)
		}
	}
	if _, ok := m["request_seconds_count/"]; ok {
		t.Errorf("series marked twice: %v", m)
	}
}
