package worker

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/agent/internal/engine"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// FuzzRecordFromWorker feeds what a worker may send as a release record
// to the agent's decoder and cache: it must never panic, and the cache
// either stores it or refuses it as invalid; a record it stored reads back.
func FuzzRecordFromWorker(f *testing.F) {
	good, _ := json.Marshal(cache.ReleaseRecord{Namespace: "ns", Name: "web",
		Revisions: []cache.ReleaseRevision{{Revision: 1, Digest: "sha256:00", Written: time.Unix(5, 0)}}})
	for _, s := range []string{string(good), "", "{}", "null", `{"namespace":"ns","name":"a/b"}`,
		`{"namespace":"ns","name":"x","revisions":[{"revision":2,"digest":"d"},{"revision":1,"digest":"d"}]}`,
		`{"namespace":"ns","name":"x","revisions":[{"revision":-1}]}`, `[1,2]`, `{"namespace":1}`} {
		f.Add([]byte(s))
	}
	c, err := cache.Open(filepath.Join(f.TempDir(), "agent.db"), cache.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { c.Close() })
	srv := &recordsServer{records: c}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := srv.SaveRecord(t.Context(), &workerv1.Record{Json: b})
		if err != nil {
			t.Fatalf("SaveRecord returned a transport error: %v", err)
		}
		if e := resp.GetError(); e != nil {
			if e.GetKind() != workerv1.ErrorKind_ERROR_KIND_INVALID_RECORD {
				t.Fatalf("refused with kind %v (%s), want INVALID_RECORD", e.GetKind(), e.GetMessage())
			}
			return
		}
		rec, err := decodeRecord(b)
		if err != nil {
			t.Fatalf("stored a record that does not decode: %v", err)
		}
		if _, err := c.ReleaseRecord(rec.Namespace, rec.Name); err != nil {
			t.Fatalf("stored record %s/%s does not read back: %v", rec.Namespace, rec.Name, err)
		}
	})
}

// TestRequestOfCarriesDriftRules: an apply sent to the worker carries
// the release's drift rules.
func TestRequestOfCarriesDriftRules(t *testing.T) {
	want := engine.DriftRules{Ignore: []engine.ObjectSelector{{Kind: "Secret"}}}
	req, err := requestOf(engine.Release{Name: "web", Namespace: "shop", Drift: want}, true)
	if err != nil {
		t.Fatal(err)
	}
	var got engine.DriftRules
	if err := json.Unmarshal(req.GetRelease().GetDriftRulesJson(), &got); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("drift rules %+v (%v), want %+v", got, err, want)
	}
	if req, _ := requestOf(engine.Release{Name: "web", Namespace: "shop"}, false); req.GetRelease().GetDriftRulesJson() != nil {
		t.Fatal("empty rules sent")
	}
}
