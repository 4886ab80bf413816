package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// PromResponse is a successful answer of the hub's Prometheus HTTP API.
type PromResponse struct {
	Status   string   `json:"status"`
	Data     PromData `json:"data"`
	Warnings []string `json:"warnings,omitempty"`
	Infos    []string `json:"infos,omitempty"`
}

// PromData is a query's result: vector, matrix, scalar or string, as
// Prometheus encodes it.
type PromData struct {
	ResultType string          `json:"resultType"`
	Result     json.RawMessage `json:"result"`
}

func promTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.UnixMilli())/1000, 'f', -1, 64)
}

// PromQuery evaluates expr at t (zero: the hub's now).
func (c *Client) PromQuery(ctx context.Context, expr string, t time.Time) (PromResponse, error) {
	f := url.Values{"query": {expr}}
	if !t.IsZero() {
		f.Set("time", promTime(t))
	}
	var out PromResponse
	return out, c.doRaw(ctx, http.MethodPost, "/api/v1/query", "application/x-www-form-urlencoded", []byte(f.Encode()), &out)
}

// PromQueryRange evaluates expr over [start, end] every step.
func (c *Client) PromQueryRange(ctx context.Context, expr string, start, end time.Time, step time.Duration) (PromResponse, error) {
	f := url.Values{"query": {expr}, "start": {promTime(start)}, "end": {promTime(end)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}
	var out PromResponse
	return out, c.doRaw(ctx, http.MethodPost, "/api/v1/query_range", "application/x-www-form-urlencoded", []byte(f.Encode()), &out)
}
