package tunnel

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// goroutinesIn counts the goroutines whose stack has a frame of fn.
func goroutinesIn(fn string) int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	count := 0
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if bytes.Contains(g, []byte(fn)) {
			count++
		}
	}
	return count
}

// hubSessions starts n tunnels whose hub ends share one Server, each with
// its Sync stream open (as an idle agent has), and returns the agents.
func hubSessions(t *testing.T, n int, hubCfg, agentCfg Config) (*Server, []*Session) {
	t.Helper()
	hubGRPC := grpc.NewServer(ServerOptions(hubCfg)...)
	fleetv1.RegisterFleetServer(hubGRPC, &hubService{})
	t.Cleanup(hubGRPC.Stop)
	srv, err := NewServer(hubCfg, hubGRPC)
	if err != nil {
		t.Fatal(err)
	}
	var agents []*Session
	for range n {
		c := connPair(t, "pipe")
		hub, err := srv.ServeConn(context.Background(), c.hub)
		if err != nil {
			t.Fatalf("ServeConn: %v", err)
		}
		t.Cleanup(func() { hub.Close() })
		agent, err := Dial(context.Background(), c.agent, agentCfg, nil)
		if err != nil {
			t.Fatalf("Dial: %v", err)
		}
		t.Cleanup(func() { agent.Close() })
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		stream, err := fleetClient(t, agent).Sync(ctx)
		if err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: testCluster}}}); err != nil {
			t.Fatalf("Sync send: %v", err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Sync recv: %v", err)
		}
		agents = append(agents, agent)
	}
	return srv, agents
}

// TestHubSessionsShareOneServe checks that idle hub sessions park no
// goroutine of their own to accept streams: one grpc.Server.Serve serves
// them all, and the accept that handed each its transport has ended. It
// used to be one Serve per session, a goroutine stack per agent.
func TestHubSessionsShareOneServe(t *testing.T) {
	checkLeaks(t)
	const n = 8
	hubCfg := testConfig()
	hubCfg.NoKeepAlive = true
	hubSessions(t, n, hubCfg, testConfig())
	waitFor(t, 10*time.Second, "the accepts to end", func() bool {
		return goroutinesIn("tunnel.(*Session).acceptLoop") == 0
	})
	if got := goroutinesIn("grpc.(*Server).Serve("); got != 1 {
		t.Errorf("%d goroutines in grpc.Server.Serve for %d hub sessions, want 1", got, n)
	}
	// The agents keep their keepalive; the hub runs none with NoKeepAlive.
	if got := goroutinesIn("yamux.(*Session).keepalive"); got != n {
		t.Errorf("%d yamux keepalive goroutines, want %d (the agents' only)", got, n)
	}
}

// TestHubReacceptsAfterTransportEnds checks that a hub session serves a
// new transport after the agent's ClientConn released its idle one: the
// accept is re-armed by the agent's next stream.
func TestHubReacceptsAfterTransportEnds(t *testing.T) {
	checkLeaks(t)
	agentCfg := testConfig()
	agentCfg.ClientIdleTimeout = 50 * time.Millisecond
	p := newPair(t, "pipe", pairOpts{agentCfg: &agentCfg})
	for i := range 3 {
		if _, err := fleetClient(t, p.agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
			t.Fatalf("Renew %d: %v", i, err)
		}
		waitFor(t, 10*time.Second, "the idle transport to be released", func() bool { return p.hub.NumStreams() == 0 })
	}
	if p.hub.Err() != nil {
		t.Fatalf("hub session ended: %v", p.hub.Err())
	}
}

// TestSessionEndsWhenServerStoppedFirst checks that a session started on a
// Server whose grpc.Server has stopped ends at once, calling OnEnd.
func TestSessionEndsWhenServerStoppedFirst(t *testing.T) {
	checkLeaks(t)
	hubGRPC := grpc.NewServer(ServerOptions(testConfig())...)
	srv, err := NewServer(testConfig(), hubGRPC)
	if err != nil {
		t.Fatal(err)
	}
	hubGRPC.Stop()
	c := connPair(t, "pipe")
	ended := make(chan struct{})
	s, err := srv.ServeConnFunc(context.Background(), c.hub, func(*Session) { close(ended) })
	if err != nil {
		t.Fatalf("ServeConnFunc: %v", err)
	}
	defer s.Close()
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("OnEnd not called for a session on a stopped server")
	}
}

// TestStreamOpenedBeforeServeConn checks a hub session whose peer opened
// its gRPC transport before ServeConn returned (the SYN already waiting on
// the connection): the accept it arms must wait for the session to be set
// up, and the call is served.
func TestStreamOpenedBeforeServeConn(t *testing.T) {
	checkLeaks(t)
	hubConn, agentConn := tcpPair(t)
	hubGRPC := grpc.NewServer(ServerOptions(testConfig())...)
	fleetv1.RegisterFleetServer(hubGRPC, &hubService{})
	t.Cleanup(hubGRPC.Stop)
	srv, err := NewServer(testConfig(), hubGRPC)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := Dial(context.Background(), agentConn, testConfig(), nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { agent.Close() })
	errc := make(chan error, 1)
	go func() {
		_, err := fleetClient(t, agent).Renew(callCtx(t), &fleetv1.RenewRequest{})
		errc <- err
	}()
	waitFor(t, 10*time.Second, "the agent to open its transport", func() bool { return agent.NumStreams() == 1 })
	hub, err := srv.ServeConn(context.Background(), hubConn)
	if err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	t.Cleanup(func() { hub.Close() })
	if err := <-errc; err != nil {
		t.Fatalf("Renew: %v", err)
	}
}
