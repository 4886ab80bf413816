package link

import (
	"testing"
	"time"
)

func TestBackoffGrowsCapsJittersAndResets(t *testing.T) {
	tests := []struct {
		name string
		r    float64 // the jitter source's value
		want []time.Duration
	}{
		// 0.5 → factor 1.0: the bare schedule, capped at max.
		{"no jitter", 0.5, []time.Duration{100, 200, 400, 800, 1000, 1000}},
		// 0 → factor 0.5, the shortest wait.
		{"low jitter", 0, []time.Duration{50, 100, 200, 400, 500, 500}},
		// 1 → factor 1.5, the longest.
		{"high jitter", 1, []time.Duration{150, 300, 600, 1200, 1500, 1500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBackoff(100*time.Millisecond, time.Second)
			b.rand = func() float64 { return tt.r }
			for i, w := range tt.want {
				if got := b.next(); got != w*time.Millisecond {
					t.Fatalf("attempt %d: wait %s, want %s", i, got, w*time.Millisecond)
				}
			}
			b.reset()
			if got, want := b.next(), time.Duration(float64(100*time.Millisecond)*(0.5+tt.r)); got != want {
				t.Fatalf("after reset: wait %s, want %s", got, want)
			}
		})
	}
}

func TestBackoffNeverOverflows(t *testing.T) {
	b := newBackoff(time.Second, time.Minute)
	b.rand = func() float64 { return 0.5 }
	b.n = 200 // as after days of failed attempts
	if got := b.next(); got != time.Minute {
		t.Fatalf("wait after many attempts = %s, want the cap", got)
	}
}
