package staleness

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/value"

	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

func ls(kv ...string) []*telemetryv1.Label {
	var out []*telemetryv1.Label
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, &telemetryv1.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

// names checks every marker is one StaleNaN sample at ts and returns the
// markers' label sets, sorted, as name=value,... strings.
func names(t *testing.T, ms []*telemetryv1.Series, ts int64) []string {
	t.Helper()
	var out []string
	for _, m := range ms {
		if len(m.Samples) != 1 || m.Samples[0].TimestampMs != ts || math.Float64bits(m.Samples[0].Value) != value.StaleNaN {
			t.Fatalf("marker samples %v, want one StaleNaN at %d", m.Samples, ts)
		}
		var b strings.Builder
		for _, l := range m.Labels {
			fmt.Fprintf(&b, "%s=%s,", l.Name, l.Value)
		}
		out = append(out, b.String())
	}
	slices.Sort(out)
	return out
}

func TestTrackerRounds(t *testing.T) {
	a := ls("__name__", "kube_pod_info", "pod", "web-0")
	b := ls("__name__", "kube_pod_info", "pod", "web-1")
	// The same label set in another order is the same series.
	bUnsorted := ls("pod", "web-1", "__name__", "kube_pod_info")
	c := ls("__name__", "up")
	for _, tc := range []struct {
		name   string
		rounds [][][]*telemetryv1.Label
		abort  []bool
		want   [][]string // markers at the end of each round
	}{
		{"nothing goes", [][][]*telemetryv1.Label{{a, b}, {b, a}}, nil, [][]string{nil, nil}},
		{"one goes", [][][]*telemetryv1.Label{{a, b, c}, {a, c}, {a, c}},
			nil, [][]string{nil, {"__name__=kube_pod_info,pod=web-1,"}, nil}},
		{"label order", [][][]*telemetryv1.Label{{a, b}, {bUnsorted}}, nil, [][]string{nil, {"__name__=kube_pod_info,pod=web-0,"}}},
		{"empty round marks all", [][][]*telemetryv1.Label{{a, c}, {}}, nil,
			[][]string{nil, {"__name__=kube_pod_info,pod=web-0,", "__name__=up,"}}},
		{"comes back", [][][]*telemetryv1.Label{{a, b}, {a}, {a, b}, {a}}, nil,
			[][]string{nil, {"__name__=kube_pod_info,pod=web-1,"}, nil, {"__name__=kube_pod_info,pod=web-1,"}}},
		// An aborted round marks nothing; what it did not see is marked
		// by the next complete round that does not see it either.
		{"abort keeps", [][][]*telemetryv1.Label{{a, b}, {a}, {a}}, []bool{false, true, false},
			[][]string{nil, nil, {"__name__=kube_pod_info,pod=web-1,"}}},
		{"abort tracks what it saw", [][][]*telemetryv1.Label{{a}, {a, c}, {a}}, []bool{false, true, false},
			[][]string{nil, nil, {"__name__=up,"}}},
		{"abort then back", [][][]*telemetryv1.Label{{a, b}, {}, {a, b}, {a, b}}, []bool{false, true, false, false},
			[][]string{nil, nil, nil, nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(Config{})
			for i, r := range tc.rounds {
				for _, s := range r {
					if !tr.Seen(s) {
						t.Fatalf("round %d: %v not tracked", i, s)
					}
				}
				ts := int64(1000 * (i + 1))
				if i < len(tc.abort) && tc.abort[i] {
					tr.Abort()
					continue
				}
				if got := names(t, tr.End(ts), ts); !slices.Equal(got, tc.want[i]) {
					t.Fatalf("round %d: markers %q, want %q", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestTrackerAll(t *testing.T) {
	tr := New(Config{})
	tr.Seen(ls("__name__", "a", "x", "1"))
	tr.Seen(ls("__name__", "b"))
	tr.End(1)
	tr.Seen(ls("__name__", "a", "x", "1"))
	got := names(t, tr.All(2), 2)
	if want := []string{"__name__=a,x=1,", "__name__=b,"}; !slices.Equal(got, want) {
		t.Fatalf("All: %q, want %q", got, want)
	}
	if tr.Len() != 0 || len(tr.End(3)) != 0 || len(tr.All(4)) != 0 {
		t.Fatalf("series left after All: %d", tr.Len())
	}
}

// TestTrackerBound: past MaxSeries new series are refused and counted;
// those tracked still get markers, and room is made as series go.
func TestTrackerBound(t *testing.T) {
	tr := New(Config{MaxSeries: 3})
	for i := range 5 {
		ok := tr.Seen(ls("__name__", "m", "i", fmt.Sprint(i)))
		if ok != (i < 3) {
			t.Fatalf("series %d tracked %v", i, ok)
		}
	}
	if m := tr.End(1); len(m) != 0 || tr.Untracked() != 2 || tr.Len() != 3 {
		t.Fatalf("markers %d untracked %d len %d; want 0, 2, 3", len(m), tr.Untracked(), tr.Len())
	}
	// Series 0 goes: marked; series 4 can be tracked the round after.
	tr.Seen(ls("__name__", "m", "i", "1"))
	tr.Seen(ls("__name__", "m", "i", "2"))
	tr.Seen(ls("__name__", "m", "i", "4")) // full: 0 still counts until End
	if got := names(t, tr.End(2), 2); !slices.Equal(got, []string{"__name__=m,i=0,"}) || tr.Untracked() != 1 {
		t.Fatalf("markers %q untracked %d", got, tr.Untracked())
	}
	if !tr.Seen(ls("__name__", "m", "i", "4")) {
		t.Fatal("series 4 not tracked once there was room")
	}
}

// TestTrackerKeysUnambiguous: label sets whose concatenations agree are
// different series.
func TestTrackerKeysUnambiguous(t *testing.T) {
	tr := New(Config{})
	tr.Seen(ls("__name__", "m", "a", "b\xffc"))
	tr.Seen(ls("__name__", "m", "a", "b", "c", ""))
	tr.Seen(ls("__name__", "m", "ab", ""))
	if tr.Len() != 3 {
		t.Fatalf("%d series tracked, want 3", tr.Len())
	}
	got := names(t, tr.All(1), 1)
	want := []string{"__name__=m,a=b,c=,", "__name__=m,a=b\xffc,", "__name__=m,ab=,"}
	if !slices.Equal(got, want) {
		t.Fatalf("markers %q, want %q", got, want)
	}
}

func BenchmarkTrackerRound(b *testing.B) {
	series := make([][]*telemetryv1.Label, 1000)
	for i := range series {
		series[i] = ls("__name__", "http_requests_total", "code", "200", "instance", "10.0.0.1:8080", "job", "acme/web", "pod", fmt.Sprint("web-", i))
	}
	tr := New(Config{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for _, s := range series {
			tr.Seen(s)
		}
		tr.End(int64(i))
	}
}
