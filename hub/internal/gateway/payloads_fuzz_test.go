package gateway

import (
	"errors"
	"testing"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// FuzzDecodeStatusPayload: the data of a status Payload is untrusted; it
// decodes to a report carrying the payload's seq, or is refused (never a
// panic, never another error).
func FuzzDecodeStatusPayload(f *testing.F) {
	f.Add(uint64(1), []byte{0x08, 0x07})
	f.Add(uint64(2), []byte("\xff\xff"))
	f.Fuzz(func(t *testing.T, seq uint64, data []byte) {
		rep, err := decodeStatus(&fleetv1.Payload{Seq: seq, Kind: fleetv1.PayloadKindStatus, Data: data})
		if err != nil {
			if !errors.Is(err, ErrPayloadRefused) {
				t.Fatalf("decodeStatus: %v; want ErrPayloadRefused", err)
			}
			return
		}
		if rep.GetSeq() != seq {
			t.Fatalf("seq = %d, want the payload's %d", rep.GetSeq(), seq)
		}
	})
}

// FuzzPayloadKinds: kinds offered in a hello and counters in a heartbeat
// are untrusted; what is kept is bounded and well-formed.
func FuzzPayloadKinds(f *testing.F) {
	f.Add("status", "metrics")
	f.Add("", "\x00")
	f.Fuzz(func(t *testing.T, a, b string) {
		g := &Gateway{}
		kinds, err := g.negotiateKinds([]string{a, b})
		if err == nil {
			for _, k := range kinds {
				if k != fleetv1.PayloadKindStatus {
					t.Fatalf("negotiated %q; this hub accepts only status", k)
				}
			}
		}
		for _, k := range outboxKinds([]*fleetv1.OutboxKindStats{{Kind: a}, {Kind: b}}) {
			if k.Kind == "" || len(k.Kind) > fleetv1.MaxPayloadKindBytes {
				t.Fatalf("kept kind %q", k.Kind)
			}
		}
	})
}
