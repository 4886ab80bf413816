package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/hub/internal/server"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// startMetricsHub starts a hub and stores, through its metrics receiver,
// five minutes of node usage and capacity of edge-1 (0.5 of 2 cores, 1 of
// 4 GiB) and edge-2 (1.5 of 4 cores, 3 of 4 GiB).
func startMetricsHub(t *testing.T) string {
	t.Helper()
	cfg := server.DefaultConfig()
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.AgentAddr, cfg.APIAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Out = &bytes.Buffer{}
	ctx, cancel := context.WithCancel(context.Background())
	h, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub Run: %v", err)
			}
		})
	})
	end := time.Now().Add(-time.Second)
	for i, c := range []struct {
		name              string
		cores, capCores   float64
		memGiB, capMemGiB float64
	}{{"edge-1", 0.5, 2, 1, 4}, {"edge-2", 1.5, 4, 3, 4}} {
		b := &telemetryv1.MetricBatch{}
		add := func(name string, v func(k int) float64, kv ...string) {
			s := &telemetryv1.Series{Labels: []*telemetryv1.Label{{Name: "__name__", Value: name}, {Name: "node", Value: "n1"}}}
			for j := 0; j+1 < len(kv); j += 2 {
				s.Labels = append(s.Labels, &telemetryv1.Label{Name: kv[j], Value: kv[j+1]})
			}
			for k := 0; k <= 20; k++ {
				s.Samples = append(s.Samples, &telemetryv1.Sample{TimestampMs: end.Add(time.Duration(k-20) * 15 * time.Second).UnixMilli(), Value: v(k)})
			}
			b.Series = append(b.Series, s)
		}
		add("node_cpu_usage_seconds_total", func(k int) float64 { return 1000 + c.cores*15*float64(k) })
		add("node_memory_working_set_bytes", func(int) float64 { return c.memGiB * (1 << 30) })
		add("kube_node_status_capacity", func(int) float64 { return c.capCores }, "resource", "cpu", "unit", "core")
		add("kube_node_status_capacity", func(int) float64 { return c.capMemGiB * (1 << 30) }, "resource", "memory", "unit", "byte")
		data, err := telemetryv1.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Metrics().ReceivePayload(ctx, c.name, uint64(i+1), data); err != nil {
			t.Fatal(err)
		}
	}
	return h.AdminConfig()
}

func TestQueryCommands(t *testing.T) {
	cfg := startMetricsHub(t)
	out := mustRun(t, "", "--config", cfg, "query", `sum by (cluster) (node_memory_working_set_bytes)`)
	if !regexp.MustCompile(`(?m)^METRIC\s+VALUE\s+TIME\n\{cluster="edge-1"\}\s+1073741824\s+\S+\n\{cluster="edge-2"\}\s+3221225472\s`).MatchString(out) {
		t.Errorf("query table:\n%s", out)
	}
	out = mustRun(t, "", "--config", cfg, "query", `kube_node_status_capacity{cluster="edge-1",resource="cpu"}`, "--time", "now", "-o", "json")
	var res struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.ResultType != "vector" || len(res.Result) != 1 || res.Result[0].Value[1] != "2" || res.Result[0].Metric["node"] != "n1" {
		t.Errorf("query -o json: %v\n%s", err, out)
	}
	out = mustRun(t, "", "--config", cfg, "query", "1+1", "-o", "yaml")
	if !strings.Contains(out, "resultType: scalar") || !strings.Contains(out, `- "2"`) {
		t.Errorf("query -o yaml:\n%s", out)
	}
	out = mustRun(t, "", "--config", cfg, "query-range", `node_memory_working_set_bytes{cluster="edge-2"}`, "--start", "-2m", "--end", "-1m", "--step", "30s")
	if n := strings.Count(out, "3221225472"); n != 3 {
		t.Errorf("query-range over 1m every 30s: %d rows, want 3:\n%s", n, out)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"query"}, exitUsage, "one PromQL expression"},
		{[]string{"query", "up", "--time", "yesterday"}, exitUsage, `--time "yesterday"`},
		{[]string{"query", "up", "-o", "wide"}, exitUsage, "--output"},
		{[]string{"query", "sum("}, exitError, `invalid parameter "query"`},
		{[]string{"query-range", "up", "--start", "-1h", "--end", "-2h"}, exitUsage, "before --start"},
		{[]string{"query-range", "up", "--start", "0", "--end", "20000", "--step", "1s"}, exitError, "exceeded maximum resolution of 11,000 points"},
		{[]string{"top", "clusters", "--sort-by", "disk"}, exitUsage, "--sort-by"},
	} {
		code, _, errs := run(t, "", append([]string{"--config", cfg}, tc.args...)...)
		if code != tc.code || !strings.Contains(errs, tc.want) {
			t.Errorf("tether %s: exit %d, stderr %q; want %d with %q", strings.Join(tc.args, " "), code, errs, tc.code, tc.want)
		}
	}
}

func TestTopClusters(t *testing.T) {
	cfg := startMetricsHub(t)
	out := mustRun(t, "", "--config", cfg, "top", "clusters", "--sort-by", "cpu")
	want := regexp.MustCompile(`(?m)^CLUSTER\s+CPU\(cores\)\s+CPU\(%\)\s+MEMORY\(bytes\)\s+MEMORY\(%\)\nedge-2\s+1500m\s+37%\s+3072Mi\s+75%\nedge-1\s+500m\s+25%\s+1024Mi\s+25%\n$`)
	if !want.MatchString(out) {
		t.Errorf("top clusters:\n%s", out)
	}
	var rows []ClusterUsage
	if err := json.Unmarshal([]byte(mustRun(t, "", "--config", cfg, "top", "clusters", "-o", "json")), &rows); err != nil || len(rows) != 2 || rows[0].Cluster != "edge-1" || rows[0].MemoryCapacityBytes == nil || *rows[0].MemoryCapacityBytes != 4<<30 {
		t.Errorf("top clusters -o json: %+v, %v", rows, err)
	}
}

func TestByteSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512MB": 512e6, "10GiB": 10 << 30, "1tb": 1e12, "42": 42} {
		var v int64
		if err := (byteSize{&v}).Set(in); err != nil || v != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, v, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1XB", "GB", "99999999999TB"} {
		var v int64
		if err := (byteSize{&v}).Set(in); err == nil {
			t.Errorf("Set(%q) = %d, want an error", in, v)
		}
	}
}

func TestDescribeTargets(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	describeTargets(&b, []telemetry.Target{{Job: "podinfo", URL: "http://10.0.0.5:9898/metrics", Health: "down", LastError: "connection refused", LastScrape: now.Add(-30 * time.Second), LastDuration: 12 * time.Millisecond, Samples: 0}}, now)
	if !regexp.MustCompile(`Scrape targets:\nJOB\s+URL\s+HEALTH\s+LAST SCRAPE\s+DURATION\s+SAMPLES\s+ERROR\npodinfo\s+http://10.0.0.5:9898/metrics\s+down\s+30s\s+12ms\s+0\s+connection refused\n`).MatchString(b.String()) {
		t.Errorf("describe targets:\n%s", b.String())
	}
	b.Reset()
	describeTargets(&b, nil, now)
	if b.Len() != 0 {
		t.Errorf("no targets printed %q", b.String())
	}
}
