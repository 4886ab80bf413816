package gateway_test

import (
	"crypto/tls"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	fleetv1 "github.com/tetherfleet/tether/protocol/fleet/v1"
)

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestCertlessStreamFloodCannotExhaustHubMemory: a peer without a client
// certificate opens many yamux streams and writes a full window into each.
// Before the fix every stream was accepted (those over the transport cap
// half-closed) and kept its 256 KiB window buffered, so 1,000 streams grew
// the heap by ~256 MiB. Now a cert-less session holds at most a couple of
// streams: the rest are reset before yamux allocates them.
func TestCertlessStreamFloodCannotExhaustHubMemory(t *testing.T) {
	h := newHub(t)
	good := mustEnroll(t, h, "edge-1")
	const (
		streams = 1000
		window  = 256 << 10
		// Far above what the fix lets one cert-less session hold (a few
		// windows), far below what the flood held before it (~256 MiB).
		bound = 48 << 20
	)
	before := heapAlloc()

	raw, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, h.anonTLS())
	if err := conn.Handshake(); err != nil {
		t.Fatal(err)
	}
	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = nil
	ycfg.Logger = discardLogger{}
	ycfg.EnableKeepAlive = false
	ycfg.StreamOpenTimeout = 0
	mux, err := yamux.Client(conn, ycfg)
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	payload := make([]byte, window)
	var wg sync.WaitGroup
	for range streams {
		st, err := mux.OpenStream()
		if err != nil {
			t.Fatalf("open stream: %v", err)
		}
		wg.Go(func() {
			// A reset stream fails the write; an open one takes a window.
			_ = st.SetWriteDeadline(time.Now().Add(20 * time.Second))
			_, _ = st.Write(payload)
		})
	}
	wg.Wait()
	// yamux handles frames in order: once the hub answered a ping, it has
	// processed (and buffered, or dropped) every byte written before it.
	if _, err := mux.Ping(); err != nil {
		t.Fatalf("ping after the flood: %v", err)
	}
	payload = nil
	after := heapAlloc()
	grew := int64(after) - int64(before)
	t.Logf("heap grew by %d MiB with %d streams x %d KiB from one cert-less session", grew>>20, streams, window>>10)
	if grew > bound {
		t.Errorf("hub heap grew by %d MiB under a cert-less stream flood; want < %d MiB", grew>>20, bound>>20)
	}

	// An enrolled agent is still served.
	_, cc := h.dial(t, good)
	stream, _, err := hello(t, cc, "edge-1")
	if err != nil {
		t.Fatalf("enrolled agent during the flood: %v", err)
	}
	if err := stream.Send(&fleetv1.AgentMessage{Msg: &fleetv1.AgentMessage_Heartbeat{Heartbeat: &fleetv1.Heartbeat{}}}); err != nil {
		t.Fatalf("heartbeat during the flood: %v", err)
	}
}

type discardLogger struct{}

func (discardLogger) Print(...any)          {}
func (discardLogger) Printf(string, ...any) {}
func (discardLogger) Println(...any)        {}
