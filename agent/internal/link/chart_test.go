package link

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/grpc"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// stalledCharts is a FleetClient whose chart streams never send.
type stalledCharts struct{ fleetv1.FleetClient }

type stalledStream struct {
	grpc.ServerStreamingClient[fleetv1.ChartChunk]
	ctx context.Context
}

func (s stalledStream) Recv() (*fleetv1.ChartChunk, error) {
	<-s.ctx.Done()
	return nil, s.ctx.Err()
}

func (stalledCharts) FetchChart(ctx context.Context, _ *fleetv1.FetchChartRequest, _ ...grpc.CallOption) (grpc.ServerStreamingClient[fleetv1.ChartChunk], error) {
	return stalledStream{ctx: ctx}, nil
}

// TestChartFetchHasADeadline: a hub that stops sending chart chunks used to
// hold the reconciler forever; the download ends at ChartFetchTimeout.
func TestChartFetchHasADeadline(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cache, cfg.ChartFetchTimeout = &memCache{}, 50*time.Millisecond
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.client = stalledCharts{}
	_, err = l.FetchChart(context.Background(), "sha256:abc")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("FetchChart from a stalled hub: %v; want a deadline error", err)
	}
}
