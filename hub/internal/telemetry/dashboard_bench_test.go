package telemetry

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/storage"

	"github.com/tetherfleet/tether/deploy/grafana"
)

var (
	dashClusters = flag.Int("dash.clusters", 100, "clusters of data BenchmarkDashboardQueries loads")
	dashHours    = flag.Float64("dash.hours", 1, "hours of data per series, at 30 s, and the range every panel asks for")
)

// dashboardsDir is deploy/grafana/dashboards, from this package.
const dashboardsDir = "../../../deploy/grafana/dashboards"

// loadFleet appends hours of 30 s samples for n clusters of kube-state-
// metrics, kubelet and hub fleet series (3 nodes, 50 pods, 10 services
// each: about 600 series a cluster), ending at end.
func loadFleet(tb testing.TB, db storage.Appendable, n int, hours float64, end time.Time) int {
	tb.Helper()
	var sets []labels.Labels
	add := func(kv ...string) { sets = append(sets, labels.FromStrings(kv...)) }
	for c := range n {
		cl := fmt.Sprintf("edge-%03d", c)
		add("__name__", "tether_cluster_connected", "cluster", cl)
		add("__name__", "tether_cluster_last_seen_timestamp_seconds", "cluster", cl)
		add("__name__", "tether_agent_certificate_expiry_timestamp_seconds", "cluster", cl)
		add("__name__", "tether_outbox_dropped_total", "cluster", cl, "kind", "metrics")
		add("__name__", "up", "cluster", cl, "job", "apps/web", "instance", "10.0.0.1:9898")
		for s := range 10 {
			add("__name__", "tether_service_status", "cluster", cl, "namespace", "apps", "service", "svc-"+strconv.Itoa(s), "state", "Deployed")
		}
		for nd := range 3 {
			node := "node-" + strconv.Itoa(nd)
			add("__name__", "kube_node_info", "cluster", cl, "node", node)
			for _, r := range [][2]string{{"cpu", "core"}, {"memory", "byte"}, {"pods", "integer"}} {
				add("__name__", "kube_node_status_capacity", "cluster", cl, "node", node, "resource", r[0], "unit", r[1])
				add("__name__", "kube_node_status_allocatable", "cluster", cl, "node", node, "resource", r[0], "unit", r[1])
			}
			add("__name__", "node_cpu_usage_seconds_total", "cluster", cl, "node", node)
			add("__name__", "node_memory_working_set_bytes", "cluster", cl, "node", node)
		}
		for p := range 50 {
			ns, pod := "ns-"+strconv.Itoa(p%5), "pod-"+strconv.Itoa(p)
			add("__name__", "kube_pod_info", "cluster", cl, "namespace", ns, "pod", pod, "node", "node-"+strconv.Itoa(p%3))
			for _, ph := range []string{"Pending", "Running", "Succeeded", "Failed", "Unknown"} {
				add("__name__", "kube_pod_status_phase", "cluster", cl, "namespace", ns, "pod", pod, "phase", ph)
			}
			add("__name__", "kube_pod_container_resource_requests", "cluster", cl, "namespace", ns, "pod", pod, "container", "app", "resource", "cpu", "unit", "core")
			add("__name__", "kube_pod_container_resource_requests", "cluster", cl, "namespace", ns, "pod", pod, "container", "app", "resource", "memory", "unit", "byte")
			add("__name__", "kube_pod_container_status_restarts_total", "cluster", cl, "namespace", ns, "pod", pod, "container", "app")
			add("__name__", "container_cpu_usage_seconds_total", "cluster", cl, "namespace", ns, "pod", pod, "container", "app")
			add("__name__", "container_memory_working_set_bytes", "cluster", cl, "namespace", ns, "pod", pod, "container", "app")
		}
	}
	steps := int(hours * 120)
	start := end.Add(-time.Duration(steps) * 30 * time.Second)
	value := func(ls labels.Labels, i, k int) float64 {
		switch ls.Get("__name__") {
		case "kube_pod_status_phase":
			if ls.Get("phase") == "Running" {
				return 1
			}
			return 0
		case "node_cpu_usage_seconds_total", "container_cpu_usage_seconds_total":
			return float64(k) * 30 * 0.1 * float64(1+i%7)
		case "tether_cluster_last_seen_timestamp_seconds":
			return float64(start.Unix()) + float64(k*30)
		case "tether_agent_certificate_expiry_timestamp_seconds":
			return float64(end.Add(20 * 24 * time.Hour).Unix())
		}
		return float64(1 + i%13)
	}
	const perCommit = 20
	for k0 := 0; k0 < steps; k0 += perCommit {
		app := db.Appender(context.Background())
		for i, ls := range sets {
			var ref storage.SeriesRef
			for k := k0; k < min(steps, k0+perCommit); k++ {
				var err error
				if ref, err = app.Append(ref, ls, start.Add(time.Duration(k)*30*time.Second).UnixMilli(), value(ls, i, k)); err != nil {
					tb.Fatal(err)
				}
			}
		}
		if err := app.Commit(); err != nil {
			tb.Fatal(err)
		}
	}
	return len(sets)
}

// BenchmarkDashboardQueries runs every panel query of the shipped Grafana
// dashboards through the hub's Prometheus API handler (JSON encoding
// included, as Grafana sees it) over -dash.clusters clusters' data: a
// range query over -dash.hours at a 30 s step for time-series panels, an
// instant query for table/stat ones. One iteration is one refresh of all
// three dashboards (the cluster dashboards for one cluster; the services
// one for every cluster). It reports the slowest panel and each
// dashboard's total.
func BenchmarkDashboardQueries(b *testing.B) {
	dashboards, err := grafana.Load(dashboardsDir)
	if err != nil {
		b.Fatal(err)
	}
	db := openTestDB(b)
	end := time.Now().Truncate(30 * time.Second)
	series := loadFleet(b, db, *dashClusters, *dashHours, end)
	cfg := DefaultAPIConfig()
	cfg.DB, cfg.Now = db, func() time.Time { return end }
	a, err := NewAPI(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	run := func(d grafana.Dashboard, q grafana.Query) (time.Duration, int) {
		vars := grafana.Vars{Cluster: fmt.Sprintf("edge-%03d", *dashClusters/2), RateInterval: "2m", Interval: "30s", Range: "1h"}
		if d.File == "tether-services.json" {
			vars.Cluster = ".*" // its cluster variable is multi-value: All
		}
		expr := vars.Replace(q.Expr)
		v := url.Values{"query": {expr}}
		path := "/api/v1/query"
		if q.Instant {
			v.Set("time", strconv.FormatInt(end.Unix(), 10))
		} else {
			path = "/api/v1/query_range"
			v.Set("start", strconv.FormatInt(end.Add(-time.Duration(*dashHours*float64(time.Hour))).Unix(), 10))
			v.Set("end", strconv.FormatInt(end.Unix(), 10))
			v.Set("step", "30")
		}
		req := httptest.NewRequest(http.MethodGet, path+"?"+v.Encode(), nil)
		rec := httptest.NewRecorder()
		t0 := time.Now()
		a.ServeHTTP(rec, req)
		took := time.Since(t0)
		if rec.Code != http.StatusOK {
			b.Fatalf("%s / %s: %s: HTTP %d: %s", d.File, q.Panel, expr, rec.Code, rec.Body.String())
		}
		var resp struct {
			Data struct {
				Result []json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			b.Fatal(err)
		}
		return took, len(resp.Data.Result)
	}
	totals := map[string]time.Duration{}
	var panelTimes []time.Duration
	panels := 0
	for _, d := range dashboards {
		panels += len(d.Queries)
	}
	b.ResetTimer()
	for b.Loop() {
		for _, d := range dashboards {
			for _, q := range d.Queries {
				took, n := run(d, q)
				if n == 0 {
					b.Fatalf("%s / %s returned no data: %s", d.File, q.Panel, q.Expr)
				}
				totals[d.File] += took
				panelTimes = append(panelTimes, took)
			}
		}
	}
	b.StopTimer()
	slices.Sort(panelTimes)
	b.ReportMetric(float64(series), "series")
	b.ReportMetric(float64(panels), "panels")
	b.ReportMetric(float64(panelTimes[len(panelTimes)/2].Microseconds())/1000, "panel-p50-ms")
	b.ReportMetric(float64(panelTimes[len(panelTimes)-1].Microseconds())/1000, "panel-max-ms")
	for name, d := range totals {
		b.ReportMetric(float64(d.Microseconds())/1000/float64(b.N), strings.TrimSuffix(strings.TrimPrefix(name, "tether-"), ".json")+"-ms")
	}
}
