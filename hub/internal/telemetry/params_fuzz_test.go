package telemetry

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// FuzzQueryParams feeds the query parameters (times, durations, matchers,
// limits) to their parsers and to the API over an empty TSDB: no panic,
// parsed values within their bounds, and every answer Prometheus-shaped
// JSON with the status that matches its HTTP code.
func FuzzQueryParams(f *testing.F) {
	for _, s := range [][5]string{
		{"1700000000", "1700000600.5", "15", `up{job="x"}`, "10"},
		{"2023-11-14T22:13:20Z", "2023-11-14T22:23:20.123Z", "1m30s", `{__name__=~"node_.*",cluster!="a"}`, "0"},
		{promMinTime, promMaxTime, "1h", `kube_node_status_capacity`, ""},
		{"-1e300", "NaN", "-5", `{job=~".*"}`, "-1"},
		{"+Inf", "1e18", "1e-9", `up{`, "99999999999999999999"},
		{"", "", "0", "", "x"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4])
	}
	db := openTestDB(f)
	cfg := DefaultAPIConfig()
	cfg.DB, cfg.Now, cfg.Timeout = db, func() time.Time { return testNow }, 5*time.Second
	a, err := NewAPI(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { a.Close() })
	p := parser.NewParser(parser.Options{})
	f.Fuzz(func(t *testing.T, start, end, step, match, limit string) {
		for _, s := range []string{start, end} {
			if tm, err := parseTime(s); err == nil {
				if tm.Before(minTime) || tm.After(maxTime) {
					t.Fatalf("parseTime(%q) = %s, outside [%s, %s]", s, tm, minTime, maxTime)
				}
			}
		}
		_, _ = parseDuration(step)
		if n, err := parseLimit(limit); err == nil && n < 0 {
			t.Fatalf("parseLimit(%q) = %d", limit, n)
		}
		if sets, err := parseMatchers(p, []string{match}); err == nil && len(sets) != 1 {
			t.Fatalf("parseMatchers(%q) gave %d selectors", match, len(sets))
		}
		for _, path := range []string{"/api/v1/query_range", "/api/v1/series", "/api/v1/labels", "/api/v1/label/job/values"} {
			q := url.Values{"start": {start}, "end": {end}, "step": {step}, "match[]": {match}, "limit": {limit}, "query": {match}}
			rec := httptest.NewRecorder()
			a.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path+"?"+q.Encode(), nil))
			var resp struct {
				Status    string `json:"status"`
				ErrorType string `json:"errorType"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("%s %v: answer %q is not JSON", path, q, rec.Body)
			}
			if (rec.Code == http.StatusOK) != (resp.Status == "success") || rec.Code != http.StatusOK && resp.ErrorType == "" {
				t.Fatalf("%s %v: %d %s", path, q, rec.Code, rec.Body)
			}
		}
	})
}
