package link

import (
	"math/rand/v2"
	"time"
)

// backoff is capped exponential backoff with 0.5x–1.5x jitter, so a hub
// restart does not bring every agent back in the same second.
type backoff struct {
	min, max time.Duration
	n        int
	rand     func() float64
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, rand: rand.Float64}
}

// next returns the wait before the next attempt.
func (b *backoff) next() time.Duration {
	d := b.min << min(b.n, 30)
	if d <= 0 || d > b.max {
		d = b.max
	}
	b.n++
	return time.Duration(float64(d) * (0.5 + b.rand()))
}

// reset is called after a success.
func (b *backoff) reset() { b.n = 0 }
