package scrape

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// BenchmarkParse10kSamples: one scrape of 10,000 samples (the default
// sample limit) in the text format, with one metric relabel rule, to
// wire series.
func BenchmarkParse10kSamples(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n")
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(&sb, "http_requests_total{code=\"200\",handler=\"/api/v1/item/%d\",method=\"GET\"} %d\n", i, i)
	}
	body := []byte(sb.String())
	j, err := compileJob(wireConfig("web", rule("drop", "go_.*", "__name__")))
	if err != nil {
		b.Fatal(err)
	}
	target := labels.FromStrings("cluster", "edge-1", "container", "app", "instance", "10.0.0.1:8080", "job", "acme/web", "namespace", "web", "pod", "web-0")
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := parse(parseInput{body: body, contentType: "text/plain; version=0.0.4", target: target, relabel: j.metricRelabel, sampleLimit: 10000, defaultMs: 1, cluster: "edge-1"})
		if err != nil || res.kept != 10000 {
			b.Fatalf("%v kept %d", err, res.kept)
		}
	}
}
