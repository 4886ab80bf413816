package link

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
	"github.com/tetherfleet/tether/protocol/version"
)

type agentService struct {
	fleetv1.UnimplementedAgentServer
	l *Link
}

func (a *agentService) Diagnose(context.Context, *fleetv1.DiagnoseRequest) (*fleetv1.DiagnoseResponse, error) {
	st := a.l.Status()
	return &fleetv1.DiagnoseResponse{
		AgentVersion: version.Get(), Cluster: st.Cluster, Now: timestamppb.New(a.l.cfg.Now()),
		HaveRevision: st.Revision, LinkState: st.State,
	}, nil
}
