package scrape

import (
	"testing"

	"github.com/prometheus/prometheus/model/labels"
	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// FuzzParse: any body, of either format, parses without panicking, and
// what it keeps passes the hub's batch validation.
func FuzzParse(f *testing.F) {
	f.Add([]byte("# HELP a Help.\n# TYPE a counter\na_total{x=\"1\",cluster=\"c\"} 3 1700000000000\n"), "text/plain; version=0.0.4")
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n"), "text/plain")
	f.Add([]byte("# TYPE a counter\n# UNIT a seconds\n# HELP a x\na_total 1 # {trace_id=\"x\"} 1 1\na_created 1\n# EOF\n"), "application/openmetrics-text; version=1.0.0")
	f.Add([]byte("{\"utf8.name\",\"a.b\"=\"x\"} NaN\nbad{ 1\n"), "text/plain")
	f.Add([]byte("m 1\nm 1\n"), "")
	f.Add([]byte("\xff\xfe 1\n"), "application/json")
	target := labels.FromStrings("job", "acme/web", "instance", "10.0.0.1:80", "cluster", "edge-1")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		res, err := parse(parseInput{body: body, contentType: contentType, target: target, sampleLimit: 1000, defaultMs: 1700000000000, cluster: "edge-1"})
		if err != nil {
			return
		}
		if len(res.series) != res.kept || res.kept+res.invalid > res.scraped {
			t.Fatalf("counts: %d series, kept %d, invalid %d, scraped %d", len(res.series), res.kept, res.invalid, res.scraped)
		}
		for _, s := range res.series {
			if labelsOf(s)["cluster"] != "edge-1" {
				t.Fatalf("series without the agent's cluster: %v", labelsOf(s))
			}
		}
		b := &telemetryv1.MetricBatch{Series: res.series, Metadata: res.metadata}
		if len(b.Series) <= telemetryv1.MaxSeries {
			if err := telemetryv1.Validate(b); err != nil {
				t.Fatalf("kept series the hub refuses: %v", err)
			}
		}
	})
}

// FuzzCompileJob: a scrape config off the wire (from a hub, or a cache
// file) is refused with an error or runs; it never panics.
func FuzzCompileJob(f *testing.F) {
	for _, c := range []*fleetv1.ScrapeConfig{
		wireConfig("web", rule("drop", "go_.*", "__name__")),
		{Namespace: "a", Name: "b", Path: "/", Scheme: "https", IntervalSeconds: 5, TimeoutSeconds: 9, SampleLimit: 1,
			Targets:        []*fleetv1.ScrapeTarget{{Kind: "Service", Port: "65536", LabelSelector: "a in (b"}},
			RelabelConfigs: []*fleetv1.RelabelConfig{{Action: "hashmod", TargetLabel: "x", Modulus: 0}}},
	} {
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &fleetv1.ScrapeConfig{}
		if proto.Unmarshal(data, c) != nil {
			return
		}
		j, err := compileJob(c)
		if err != nil {
			return
		}
		if j.interval < minInterval || j.timeout > j.interval || j.sampleLimit < 1 {
			t.Fatalf("compiled out of bounds: %+v", j)
		}
		// Relabelling any labels with the compiled rules must not panic.
		finishTarget(j, withJob(j, map[string]string{addressLabel: "10.0.0.1:80", "pod": "p"}), "edge-1")
	})
}
