// Package telemetry is the end-to-end scenario of a site's metrics: a
// real hub and a real agent on a harness cluster (hub_test.go:
// inventory, usage, a scraped exporter, promtool, an alert to a webhook
// and mail, remote write, every Grafana dashboard query, a hub outage),
// and promtool against a Prometheus-compatible API behind a bearer token
// and TLS (this file: a real Prometheus fronted that way, with backfilled
// data).
package telemetry

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/e2etest"
)

// backfill is an hour of two gauges at one-minute steps from t0: edge-1
// has value i at minute i, edge-2 100+i.
func backfill(t0 time.Time) string {
	var b strings.Builder
	b.WriteString("# HELP tether_e2e_cpu Test gauge.\n# TYPE tether_e2e_cpu gauge\n")
	for _, c := range []struct {
		name string
		base int
	}{{"edge-1", 0}, {"edge-2", 100}} {
		for i := 0; i <= 60; i++ {
			fmt.Fprintf(&b, "tether_e2e_cpu{cluster=%q} %d %d\n", c.name, c.base+i, t0.Add(time.Duration(i)*time.Minute).Unix())
		}
	}
	b.WriteString("# EOF\n")
	return b.String()
}

// bearerTLSFront serves target over TLS and lets through only requests
// with the bearer token, as the hub's console API does.
func bearerTLSFront(t *testing.T, target, token string) (srvURL string, caPEM []byte) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, `{"status":"error","errorType":"unauthorized","error":"bearer token required"}`, http.StatusUnauthorized)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// vectorSample and matrixSeries are promtool's -o json shapes (the
// Prometheus client's model.Vector and model.Matrix).
type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

type matrixSeries struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values"`
}

func num(t *testing.T, v any) float64 {
	t.Helper()
	s, _ := v.(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("value %v: %v", v, err)
	}
	return f
}

// queryAll runs promtool's instant and range queries against server with
// the http config and checks the backfilled data comes back.
func queryAll(t *testing.T, server, httpConfig string, t0 time.Time) {
	t.Helper()
	at := t0.Add(30 * time.Minute)
	out := e2etest.MustPromtool(t, "query", "instant", "--http.config.file="+httpConfig, "-o", "json",
		"--time="+at.Format(time.RFC3339), server, `tether_e2e_cpu`)
	var vec []vectorSample
	if err := json.Unmarshal([]byte(out), &vec); err != nil {
		t.Fatalf("promtool query instant: %v\n%s", err, out)
	}
	got := map[string]float64{}
	for _, s := range vec {
		got[s.Metric["cluster"]] = num(t, s.Value[1])
	}
	if len(got) != 2 || got["edge-1"] != 30 || got["edge-2"] != 130 {
		t.Errorf("promtool query instant at minute 30: %v, want edge-1 30, edge-2 130", got)
	}
	// The promql format, as an operator reads it.
	out = e2etest.MustPromtool(t, "query", "instant", "--http.config.file="+httpConfig,
		"--time="+at.Format(time.RFC3339), server, `sum(tether_e2e_cpu)`)
	if !strings.HasPrefix(out, "{} => 160 @[") {
		t.Errorf("promtool query instant sum: %q, want {} => 160 @[...]", out)
	}

	out = e2etest.MustPromtool(t, "query", "range", "--http.config.file="+httpConfig, "-o", "json",
		"--start="+strconv.FormatInt(t0.Unix(), 10), "--end="+strconv.FormatInt(t0.Add(time.Hour).Unix(), 10), "--step=1m",
		server, `sum(tether_e2e_cpu)`)
	var mat []matrixSeries
	if err := json.Unmarshal([]byte(out), &mat); err != nil {
		t.Fatalf("promtool query range: %v\n%s", err, out)
	}
	if len(mat) != 1 || len(mat[0].Values) != 61 {
		t.Fatalf("promtool query range: %d series (%v), want 1 of 61 points", len(mat), mat)
	}
	for i, p := range mat[0].Values {
		if v := num(t, p[1]); v != float64(100+2*i) {
			t.Errorf("range point %d: %v, want %d", i, v, 100+2*i)
		}
	}
}

// TestPromtoolBearerTLS: promtool with an http.config.file (bearer token
// from a file, the server's CA) runs instant and range queries and gets
// the known data; without the token it fails with the 401.
func TestPromtoolBearerTLS(t *testing.T) {
	t0 := time.Now().Add(-4 * time.Hour).Truncate(time.Hour)
	prom := e2etest.StartPrometheus(t, e2etest.PrometheusOptions{Backfill: backfill(t0)})
	server, ca := bearerTLSFront(t, prom.URL, "viewer-token")

	queryAll(t, server, e2etest.PromtoolHTTPConfig(t, "viewer-token", ca), t0)

	_, errOut, code := e2etest.Promtool(t, "query", "instant", "--http.config.file="+e2etest.PromtoolHTTPConfig(t, "wrong", ca), server, `up`)
	if code == 0 || !strings.Contains(errOut, "401") && !strings.Contains(errOut, "unauthorized") {
		t.Errorf("promtool with a wrong token: exit %d, stderr %q; want a failure naming the 401", code, errOut)
	}
}
