package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc"
)

// Server accepts agent connections on the hub: it runs the yamux server
// side of each and serves one shared grpc.Server on all of them.
type Server struct {
	cfg  Config
	grpc *grpc.Server
	log  *slog.Logger
}

// NewServer returns a Server that serves srv on every session. srv must
// have been created with ServerOptions(cfg) (at least its credentials):
// without credentials FromContext finds nothing in handlers, and with other
// credentials gRPC fails every connection's handshake. Stopping srv (Stop or
// GracefulStop) closes every session it serves.
func NewServer(cfg Config, srv *grpc.Server) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if srv == nil {
		return nil, fmt.Errorf("tunnel: NewServer: nil grpc.Server")
	}
	return &Server{cfg: cfg, grpc: srv, log: cfg.logger()}, nil
}

// ServeConn starts a hub-side session on conn, normally a *tls.Conn after
// its handshake (if the handshake has not run, ServeConn runs it, bounded
// by ctx and HandshakeTimeout). ctx bounds only the setup, as with
// net.Dialer.DialContext: the session lives until Close, or until the
// peer goes away. The session owns conn. On error conn is closed.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) (*Session, error) {
	return newSession(ctx, conn, s.cfg, s.grpc, true, SessionOptions{})
}

// ServeConnFunc is ServeConn with a function called once when the session
// stops serving (it ended, or its grpc.Server stopped), on a goroutine the
// session already runs, so a
// caller tracking thousands of sessions needs no goroutine per session to
// wait for them. onEnd may call Close.
func (s *Server) ServeConnFunc(ctx context.Context, conn net.Conn, onEnd func(*Session)) (*Session, error) {
	return newSession(ctx, conn, s.cfg, s.grpc, true, SessionOptions{OnEnd: onEnd})
}

// SessionOptions are per-session settings for ServeConnWith.
type SessionOptions struct {
	// OnEnd, if set, is called once when the session stops serving, as
	// with ServeConnFunc.
	OnEnd func(*Session)
	// Data is returned by Session.Data. It is set before the session
	// serves its first call, so handlers always find it.
	Data any
}

// ServeConnWith is ServeConn with per-session options.
func (s *Server) ServeConnWith(ctx context.Context, conn net.Conn, opts SessionOptions) (*Session, error) {
	return newSession(ctx, conn, s.cfg, s.grpc, true, opts)
}

// Dial starts the agent side of a tunnel on conn, normally a *tls.Conn to
// the hub after its handshake. srv, if not nil, serves the hub→agent
// services; it must have been created with ServerOptions(cfg). ctx bounds
// only the setup. The session owns conn. On error conn is closed.
func Dial(ctx context.Context, conn net.Conn, cfg Config, srv *grpc.Server) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		conn.Close()
		return nil, err
	}
	return newSession(ctx, conn, cfg, srv, false, SessionOptions{})
}

// Session is one tunnel: one connection, one yamux session, gRPC both ways.
// Always call Close, also after Done is closed, to release the ClientConn.
type Session struct {
	cfg    Config
	log    *slog.Logger
	hub    bool // yamux server side
	conn   *CountingConn
	gate   *streamGate
	mux    *yamux.Session
	tls    *tls.ConnectionState
	remote net.Addr

	serveDone  chan struct{} // closed when the Serve (or refuse) goroutine returns
	acceptDone chan struct{} // closed when the listener's Accept has failed for good
	acceptOnce sync.Once
	transport  sync.WaitGroup // accepted streams not yet closed by gRPC
	active     atomic.Int32   // accepted streams open now
	refused    atomic.Uint64  // streams the peer opened that were reset
	data       any

	closedLocally atomic.Bool
	closeOnce     sync.Once

	mu     sync.Mutex
	cc     *grpc.ClientConn
	closed bool

	errOnce sync.Once
	err     error
}

// Stats counts bytes through a session's connection.
type Stats struct {
	// BytesIn and BytesOut count what yamux read from and wrote to the
	// connection given to ServeConn or Dial. When that is a *tls.Conn they
	// are plaintext bytes; wrap the raw connection in a CountingConn before
	// TLS to count bytes on the wire.
	BytesIn, BytesOut uint64
}

func newSession(ctx context.Context, conn net.Conn, cfg Config, srv *grpc.Server, hub bool, opts SessionOptions) (*Session, error) {
	role := roleName(hub)
	state, err := tlsState(ctx, conn, cfg)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel: %s session with %s: %w", role, conn.RemoteAddr(), err)
	}
	out := &coalescingConn{Conn: conn}
	s := &Session{
		cfg:    cfg,
		hub:    hub,
		conn:   NewCountingConn(out),
		tls:    state,
		remote: conn.RemoteAddr(),
		data:   opts.Data,
	}
	s.log = cfg.logger().With("tunnel", role, "remote", addrString(s.remote))
	s.gate = newStreamGate(s.conn, out, cfg.MaxStreams, func(id uint32) {
		s.refused.Add(1)
		s.log.Debug("tunnel: reset a stream the peer opened: too many on this session", "stream", id, "max_streams", cfg.MaxStreams)
	})
	ycfg := cfg.yamux(s.log)
	rw := gatedConn{CountingConn: s.conn, gate: s.gate}
	if hub {
		s.mux, err = yamux.Server(rw, ycfg)
	} else {
		s.mux, err = yamux.Client(rw, ycfg)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel: %s session with %s: start yamux: %w", role, addrString(s.remote), err)
	}
	s.gate.mux.Store(s.mux)
	s.serveDone = make(chan struct{})
	s.acceptDone = make(chan struct{})
	ended := func() {
		if opts.OnEnd != nil {
			opts.OnEnd(s)
		}
	}
	if srv != nil {
		lis := &listener{s: s}
		go func() {
			defer ended() // after serveDone is closed, so onEnd may Close
			defer close(s.serveDone)
			defer s.acceptFinished() // Serve on a stopped server never calls Accept
			// Serve returns when the session dies (Accept fails) or srv
			// stops (then it closes lis, which closes the session).
			if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("tunnel: stopped serving gRPC", "err", err)
			}
		}()
	} else {
		// Nothing to serve: refuse the peer's streams so its calls fail fast.
		go func() {
			defer ended()
			defer close(s.serveDone)
			defer s.acceptFinished()
			for {
				st, err := s.mux.AcceptStream()
				if err != nil {
					return
				}
				s.gate.resetStream(st.StreamID())
			}
		}()
	}
	s.log.Debug("tunnel: session started")
	return s, nil
}

// tlsState returns the connection's TLS state, running the handshake if it
// has not run yet; nil if conn is not TLS.
func tlsState(ctx context.Context, conn net.Conn, cfg Config) (*tls.ConnectionState, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	if !tc.ConnectionState().HandshakeComplete {
		hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			return nil, fmt.Errorf("TLS handshake: %w", err)
		}
	}
	st := tc.ConnectionState()
	return &st, nil
}

// ClientConn returns the session's gRPC client, creating it on first use:
// on the hub it calls the agent's services, on the agent the hub's. Its
// transport is opened on the first call and released after
// ClientIdleTimeout without calls. Do not Close it; Session.Close does.
func (s *Session) ClientConn() (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	if s.cc != nil {
		return s.cc, nil
	}
	// passthrough: the address is never resolved; the dialer opens a stream.
	cc, err := grpc.NewClient("passthrough:///tether-tunnel", s.cfg.dialOptions(s.dialStream)...)
	if err != nil {
		return nil, fmt.Errorf("tunnel: %s session with %s: create gRPC client: %w", roleName(s.hub), addrString(s.remote), err)
	}
	s.cc = cc
	return cc, nil
}

// serveExitGrace bounds how long Close waits for grpc.Server.Serve to return
// after its listener failed; see Close.
const serveExitGrace = time.Second

func (s *Session) acceptFinished() { s.acceptOnce.Do(func() { close(s.acceptDone) }) }

func (s *Session) dialStream(context.Context, string) (net.Conn, error) {
	st, err := s.mux.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("tunnel: open stream to %s: %w", addrString(s.remote), err)
	}
	return &streamConn{Stream: st, s: s}, nil
}

// Close ends the session: it closes the ClientConn and the connection,
// resetting every stream, and waits for the goroutines the session
// started and for gRPC to drop the session's server transports. It is
// safe to call more than once and from a gRPC handler on the session.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closedLocally.Store(!s.mux.IsClosed())
		s.mu.Lock()
		s.closed = true
		cc := s.cc
		s.mu.Unlock()
		if cc != nil {
			cc.Close()
		}
		s.mux.Close()
		<-s.acceptDone
		// After its Accept fails, Serve returns at once, unless the
		// grpc.Server is stopping: then it waits for the stop to finish, and
		// GracefulStop waits for handlers, one of which may be calling this
		// Close. So the tail of Serve is waited for only briefly; the
		// grpc.Server's Stop owns the rest.
		t := time.NewTimer(serveExitGrace)
		select {
		case <-s.serveDone:
		case <-t.C:
		}
		t.Stop()
		// gRPC closes each server transport's conn once the stream fails.
		s.transport.Wait()
		s.log.Debug("tunnel: session closed", "err", s.Err(), "bytes_in", s.conn.BytesIn(), "bytes_out", s.conn.BytesOut())
	})
	return nil
}

// Done is closed when the session ends: Close was called, the peer closed
// the connection, a keepalive went unanswered, or the peer sent something
// that is not yamux.
func (s *Session) Done() <-chan struct{} { return s.mux.CloseChan() }

// Err is nil while the session is up; after Done it says why the session
// ended: ErrClosed after Close, else the connection or protocol error.
func (s *Session) Err() error {
	select {
	case <-s.mux.CloseChan():
	default:
		return nil
	}
	s.errOnce.Do(func() {
		if s.closedLocally.Load() {
			s.err = ErrClosed
			return
		}
		s.err = fmt.Errorf("tunnel: %s session with %s ended: %w", roleName(s.hub), addrString(s.remote), s.muxErr())
	})
	return s.err
}

// muxErr digs out why yamux shut down: after shutdown, AcceptStream
// returns that reason once no stream is left queued. A stream still queued
// makes AcceptStream fail with ErrSessionShutdown instead (it cannot send
// the stream's window update on a closed session), having dequeued it: so
// ErrSessionShutdown is taken as the answer only once the queue is empty,
// which a bounded number of calls reaches (the queue holds at most
// yamux's accept backlog, at most maxBacklogLimit).
func (s *Session) muxErr() error {
	var err error
	for range maxBacklogLimit + 1 {
		var st *yamux.Stream
		st, err = s.mux.AcceptStream()
		if err == nil {
			st.Close()
			continue
		}
		switch {
		case errors.Is(err, yamux.ErrSessionShutdown):
			continue // maybe a queued stream's error; the next call says more
		case errors.Is(err, io.EOF):
			return fmt.Errorf("peer closed the connection: %w", err)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("peer closed the connection mid-frame: %w", err)
		}
		return err
	}
	return err
}

// RemoteAddr is the peer's address as the connection reports it.
func (s *Session) RemoteAddr() net.Addr { return s.remote }

// TLS is the connection's TLS state, nil when the connection is not a
// *tls.Conn. The caller must not modify it.
func (s *Session) TLS() *tls.ConnectionState { return s.tls }

// Stats returns the byte counters of the session's connection.
func (s *Session) Stats() Stats {
	return Stats{BytesIn: s.conn.BytesIn(), BytesOut: s.conn.BytesOut()}
}

// NumStreams is the number of open yamux streams (one per gRPC transport
// in either direction).
func (s *Session) NumStreams() int { return s.mux.NumStreams() }

// Refused counts the streams the peer opened that the session reset:
// over MaxStreams, or over MaxTransports.
func (s *Session) Refused() uint64 { return s.refused.Load() }

// Data is SessionOptions.Data of ServeConnWith; nil otherwise.
func (s *Session) Data() any { return s.data }

// gatedConn is what yamux reads and writes: reads pass the stream gate,
// writes go to the counting connection.
type gatedConn struct {
	*CountingConn
	gate *streamGate
}

func (c gatedConn) Read(p []byte) (int, error) { return c.gate.Read(p) }

func roleName(hub bool) string {
	if hub {
		return "hub"
	}
	return "agent"
}

func addrString(a net.Addr) string {
	if a == nil {
		return "<unknown>"
	}
	return a.String()
}

// listener hands the streams the peer opens to grpc.Server.Serve.
type listener struct{ s *Session }

func (l *listener) Accept() (net.Conn, error) {
	s := l.s
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			s.acceptFinished()
			return nil, net.ErrClosed
		}
		if int(s.active.Load()) >= s.cfg.MaxTransports {
			s.log.Debug("tunnel: reset a gRPC connection: too many on this session", "max_transports", s.cfg.MaxTransports)
			s.refused.Add(1)
			s.gate.resetStream(st.StreamID())
			continue
		}
		s.active.Add(1)
		s.transport.Add(1)
		return &streamConn{Stream: st, s: s, accepted: true}, nil
	}
}

// Close is called by grpc.Server when Serve returns or the server stops;
// a session that can no longer serve is closed.
func (l *listener) Close() error {
	return l.s.mux.Close()
}

func (l *listener) Addr() net.Addr { return l.s.mux.Addr() }

// streamConn is one yamux stream carrying one gRPC transport; it remembers
// its session so the transport credentials can report it.
type streamConn struct {
	*yamux.Stream
	s         *Session
	accepted  bool
	closeOnce sync.Once
}

func (c *streamConn) Close() error {
	err := c.Stream.Close()
	c.closeOnce.Do(func() {
		if c.accepted {
			c.s.active.Add(-1)
			c.s.transport.Done()
		}
	})
	return err
}

// CountingConn counts the bytes read from and written to a net.Conn.
type CountingConn struct {
	net.Conn
	in, out atomic.Uint64
}

// NewCountingConn wraps c. Wrap a raw TCP connection before tls.Client or
// tls.Server to count bytes on the wire, TLS handshake included.
func NewCountingConn(c net.Conn) *CountingConn {
	return &CountingConn{Conn: c}
}

func (c *CountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.Add(uint64(n))
	return n, err
}

func (c *CountingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.out.Add(uint64(n))
	return n, err
}

// BytesIn is the number of bytes read so far.
func (c *CountingConn) BytesIn() uint64 { return c.in.Load() }

// BytesOut is the number of bytes written so far.
func (c *CountingConn) BytesOut() uint64 { return c.out.Load() }

// coalescingConn joins each yamux data frame's header with its body, so
// the header costs no TLS record and syscall of its own: yamux writes the
// 12-byte header and the body separately, and the held header goes out in
// the same Write as the start of the body. Only one TLS record's worth of
// body is copied: the header and the body's first tlsRecordSize-12 bytes
// fill one record, and the rest of the body is written in place, in full
// records but for the last. A frame of T = 12+len(body) bytes thus costs
// ceil(T/16 KiB) records, the fewest possible. Only yamux's send loop
// writes to the conn, one frame at a time.
type coalescingConn struct {
	net.Conn
	mu      sync.Mutex
	hdr     [yamuxHeaderSize]byte
	pending bool
	// queued holds frames written by writeFrame while a header waited for
	// its body; they go out right after that body.
	queued []byte
}

// maxQueuedFrames bounds the frames writeFrame queues while a data frame
// is half written; more are dropped (the peer's stream then times out).
const maxQueuedFrames = 64

// writeFrame writes one whole frame that did not come from yamux (the
// gate's RSTs) at a frame boundary. It may be called from any goroutine.
func (c *coalescingConn) writeFrame(f []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending {
		if len(c.queued) < maxQueuedFrames*yamuxHeaderSize {
			c.queued = append(c.queued, f...)
		}
		return nil
	}
	_, err := c.Conn.Write(f)
	return err
}

const (
	yamuxHeaderSize = 12
	// tlsRecordSize is the most plaintext a TLS record carries (RFC 8446
	// section 5.1); crypto/tls fills records up to it once a connection
	// has sent its first 128 KiB.
	tlsRecordSize = 16 << 10
)

var coalescePool = sync.Pool{New: func() any { b := make([]byte, 0, tlsRecordSize); return &b }}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.pending {
		// Version 0, type 0 (data) with a non-empty body: hold the header.
		if len(p) == yamuxHeaderSize && p[0] == 0 && p[1] == 0 && (p[8]|p[9]|p[10]|p[11]) != 0 {
			copy(c.hdr[:], p)
			c.pending = true
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	c.pending = false
	n := min(len(p), tlsRecordSize-yamuxHeaderSize)
	bp := coalescePool.Get().(*[]byte)
	buf := append(append((*bp)[:0], c.hdr[:]...), p[:n]...)
	w, err := c.Conn.Write(buf)
	*bp = buf[:0]
	coalescePool.Put(bp)
	if err != nil {
		return max(w-yamuxHeaderSize, 0), err
	}
	if n < len(p) {
		w2, err := c.Conn.Write(p[n:])
		if err != nil {
			return n + w2, err
		}
	}
	if len(c.queued) > 0 {
		q := c.queued
		c.queued = nil
		if _, err := c.Conn.Write(q); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}
