package e2etest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// Prometheus is a real Prometheus server, the binary e2e/tools/build.sh
// builds from the Prometheus module, on a loopback port with its
// remote-write receiver on.
type Prometheus struct {
	// URL is the server's base URL (http://127.0.0.1:PORT); remote write
	// goes to URL + "/api/v1/write".
	URL  string
	Addr string
	// Dir holds its TSDB, kept across Stop and Restart.
	Dir  string
	Proc *Proc
	bin  string
	args []string
}

// PrometheusOptions configure StartPrometheus.
type PrometheusOptions struct {
	// OutOfOrderWindow sets storage.tsdb.out_of_order_time_window, so the
	// receiver accepts samples older than its head (a hub's backlog).
	OutOfOrderWindow time.Duration
	// Backfill, OpenMetrics text ending in "# EOF", is written into the
	// TSDB as blocks by `promtool tsdb create-blocks-from openmetrics`
	// before the first start: known data to query.
	Backfill string
	// Args are extra command-line flags.
	Args []string
}

// PrometheusBinary returns the path of a binary (prometheus, promtool)
// in the harness binaries, failing the test if it is missing.
func PrometheusBinary(t testing.TB, name string) string {
	t.Helper()
	dir, err := cluster.BinDir("")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s: %v (build it: e2e/tools/build.sh prometheus promtool, or make e2e-bins)", name, err)
	}
	return p
}

// StartPrometheus starts Prometheus on a free loopback port with its data
// in a temporary directory and waits until it is ready.
func StartPrometheus(t testing.TB, opts PrometheusOptions) *Prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := "global:\n  scrape_interval: 1m\n"
	if opts.OutOfOrderWindow > 0 {
		cfg += fmt.Sprintf("storage:\n  tsdb:\n    out_of_order_time_window: %s\n", opts.OutOfOrderWindow)
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &Prometheus{Addr: FreeAddr(t), Dir: filepath.Join(dir, "data"), bin: PrometheusBinary(t, "prometheus")}
	p.URL = "http://" + p.Addr
	if opts.Backfill != "" {
		in := filepath.Join(dir, "backfill.om")
		if err := os.WriteFile(in, []byte(opts.Backfill), 0o600); err != nil {
			t.Fatal(err)
		}
		MustPromtool(t, "tsdb", "create-blocks-from", "openmetrics", "--quiet", in, p.Dir)
	}
	p.args = append([]string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + p.Dir,
		"--web.listen-address=" + p.Addr,
		"--web.enable-remote-write-receiver",
	}, opts.Args...)
	p.Restart(t)
	return p
}

// Stop stops Prometheus (SIGTERM) and waits for it to exit.
func (p *Prometheus) Stop(t testing.TB) {
	t.Helper()
	p.Proc.Stop(t)
}

// Restart starts Prometheus again on the same port and data (after Stop)
// and waits until it is ready.
func (p *Prometheus) Restart(t testing.TB) {
	t.Helper()
	p.Proc = StartProc(t, "prometheus", p.bin, nil, p.args...)
	Eventually(t, "prometheus ready", time.Minute, func() (bool, string) {
		resp, err := http.Get(p.URL + "/-/ready")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK, resp.Status + " " + string(b)
	})
}

// PromSeries is one series of a Prometheus query result: Value for an
// instant vector, Values for a range.
type PromSeries struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
	Values [][2]any          `json:"values"`
}

// Query runs an instant query at time at (zero: now) through the HTTP API
// and returns its vector.
func (p *Prometheus) Query(t testing.TB, expr string, at time.Time) []PromSeries {
	t.Helper()
	v := url.Values{"query": {expr}}
	if !at.IsZero() {
		v.Set("time", strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64))
	}
	resp, err := http.PostForm(p.URL+"/api/v1/query", v)
	if err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	defer resp.Body.Close()
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("query %s: decode: %v", expr, err)
	}
	if r.Status != "success" {
		t.Fatalf("query %s: %s: %s", expr, resp.Status, r.Error)
	}
	if r.Data.ResultType != "vector" {
		t.Fatalf("query %s: result type %s, want vector", expr, r.Data.ResultType)
	}
	var out []PromSeries
	if err := json.Unmarshal(r.Data.Result, &out); err != nil {
		t.Fatalf("query %s: decode result: %v", expr, err)
	}
	return out
}

// QueryValue runs an instant query whose result is one series and
// returns its value; ok is false for an empty result.
func (p *Prometheus) QueryValue(t testing.TB, expr string, at time.Time) (v float64, ok bool) {
	t.Helper()
	res := p.Query(t, expr, at)
	switch len(res) {
	case 0:
		return 0, false
	case 1:
		s, _ := res[0].Value[1].(string)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %s: value %v: %v", expr, res[0].Value[1], err)
		}
		return f, true
	}
	t.Fatalf("query %s: %d series, want at most 1", expr, len(res))
	return 0, false
}

// Promtool runs promtool (from the harness binaries) to completion.
func Promtool(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, PrometheusBinary(t, "promtool"), args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("promtool %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// MustPromtool runs promtool, which must succeed, and returns its stdout.
func MustPromtool(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, code := Promtool(t, args...)
	if code != 0 {
		t.Fatalf("promtool %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// PromtoolHTTPConfig writes a promtool --http.config.file that sends
// token as a bearer token and, with caPEM non-empty, trusts that CA
// (a hub's), and returns its path.
func PromtoolHTTPConfig(t testing.TB, token string, caPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	var b strings.Builder
	if token != "" {
		tokFile := filepath.Join(dir, "token")
		if err := os.WriteFile(tokFile, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "authorization:\n  type: Bearer\n  credentials_file: %q\n", tokFile)
	}
	if len(caPEM) > 0 {
		caFile := filepath.Join(dir, "ca.crt")
		if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "tls_config:\n  ca_file: %q\n", caFile)
	}
	path := filepath.Join(dir, "http.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
