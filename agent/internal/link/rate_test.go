package link

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/tetherfleet/tether/agent/internal/link/linktest"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// symbolsFeature is the Welcome.features of a hub that takes metric
// batches as queued, so tests of the drain may queue opaque bytes (a hub
// without it gets each batch decoded and re-encoded; see prepareMetrics).
var symbolsFeature = []string{fleetv1.FeatureMetricSymbols}

// TestRateBound: a kind sends while it has tokens, may go one payload into
// debt, and waits rate-proportionally to pay it back.
func TestRateBound(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newRateBound(1000, t0)
	if !b.ready(t0) {
		t.Fatal("a fresh bound is not ready")
	}
	b.take(3000) // 1000 - 3000 = -2000
	if b.ready(t0) {
		t.Fatal("bound in debt is ready")
	}
	if w := b.wait(t0); w < 2*time.Second || w > 2100*time.Millisecond {
		t.Fatalf("wait = %s; want just over 2s", w)
	}
	if b.ready(t0.Add(1500 * time.Millisecond)) {
		t.Fatal("ready before the debt is paid")
	}
	if !b.ready(t0.Add(2100 * time.Millisecond)) {
		t.Fatal("not ready after the debt is paid")
	}
	// Idle time fills at most one second's worth.
	if b.ready(t0.Add(time.Hour)); b.tokens != 1000 {
		t.Fatalf("tokens after an hour idle = %v; want 1000 (one second's worth)", b.tokens)
	}
}

// TestStatusNotDelayedByMetricsBacklog: with a backlog of metric batches
// (as after an outage) bounded by a drain rate, a status report enqueued
// after the drain started goes out before the backlog has drained: the
// bound holds metrics out of the batch, status is not held. Without the
// bound the whole backlog goes in the first batch and status comes last.
func TestStatusNotDelayedByMetricsBacklog(t *testing.T) {
	ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	hub := linktest.Start(t, linktest.Config{CA: ca.CA, AcceptKinds: []string{KindMetrics}, Features: symbolsFeature})
	ob := openOutbox(t, cacheOptions())
	const backlog = 20
	for i := range backlog {
		if err := ob.Enqueue(KindMetrics, bytes.Repeat([]byte{byte(i)}, 4096)); err != nil {
			t.Fatal(err)
		}
	}
	l := newTestLink(t, ca, hub.Addr, ob)
	l.cfg.Telemetry = true
	l.cfg.DrainRates = map[string]int64{KindMetrics: 1024}
	startLink(t, l)
	metrics := func() int {
		n := 0
		for _, p := range hub.Payloads() {
			if p.Kind == KindMetrics {
				n++
			}
		}
		return n
	}
	hub.Wait(t, "the first metric batch", 20*time.Second, func() bool { return metrics() > 0 })
	if err := ob.Enqueue(KindStatus, statusPayload(t, 7)); err != nil {
		t.Fatal(err)
	}
	l.KickOutbox()
	hub.Wait(t, "the status report", 20*time.Second, func() bool { return len(hub.Reports()) == 1 })
	got := hub.Payloads()
	i := slices.IndexFunc(got, func(p linktest.Payload) bool { return p.Kind == KindStatus })
	if sent := i; sent >= backlog {
		t.Fatalf("status went out after all %d metric batches; want before the backlog drained", sent)
	}
	if st, _ := ob.OutboxStats(); st.Kinds[KindMetrics].Pending == 0 {
		t.Fatal("metrics backlog drained before status; the rate bound did not hold it")
	}
	// Drained in order so far: the payloads are batches 0, 1, ... in turn.
	k := 0
	for _, p := range got {
		if p.Kind == KindMetrics {
			if p.Data[0] != byte(k) {
				t.Fatalf("metric batch %d arrived as number %d; want oldest first", p.Data[0], k)
			}
			k++
		}
	}
}

// TestMetricsOfferedOnlyWhenOn: the metrics kind is in Hello.payload_kinds
// only with Config.Telemetry; off, queued batches are held, not dropped.
func TestMetricsOfferedOnlyWhenOn(t *testing.T) {
	for _, on := range []bool{false, true} {
		ca := newTestCA(t, time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
		hub := linktest.Start(t, linktest.Config{CA: ca.CA, AcceptKinds: []string{KindMetrics}, Features: symbolsFeature})
		ob := openOutbox(t, cacheOptions())
		if err := ob.Enqueue(KindMetrics, []byte("batch")); err != nil {
			t.Fatal(err)
		}
		if err := ob.Enqueue(KindStatus, statusPayload(t, 1)); err != nil {
			t.Fatal(err)
		}
		l := newTestLink(t, ca, hub.Addr, ob)
		l.cfg.Telemetry = on
		startLink(t, l)
		hub.Wait(t, "the status report", 20*time.Second, func() bool { return len(hub.Reports()) == 1 })
		offered := slices.Contains(hub.Hellos()[0].GetPayloadKinds(), KindMetrics)
		if offered != on {
			t.Fatalf("telemetry %v: hello offers metrics = %v", on, offered)
		}
		if on {
			hub.Wait(t, "the metric batch", 20*time.Second, func() bool { return len(hub.Payloads()) == 2 })
			continue
		}
		if st, _ := ob.OutboxStats(); st.Kinds[KindMetrics].Pending != 1 || st.Kinds[KindMetrics].DeadLettered != 0 {
			t.Fatalf("telemetry off: metrics stats %+v; want the batch held", st.Kinds[KindMetrics])
		}
	}
}
