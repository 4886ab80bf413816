package remotewrite

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/prompb"
	"github.com/prometheus/prometheus/tsdb/chunkenc"

	"github.com/tetherfleet/tether/e2e/e2etest"
	"github.com/tetherfleet/tether/hub/internal/telemetry"
)

func payload(t testing.TB, ts ...int64) []byte {
	t.Helper()
	s := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "m"}}}
	for _, x := range ts {
		s.Samples = append(s.Samples, prompb.Sample{Timestamp: x, Value: float64(x)})
	}
	raw, err := (&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{s}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return snappy.Encode(nil, raw)
}

func readAll(t *testing.T, q *queue, p position) ([]record, uint64) {
	t.Helper()
	recs, dropped, err := q.read(p, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return recs, dropped
}

// TestQueueTornTail: a record cut short by a crash is cut off on open; the
// records before it are intact and appends go on after them.
func TestQueueTornTail(t *testing.T) {
	dir := t.TempDir()
	q, err := openQueue(dir, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := q.append(payload(t, int64(i)), 1); err != nil {
			t.Fatal(err)
		}
	}
	q.close()
	full := encodeRecord(3, 1, payload(t, 3))
	f, err := os.OpenFile(q.segPath(1), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(full[:len(full)-3])
	f.Close()

	q, err = openQueue(dir, 1<<20, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if q.next != 3 {
		t.Fatalf("next seq after reopen %d, want 3", q.next)
	}
	if err := q.append(payload(t, 3), 1); err != nil {
		t.Fatal(err)
	}
	recs, _ := readAll(t, q, position{seg: 1})
	if len(recs) != 4 {
		t.Fatalf("%d records, want 4", len(recs))
	}
	for i, r := range recs {
		var req prompb.WriteRequest
		if err := decodePayload(r.payload, &req); err != nil {
			t.Fatal(err)
		}
		if r.seq != uint64(i) || req.Timeseries[0].Samples[0].Timestamp != int64(i) {
			t.Errorf("record %d: seq %d, sample %+v", i, r.seq, req.Timeseries[0].Samples)
		}
	}
}

// TestQueueReopenAfterRelease: when every record was sent and released,
// numbering goes on from the cursors after a restart, so the cursor is not
// past the end and later samples are not skipped.
func TestQueueReopenAfterRelease(t *testing.T) {
	dir := t.TempDir()
	q, err := openQueue(dir, 64, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if err := q.append(payload(t, int64(i), int64(i)+100), 2); err != nil {
			t.Fatal(err)
		}
	}
	end := q.end()
	if err := writeCursor(q.cursorPath("a"), end); err != nil {
		t.Fatal(err)
	}
	q.release([]position{end})
	q.close()
	// The last segment had records; remove it as a crash after rotation
	// and release would leave only an empty one.
	os.Remove(q.segPath(end.seg))

	q, err = openQueue(dir, 64, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	if q.next != 8 {
		t.Fatalf("next seq %d after reopen, want 8 (from the cursor)", q.next)
	}
	if err := q.append(payload(t, 9), 1); err != nil {
		t.Fatal(err)
	}
	p, err := readCursor(q.cursorPath("a"))
	if err != nil {
		t.Fatal(err)
	}
	recs, dropped := readAll(t, q, p)
	if dropped != 0 || len(recs) != 1 || recs[0].seq != 8 {
		t.Fatalf("from the cursor: %d records (first seq %v), %d dropped; want the one new record, seq 8, none dropped", len(recs), recs, dropped)
	}
}

// TestQueueQuota: above the byte quota the oldest segments go, and a
// reader behind them learns how many samples it lost.
func TestQueueQuota(t *testing.T) {
	p := payload(t, 1, 2, 3, 4, 5)
	rec := int64(len(encodeRecord(0, 5, p)))
	q, err := openQueue(t.TempDir(), 2*rec, 4*rec)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()
	for range 10 {
		if err := q.append(p, 5); err != nil {
			t.Fatal(err)
		}
	}
	recs, dropped := readAll(t, q, position{seg: 1})
	kept := 0
	for _, r := range recs {
		kept += int(r.count)
	}
	if dropped == 0 || dropped+uint64(kept) != 50 || recs[0].seq != dropped {
		t.Fatalf("dropped %d, kept %d (first seq %d); want some dropped, 50 in all, kept starting at the first not dropped", dropped, kept, recs[0].seq)
	}
	segs, _, _ := q.state()
	var total int64
	for _, s := range segs {
		total += s.size
	}
	if total > 4*rec {
		t.Errorf("queue holds %d bytes, above its %d quota", total, 4*rec)
	}
}

// fakeStore is a remote-write receiver that answers with the given codes
// in turn (then 204) and records the samples of requests it accepts.
type fakeStore struct {
	mu    sync.Mutex
	codes []int
	got   []int64
	reqs  int
}

func (s *fakeStore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req prompb.WriteRequest
	if err := decodePayload(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs++
	if len(s.codes) > 0 {
		code := s.codes[0]
		s.codes = s.codes[1:]
		http.Error(w, "scripted", code)
		return
	}
	for _, ts := range req.Timeseries {
		for _, x := range ts.Samples {
			s.got = append(s.got, x.Timestamp)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// TestRetryAndRefusal: a 5xx is retried and the samples stay; a 4xx is
// counted as failed and the queue moves on; the last error clears on
// success.
func TestRetryAndRefusal(t *testing.T) {
	store := &fakeStore{codes: []int{http.StatusServiceUnavailable, http.StatusBadRequest}}
	srv := httptest.NewServer(store)
	defer srv.Close()
	db, err := telemetry.Open(telemetry.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := DefaultConfig()
	cfg.Dir = t.TempDir()
	cfg.Endpoints = []Endpoint{{URL: srv.URL + "/write"}}
	cfg.MaxSamplesPerSend = 1
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 10*time.Millisecond
	f, err := New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l := labels.FromStrings("__name__", "m")
	now := time.Now().UnixMilli()
	for i := range 3 {
		a := f.Appender(context.Background())
		if _, err := a.Append(0, l, now+int64(i), 1); err != nil {
			t.Fatal(err)
		}
		if err := a.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	// A rolled-back transaction is neither stored nor forwarded.
	a := f.Appender(context.Background())
	a.Append(0, l, now+10, 1)
	a.Rollback()

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	defer func() { cancel(); <-done }()
	e2etest.Eventually(t, "queue sent", 30*time.Second, func() (bool, string) {
		st := f.Status()[0]
		return st.Pending == 0 && st.Sent == 2, fmtStatus(st)
	})
	st := f.Status()[0]
	if st.Failed != 1 || st.Retries != 1 || st.LastError != "" || st.Name != strings.ReplaceAll(strings.TrimPrefix(srv.URL, "http://"), ":", "_") {
		t.Errorf("status %s; want 1 failed, 1 retry, no last error, a name from the URL", fmtStatus(st))
	}
	// The status as hub series, straight into the DB.
	if err := f.writeStatus(context.Background()); err != nil {
		t.Fatal(err)
	}
	qr, err := db.Querier(0, time.Now().Add(time.Minute).UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	defer qr.Close()
	ss := qr.Select(context.Background(), false, nil, labels.MustNewMatcher(labels.MatchEqual, "__name__", "tether_remote_write_failed_samples_total"))
	var failed []float64
	for ss.Next() {
		it := ss.At().Iterator(nil)
		for it.Next() != chunkenc.ValNone {
			_, v := it.At()
			failed = append(failed, v)
		}
	}
	if len(failed) != 1 || failed[0] != 1 {
		t.Errorf("tether_remote_write_failed_samples_total in the DB: %v, want [1]", failed)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if want := []int64{now + 1, now + 2}; len(store.got) != 2 || store.got[0] != want[0] || store.got[1] != want[1] || store.reqs != 4 {
		t.Errorf("store accepted %v in %d requests, want %v in 4 (503, 400, two accepted)", store.got, store.reqs, want)
	}
}

func fmtStatus(s Status) string { return fmt.Sprintf("%+v", s) }

func TestValidate(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tok, []byte("x"), 0o600)
	for name, tc := range map[string]struct {
		eps  []Endpoint
		want string
	}{
		"ok":           {[]Endpoint{{URL: "http://a:9090/api/v1/write", BearerTokenFile: tok}}, ""},
		"two same url": {[]Endpoint{{URL: "http://a:1/w"}, {URL: "http://a:1/w"}}, ""},
		"bad scheme":   {[]Endpoint{{URL: "ftp://a/w"}}, "want http:// or https://"},
		"no host":      {[]Endpoint{{URL: "http:///w"}}, "want http:// or https://"},
		"bad name":     {[]Endpoint{{Name: "a/b", URL: "http://a/w"}}, "endpoint name"},
		"dup name":     {[]Endpoint{{Name: "a", URL: "http://a/w"}, {Name: "a", URL: "http://b/w"}}, "given twice"},
		"both auths":   {[]Endpoint{{URL: "http://a/w", BearerTokenFile: tok, BasicAuthUser: "u"}}, "do not go together"},
		"missing file": {[]Endpoint{{URL: "http://a/w", BearerTokenFile: tok + "-no"}}, "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Dir = t.TempDir()
			cfg.Endpoints = tc.eps
			err := cfg.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate: %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzSegment reads arbitrary bytes as a queue segment: records and their
// payloads either decode or give an error, never a panic or a huge
// allocation.
func FuzzSegment(f *testing.F) {
	p := payload(f, 1, 2)
	rec := encodeRecord(7, 2, p)
	f.Add(rec)
	f.Add(append(rec, rec[:10]...))
	f.Add(rec[:len(rec)-1])
	f.Add([]byte{})
	f.Add(encodeRecord(0, 1, []byte("not snappy")))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := bytes.NewReader(b)
		var off int64
		for {
			_, _, pl, size, err := readRecord(r, off, true)
			if err != nil {
				return
			}
			var req prompb.WriteRequest
			_ = decodePayload(pl, &req)
			off += size
		}
	})
}
