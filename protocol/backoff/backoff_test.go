package backoff

import (
	"context"
	"testing"
	"time"
)

func fixed(r float64) func() float64 { return func() float64 { return r } }

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
			b := New(100*time.Millisecond, time.Second)
			b.Rand = fixed(tt.r)
			for i, w := range tt.want {
				if got := b.Next(); got != w*time.Millisecond {
					t.Fatalf("attempt %d: wait %s, want %s", i, got, w*time.Millisecond)
				}
			}
			b.Reset()
			if got, want := b.Next(), time.Duration(float64(100*time.Millisecond)*(0.5+tt.r)); got != want {
				t.Fatalf("after reset: wait %s, want %s", got, want)
			}
		})
	}
}

func TestBackoffJitterStaysInRange(t *testing.T) {
	// The real random source: every wait is within 0.5x–1.5x of the bare
	// schedule.
	const lo, hi = 10 * time.Millisecond, 640 * time.Millisecond
	b := New(lo, hi)
	for i := range 1000 {
		step := i % 12
		if step == 0 {
			b.Reset()
		}
		bare := Delay(lo, hi, step)
		got := b.Next()
		if got < bare/2 || got >= bare*3/2 {
			t.Fatalf("attempt %d (step %d): wait %s outside [%s, %s)", i, step, got, bare/2, bare*3/2)
		}
	}
}

func TestDelayBoundsAndNeverOverflows(t *testing.T) {
	tests := []struct {
		lo, hi time.Duration
		n      int
		want   time.Duration
	}{
		{time.Second, time.Minute, -3, time.Second},
		{time.Second, time.Minute, 0, time.Second},
		{time.Second, time.Minute, 5, 32 * time.Second},
		{time.Second, time.Minute, 6, time.Minute},
		{time.Second, time.Minute, 200, time.Minute}, // days of failures
		{time.Nanosecond, time.Hour, 62, time.Hour},  // a tiny floor still reaches the cap
		{time.Nanosecond, time.Hour, 40, time.Duration(1) << 40},
		{time.Hour, time.Duration(1<<63 - 1), 100, time.Duration(1<<63 - 1)},
	}
	for _, tt := range tests {
		if got := Delay(tt.lo, tt.hi, tt.n); got != tt.want {
			t.Errorf("Delay(%s, %s, %d) = %s, want %s", tt.lo, tt.hi, tt.n, got, tt.want)
		}
	}
}

func TestNewRepairsBounds(t *testing.T) {
	for _, tt := range []struct {
		lo, hi, want time.Duration
	}{
		{0, time.Second, time.Second},                // no floor: always the cap
		{time.Second, time.Millisecond, time.Second}, // cap below floor: the floor
	} {
		b := New(tt.lo, tt.hi)
		b.Rand = fixed(0.5)
		for range 3 {
			if got := b.Next(); got != tt.want {
				t.Fatalf("New(%s, %s).Next() = %s, want %s", tt.lo, tt.hi, got, tt.want)
			}
		}
	}
}

func TestFloorAndToCap(t *testing.T) {
	b := New(time.Second, time.Minute)
	b.Rand = fixed(0.5)
	b.Floor(4)
	if got := b.Next(); got != 16*time.Second {
		t.Fatalf("after Floor(4): %s, want 16s", got)
	}
	b.Floor(2) // below where it is: no change
	if got := b.Next(); got != 32*time.Second {
		t.Fatalf("after Floor(2) past step 4: %s, want 32s", got)
	}
	b.Reset()
	b.ToCap()
	if got := b.Next(); got != time.Minute {
		t.Fatalf("after ToCap: %s, want the cap", got)
	}
	if got := b.Next(); got != time.Minute {
		t.Fatalf("after ToCap, again: %s, want the cap", got)
	}
	b.Floor(1000)
	if got := b.Next(); got != time.Minute {
		t.Fatalf("after Floor(1000): %s, want the cap", got)
	}
}

func TestWaitElapses(t *testing.T) {
	b := New(time.Millisecond, time.Millisecond)
	if !b.Wait(context.Background()) {
		t.Fatal("Wait with a live context = false")
	}
}

func TestWaitStopsOnCancelWithoutError(t *testing.T) {
	b := New(time.Hour, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- b.Wait(ctx) }()
	cancel()
	if <-done {
		t.Fatal("Wait on a cancelled context = true, want false (stop)")
	}
	// Already cancelled: no wait at all.
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on a cancelled context = true")
	}
}
