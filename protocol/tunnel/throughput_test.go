package tunnel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

// writeCounter counts the Write calls on a conn; below TLS each one is a
// TLS record (crypto/tls writes each record with its own Write).
type writeCounter struct {
	net.Conn
	writes atomic.Int64
	bytes  atomic.Int64
}

func (c *writeCounter) Write(p []byte) (int, error) {
	c.writes.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.Conn.Write(p)
}

// recordPair is a tunnel over TLS on loopback TCP whose hub end counts the
// TLS records it writes.
func recordPair(t *testing.T) (*pair, *writeCounter) {
	t.Helper()
	hubRaw, agentRaw := tcpPair(t)
	wc := &writeCounter{Conn: hubRaw}
	pk := getPKI(t)
	hubTLS, agentTLS := tlsServer(wc, pk), tlsClient(agentRaw, pk)
	t.Cleanup(func() { hubTLS.Close(); agentTLS.Close() })
	p := &pair{hubSvc: &hubService{}}
	cfg := DefaultConfig()
	p.hubGRPC = grpc.NewServer(ServerOptions(cfg)...)
	fleetv1.RegisterFleetServer(p.hubGRPC, p.hubSvc)
	t.Cleanup(p.hubGRPC.Stop)
	srv, err := NewServer(cfg, p.hubGRPC)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		s, err := srv.ServeConn(context.Background(), hubTLS)
		p.hub = s
		errc <- err
	}()
	if p.agent, err = Dial(context.Background(), agentTLS, DefaultAgentConfig(), nil); err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { p.agent.Close() })
	if err := <-errc; err != nil {
		t.Fatalf("ServeConn: %v", err)
	}
	t.Cleanup(func() { p.hub.Close() })
	return p, wc
}

// fetch streams count chunks of size bytes from the hub and returns the
// bytes received.
func fetch(t *testing.T, c fleetv1.FleetClient, size, count int) int {
	t.Helper()
	stream, err := c.FetchChart(callCtx(t), &fleetv1.FetchChartRequest{Digest: fmt.Sprintf("chunk=%d,count=%d", size, count)})
	if err != nil {
		t.Fatalf("FetchChart: %v", err)
	}
	var got int
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatalf("FetchChart Recv after %d bytes: %v", got, err)
		}
		got += len(chunk.GetData())
	}
}

// TestBulkStreamFillsTLSRecords checks that a large stream goes out in
// full TLS records. gRPC writes its buffer as one yamux data frame; with a
// buffer of whole records, the frame's 12-byte header spilled into a
// record (and a syscall, and a wakeup of the reader) of its own: three
// records for every two records of data.
func TestBulkStreamFillsTLSRecords(t *testing.T) {
	checkLeaks(t)
	p, wc := recordPair(t)
	c := fleetClient(t, p.agent)
	// crypto/tls sends small records until a connection has sent 128 KiB;
	// measure after that.
	fetch(t, c, 64<<10, 4)
	const size, count = 64 << 10, 64
	writes, sent := wc.writes.Load(), wc.bytes.Load()
	if got := fetch(t, c, size, count); got != size*count {
		t.Fatalf("got %d bytes, want %d", got, size*count)
	}
	writes, sent = wc.writes.Load()-writes, wc.bytes.Load()-sent
	// Each record carries at most 16 KiB of plaintext: the stream's bytes
	// (payload, HTTP/2, yamux and TLS framing) need sent/(16 KiB+22 B).
	// gRPC also flushes when the handler has not yet handed it the next
	// message, which may leave one record per message part full.
	full := float64(sent) / (tlsRecordSize + 22)
	limit := int64(full) + count + 8
	t.Logf("%d MiB streamed in %d TLS records (%d bytes on the wire); %.0f full records would carry them; limit %d", size*count>>20, writes, sent, full, limit)
	if writes > limit {
		t.Errorf("%d TLS records for %.0f records' worth of bytes in %d messages, want at most %d: frames do not fill records", writes, full, count, limit)
	}
}

// recordingConn records each Write it gets.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func dataHeader(id, length uint32) []byte {
	h := make([]byte, yamuxHeaderSize)
	h[0], h[1] = 0, yamuxTypeData
	h[4], h[5], h[6], h[7] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
	h[8], h[9], h[10], h[11] = byte(length>>24), byte(length>>16), byte(length>>8), byte(length)
	return h
}

// TestCoalescingConnWrites checks how yamux's header and body writes reach
// the conn: the header with the start of the body, one TLS record's worth
// at most, then the rest of the body as it is; frames that are not data
// pass through; the bytes are unchanged.
func TestCoalescingConnWrites(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   int
		writes []int // sizes of the conn writes for one frame
	}{
		{"small", 100, []int{112}},
		{"one record", tlsRecordSize - yamuxHeaderSize, []int{tlsRecordSize}},
		{"record and a byte", tlsRecordSize - yamuxHeaderSize + 1, []int{tlsRecordSize, 1}},
		{"gRPC buffer", grpcWriteBufferSize(32 << 10), []int{tlsRecordSize, tlsRecordSize}},
		{"large", 1 << 20, []int{tlsRecordSize, 1<<20 - (tlsRecordSize - yamuxHeaderSize)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordingConn{}
			c := &coalescingConn{Conn: rc}
			body := make([]byte, tc.body)
			for i := range body {
				body[i] = byte(i)
			}
			hdr := dataHeader(3, uint32(len(body)))
			if n, err := c.Write(hdr); n != len(hdr) || err != nil {
				t.Fatalf("Write(header) = %d, %v", n, err)
			}
			if len(rc.writes) != 0 {
				t.Fatalf("header written alone: %d writes", len(rc.writes))
			}
			if n, err := c.Write(body); n != len(body) || err != nil {
				t.Fatalf("Write(body) = %d, %v", n, err)
			}
			// A window update (no body) goes out as it is.
			wu := []byte{0, yamuxTypeWindowUpdate, 0, 0, 0, 0, 0, 3, 0, 1, 0, 0}
			if _, err := c.Write(wu); err != nil {
				t.Fatal(err)
			}
			var sizes []int
			for _, w := range rc.writes {
				sizes = append(sizes, len(w))
			}
			want := append(tc.writes, len(wu))
			if fmt.Sprint(sizes) != fmt.Sprint(want) {
				t.Errorf("conn writes of %v bytes, want %v", sizes, want)
			}
			got := bytes.Join(rc.writes, nil)
			if !bytes.Equal(got, bytes.Join([][]byte{hdr, body, wu}, nil)) {
				t.Errorf("bytes on the conn differ from what yamux wrote")
			}
		})
	}
}

// TestGRPCWriteBufferSize checks that a full gRPC write buffer and its
// yamux header fill whole TLS records.
func TestGRPCWriteBufferSize(t *testing.T) {
	for _, tc := range []struct{ in, want int }{
		{0, 0},
		{4096, 4096},
		{tlsRecordSize - 1, tlsRecordSize - 1},
		{tlsRecordSize, tlsRecordSize - yamuxHeaderSize},
		{32 << 10, 32<<10 - yamuxHeaderSize},
		{32<<10 + 100, 32<<10 - yamuxHeaderSize},
		{64 << 10, 64<<10 - yamuxHeaderSize},
	} {
		if got := grpcWriteBufferSize(tc.in); got != tc.want {
			t.Errorf("grpcWriteBufferSize(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestIdleSessionMemory checks that the agent's larger receive window
// costs an idle tunnel nothing: heap and stacks per idle tunnel (both
// ends, both gRPC transports opened and used once) with the agent on
// DefaultAgentConfig are within a few percent of both ends on
// DefaultConfig. A window allocated up front, rather than buffers that
// hold only unread data, would add a MiB per stream.
func TestIdleSessionMemory(t *testing.T) {
	checkLeaks(t)
	hub, agent := DefaultConfig(), DefaultAgentConfig()
	const n = 24
	// measure returns heap+stack per idle tunnel. A sub-test owns the
	// tunnels, so they are gone before the next measurement.
	measure := func(name string, agentCfg Config) float64 {
		var per float64
		t.Run(name, func(t *testing.T) {
			before := heapAndStacks()
			for range n {
				p := newPair(t, "tls", pairOpts{hubCfg: &hub, agentCfg: &agentCfg})
				ctx := callCtx(t)
				if _, err := fleetClient(t, p.agent).Renew(ctx, &fleetv1.RenewRequest{CsrDer: make([]byte, 1000)}); err != nil {
					t.Fatal(err)
				}
				if _, err := agentClient(t, p.hub).Diagnose(ctx, &fleetv1.DiagnoseRequest{}); err != nil {
					t.Fatal(err)
				}
			}
			waitGoroutinesSettle(t)
			per = float64(heapAndStacks()-before) / n
			t.Logf("agent StreamWindowSize %d KiB: %.1f KiB per idle tunnel (both ends)", agentCfg.StreamWindowSize>>10, per/1024)
		})
		return per
	}
	measure("warm-up", hub) // first-use allocations (pools, caches) land here
	// Alternate, and keep each configuration's smallest figure: a GC
	// cycle or a goroutine still winding down only ever adds.
	base, got := math.Inf(1), math.Inf(1)
	for range 2 {
		base = min(base, measure("hub-config", hub))
		got = min(got, measure("agent-config", agent))
	}
	if got > base*1.05+1024 {
		t.Errorf("an idle tunnel costs %.1f KiB with the agent on DefaultAgentConfig, %.1f KiB on DefaultConfig; want at most 5%% more", got/1024, base/1024)
	}
}

// heapAndStacks is HeapAlloc+StackInuse after two GCs (the second empties
// sync.Pool's victim cache, as an idle process's periodic GCs would).
// HeapAlloc counts live bytes; HeapInuse, whole spans, varies by more than
// the differences measured here.
func heapAndStacks() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// waitGoroutinesSettle waits until the goroutine count stops changing.
func waitGoroutinesSettle(t *testing.T) {
	t.Helper()
	last, same := -1, 0
	waitFor(t, 10*time.Second, "goroutines to settle", func() bool {
		n := runtime.NumGoroutine()
		if n == last {
			same++
		} else {
			last, same = n, 0
		}
		return same >= 20
	})
}
