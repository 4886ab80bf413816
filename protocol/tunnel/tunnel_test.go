package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func TestBothDirections(t *testing.T) {
	for _, kind := range connKinds {
		t.Run(kind, func(t *testing.T) {
			checkLeaks(t)
			p := newPair(t, kind, pairOpts{})
			ctx := callCtx(t)

			// agent → hub, unary.
			hub := fleetClient(t, p.agent)
			resp, err := hub.Renew(ctx, &fleetv1.RenewRequest{CsrDer: []byte("csr")})
			if err != nil {
				t.Fatalf("agent→hub Renew: %v", err)
			}
			if string(resp.GetCertificateDer()) != "csr" {
				t.Errorf("Renew echoed %q, want %q", resp.GetCertificateDer(), "csr")
			}
			ai := p.hubSvc.lastAuth()
			if ai.Session != p.hub {
				t.Errorf("hub handler saw Session %p, want the hub session %p", ai.Session, p.hub)
			}
			checkTLS(t, kind, ai, testCluster)

			// agent → hub, server streaming.
			stream, err := hub.FetchChart(ctx, &fleetv1.FetchChartRequest{Digest: "chunk=1000,count=5"})
			if err != nil {
				t.Fatalf("FetchChart: %v", err)
			}
			var got int
			for {
				c, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("FetchChart Recv after %d bytes: %v", got, err)
				}
				got += len(c.GetData())
			}
			if got != 5000 {
				t.Errorf("FetchChart got %d bytes, want 5000", got)
			}

			// agent → hub, bidi.
			sync, err := hub.Sync(ctx)
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			if err := sync.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Hello{Hello: &fleetv1.Hello{Cluster: testCluster}}}); err != nil {
				t.Fatalf("Sync Send Hello: %v", err)
			}
			m, err := sync.Recv()
			if err != nil {
				t.Fatalf("Sync Recv Welcome: %v", err)
			}
			if m.GetWelcome().GetCluster() != testCluster {
				t.Errorf("Welcome cluster %q, want %q", m.GetWelcome().GetCluster(), testCluster)
			}
			if err := sync.CloseSend(); err != nil {
				t.Fatalf("Sync CloseSend: %v", err)
			}
			if _, err := sync.Recv(); !errors.Is(err, io.EOF) {
				t.Fatalf("Sync Recv after CloseSend: %v, want EOF", err)
			}

			// hub → agent, on the same connection.
			d, err := agentClient(t, p.hub).Diagnose(ctx, &fleetv1.DiagnoseRequest{})
			if err != nil {
				t.Fatalf("hub→agent Diagnose: %v", err)
			}
			if d.GetCluster() != testCluster {
				t.Errorf("Diagnose cluster %q, want %q", d.GetCluster(), testCluster)
			}
			ai = p.agentSvc.lastAuth()
			if ai.Session != p.agent {
				t.Errorf("agent handler saw Session %p, want the agent session %p", ai.Session, p.agent)
			}
			checkTLS(t, kind, ai, "hub.test")

			st := p.hub.Stats()
			if st.BytesIn == 0 || st.BytesOut == 0 {
				t.Errorf("hub Stats = %+v, want both counters > 0", st)
			}
		})
	}
}

func checkTLS(t *testing.T, kind string, ai AuthInfo, wantCN string) {
	t.Helper()
	if kind != "tls" {
		if ai.TLS != nil {
			t.Errorf("AuthInfo.TLS = %+v on a %s conn, want nil", ai.TLS, kind)
		}
		return
	}
	if ai.TLS == nil || len(ai.TLS.PeerCertificates) == 0 {
		t.Fatalf("AuthInfo.TLS has no peer certificate on a TLS conn: %+v", ai.TLS)
	}
	if cn := ai.TLS.PeerCertificates[0].Subject.CommonName; cn != wantCN {
		t.Errorf("peer certificate CN %q, want %q", cn, wantCN)
	}
	if ai.TLS.Version != 0x0304 {
		t.Errorf("TLS version %#x, want TLS 1.3", ai.TLS.Version)
	}
}

func TestReverseClientConnIsLazy(t *testing.T) {
	for _, kind := range connKinds {
		t.Run(kind, func(t *testing.T) {
			checkLeaks(t)
			p := newPair(t, kind, pairOpts{})
			ctx := callCtx(t)
			if _, err := fleetClient(t, p.agent).Renew(ctx, &fleetv1.RenewRequest{}); err != nil {
				t.Fatalf("Renew: %v", err)
			}
			if n := p.hub.NumStreams(); n != 1 {
				t.Fatalf("hub has %d streams after one agent→hub call, want 1", n)
			}
			// Creating the ClientConn opens nothing; the first call does.
			cc, err := p.hub.ClientConn()
			if err != nil {
				t.Fatalf("ClientConn: %v", err)
			}
			if n := p.hub.NumStreams(); n != 1 {
				t.Fatalf("hub has %d streams after ClientConn(), want 1 (no call yet)", n)
			}
			if cc2, _ := p.hub.ClientConn(); cc2 != cc {
				t.Errorf("second ClientConn() returned a new conn")
			}
			if _, err := fleetv1.NewAgentClient(cc).Diagnose(ctx, &fleetv1.DiagnoseRequest{}); err != nil {
				t.Fatalf("Diagnose: %v", err)
			}
			if n := p.hub.NumStreams(); n != 2 {
				t.Fatalf("hub has %d streams after a hub→agent call, want 2", n)
			}
		})
	}
}

func TestReverseClientConnReleasedWhenIdle(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.ClientIdleTimeout = 100 * time.Millisecond
	p := newPair(t, "pipe", pairOpts{hubCfg: &cfg})
	if _, err := agentClient(t, p.hub).Diagnose(callCtx(t), &fleetv1.DiagnoseRequest{}); err != nil {
		t.Fatalf("Diagnose: %v", err)
	}
	waitFor(t, 10*time.Second, "idle hub→agent transport to be closed", func() bool { return p.hub.NumStreams() == 0 })
	if _, err := agentClient(t, p.hub).Diagnose(callCtx(t), &fleetv1.DiagnoseRequest{}); err != nil {
		t.Fatalf("Diagnose after idle: %v", err)
	}
}

func TestCloseIsIdempotentAndPeerSeesIt(t *testing.T) {
	for _, kind := range connKinds {
		t.Run(kind, func(t *testing.T) {
			checkLeaks(t)
			p := newPair(t, kind, pairOpts{})
			// Open both directions so Close has transports to tear down.
			if _, err := fleetClient(t, p.agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
				t.Fatalf("Renew: %v", err)
			}
			if _, err := agentClient(t, p.hub).Diagnose(callCtx(t), &fleetv1.DiagnoseRequest{}); err != nil {
				t.Fatalf("Diagnose: %v", err)
			}
			if err := p.agent.Err(); err != nil {
				t.Fatalf("Err() on a live session = %v, want nil", err)
			}
			for i := range 3 {
				if err := p.agent.Close(); err != nil {
					t.Fatalf("Close #%d: %v", i+1, err)
				}
			}
			waitDone(t, p.agent, time.Second)
			if err := p.agent.Err(); !errors.Is(err, ErrClosed) {
				t.Errorf("Err() after Close = %v, want ErrClosed", err)
			}
			if _, err := p.agent.ClientConn(); !errors.Is(err, ErrClosed) {
				t.Errorf("ClientConn() after Close = %v, want ErrClosed", err)
			}
			waitDone(t, p.hub, 10*time.Second)
			if err := p.hub.Err(); err == nil || errors.Is(err, ErrClosed) {
				t.Errorf("hub Err() after the agent closed = %v, want a remote-close error", err)
			}
			if _, err := p.hub.ClientConn(); err == nil {
				t.Errorf("hub ClientConn() on a dead session succeeded")
			}
		})
	}
}

// TestCloseFromHandler checks a handler can drop its own session (the hub
// does this when it revokes a cluster).
func TestCloseFromHandler(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, "pipe", pairOpts{})
	_, err := fleetClient(t, p.agent).Sync(callCtx(t))
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	waitFor(t, 5*time.Second, "Sync handler to start", func() bool { return p.hubSvc.lastAuth().Session != nil })
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.hubSvc.lastAuth().Session.Close()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Session.Close from a handler's goroutine did not return")
	}
	waitDone(t, p.agent, 10*time.Second)
}

func TestRemoteDeathDetected(t *testing.T) {
	for _, kind := range connKinds {
		t.Run("cut/"+kind, func(t *testing.T) {
			checkLeaks(t)
			p := newPair(t, kind, pairOpts{})
			stream, err := fleetClient(t, p.agent).Sync(callCtx(t))
			if err != nil {
				t.Fatalf("Sync: %v", err)
			}
			// Cut the connection under both sessions.
			p.wireAgent.Conn.Close()
			waitDone(t, p.hub, 10*time.Second)
			waitDone(t, p.agent, 10*time.Second)
			if _, err := stream.Recv(); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
				t.Errorf("Sync Recv after cut = %v, want Unavailable", err)
			}
			if p.hub.Err() == nil {
				t.Errorf("hub Err() = nil after the connection was cut")
			}
		})
	}
	t.Run("keepalive", func(t *testing.T) {
		checkLeaks(t)
		// The agent end of a TCP connection that never reads: the hub's
		// keepalive ping goes unanswered.
		hubConn, agentConn := tcpPair(t)
		t.Cleanup(func() { agentConn.Close() })
		cfg := testConfig()
		cfg.KeepAliveInterval = 20 * time.Millisecond
		cfg.ConnectionWriteTimeout = 50 * time.Millisecond
		srv := grpc.NewServer(ServerOptions(cfg)...)
		t.Cleanup(srv.Stop)
		ts, err := NewServer(cfg, srv)
		if err != nil {
			t.Fatal(err)
		}
		s, err := ts.ServeConn(context.Background(), hubConn)
		if err != nil {
			t.Fatalf("ServeConn: %v", err)
		}
		t.Cleanup(func() { s.Close() })
		waitDone(t, s, 10*time.Second)
		if err := s.Err(); !errContains(err, "keepalive") {
			t.Errorf("Err() = %v, want a keepalive timeout", err)
		}
	})
}

func TestOversizedMessage(t *testing.T) {
	small := testConfig()
	small.MaxRecvMsgSize = 64 << 10
	big := testConfig()
	big.MaxSendMsgSize = 1 << 20
	tests := []struct {
		name     string
		hub      Config
		agent    Config
		size     int
		wantText string
	}{
		// The sender refuses: the message never leaves the agent.
		{"sender limit", testConfig(), testConfig(), 5 << 20, "larger than max"},
		// The receiver refuses what a misconfigured or hostile sender sent.
		{"receiver limit", small, big, 100 << 10, "larger than max"},
	}
	for _, tc := range tests {
		for _, kind := range connKinds {
			t.Run(tc.name+"/"+kind, func(t *testing.T) {
				checkLeaks(t)
				p := newPair(t, kind, pairOpts{hubCfg: &tc.hub, agentCfg: &tc.agent})
				hub := fleetClient(t, p.agent)
				_, err := hub.Renew(callCtx(t), &fleetv1.RenewRequest{CsrDer: make([]byte, tc.size)})
				if status.Code(err) != codes.ResourceExhausted || !errContains(err, tc.wantText) {
					t.Fatalf("Renew with %d bytes = %v, want ResourceExhausted %q", tc.size, err, tc.wantText)
				}
				// The session and the same ClientConn go on working.
				resp, err := hub.Renew(callCtx(t), &fleetv1.RenewRequest{CsrDer: []byte("ok")})
				if err != nil || !bytes.Equal(resp.GetCertificateDer(), []byte("ok")) {
					t.Fatalf("Renew after the oversized one = %v, %v; want success", resp, err)
				}
				if err := p.hub.Err(); err != nil {
					t.Fatalf("hub session ended: %v", err)
				}
			})
		}
	}
}

func TestGarbageInput(t *testing.T) {
	inputs := []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"http request", []byte("GET / HTTP/1.1\r\nHost: hub\r\n\r\n"), "invalid protocol version"},
		{"bad msg type", []byte{0, 9, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0}, "invalid msg type"},
		{"window exceeded", []byte{0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}, "recv window exceeded"},
		{"truncated header", []byte{0, 0}, "peer closed"},
	}
	for _, in := range inputs {
		for _, kind := range []string{"pipe", "tcp"} {
			t.Run(in.name+"/"+kind, func(t *testing.T) {
				checkLeaks(t)
				c := connPair(t, kind)
				srv := grpc.NewServer(ServerOptions(testConfig())...)
				t.Cleanup(srv.Stop)
				ts, err := NewServer(testConfig(), srv)
				if err != nil {
					t.Fatal(err)
				}
				s, err := ts.ServeConn(context.Background(), c.hub)
				if err != nil {
					t.Fatalf("ServeConn: %v", err)
				}
				t.Cleanup(func() { s.Close() })
				// Drain what the hub writes so net.Pipe never blocks it.
				drained := make(chan struct{})
				go func() { defer close(drained); io.Copy(io.Discard, c.agent) }()
				t.Cleanup(func() { c.agent.Close(); <-drained })
				if _, err := c.agent.Write(in.data); err != nil {
					t.Fatalf("write garbage: %v", err)
				}
				if in.wantErr == "peer closed" {
					if cw, ok := c.agent.(*CountingConn).Conn.(interface{ CloseWrite() error }); ok {
						cw.CloseWrite()
					} else {
						c.agent.Close()
					}
				}
				waitDone(t, s, 10*time.Second)
				err = s.Err()
				if err == nil || !strings.Contains(err.Error(), "hub session with") || !strings.Contains(err.Error(), in.wantErr) {
					t.Errorf("Err() = %v, want a hub session error containing %q", err, in.wantErr)
				}
			})
		}
	}
}

func TestAgentWithoutServer(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, "pipe", pairOpts{noAgentServer: true})
	_, err := agentClient(t, p.hub).Diagnose(callCtx(t), &fleetv1.DiagnoseRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("Diagnose on an agent without server = %v, want Unavailable", err)
	}
	if _, err := fleetClient(t, p.agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
		t.Fatalf("agent→hub Renew still works: %v", err)
	}
}

func TestMaxTransports(t *testing.T) {
	checkLeaks(t)
	cfg := testConfig()
	cfg.MaxTransports = 1
	p := newPair(t, "pipe", pairOpts{hubCfg: &cfg})
	// The agent's ClientConn takes the only slot.
	if _, err := fleetClient(t, p.agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	// A second raw stream is reset by the hub without being served (not
	// half-closed, where it kept buffering the peer's writes).
	st, err := p.agent.mux.OpenStream()
	if err != nil {
		t.Fatalf("open a second stream: %v", err)
	}
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Read(make([]byte, 1)); !errors.Is(err, yamux.ErrConnectionReset) {
		t.Fatalf("read on a stream over MaxTransports = %v, want a reset", err)
	}
	// The hub forgets it at the next frame the agent sends.
	if _, err := p.agent.mux.Ping(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "hub to forget the reset stream", func() bool { return p.hub.NumStreams() == 1 })
	if p.hub.Refused() != 1 {
		t.Fatalf("hub Refused = %d, want 1", p.hub.Refused())
	}
	if _, err := fleetClient(t, p.agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
		t.Fatalf("Renew after the refused stream: %v", err)
	}
}

func TestServerStopClosesSessions(t *testing.T) {
	checkLeaks(t)
	p := newPair(t, "pipe", pairOpts{})
	if _, err := fleetClient(t, p.agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	p.hubGRPC.Stop()
	waitDone(t, p.hub, 10*time.Second)
	waitDone(t, p.agent, 10*time.Second)
}

func TestServeConnRunsTLSHandshake(t *testing.T) {
	checkLeaks(t)
	a, b := tcpPair(t)
	pk := getPKI(t)
	hubConn := tlsServer(a, pk)
	agentConn := tlsClient(b, pk)
	t.Cleanup(func() { hubConn.Close(); agentConn.Close() })
	srv := grpc.NewServer(ServerOptions(testConfig())...)
	fleetv1.RegisterFleetServer(srv, &hubService{})
	t.Cleanup(srv.Stop)
	ts, err := NewServer(testConfig(), srv)
	if err != nil {
		t.Fatal(err)
	}
	type res struct {
		s   *Session
		err error
	}
	ch := make(chan res, 1)
	go func() {
		s, err := ts.ServeConn(context.Background(), hubConn)
		ch <- res{s, err}
	}()
	agent, err := Dial(context.Background(), agentConn, testConfig(), nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { agent.Close() })
	r := <-ch
	if r.err != nil {
		t.Fatalf("ServeConn: %v", r.err)
	}
	t.Cleanup(func() { r.s.Close() })
	if r.s.TLS() == nil || len(r.s.TLS().PeerCertificates) != 1 {
		t.Fatalf("hub session TLS state = %+v, want the agent's certificate", r.s.TLS())
	}
	if _, err := fleetClient(t, agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
		t.Fatalf("Renew: %v", err)
	}

	// A failed handshake is reported with the peer's address and closes the conn.
	a2, b2 := tcpPair(t)
	t.Cleanup(func() { a2.Close(); b2.Close() })
	go func() { b2.Write([]byte("not a TLS client hello, not at all......")) }()
	_, err = ts.ServeConn(context.Background(), tlsServer(a2, pk))
	if !errContains(err, "TLS handshake") || !errContains(err, b2.LocalAddr().String()) {
		t.Fatalf("ServeConn on a non-TLS peer = %v, want a TLS handshake error naming %s", err, b2.LocalAddr())
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"default", func(*Config) {}, ""},
		{"zero keepalive", func(c *Config) { c.KeepAliveInterval = 0 }, "KeepAliveInterval"},
		{"small window", func(c *Config) { c.StreamWindowSize = 1024 }, "StreamWindowSize"},
		{"no backlog", func(c *Config) { c.AcceptBacklog = 0 }, "AcceptBacklog"},
		{"unbounded msg", func(c *Config) { c.MaxRecvMsgSize = 1 << 30 }, "MaxRecvMsgSize"},
		{"zero send", func(c *Config) { c.MaxSendMsgSize = 0 }, "MaxSendMsgSize"},
		{"negative buffer", func(c *Config) { c.ReadBufferSize = -1 }, "ReadBufferSize"},
		{"tiny grpc window", func(c *Config) { c.InitialWindowSize = 10 }, "InitialWindowSize"},
		{"no transports", func(c *Config) { c.MaxTransports = 0 }, "MaxTransports"},
		{"no idle timeout", func(c *Config) { c.ClientIdleTimeout = 0 }, "ClientIdleTimeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mutate(&c)
			err := c.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidConfig) || !errContains(err, tc.want) {
				t.Fatalf("Validate() = %v, want ErrInvalidConfig naming %s", err, tc.want)
			}
		})
	}
	// Dial refuses a bad config and closes the conn it was given.
	a, b := net.Pipe()
	defer b.Close()
	bad := DefaultConfig()
	bad.AcceptBacklog = 0
	if _, err := Dial(context.Background(), a, bad, nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Dial with a bad config = %v, want ErrInvalidConfig", err)
	}
	if _, err := a.Write([]byte{1}); err == nil {
		t.Errorf("Dial with a bad config left the conn open")
	}
}

func TestFromContextOutsideTunnel(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Fatal("FromContext found AuthInfo in a bare context")
	}
}

// TestStreamsOverMaxStreamsAreReset: yamux v0.1.2 has no cap on the
// streams a peer opens; each kept a window of buffered data. The gate
// resets every stream beyond MaxStreams before yamux sees it.
func TestStreamsOverMaxStreamsAreReset(t *testing.T) {
	for _, kind := range connKinds {
		t.Run(kind, func(t *testing.T) {
			checkLeaks(t)
			cfg := testConfig()
			cfg.MaxTransports, cfg.MaxStreams = 1, 3
			p := newPair(t, kind, pairOpts{hubCfg: &cfg})
			const opened = 40
			var reset int
			var streams []*yamux.Stream
			for range opened {
				st, err := p.agent.mux.OpenStream()
				if err != nil {
					t.Fatalf("open stream: %v", err)
				}
				streams = append(streams, st)
			}
			for _, st := range streams {
				st.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, err := st.Read(make([]byte, 1))
				switch {
				case errors.Is(err, yamux.ErrConnectionReset):
					reset++
				case errors.Is(err, yamux.ErrTimeout):
					t.Fatal("a stream was neither served nor reset")
				}
				st.Close()
			}
			// One may be served by gRPC (it then fails the handshake and
			// closes); every other one is reset.
			if reset < opened-cfg.MaxStreams {
				t.Fatalf("%d of %d streams reset; want at least %d", reset, opened, opened-cfg.MaxStreams)
			}
			if n := p.hub.NumStreams(); n > cfg.MaxStreams {
				t.Fatalf("hub holds %d streams, MaxStreams is %d", n, cfg.MaxStreams)
			}
			// Once the closed streams are gone, the session serves again.
			// A reset stream is released at the next frame the peer sends.
			waitFor(t, 10*time.Second, "closed streams to be released", func() bool {
				_, _ = p.agent.mux.Ping()
				return p.hub.NumStreams() == 0
			})
			if _, err := fleetClient(t, p.agent).Renew(callCtx(t), &fleetv1.RenewRequest{}); err != nil {
				t.Fatalf("Renew after the flood: %v", err)
			}
		})
	}
}
