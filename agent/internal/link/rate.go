package link

import "time"

// rateBound is a token bucket over payload bytes for one kind's drain. A
// kind may send while it has tokens, going into debt by one payload (so a
// payload larger than a second's worth still goes), and the bucket refills
// at rate bytes per second up to one second's worth. It is used by the
// drain goroutine only.
type rateBound struct {
	rate   float64
	tokens float64
	last   time.Time
}

func newRateBound(bytesPerSecond int64, now time.Time) *rateBound {
	r := float64(bytesPerSecond)
	return &rateBound{rate: r, tokens: r, last: now}
}

func (b *rateBound) refill(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.rate, b.tokens+d.Seconds()*b.rate)
	}
	b.last = now
}

// ready reports whether the kind may send now.
func (b *rateBound) ready(now time.Time) bool {
	b.refill(now)
	return b.tokens > 0
}

// take charges n payload bytes.
func (b *rateBound) take(n int) { b.tokens -= float64(n) }

// wait is how long until the kind may send again (0: now).
func (b *rateBound) wait(now time.Time) time.Duration {
	b.refill(now)
	if b.tokens > 0 {
		return 0
	}
	return time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
}

// drainBounds are fresh token buckets of the bounded kinds for one
// connection.
func (l *Link) drainBounds() map[string]*rateBound {
	out := map[string]*rateBound{}
	now := l.cfg.Now()
	for kind, r := range l.cfg.DrainRates {
		if r > 0 && kind != KindStatus {
			out[kind] = newRateBound(r, now)
		}
	}
	return out
}

// nextRefill is the shortest wait until a kind over its rate may send
// again, 0 if none is waiting.
func nextRefill(bounds map[string]*rateBound, now time.Time) time.Duration {
	var d time.Duration
	for _, b := range bounds {
		if w := b.wait(now); w > 0 && (d == 0 || w < d) {
			d = w
		}
	}
	return d
}
