package link

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tetherfleet/tether/agent/internal/cache"
	"github.com/tetherfleet/tether/protocol/backoff"
	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/version"
)

// connect runs one connection until it fails or ctx is done.
func (l *Link) connect(ctx context.Context, hub string, bo *backoff.Backoff) error {
	if err := l.certExpired(); err != nil {
		return err
	}
	l.mu.Lock()
	tc := mutualTLS(l.cert, l.ca, l.hubNow, l.log)
	tc.ClientSessionCache = l.tickets
	l.curves(tc)
	cluster := l.id.Cluster
	l.mu.Unlock()
	sess, err := l.dialHub(ctx, hub, tc, l.grpc)
	if err != nil {
		return err
	}
	defer sess.Close()
	cc, err := sess.ClientConn()
	if err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := fleetv1.NewFleetClient(cc)
	stream, err := client.Sync(sctx)
	if err != nil {
		return err
	}
	var have uint64
	var haveEpoch string
	if l.cfg.Handler != nil {
		have = l.cfg.Handler.Revision()
		if e, ok := l.cfg.Handler.(EpochHandler); ok {
			haveEpoch = e.Epoch()
		}
	}
	err = stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{
		Cluster: cluster, AgentVersion: version.Get(), HaveRevision: have, HaveEpoch: haveEpoch, Hostname: l.cfg.Hostname,
		ApiServer: l.cfg.APIServer, PayloadKinds: l.helloKinds(),
	}}})
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	w := first.GetWelcome()
	if w == nil {
		return fmt.Errorf("hub %s: first message is %T, want welcome", hub, first.GetMsg())
	}
	l.noteServerTime(w, hub)
	if e, ok := l.cfg.Handler.(EpochHandler); ok && w.GetEpoch() != "" && e.Epoch() != "" && e.Epoch() != w.GetEpoch() {
		l.log.Warn("hub's revision history (epoch) differs from the one the held desired state came from; expecting a full state", "hub", hub, "hub_epoch", w.GetEpoch(), "held_epoch", e.Epoch())
	}
	bo.Reset()
	l.mu.Lock()
	l.st.Connects++
	l.mu.Unlock()
	l.setState(StateConnected, hub, nil)
	neg := negotiate(l.kinds, w)
	l.log.Info("connected to hub", "hub", hub, "cluster", cluster, "revision", have, "payload_kinds", w.GetPayloadKinds())

	beat := time.Duration(w.GetHeartbeatSeconds()) * time.Second
	if beat <= 0 {
		beat = 30 * time.Second
	}
	out := &syncSender{stream: stream}
	l.mu.Lock()
	l.client = client
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		l.client = nil
		l.mu.Unlock()
	}()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	fail := func(err error) {
		if err != nil && sctx.Err() == nil {
			select {
			case errc <- err:
			default:
			}
			cancel()
		}
	}
	// The hub acknowledges each payload it was sent, at most drainBatch
	// in flight; room for more so a stray ack never blocks the receive loop.
	acks := make(chan payloadAck, 2*drainBatch)
	wg.Go(func() { fail(l.heartbeats(sctx, out, beat)) })
	wg.Go(func() { l.renewals(sctx, client, beat) })
	if l.cfg.Outbox != nil {
		wg.Go(func() { fail(l.drain(sctx, out, acks, neg)) })
	}
	defer wg.Wait()
	defer cancel()
	for {
		msg, err := stream.Recv()
		if err != nil {
			select {
			case herr := <-errc:
				return herr
			default:
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("hub %s closed the sync stream", hub)
			}
			return err
		}
		l.mu.Lock()
		l.st.LastContact = l.cfg.Now()
		l.mu.Unlock()
		if a := ackOf(msg); a != nil {
			select {
			case acks <- *a:
			default:
				l.log.Warn("hub sent more acknowledgements than payloads in flight; ignoring one", "hub", hub, "seq", a.seq)
			}
			continue
		}
		if ds := msg.GetDesired(); ds != nil && l.cfg.Handler != nil {
			if err := l.cfg.Handler.Desired(sctx, ds); err != nil {
				return fmt.Errorf("store desired revision %d: %w", ds.GetRevision(), err)
			}
			if err := out.send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Ack{Ack: &fleetv1.Ack{Revision: ds.GetRevision()}}}); err != nil {
				return err
			}
		}
	}
}

// syncSender serialises Send: gRPC allows one sender at a time, and both
// the heartbeat loop and the receive loop send.
type syncSender struct {
	mu     sync.Mutex
	stream fleetv1.Fleet_SyncClient
}

func (s *syncSender) send(m *fleetv1.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// heartbeats sends a heartbeat every interval, with the outbox counters,
// until ctx is done or a send fails.
func (l *Link) heartbeats(ctx context.Context, out *syncSender, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		hb := &fleetv1.Heartbeat{Sent: timestamppb.New(l.cfg.Now())}
		if l.cfg.Outbox != nil {
			if st, err := l.cfg.Outbox.OutboxStats(); err == nil {
				hb.OutboxPending, hb.OutboxDropped, hb.OutboxKinds = st.Pending, st.Dropped, kindStats(st)
			}
		}
		err := out.send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: hb}})
		if err != nil {
			return fmt.Errorf("send heartbeat: %w", err)
		}
		l.mu.Lock()
		l.st.LastContact = l.cfg.Now()
		st := l.st
		l.mu.Unlock()
		l.persist(st)
	}
}

// kindStats are the outbox's per-kind counters for a heartbeat, bounded by
// fleetv1.MaxPayloadKinds (in name order).
func kindStats(st cache.OutboxStats) []*fleetv1.OutboxKindStats {
	names := make([]string, 0, len(st.Kinds))
	for name := range st.Kinds {
		names = append(names, name)
	}
	slices.Sort(names)
	var out []*fleetv1.OutboxKindStats
	for _, name := range names[:min(len(names), fleetv1.MaxPayloadKinds)] {
		k := st.Kinds[name]
		out = append(out, &fleetv1.OutboxKindStats{Kind: name, Pending: k.Pending, Bytes: k.Bytes, Dropped: k.Dropped, DeadLettered: k.DeadLettered})
	}
	return out
}
