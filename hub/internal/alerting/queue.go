package alerting

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/tetherfleet/tether/protocol/backoff"
)

// integration is one way of notifying (a webhook, an SMTP server).
type integration interface {
	// Name is the integration's kind: webhook, slack, email, pagerduty,
	// alertmanager.
	Name() string
	Send(ctx context.Context, n *Notification) error
}

// permanent marks a send error that a retry cannot fix (a 4xx answer).
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

// receiver is a compiled objects.AlertReceiver.
type receiver struct {
	name         string
	integrations []integration
}

// queue is one receiver's bounded queue and its sender.
type queue struct {
	key     string
	ch      chan *Notification
	mu      sync.Mutex
	rcv     *receiver
	dropped uint64
	started bool
}

func (q *queue) setReceiver(r *receiver) {
	q.mu.Lock()
	q.rcv = r
	q.mu.Unlock()
}

func (q *queue) receiver() *receiver {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.rcv
}

func (d *Dispatcher) enqueueLocked(p *policy, name string, n *Notification) {
	key := p.key + "/" + name
	q, ok := d.queues[key]
	if !ok {
		q = &queue{key: key, ch: make(chan *Notification, d.cfg.QueueSize), rcv: p.receivers[name]}
		d.queues[key] = q
		d.startLocked(q)
	}
	select {
	case q.ch <- n:
	default:
		q.dropped++
		d.log.Warn("notification dropped: the receiver's queue is full", "receiver", key, "queue_size", d.cfg.QueueSize, "dropped", q.dropped)
		for _, a := range n.Alerts {
			d.deliv.record(a.Fingerprint, Delivery{Receiver: key, Status: a.Status, At: d.cfg.Now(), Error: "dropped: queue full"})
		}
	}
}

func (d *Dispatcher) startLocked(q *queue) {
	if d.ctx == nil || q.started || d.closed {
		return
	}
	q.started = true
	ctx := d.ctx
	d.wg.Go(func() { d.send(ctx, q) })
}

// Run flushes due groups every Tick and runs the receivers' senders until
// ctx is done; it waits for them before it returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	d.mu.Lock()
	d.ctx = ctx
	for _, q := range d.queues {
		d.startLocked(q)
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.closed = true
		d.mu.Unlock()
		d.wg.Wait()
	}()
	t := time.NewTicker(d.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			d.flush(d.cfg.Now())
		}
	}
}

// send delivers q's notifications one at a time, retrying each failed
// integration with backoff up to MaxAttempts.
func (d *Dispatcher) send(ctx context.Context, q *queue) {
	for {
		var n *Notification
		select {
		case <-ctx.Done():
			return
		case m, ok := <-q.ch:
			if !ok {
				return
			}
			n = m
		}
		r := q.receiver()
		if r == nil {
			continue
		}
		for _, in := range r.integrations {
			attempts, err := d.attempt(ctx, in, n)
			if ctx.Err() != nil {
				return
			}
			dv := Delivery{Receiver: q.key, Integration: in.Name(), At: d.cfg.Now(), Attempts: attempts}
			if err != nil {
				dv.Error = err.Error()
				d.log.Warn("notification failed", "receiver", q.key, "integration", in.Name(), "attempts", attempts, "err", err)
			}
			for _, a := range n.Alerts {
				dv.Status = a.Status
				d.deliv.record(a.Fingerprint, dv)
			}
		}
	}
}

func (d *Dispatcher) attempt(ctx context.Context, in integration, n *Notification) (int, error) {
	bo := backoff.New(d.cfg.MinBackoff, d.cfg.MaxBackoff)
	var err error
	for i := 1; ; i++ {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = in.Send(sctx, n)
		cancel()
		var perm permanent
		if err == nil || errors.As(err, &perm) || i >= d.cfg.MaxAttempts {
			return i, err
		}
		d.log.Info("notification failed; retrying", "integration", in.Name(), "attempt", i, "err", err)
		if !bo.Wait(ctx) {
			return i, ctx.Err()
		}
	}
}

// Delivery is one integration's outcome for one alert.
type Delivery struct {
	Receiver    string    `json:"receiver"`
	Integration string    `json:"integration,omitempty"`
	Status      string    `json:"status"` // the alert's: firing, resolved
	At          time.Time `json:"at"`
	Attempts    int       `json:"attempts,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// maxDeliveries is how many deliveries are kept per alert.
const maxDeliveries = 8

type deliveries struct {
	mu sync.Mutex
	m  map[string][]Delivery
}

func newDeliveries() *deliveries { return &deliveries{m: map[string][]Delivery{}} }

func (ds *deliveries) record(fp string, dv Delivery) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	l := append(ds.m[fp], dv)
	if len(l) > maxDeliveries {
		l = l[len(l)-maxDeliveries:]
	}
	ds.m[fp] = l
}

func (ds *deliveries) of(fp string) []Delivery {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	return append([]Delivery(nil), ds.m[fp]...)
}

// retain forgets the deliveries of alerts not in keep.
func (ds *deliveries) retain(keep func(string) bool) {
	ds.mu.Lock()
	defer ds.mu.Unlock()
	for fp := range ds.m {
		if !keep(fp) {
			delete(ds.m, fp)
		}
	}
}
