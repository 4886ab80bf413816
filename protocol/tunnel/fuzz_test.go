package tunnel

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// FuzzServeConn feeds arbitrary bytes to a hub session, as an agent or an
// attacker could: the session must end (or be closed) without a panic, and
// Close must return, which means every goroutine it started is gone.
func FuzzServeConn(f *testing.F) {
	// Seeds: yamux frames (SYN for stream 1, ping, go-away, window update,
	// data on an unknown stream), an HTTP request, a TLS client hello start.
	f.Add([]byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7})
	f.Add([]byte{0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 24,
		'P', 'R', 'I', ' ', '*', ' ', 'H', 'T', 'T', 'P', '/', '2', '.', '0', '\r', '\n', '\r', '\n', 'S', 'M', '\r', '\n', '\r', '\n'})
	f.Add([]byte{0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4, 1, 2, 3, 4})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00})

	cfg := DefaultConfig()
	cfg.HandshakeTimeout = time.Second
	srv := grpc.NewServer(ServerOptions(cfg)...)
	fleetv1.RegisterFleetServer(srv, &hubService{})
	f.Cleanup(srv.Stop)
	ts, err := NewServer(cfg, srv)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		hub, agent := net.Pipe()
		s, err := ts.ServeConn(context.Background(), hub)
		if err != nil {
			t.Fatalf("ServeConn: %v", err)
		}
		drained := make(chan struct{})
		go func() { defer close(drained); io.Copy(io.Discard, agent) }()
		agent.SetWriteDeadline(time.Now().Add(time.Second))
		agent.Write(data)
		agent.Close()
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("session still up 10s after its peer closed")
		}
		s.Close()
		<-drained
		if s.Err() == nil {
			t.Fatalf("Err() = nil after the session ended")
		}
	})
}

// FuzzStreamGate feeds arbitrary bytes to the stream gate with no stream
// limit reached: it must hand yamux exactly the bytes it read, and never
// panic.
func FuzzStreamGate(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0})
	f.Add([]byte{0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 2, 'h', 'i', 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7})
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 1})
	f.Add([]byte{7, 9})
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		g := newStreamGate(bytes.NewReader(in), &coalescingConn{Conn: b}, 1<<30, true, nil)
		var out bytes.Buffer
		buf := make([]byte, 7) // small reads: headers split across calls
		for {
			n, err := g.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("gate handed yamux %x, not a prefix of its input %x", out.Bytes(), in)
		}
		if len(in)-out.Len() >= yamuxHeaderSize {
			t.Fatalf("gate kept back %d bytes of a complete input", len(in)-out.Len())
		}
	})
}
