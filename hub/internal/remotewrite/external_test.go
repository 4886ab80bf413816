package remotewrite

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

// TestExternalLabels: every series a store receives carries the external
// labels, a series with its own value for one keeps it, the labels are
// sorted by name, and the TSDB keeps the series as appended. Both a
// request of one queue record and one merged from several are checked.
func TestExternalLabels(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string // every series received, as labels.Labels.String()
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req prompb.WriteRequest
		if err := decodePayload(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, ts := range req.Timeseries {
			if !slices.IsSortedFunc(ts.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
				t.Errorf("series labels not sorted by name: %v", ts.Labels)
			}
			b := labels.NewScratchBuilder(len(ts.Labels))
			for _, l := range ts.Labels {
				b.Add(l.Name, l.Value)
			}
			got = append(got, b.Labels().String())
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	db, err := telemetry.Open(telemetry.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Endpoints = []Endpoint{{Name: "store", URL: srv.URL + "/write"}}
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	// a_hub sorts between __name__ and cluster, zone after everything:
	// the merge inserts in the middle and at the end.
	cfg.ExternalLabels = labels.FromStrings("a_hub", "eu-1", "region", "eu", "zone", "z1")
	f, err := New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	now := time.Now().UnixMilli()
	appendOne := func(l labels.Labels, ts int64) {
		t.Helper()
		a := f.Appender(context.Background())
		if _, err := a.Append(0, l, ts, 1); err != nil {
			t.Fatal(err)
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	plain := labels.FromStrings("__name__", "m", "cluster", "edge-1")
	own := labels.FromStrings("__name__", "m", "cluster", "edge-2", "region", "us")
	// Two records before the sender runs: one merged request.
	appendOne(plain, now)
	appendOne(own, now)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	wait := func(n uint64) {
		t.Helper()
		e2etest.Eventually(t, "samples sent", 30*time.Second, func() (bool, string) {
			st := f.Status()[0]
			return st.Pending == 0 && st.Sent == n, fmtStatus(st)
		})
	}
	wait(2)
	// One record alone: the request is rebuilt with the labels too.
	appendOne(plain, now+1)
	wait(3)

	mu.Lock()
	defer mu.Unlock()
	wantPlain := `{__name__="m", a_hub="eu-1", cluster="edge-1", region="eu", zone="z1"}`
	wantOwn := `{__name__="m", a_hub="eu-1", cluster="edge-2", region="us", zone="z1"}`
	if want := []string{wantPlain, wantOwn, wantPlain}; !slices.Equal(got, want) {
		t.Errorf("store received series\n%q\nwant\n%q", got, want)
	}
	// The TSDB holds the series as appended.
	q, err := db.Querier(0, now+10)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	ss := q.Select(context.Background(), true, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "m"))
	var stored []string
	for ss.Next() {
		stored = append(stored, ss.At().Labels().String())
	}
	if want := []string{plain.String(), own.String()}; !slices.Equal(stored, want) {
		t.Errorf("TSDB holds %q, want %q (no external labels)", stored, want)
	}
}

func TestWithExternal(t *testing.T) {
	pl := func(kv ...string) []prompb.Label { return prompb.FromLabels(labels.FromStrings(kv...), nil) }
	for name, tc := range map[string]struct{ ls, ext, want []prompb.Label }{
		"none":        {pl("__name__", "m"), nil, pl("__name__", "m")},
		"interleaved": {pl("__name__", "m", "c", "1", "e", "2"), pl("b", "x", "d", "y", "f", "z"), pl("__name__", "m", "b", "x", "c", "1", "d", "y", "e", "2", "f", "z")},
		"own wins":    {pl("__name__", "m", "region", "us"), pl("region", "eu"), pl("__name__", "m", "region", "us")},
		"all before":  {pl("x", "1"), pl("a", "1", "b", "2"), pl("a", "1", "b", "2", "x", "1")},
	} {
		t.Run(name, func(t *testing.T) {
			if got := withExternal(tc.ls, tc.ext); !slices.EqualFunc(got, tc.want, func(a, b prompb.Label) bool { return a.Name == b.Name && a.Value == b.Value }) {
				t.Errorf("withExternal = %v, want %v", got, tc.want)
			}
		})
	}
}
