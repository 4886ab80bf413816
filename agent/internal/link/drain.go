package link

import (
	"context"
	"fmt"
	"time"

	"github.com/tetherfleet/tether/agent/internal/cache"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// drainBatch bounds the payloads in flight before the hub acknowledges.
const drainBatch = fleetv1.MaxUnackedReports

// payloadAck is the hub's answer to one payload.
type payloadAck struct {
	seq     uint64
	refused bool
	reason  string
}

// ackOf returns the acknowledgement msg carries, or nil.
func ackOf(msg *fleetv1.HubMessage) *payloadAck {
	if a := msg.GetStatusAck(); a != nil {
		return &payloadAck{seq: a.GetSeq()}
	}
	if a := msg.GetPayloadAck(); a != nil {
		return &payloadAck{seq: a.GetSeq(), refused: a.GetRefused(), reason: a.GetReason()}
	}
	return nil
}

// drain sends outbox entries in drain order (cache.Batch: priority, then
// oldest first) of the kinds the hub accepts, and removes each once the
// hub acknowledged it by sequence number. An entry that cannot be sent (a
// kind this agent does not know, a payload that does not decode) or that
// the hub refuses for good is dead-lettered: removed and counted, never
// waited for. A kind the hub does not accept stays in the outbox. Entries
// survive a broken link and an agent restart; a payload sent twice is
// harmless (the hub orders status reports by seq). A kind with a drain
// rate (Config.DrainRates) is left out of the batch while over it, so a
// backlog of it never delays status; the drain then sleeps until a kick,
// the poll or the kind's refill.
func (l *Link) drain(ctx context.Context, out *syncSender, acks <-chan payloadAck, neg negotiated) error {
	poll := time.NewTicker(5 * time.Second)
	defer poll.Stop()
	base := l.sendable(neg)
	bounds := l.drainBounds()
	// A kind over its drain rate is left out of the batch, so status and
	// other kinds never wait behind it.
	sendable := func(kind string) bool {
		if !base(kind) {
			return false
		}
		b := bounds[kind]
		return b == nil || b.ready(l.cfg.Now())
	}
	// inflight are the entries sent and not yet answered: at most
	// drainBatch. The window slides: once half of it is answered, the
	// answered ones are removed from the outbox (one transaction) and
	// more go out, so the hub always has entries to work on while the
	// agent commits and reads the next ones.
	inflight := map[uint64]bool{}
	for {
		sent, progress := 0, false
		if len(inflight) < drainBatch {
			entries, err := l.cfg.Outbox.Batch(drainBatch, sendable)
			if err != nil {
				return fmt.Errorf("read outbox: %w", err)
			}
			held := map[string]bool{}
			for _, e := range entries {
				if inflight[e.Seq] {
					continue
				}
				if len(inflight) == drainBatch {
					break
				}
				b := bounds[e.Kind]
				if b != nil && (held[e.Kind] || !b.ready(l.cfg.Now())) {
					// Keep the kind's order: nothing after a held entry goes.
					held[e.Kind] = true
					continue
				}
				progress = true
				msg, err := l.encode(e, neg)
				if err != nil {
					l.deadLetter(e.Seq, e.Kind, err.Error())
					continue
				}
				if err := out.send(msg); err != nil {
					return fmt.Errorf("send outbox entry %d (%s): %w", e.Seq, e.Kind, err)
				}
				if b != nil {
					b.take(len(e.Payload))
				}
				inflight[e.Seq] = true
				sent++
			}
		}
		if len(inflight) > 0 {
			// Half the window free, or all of it when nothing more went out
			// (the outbox may be empty: wait for every answer).
			left := drainBatch / 2
			if sent == 0 {
				left = 0
			}
			if err := l.awaitAcks(ctx, acks, inflight, left); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return nil
			}
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		if progress {
			continue
		}
		var refill <-chan time.Time
		var t *time.Timer
		if d := nextRefill(bounds, l.cfg.Now()); d > 0 {
			t = time.NewTimer(d)
			refill = t.C
		}
		select {
		case <-ctx.Done():
		case <-l.outboxKick:
		case <-poll.C:
		case <-refill:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// encode makes the message that carries e to this hub.
func (l *Link) encode(e cache.OutboxEntry, neg negotiated) (*fleetv1.AgentMessage, error) {
	k, ok := l.kind(e.Kind)
	if !ok {
		return nil, fmt.Errorf("unknown kind %q (written by another tether-agent version?)", e.Kind)
	}
	data := e.Payload
	if k.prepare != nil {
		var err error
		if data, err = k.prepare(l, neg, e.Seq, data); err != nil {
			return nil, err
		}
	}
	if neg.legacy {
		return k.legacy(e.Seq, data)
	}
	return &fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Payload{Payload: &fleetv1.Payload{Seq: e.Seq, Kind: e.Kind, Data: data}}}, nil
}

func (l *Link) deadLetter(seq uint64, kind, reason string) {
	if _, err := l.cfg.Outbox.DeadLetter(seq); err != nil {
		l.log.Error("dead-letter outbox entry", "seq", seq, "kind", kind, "err", err)
		return
	}
	l.log.Warn("outbox entry cannot be sent; dead-lettered (removed and counted)", "seq", seq, "kind", kind, "reason", reason)
}

// defaultAckTimeout bounds the wait for the hub to acknowledge a batch.
const defaultAckTimeout = time.Minute

// awaitAcks waits until the hub answered all but left of the payloads in
// inflight (removing the answered ones from it), and removes the
// acknowledged ones from the outbox in one transaction once they are in
// (or the wait ends): one fsync per half window instead of one per entry,
// which bounded a backlog's drain at the disk's sync rate. An
// acknowledgement lost to a crash before that commit only means the entry
// is sent again, which the hub stores once.
func (l *Link) awaitAcks(ctx context.Context, acks <-chan payloadAck, inflight map[uint64]bool, left int) (err error) {
	t := time.NewTimer(l.ackTimeout)
	defer t.Stop()
	acked := make([]uint64, 0, len(inflight))
	defer func() {
		if len(acked) == 0 {
			return
		}
		if aerr := l.cfg.Outbox.Ack(acked...); aerr != nil && err == nil {
			err = fmt.Errorf("ack outbox entries %d..%d: %w", acked[0], acked[len(acked)-1], aerr)
		}
	}()
	for len(inflight) > left {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			return fmt.Errorf("hub did not acknowledge %d outbox entries within %s", len(inflight), l.ackTimeout)
		case a := <-acks:
			if !inflight[a.seq] {
				l.log.Warn("hub acknowledged an outbox entry not in flight; ignoring", "seq", a.seq)
				continue
			}
			delete(inflight, a.seq)
			if a.refused {
				l.deadLetter(a.seq, "", "refused by the hub: "+a.reason)
				continue
			}
			acked = append(acked, a.seq)
		}
	}
	return nil
}
