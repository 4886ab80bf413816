package fleetv1

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Every message a hub or an agent decodes from its peer is untrusted input:
// decoding arbitrary bytes must not panic, and whatever decodes must
// re-encode and decode to the same message.

func roundTrip(t *testing.T, data []byte, msg proto.Message) {
	t.Helper()
	if err := proto.Unmarshal(data, msg); err != nil {
		return
	}
	out, err := proto.Marshal(msg)
	if err != nil {
		t.Fatalf("re-marshal %T decoded from %x: %v", msg, data, err)
	}
	again := msg.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(out, again); err != nil {
		t.Fatalf("unmarshal re-marshalled %T %x: %v", msg, out, err)
	}
	if !proto.Equal(msg, again) {
		t.Fatalf("%T changed in a round trip:\n first: %v\nsecond: %v", msg, msg, again)
	}
}

func seed(f *testing.F, msgs ...proto.Message) {
	f.Helper()
	for _, m := range msgs {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatalf("marshal seed %T: %v", m, err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
}

func FuzzAgentMessage(f *testing.F) {
	seed(f,
		&AgentMessage{Msg: &AgentMessage_Hello{Hello: &Hello{Cluster: "edge-1", AgentVersion: "v1", HaveRevision: 7, Hostname: "h"}}},
		&AgentMessage{Msg: &AgentMessage_Heartbeat{Heartbeat: &Heartbeat{Sent: timestamppb.Now(), OutboxPending: 3}}},
		&AgentMessage{Msg: &AgentMessage_Ack{Ack: &Ack{Revision: 9}}},
		&AgentMessage{Msg: &AgentMessage_Status{Status: &StatusReport{Revision: 9, Services: []*ServiceStatus{{Name: "nginx", State: "Deployed"}}}}},
	)
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, &AgentMessage{}) })
}

func FuzzHubMessage(f *testing.F) {
	seed(f,
		&HubMessage{Msg: &HubMessage_Welcome{Welcome: &Welcome{Cluster: "edge-1", ServerTime: timestamppb.Now(), HeartbeatSeconds: 30}}},
		&HubMessage{Msg: &HubMessage_Desired{Desired: &DesiredState{
			Cluster: "edge-1", Revision: 8, Full: true,
			Services:   []*Service{{Name: "nginx", Namespace: "web", ChartDigest: "sha256:00", ValuesYaml: []byte("a: 1\n"), DependsOn: []string{"db/pg"}}},
			Tombstones: []*Tombstone{{Name: "old", Namespace: "web", Revision: 8}},
		}}},
		&HubMessage{Msg: &HubMessage_Desired{Desired: &DesiredState{
			Cluster: "edge-1", Revision: 9,
			Services: []*Service{{Name: "nginx", Namespace: "web", ChartDigest: "sha256:00", Staged: &StagedService{
				Next:    &Service{Name: "nginx", Namespace: "web", ChartDigest: "sha256:01", ChartVersion: "2.0.0"},
				Windows: []*Window{{Start: timestamppb.Now(), End: timestamppb.Now()}},
			}}},
		}}},
	)
	f.Fuzz(func(t *testing.T, data []byte) { roundTrip(t, data, &HubMessage{}) })
}

// FuzzHubInput covers the other messages the hub decodes from agents.
func FuzzHubInput(f *testing.F) {
	seed(f,
		&EnrollRequest{Token: "tok", CsrDer: []byte{0x30, 0x82}, AgentVersion: "v1"},
		&RenewRequest{CsrDer: []byte{0x30}},
		&FetchChartRequest{Digest: "sha256:abc"},
		&DiagnoseResponse{AgentVersion: "v1", Cluster: "edge-1", LinkState: "up"},
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, &EnrollRequest{})
		roundTrip(t, data, &RenewRequest{})
		roundTrip(t, data, &FetchChartRequest{})
		roundTrip(t, data, &DiagnoseResponse{})
	})
}

// FuzzAgentInput covers the other messages the agent decodes from the hub.
func FuzzAgentInput(f *testing.F) {
	seed(f,
		&EnrollResponse{Cluster: "edge-1", CertificateDer: []byte{1}, CaDer: []byte{2}, NotAfter: timestamppb.Now()},
		&RenewResponse{CertificateDer: []byte{1}, NotAfter: timestamppb.Now()},
		&ChartChunk{Data: []byte("tgz"), TotalSize: 3},
		&DiagnoseRequest{},
	)
	f.Fuzz(func(t *testing.T, data []byte) {
		roundTrip(t, data, &EnrollResponse{})
		roundTrip(t, data, &RenewResponse{})
		roundTrip(t, data, &ChartChunk{})
		roundTrip(t, data, &DiagnoseRequest{})
	})
}
