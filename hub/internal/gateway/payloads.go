package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// PayloadReceiver stores agent payloads of one kind (Config.Payloads).
// ReceivePayload returns nil once the payload is stored (the agent then
// removes it), an error wrapping ErrPayloadRefused if it can never be
// stored (the agent dead-letters it), or another error if it cannot be
// stored now (the stream ends and the agent sends it again). seq orders an
// agent's payloads; a payload may arrive twice after a reconnect.
type PayloadReceiver interface {
	ReceivePayload(ctx context.Context, cluster string, seq uint64, data []byte) error
}

// ErrPayloadRefused: a payload that will never be stored (it does not
// decode, or breaks a limit); the agent dead-letters it.
var ErrPayloadRefused = errors.New("payload refused")

// acceptedKinds are the payload kinds this hub takes: status, and every
// kind in Config.Payloads.
func (g *Gateway) acceptedKinds() []string {
	kinds := []string{fleetv1.PayloadKindStatus}
	for k := range g.cfg.Payloads {
		if k != fleetv1.PayloadKindStatus {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	return kinds
}

// negotiateKinds checks the kinds an agent offers in its Hello and returns
// those this hub accepts, for the Welcome. An agent that offers none
// (older than payload kinds) gets none and sends only StatusReport.
func (g *Gateway) negotiateKinds(offered []string) ([]string, error) {
	if len(offered) > fleetv1.MaxPayloadKinds {
		return nil, status.Errorf(codes.InvalidArgument, "sync: hello: %d payload kinds, at most %d", len(offered), fleetv1.MaxPayloadKinds)
	}
	accepted := g.acceptedKinds()
	var out []string
	for _, k := range offered {
		if !fleetv1.ValidPayloadKind(k) {
			return nil, status.Errorf(codes.InvalidArgument, "sync: hello: payload kind %.80q: want 1-%d of a-z, 0-9, '-', '.'", k, fleetv1.MaxPayloadKindBytes)
		}
		if slices.Contains(accepted, k) && !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// payload stores one Payload and answers it with a PayloadAck: stored, or
// refused for good. A payload that cannot be stored now ends the stream.
func (g *Gateway) payload(ctx context.Context, out *hubSender, s *agentSession, p *fleetv1.Payload) error {
	err := g.receivePayload(ctx, s, p)
	ack := &fleetv1.PayloadAck{Seq: p.GetSeq()}
	switch {
	case errors.Is(err, ErrPayloadRefused):
		g.log.Warn("agent payload refused", "cluster", s.cluster, "kind", p.GetKind(), "seq", p.GetSeq(), "err", err)
		ack.Refused, ack.Reason = true, err.Error()
	case status.Code(err) == codes.PermissionDenied:
		return err
	case err != nil:
		// Not acknowledged: the agent sends it again after reconnecting.
		return status.Errorf(codes.Unavailable, "store %s payload %d of %q: %v", p.GetKind(), p.GetSeq(), s.cluster, err)
	}
	return out.send(&fleetv1.HubMessage{Msg: &fleetv1.HubMessage_PayloadAck{PayloadAck: ack}})
}

func (g *Gateway) receivePayload(ctx context.Context, s *agentSession, p *fleetv1.Payload) error {
	g.mu.Lock()
	negotiated := slices.Contains(s.payloadKinds, p.GetKind())
	g.mu.Unlock()
	if !negotiated {
		return fmt.Errorf("%w: kind %.80q was not negotiated in hello/welcome", ErrPayloadRefused, p.GetKind())
	}
	if p.GetKind() == fleetv1.PayloadKindStatus {
		rep, err := decodeStatus(p)
		if err != nil {
			return err
		}
		return g.saveReport(ctx, s.cluster, rep)
	}
	return g.cfg.Payloads[p.GetKind()].ReceivePayload(ctx, s.cluster, p.GetSeq(), p.GetData())
}

// decodeStatus decodes a status Payload; its seq is the payload's.
func decodeStatus(p *fleetv1.Payload) (*fleetv1.StatusReport, error) {
	if len(p.GetData()) > fleetv1.MaxStatusReportBytes {
		return nil, fmt.Errorf("%w: status report %d is %d bytes, at most %d", ErrPayloadRefused, p.GetSeq(), len(p.GetData()), fleetv1.MaxStatusReportBytes)
	}
	var rep fleetv1.StatusReport
	if err := proto.Unmarshal(p.GetData(), &rep); err != nil {
		return nil, fmt.Errorf("%w: status report %d: %v", ErrPayloadRefused, p.GetSeq(), err)
	}
	rep.Seq = p.GetSeq()
	return &rep, nil
}

// outboxKinds converts a heartbeat's per-kind counters, keeping at most
// MaxPayloadKinds well-formed ones.
func outboxKinds(in []*fleetv1.OutboxKindStats) []OutboxKindStats {
	var out []OutboxKindStats
	for _, k := range in {
		if len(out) == fleetv1.MaxPayloadKinds {
			break
		}
		if len(k.GetKind()) == 0 || len(k.GetKind()) > fleetv1.MaxPayloadKindBytes {
			continue
		}
		out = append(out, OutboxKindStats{Kind: k.GetKind(), Pending: k.GetPending(), Bytes: k.GetBytes(), Dropped: k.GetDropped(), DeadLettered: k.GetDeadLettered()})
	}
	return out
}
