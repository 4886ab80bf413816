package tunnel

import (
	"bufio"
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/yamux"
)

// yamux frame layout (hashicorp/yamux spec.md): version, type, flags,
// stream ID, length; a data frame's body of length bytes follows.
const (
	yamuxTypeData         = 0
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 0x1
	yamuxFlagRST          = 0x8
)

// streamGate sits between yamux and the connection and bounds the streams
// the peer may open. yamux v0.1.2 has no such bound, and no way to reset a
// stream: a stream it knows keeps up to a window of the peer's data
// buffered until both sides closed it. The gate reads each frame header
// before yamux does. A SYN that would take the session over MaxStreams
// never reaches yamux: the gate answers it with an RST and drops the
// frame, so nothing is allocated for it. A stream the session refuses
// after yamux knew it (over MaxTransports) is reset both ways: an RST goes
// to the peer and a synthetic RST to yamux, which then forgets the stream
// and its buffer. Frames for reset streams are dropped.
//
// Read hands yamux one frame header, or part of one frame body, per call,
// so yamux has registered a SYN before the gate reads the next frame and
// NumStreams is exact when the gate decides.
type streamGate struct {
	r        io.Reader
	out      *coalescingConn
	max      int
	mux      atomic.Pointer[yamux.Session]
	onRefuse func(id uint32)
	// onSYN, if set, is called for each SYN passed on to yamux.
	onSYN func()

	hdr    [yamuxHeaderSize]byte
	hdrOff int    // next byte of hdr to hand to yamux; len(hdr) when none
	body   uint32 // body bytes of the current frame still to hand over
	drop   uint32 // body bytes of a dropped frame still to discard

	mu      sync.Mutex
	pending []uint32            // synthetic RSTs yamux has not read yet
	reset   map[uint32]struct{} // streams whose frames are dropped
	order   []uint32            // reset's insertion order, for eviction
}

// maxResetIDs bounds the stream IDs a gate remembers as reset; older ones
// are forgotten, and frames for them are left to yamux, which drops frames
// for streams it does not know.
const maxResetIDs = 256

// newStreamGate reads frames from in, through a 4 KiB buffer when
// buffer is set (in is not a *tls.Conn, which buffers a record itself).
func newStreamGate(in io.Reader, out *coalescingConn, max int, buffer bool, onRefuse func(uint32)) *streamGate {
	g := &streamGate{
		r:        in,
		out:      out,
		max:      max,
		onRefuse: onRefuse,
	}
	if buffer {
		g.r = bufio.NewReaderSize(in, 4096)
	}
	g.hdrOff = len(g.hdr)
	return g
}

func (g *streamGate) Read(p []byte) (int, error) {
	for {
		if g.hdrOff < len(g.hdr) {
			n := copy(p, g.hdr[g.hdrOff:])
			g.hdrOff += n
			return n, nil
		}
		if g.body > 0 {
			n, err := g.r.Read(p[:min(uint32(len(p)), g.body)])
			g.body -= uint32(n)
			return n, err
		}
		if g.drop > 0 {
			n, err := io.CopyN(io.Discard, g.r, int64(g.drop))
			g.drop -= uint32(n)
			if err != nil {
				return 0, err
			}
			continue
		}
		if id, ok := g.nextSynthetic(); ok {
			encodeRST(g.hdr[:], id)
			g.hdrOff = 0
			continue
		}
		if _, err := io.ReadFull(g.r, g.hdr[:]); err != nil {
			return 0, err
		}
		typ, flags := g.hdr[1], binary.BigEndian.Uint16(g.hdr[2:4])
		id, length := binary.BigEndian.Uint32(g.hdr[4:8]), binary.BigEndian.Uint32(g.hdr[8:12])
		if g.hdr[0] != 0 || (typ != yamuxTypeData && typ != yamuxTypeWindowUpdate) {
			// Not a stream frame (ping, go away) or not yamux at all:
			// yamux deals with it.
			g.hdrOff = 0
			continue
		}
		refuse := flags&yamuxFlagSYN != 0 && g.full()
		if refuse || g.isReset(id) {
			if refuse {
				g.remember(id)
				g.sendRST(id)
				if g.onRefuse != nil {
					g.onRefuse(id)
				}
			}
			if typ == yamuxTypeData {
				g.drop = length
			}
			continue
		}
		g.hdrOff = 0
		if typ == yamuxTypeData {
			g.body = length
		}
		if flags&yamuxFlagSYN != 0 && g.onSYN != nil {
			g.onSYN()
		}
	}
}

// full reports whether the session already holds MaxStreams streams.
func (g *streamGate) full() bool {
	m := g.mux.Load()
	return m != nil && m.NumStreams() >= g.max
}

// resetStream resets a stream yamux knows: the peer gets an RST now, yamux
// a synthetic one before the next frame it reads, and the stream's frames
// are dropped meanwhile.
func (g *streamGate) resetStream(id uint32) {
	g.remember(id)
	g.mu.Lock()
	g.pending = append(g.pending, id)
	g.mu.Unlock()
	g.sendRST(id)
}

func (g *streamGate) nextSynthetic() (uint32, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pending) == 0 {
		return 0, false
	}
	id := g.pending[0]
	g.pending = g.pending[1:]
	return id, true
}

func (g *streamGate) remember(id uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.reset[id]; ok {
		return
	}
	if g.reset == nil {
		g.reset = map[uint32]struct{}{} // most sessions never reset a stream
	}
	if len(g.order) >= maxResetIDs {
		delete(g.reset, g.order[0])
		g.order = g.order[1:]
	}
	g.reset[id] = struct{}{}
	g.order = append(g.order, id)
}

func (g *streamGate) isReset(id uint32) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	_, ok := g.reset[id]
	return ok
}

func (g *streamGate) sendRST(id uint32) {
	var f [yamuxHeaderSize]byte
	encodeRST(f[:], id)
	// A failed write means the connection is gone; yamux sees that too.
	_ = g.out.writeFrame(f[:])
}

func encodeRST(b []byte, id uint32) {
	b[0], b[1] = 0, yamuxTypeWindowUpdate
	binary.BigEndian.PutUint16(b[2:4], yamuxFlagRST)
	binary.BigEndian.PutUint32(b[4:8], id)
	binary.BigEndian.PutUint32(b[8:12], 0)
}
