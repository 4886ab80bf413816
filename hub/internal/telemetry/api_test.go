package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// apiFixture is a TSDB holding two clusters' series, its receiver and the
// API over both.
type apiFixture struct {
	db  *DB
	rcv *Receiver
	api *API
}

func newAPIFixture(t *testing.T, mod func(*APIConfig)) *apiFixture {
	t.Helper()
	db := openTestDB(t)
	rcv := newTestReceiver(t, db)
	start := testNow.Add(-10 * time.Minute)
	for i, cluster := range []string{"edge-1", "edge-2"} {
		b := &telemetryv1.MetricBatch{
			Series: []*telemetryv1.Series{
				series("node_memory_working_set_bytes", start, 41, float64(1000*(i+1)), "node", "n1"),
				series("kube_node_status_capacity", start, 41, float64(4*(i+1)), "node", "n1", "resource", "cpu"),
			},
			Metadata: []*telemetryv1.MetricMetadata{{Metric: "node_memory_working_set_bytes", Type: "gauge", Help: "Working set of the node.", Unit: "bytes"}},
		}
		if err := rcv.ReceivePayload(context.Background(), cluster, 1, encode(t, b)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultAPIConfig()
	cfg.DB, cfg.Metadata, cfg.Now, cfg.Version = db, rcv, func() time.Time { return testNow }, "v0.0.0-test"
	if mod != nil {
		mod(&cfg)
	}
	a, err := NewAPI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return &apiFixture{db: db, rcv: rcv, api: a}
}

// promResponse is the envelope of every answer.
type promResponse struct {
	Status    string          `json:"status"`
	Data      json.RawMessage `json:"data"`
	ErrorType string          `json:"errorType"`
	Error     string          `json:"error"`
	Warnings  []string        `json:"warnings"`
}

// call sends method path with form (in the query for GET, as a form body
// for POST) and decodes the envelope, checking its content type.
func call(t *testing.T, h http.Handler, method, path string, form url.Values) (int, promResponse) {
	t.Helper()
	var req *http.Request
	if method == http.MethodPost {
		req = httptest.NewRequest(method, path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		u := path
		if len(form) > 0 {
			u += "?" + form.Encode()
		}
		req = httptest.NewRequest(method, u, nil)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	var resp promResponse
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("%s %s: answer %q is not JSON: %v", method, path, rec.Body, err)
	}
	switch {
	case rec.Code == http.StatusOK && (resp.Status != "success" || resp.ErrorType != ""):
		t.Errorf("%s %s: 200 with %s", method, path, rec.Body)
	case rec.Code != http.StatusOK && (resp.Status != "error" || resp.ErrorType == "" || resp.Error == ""):
		t.Errorf("%s %s: %d without an error body: %s", method, path, rec.Code, rec.Body)
	}
	return rec.Code, resp
}

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func unix(t time.Time) string { return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64) }

func TestAPIQuery(t *testing.T) {
	f := newAPIFixture(t, nil)
	at := testNow.Add(-10*time.Minute + 150*time.Second) // the 11th sample
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			code, resp := call(t, f.api, method, "/api/v1/query", form("query", `sum by (cluster) (node_memory_working_set_bytes)`, "time", unix(at)))
			if code != http.StatusOK {
				t.Fatalf("%d %s", code, resp.Error)
			}
			want := fmt.Sprintf(`{"resultType":"vector","result":[{"metric":{"cluster":"edge-1"},"value":[%s,"1010"]},{"metric":{"cluster":"edge-2"},"value":[%s,"2010"]}]}`, unix(at), unix(at))
			if string(resp.Data) != want {
				t.Errorf("data\n %s\nwant\n %s", resp.Data, want)
			}
		})
	}
	for _, tc := range []struct{ query, time, want string }{
		{"1+1", "1700000000.5", `{"resultType":"scalar","result":[1700000000.5,"2"]}`},
		{`"hello \"x\""`, "2023-11-14T22:13:20Z", `{"resultType":"string","result":[1700000000,"hello \"x\""]}`},
		{"1/0", "1700000000.123", `{"resultType":"scalar","result":[1700000000.123,"+Inf"]}`},
		{"vector(0)-1", "1700000000", `{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"-1"]}]}`},
	} {
		code, resp := call(t, f.api, http.MethodGet, "/api/v1/query", form("query", tc.query, "time", tc.time))
		if code != http.StatusOK || string(resp.Data) != tc.want {
			t.Errorf("%s at %s: %d %s %s, want %s", tc.query, tc.time, code, resp.Data, resp.Error, tc.want)
		}
	}
	// Without time: the hub's clock.
	code, resp := call(t, f.api, http.MethodGet, "/api/v1/query", form("query", "time()"))
	if want := fmt.Sprintf(`{"resultType":"scalar","result":[%d,"%d"]}`, testNow.Unix(), testNow.Unix()); code != http.StatusOK || string(resp.Data) != want {
		t.Errorf("time(): %s, want %s", resp.Data, want)
	}
}

func TestAPIQueryRange(t *testing.T) {
	f := newAPIFixture(t, nil)
	start := testNow.Add(-10 * time.Minute)
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		code, resp := call(t, f.api, method, "/api/v1/query_range", form(
			"query", `node_memory_working_set_bytes{cluster="edge-2"}`, "start", unix(start), "end", start.Add(time.Minute).Format(time.RFC3339), "step", "30s"))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", method, code, resp.Error)
		}
		s := start.Unix()
		want := fmt.Sprintf(`{"resultType":"matrix","result":[{"metric":{"__name__":"node_memory_working_set_bytes","cluster":"edge-2","node":"n1"},"values":[[%d,"2000"],[%d,"2002"],[%d,"2004"]]}]}`, s, s+30, s+60)
		if string(resp.Data) != want {
			t.Errorf("%s: data\n %s\nwant\n %s", method, resp.Data, want)
		}
	}
	// step in seconds, as Grafana sends it.
	if code, resp := call(t, f.api, http.MethodGet, "/api/v1/query_range", form("query", "up", "start", unix(start), "end", unix(testNow), "step", "15")); code != http.StatusOK {
		t.Errorf("step=15: %d %s", code, resp.Error)
	}
}

func TestAPIErrors(t *testing.T) {
	f := newAPIFixture(t, func(c *APIConfig) { c.MaxSamples = 20 })
	start := unix(testNow.Add(-time.Hour))
	for _, tc := range []struct {
		name, path string
		form       url.Values
		code       int
		typ, want  string
	}{
		{"parse error", "/api/v1/query", form("query", "sum(", "time", "1"), 400, "bad_data", `invalid parameter "query"`},
		{"empty query", "/api/v1/query", form("time", "1"), 400, "bad_data", "query must not be empty"},
		{"bad time", "/api/v1/query", form("query", "1", "time", "yesterday"), 400, "bad_data", `invalid parameter "time": cannot parse "yesterday" to a valid timestamp`},
		{"bad timeout", "/api/v1/query", form("query", "1", "timeout", "soon"), 400, "bad_data", `invalid parameter "timeout"`},
		{"too many samples", "/api/v1/query", form("query", "count_over_time(node_memory_working_set_bytes[1h])", "time", unix(testNow)), 422, "execution", "too many samples"},
		{"too many points", "/api/v1/query_range", form("query", "up", "start", "0", "end", "11001", "step", "1"), 400, "bad_data",
			"exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"},
		{"zero step", "/api/v1/query_range", form("query", "up", "start", start, "end", start, "step", "0"), 400, "bad_data", "zero or negative query resolution step"},
		{"end before start", "/api/v1/query_range", form("query", "up", "start", "100", "end", "99", "step", "1"), 400, "bad_data", "end timestamp must not be before start time"},
		{"no start", "/api/v1/query_range", form("query", "up", "end", "99", "step", "1"), 400, "bad_data", `invalid parameter "start"`},
		{"series without match", "/api/v1/series", nil, 400, "bad_data", "no match[] parameter provided"},
		{"series matching everything", "/api/v1/series", form("match[]", `{job=~".*"}`), 400, "bad_data", "at least one non-empty matcher"},
		{"bad matcher", "/api/v1/labels", form("match[]", `up{`), 400, "bad_data", "parse error"},
		{"bad limit", "/api/v1/labels", form("limit", "-1"), 400, "bad_data", "non-negative integer"},
		{"bad label name", "/api/v1/label/a-b/values", nil, 400, "bad_data", `invalid label name: "a-b"`},
		{"unknown endpoint", "/api/v1/status/tsdb", nil, 404, "not_found", "not served"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, resp := call(t, f.api, http.MethodGet, tc.path, tc.form)
			if code != tc.code || resp.ErrorType != tc.typ || !strings.Contains(resp.Error, tc.want) {
				t.Errorf("%d %s %q, want %d %s containing %q", code, resp.ErrorType, resp.Error, tc.code, tc.typ, tc.want)
			}
		})
	}
}

func TestAPISeriesLabelsMetadata(t *testing.T) {
	f := newAPIFixture(t, nil)
	check := func(name, path string, fm url.Values, want string) {
		t.Helper()
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			if path == "/api/v1/metadata" || path == "/api/v1/status/buildinfo" {
				if method == http.MethodPost {
					continue
				}
			}
			code, resp := call(t, f.api, method, path, fm)
			if code != http.StatusOK || string(resp.Data) != want {
				t.Errorf("%s (%s): %d %s %s\nwant %s", name, method, code, resp.Data, resp.Error, want)
			}
		}
	}
	check("series", "/api/v1/series", form("match[]", `kube_node_status_capacity`, "match[]", `{__name__="node_memory_working_set_bytes",cluster="edge-1"}`),
		`[{"__name__":"kube_node_status_capacity","cluster":"edge-1","node":"n1","resource":"cpu"},`+
			`{"__name__":"kube_node_status_capacity","cluster":"edge-2","node":"n1","resource":"cpu"},`+
			`{"__name__":"node_memory_working_set_bytes","cluster":"edge-1","node":"n1"}]`)
	check("series in a time range with no data", "/api/v1/series", form("match[]", "kube_node_status_capacity", "start", "0", "end", "1"), `[]`)
	check("labels", "/api/v1/labels", nil, `["__name__","cluster","node","resource"]`)
	check("labels of a selector", "/api/v1/labels", form("match[]", "node_memory_working_set_bytes"), `["__name__","cluster","node"]`)
	check("label values", "/api/v1/label/cluster/values", nil, `["edge-1","edge-2"]`)
	check("metric names", "/api/v1/label/__name__/values", form("match[]", `{cluster="edge-1"}`), `["kube_node_status_capacity","node_memory_working_set_bytes"]`)
	check("values of an unknown label", "/api/v1/label/nope/values", nil, `[]`)
	check("metadata", "/api/v1/metadata", nil, `{"node_memory_working_set_bytes":[{"type":"gauge","help":"Working set of the node.","unit":"bytes"}]}`)
	check("metadata of one metric", "/api/v1/metadata", form("metric", "nope"), `{}`)
	check("exemplars", "/api/v1/query_exemplars", form("query", "up", "start", "0", "end", "1"), `[]`)
	check("format_query", "/api/v1/format_query", form("query", "sum(rate(x[5m]))by(job)"), `"sum by (job) (rate(x[5m]))"`)

	code, resp := call(t, f.api, http.MethodGet, "/api/v1/label/cluster/values", form("limit", "1"))
	if code != http.StatusOK || string(resp.Data) != `["edge-1"]` || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "truncated") {
		t.Errorf("label values with limit 1: %s %v", resp.Data, resp.Warnings)
	}
	code, resp = call(t, f.api, http.MethodGet, "/api/v1/status/buildinfo", nil)
	var bi BuildInfo
	if err := json.Unmarshal(resp.Data, &bi); code != http.StatusOK || err != nil || bi.Version != PrometheusVersion || bi.GoVersion == "" || bi.Revision != "tether-v0.0.0-test" {
		t.Errorf("buildinfo: %d %s (%v)", code, resp.Data, err)
	}
}

func TestAppendTime(t *testing.T) {
	for ms, want := range map[int64]string{0: "0", 1500: "1.5", 1435781451781: "1435781451.781", 1000010: "1000.01", -1500: "-1.5", 5: "0.005"} {
		var b bytes.Buffer
		appendTime(&b, ms)
		if b.String() != want {
			t.Errorf("appendTime(%d) = %s, want %s", ms, b.String(), want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "ctl\x00\x1f\n\t\r", "utf8 é ✓", "bad \xff utf8"} {
		var b bytes.Buffer
		appendString(&b, s)
		var got string
		if err := json.Unmarshal(b.Bytes(), &got); err != nil {
			t.Fatalf("appendString(%q) = %s: %v", s, b.Bytes(), err)
		}
		want, _ := json.Marshal(s)
		var w string
		_ = json.Unmarshal(want, &w)
		if got != w {
			t.Errorf("appendString(%q) decodes to %q, want %q", s, got, w)
		}
	}
}

// TestAPIQuerySlots: with every query slot taken, a query waits until its
// timeout and answers Prometheus' timeout error; once a slot is free it
// runs.
func TestAPIQuerySlots(t *testing.T) {
	f := newAPIFixture(t, func(c *APIConfig) { c.MaxConcurrent = 1 })
	f.api.slots <- struct{}{}
	code, resp := call(t, f.api, http.MethodGet, "/api/v1/query", form("query", "1+1", "timeout", "0.05"))
	if code != http.StatusServiceUnavailable || resp.ErrorType != "timeout" || !strings.Contains(resp.Error, "query slots") {
		t.Errorf("all slots taken: %d %s %q, want 503 timeout", code, resp.ErrorType, resp.Error)
	}
	<-f.api.slots
	if code, resp := call(t, f.api, http.MethodGet, "/api/v1/query", form("query", "1+1")); code != http.StatusOK {
		t.Errorf("slot free: %d %s", code, resp.Error)
	}
}
