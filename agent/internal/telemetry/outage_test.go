package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/link"
	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	"github.com/tetherfleet/tether/agent/internal/telemetry"
	telemetryv1 "github.com/tetherfleet/tether/protocol/telemetry/v1"
)

// countingEmitter counts the batches the collector emitted.
type countingEmitter struct {
	next telemetry.Emitter
	mu   sync.Mutex
	n    int
}

func (e *countingEmitter) Emit(b *telemetryv1.MetricBatch) error {
	err := e.next.Emit(b)
	if err == nil {
		e.mu.Lock()
		e.n++
		e.mu.Unlock()
	}
	return err
}

func (e *countingEmitter) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// TestOutageBackfill: the agent collects and ships to its hub; the hub
// goes off the network and collection goes on into the outbox; when the
// hub is back every batch arrives, in the order collected, none lost.
func TestOutageBackfill(t *testing.T) {
	c := shared.Get(t)
	hub := linktest.Start(t, linktest.Config{AcceptKinds: []string{link.KindMetrics}})
	ob := openCache(t, 0)
	lcfg := link.DefaultConfig()
	lcfg.Cache, lcfg.Outbox, lcfg.Hubs, lcfg.Token = ob, ob, []string{hub.Addr}, hub.Token
	lcfg.MinBackoff, lcfg.MaxBackoff = 10*time.Millisecond, 100*time.Millisecond
	lcfg.Telemetry = true
	lcfg.DrainRates = map[string]int64{link.KindMetrics: 1 << 20}
	l, err := link.New(lcfg)
	if err != nil {
		t.Fatal(err)
	}
	ship, err := telemetry.NewShipper(telemetry.ShipperConfig{
		Cluster: func() string {
			id, err := ob.Identity()
			if err != nil {
				return ""
			}
			return id.Cluster
		},
		Outbox: ob, Notify: l.KickOutbox,
	})
	if err != nil {
		t.Fatal(err)
	}
	emitted := &countingEmitter{next: ship}
	col := newCollector(t, c, emitted, func(cfg *telemetry.Config) {
		cfg.Interval = 100 * time.Millisecond
		cfg.MaxSeries = telemetryv1.MaxSeries // one entry per collection
	})

	ctx, cancel := context.WithCancel(context.Background())
	colCtx, stopCollecting := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := l.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("link: %v", err)
		}
	})
	wg.Go(func() { _ = col.Run(colCtx) })
	t.Cleanup(func() { cancel(); wg.Wait(); l.Close() })

	metrics := func() []linktest.Payload {
		var out []linktest.Payload
		for _, p := range hub.Payloads() {
			if p.Kind == link.KindMetrics {
				out = append(out, p)
			}
		}
		return out
	}
	hub.Wait(t, "metrics from the connected agent", time.Minute, func() bool { return len(metrics()) >= 2 })

	hub.SetDown(true)
	linktest.WaitUntil(t, "the link to notice the outage", time.Minute, func() bool { return l.Status().State != link.StateConnected })
	before := emitted.count()
	linktest.WaitUntil(t, "collections to queue up during the outage", time.Minute, func() bool {
		st, _ := ob.OutboxStats()
		return emitted.count() >= before+5 && st.Kinds[link.KindMetrics].Pending >= 1
	})
	hub.SetDown(false)
	stopCollecting()
	linktest.WaitUntil(t, "the backlog to drain", time.Minute, func() bool {
		st, _ := ob.OutboxStats()
		return st.Kinds[link.KindMetrics].Pending == 0
	})

	got := metrics()
	// A batch in flight when the link broke may arrive twice (it is
	// resent after the hub stored it); the hub dedups by seq. While the
	// link was down, collections were merged into the newest pending
	// entry (several samples per series). So: every collection's sample
	// of one series arrives once at least, entries in seq order, and
	// their first samples in collection order.
	seen := map[uint64]bool{}
	var order []uint64
	var lastTS int64
	stamps := map[int64]bool{}
	var key string
	for _, p := range got {
		if seen[p.Seq] {
			continue
		}
		seen[p.Seq] = true
		order = append(order, p.Seq)
		b, err := telemetryv1.Decode(p.Data)
		if err != nil {
			t.Fatalf("batch seq %d does not decode: %v", p.Seq, err)
		}
		if key == "" {
			key = fmt.Sprint(b.Series[0].Labels)
		}
		for _, ser := range b.Series {
			if fmt.Sprint(ser.Labels) != key {
				continue
			}
			ts := ser.Samples[0].TimestampMs
			if ts < lastTS {
				t.Fatalf("batch seq %d collected at %d arrived after one collected at %d", p.Seq, ts, lastTS)
			}
			lastTS = ts
			for _, smp := range ser.Samples {
				stamps[smp.TimestampMs] = true
			}
		}
	}
	for i := 1; i < len(order); i++ {
		if order[i] <= order[i-1] {
			t.Fatalf("batches arrived out of order: seq %d after %d", order[i], order[i-1])
		}
	}
	st, _ := ob.OutboxStats()
	if n := emitted.count(); len(stamps) != n || st.Kinds[link.KindMetrics].Dropped != 0 {
		t.Fatalf("hub has %d distinct collections of one series of %d collected (dropped %d); want all", len(stamps), n, st.Kinds[link.KindMetrics].Dropped)
	}
	if len(order) >= emitted.count() {
		t.Fatalf("%d entries for %d collections: nothing was merged while the link was down", len(order), emitted.count())
	}
	t.Logf("%d batches, %d received (with resends), %d collected; collector %+v", len(order), len(got), emitted.count(), col.Stats())
}
