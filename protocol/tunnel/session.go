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
	// lis feeds the streams of every session to one grpc.Server.Serve,
	// started with the first session: no goroutine per session waits in
	// Accept (that cost one goroutine stack per connected agent).
	lis       *sharedListener
	serveOnce sync.Once
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
	return &Server{cfg: cfg, grpc: srv, log: cfg.logger(), lis: newSharedListener()}, nil
}

// start runs the shared Serve once. It returns when srv stops; Serve then
// closes the listener, which closes every session.
func (s *Server) start() {
	s.serveOnce.Do(func() {
		go func() {
			if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("tunnel: stopped serving gRPC", "err", err)
			}
			s.lis.Close()
		}()
	})
}

// ServeConn starts a hub-side session on conn, normally a *tls.Conn after
// its handshake (if the handshake has not run, ServeConn runs it, bounded
// by ctx and HandshakeTimeout). ctx bounds only the setup, as with
// net.Dialer.DialContext: the session lives until Close, or until the
// peer goes away. The session owns conn. On error conn is closed.
func (s *Server) ServeConn(ctx context.Context, conn net.Conn) (*Session, error) {
	s.start()
	return newSession(ctx, conn, s.cfg, s.grpc, s.lis, SessionOptions{})
}

// ServeConnFunc is ServeConn with a function called once when the session
// stops serving (it ended, or its grpc.Server stopped), on a goroutine the
// session already runs, so a
// caller tracking thousands of sessions needs no goroutine per session to
// wait for them. onEnd may call Close.
func (s *Server) ServeConnFunc(ctx context.Context, conn net.Conn, onEnd func(*Session)) (*Session, error) {
	s.start()
	return newSession(ctx, conn, s.cfg, s.grpc, s.lis, SessionOptions{OnEnd: onEnd})
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
	s.start()
	return newSession(ctx, conn, s.cfg, s.grpc, s.lis, opts)
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
	return newSession(ctx, conn, cfg, srv, nil, SessionOptions{})
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

	serveDone chan struct{} // closed when the session stopped serving (before OnEnd)
	muxReady  chan struct{} // closed once mux is set
	onEnd     func(*Session)
	endOnce   sync.Once
	// lis is the Server's shared listener (hub sessions only).
	lis *sharedListener
	// acceptWG counts goroutines accepting the peer's streams: on the hub
	// the short-lived accepts, on the agent its Serve or refuse loop.
	acceptWG      sync.WaitGroup
	acceptMu      sync.Mutex
	accepting     bool // an accept goroutine runs (hub)
	acceptStopped bool // Close ran: start none
	synPending    int  // SYNs the gate let through, not yet accepted (hub)
	acceptOnce    sync.Once
	transport     sync.WaitGroup // accepted streams not yet closed by gRPC
	active        atomic.Int32   // accepted streams open now
	refused       atomic.Uint64  // streams the peer opened that were reset
	data          any

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

func newSession(ctx context.Context, conn net.Conn, cfg Config, srv *grpc.Server, lis *sharedListener, opts SessionOptions) (*Session, error) {
	hub := lis != nil
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
		lis:    lis,
		onEnd:  opts.OnEnd,
	}
	s.log = cfg.logger().With("tunnel", role, "remote", addrString(s.remote))
	// On the hub, a *tls.Conn's record buffer is enough in front of
	// yamux's own: a third would hold 4 KiB per idle agent. The agent,
	// which receives the bulk transfers (a 1 KiB-message stream ran about
	// 10% slower unbuffered), keeps it.
	_, isTLS := conn.(*tls.Conn)
	s.gate = newStreamGate(s.conn, out, cfg.MaxStreams, !hub || !isTLS, func(id uint32) {
		s.refused.Add(1)
		s.log.Debug("tunnel: reset a stream the peer opened: too many on this session", "stream", id, "max_streams", cfg.MaxStreams)
	})
	ycfg := cfg.yamux(s.log)
	rw := gatedConn{CountingConn: s.conn, gate: s.gate}
	s.serveDone = make(chan struct{})
	s.muxReady = make(chan struct{})
	// Registered before yamux runs, so that the end of the session, which
	// unregisters it, comes after.
	added := hub && lis.add(s)
	if hub {
		// The hub runs no goroutine per session of its own: a peer's SYN
		// starts a short-lived accept, and yamux closing the connection
		// (its every way of ending) starts the end of the session.
		s.gate.onSYN = s.armAccept
		rw.onClose = s.connClosed
		s.mux, err = yamux.Server(rw, ycfg)
	} else {
		s.mux, err = yamux.Client(rw, ycfg)
	}
	if err != nil {
		s.mux = nil
		close(s.muxReady)
		if added {
			lis.remove(s)
		}
		conn.Close()
		return nil, fmt.Errorf("tunnel: %s session with %s: start yamux: %w", role, addrString(s.remote), err)
	}
	s.gate.mux.Store(s.mux)
	close(s.muxReady)
	if hub {
		if !added {
			// The grpc.Server stopped: nothing will serve this session.
			s.mux.Close()
		}
		s.log.Debug("tunnel: session started")
		return s, nil
	}
	ended := func() {
		if opts.OnEnd != nil {
			opts.OnEnd(s)
		}
	}
	s.acceptWG.Add(1)
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

// armAccept is called by the gate (on yamux's receive goroutine) for each
// SYN it lets through on a hub session: it makes sure one goroutine
// accepts, until every stream announced so far was accepted. A SYN yamux
// then refuses (its accept backlog full) leaves that goroutine waiting
// for the next stream or the end of the session: one goroutine at most.
func (s *Session) armAccept() {
	s.acceptMu.Lock()
	defer s.acceptMu.Unlock()
	if s.acceptStopped {
		return
	}
	s.synPending++
	if s.accepting {
		return
	}
	s.accepting = true
	s.acceptWG.Add(1)
	go s.acceptLoop()
}

func (s *Session) acceptLoop() {
	defer s.acceptWG.Done()
	// The peer's first SYN may come before yamux.Server has returned.
	<-s.muxReady
	for {
		st, err := s.mux.AcceptStream()
		if err != nil {
			s.acceptMu.Lock()
			s.accepting = false
			s.acceptMu.Unlock()
			return
		}
		s.serveStream(st)
		s.acceptMu.Lock()
		s.synPending--
		if s.synPending <= 0 {
			s.synPending = 0
			s.accepting = false
			s.acceptMu.Unlock()
			return
		}
		s.acceptMu.Unlock()
	}
}

// serveStream hands a stream the peer opened to the shared Serve, or
// resets it when the session already serves MaxTransports.
func (s *Session) serveStream(st *yamux.Stream) {
	if int(s.active.Load()) >= s.cfg.MaxTransports {
		s.log.Debug("tunnel: reset a gRPC connection: too many on this session", "max_transports", s.cfg.MaxTransports)
		s.refused.Add(1)
		s.gate.resetStream(st.StreamID())
		return
	}
	s.active.Add(1)
	s.transport.Add(1)
	c := &streamConn{Stream: st, s: s, accepted: true}
	select {
	case s.lis.conns <- c:
	case <-s.lis.done:
		c.Close()
	case <-s.mux.CloseChan():
		c.Close()
	}
}

// connClosed is called when yamux closes the connection, which it does
// however the session ends; the end runs on a goroutine of its own since
// yamux holds its shutdown lock here.
func (s *Session) connClosed() {
	s.endOnce.Do(func() {
		go func() {
			<-s.muxReady
			<-s.mux.CloseChan()
			s.lis.remove(s)
			close(s.serveDone)
			if s.onEnd != nil {
				s.onEnd(s)
			}
		}()
	})
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

func (s *Session) acceptFinished() { s.acceptOnce.Do(s.acceptWG.Done) }

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
		s.acceptMu.Lock()
		s.acceptStopped = true
		s.acceptMu.Unlock()
		s.acceptWG.Wait()
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
	// onClose, if set, is called after the connection is closed.
	onClose func()
}

func (c gatedConn) Read(p []byte) (int, error) { return c.gate.Read(p) }

func (c gatedConn) Close() error {
	err := c.CountingConn.Close()
	if c.onClose != nil {
		c.onClose()
	}
	return err
}

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

// sharedListener hands the streams every hub session accepted to one
// grpc.Server.Serve. Closing it (grpc.Server.Stop does) closes every
// session it serves.
type sharedListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once

	mu       sync.Mutex
	closed   bool
	sessions map[*Session]struct{}
}

func newSharedListener() *sharedListener {
	return &sharedListener{conns: make(chan net.Conn), done: make(chan struct{}), sessions: map[*Session]struct{}{}}
}

func (l *sharedListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *sharedListener) Close() error {
	l.once.Do(func() {
		close(l.done)
		l.mu.Lock()
		l.closed = true
		sessions := make([]*Session, 0, len(l.sessions))
		for s := range l.sessions {
			sessions = append(sessions, s)
		}
		l.mu.Unlock()
		for _, s := range sessions {
			// Not Session.Close: that waits for gRPC to drop the
			// session's transports, which the stopping server does next.
			// A session registered but still starting is waited for.
			<-s.muxReady
			if s.mux != nil {
				s.mux.Close()
			}
		}
	})
	return nil
}

func (l *sharedListener) Addr() net.Addr { return tunnelAddr{} }

// add registers a session; false when the listener is closed.
func (l *sharedListener) add(s *Session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.sessions[s] = struct{}{}
	return true
}

func (l *sharedListener) remove(s *Session) {
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
}

type tunnelAddr struct{}

func (tunnelAddr) Network() string { return "tunnel" }
func (tunnelAddr) String() string  { return "tether-tunnel" }

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
	err       error
}

func (c *streamConn) Close() error {
	// The slot is given back before the stream closes: once the peer sees
	// the stream gone, a new transport it opens must find the slot free.
	c.closeOnce.Do(func() {
		if c.accepted {
			c.s.active.Add(-1)
			defer c.s.transport.Done()
		}
		c.err = c.Stream.Close()
	})
	return c.err
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
