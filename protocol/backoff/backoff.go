// Package backoff is the module's one retry schedule: capped exponential
// backoff with 0.5x–1.5x jitter, reset on success, so that a hub restart
// does not bring every agent (or a store error every controller) back in
// the same instant. It lives under protocol/ because the hub and the agent
// both use it, and protocol/ is the only code they share.
//
// The schedule is Min·2^n for the n-th wait since the last Reset, capped
// at Max, then multiplied by a factor drawn from [0.5, 1.5). A cancelled
// context is a stop, not a failure: Wait and Sleep report it as false,
// never as an error.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// capSteps is a step count at which every schedule is at its cap.
const capSteps = 63

// Backoff is a retry schedule. It is not safe for concurrent use: each
// retry loop owns its own.
type Backoff struct {
	min, max time.Duration
	n        int
	// Rand returns the jitter source's next value in [0, 1); nil means
	// math/rand/v2. Tests set it to make the waits exact.
	Rand func() float64
}

// New returns a schedule from lo to hi. A lo of zero or less is taken
// as hi, and a hi below lo as lo, so every wait is positive and
// bounded.
func New(lo, hi time.Duration) *Backoff {
	if hi < lo {
		hi = lo
	}
	if lo <= 0 {
		lo = hi
	}
	return &Backoff{min: lo, max: hi}
}

// Delay is the schedule without jitter: lo·2^n, capped at hi (n < 0
// counts as 0). It never overflows, whatever n.
func Delay(lo, hi time.Duration, n int) time.Duration {
	n = max(n, 0)
	if n >= 63 || lo > hi>>n {
		return hi
	}
	return lo << n
}

// Next returns the wait before the next attempt and advances the schedule.
func (b *Backoff) Next() time.Duration {
	d := Delay(b.min, b.max, b.n)
	if b.n < capSteps {
		b.n++
	}
	r := b.Rand
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(float64(d) * (0.5 + r()))
}

// Reset starts the schedule again from min; call it after a success.
func (b *Backoff) Reset() { b.n = 0 }

// Floor makes the next wait at least min·2^steps (jittered, capped): for a
// peer that says it is busy, where coming back at once would not help.
func (b *Backoff) Floor(steps int) { b.n = max(b.n, steps) }

// ToCap makes the next wait the capped one: for a refusal that retrying
// soon will not change.
func (b *Backoff) ToCap() { b.n = capSteps }

// Wait sleeps for Next() and reports whether it slept the whole wait:
// false means ctx ended first, and the caller stops without an error.
func (b *Backoff) Wait(ctx context.Context) bool { return Sleep(ctx, b.Next()) }

// Sleep waits d, or until ctx is done; it reports false if ctx ended
// first. For callers that compute (and log) the wait before sleeping.
func Sleep(ctx context.Context, d time.Duration) bool {
	if ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
