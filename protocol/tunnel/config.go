package tunnel

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Config tunes a tunnel session and the gRPC servers and clients on it. The
// zero value is not usable; start from DefaultConfig. Both ends of a
// tunnel should use the same values; sizes that differ are enforced by the
// receiving end.
type Config struct {
	// KeepAliveInterval is how often yamux pings the peer when the session
	// is idle. It is the tunnel's only liveness check, unless NoKeepAlive.
	KeepAliveInterval time.Duration
	// NoKeepAlive turns this end's keepalive pings off (the peer's are
	// still answered), saving a goroutine per session. Liveness is then
	// the caller's job: the hub closes a session whose agent stops sending
	// heartbeats. ConnectionWriteTimeout still bounds every write.
	NoKeepAlive bool
	// ConnectionWriteTimeout bounds a write of a frame to the connection and
	// the wait for a keepalive reply; a keepalive without reply ends the
	// session.
	ConnectionWriteTimeout time.Duration
	// StreamWindowSize is yamux's maximum receive window per stream on
	// this end (at least 256 KiB, yamux's initial window): how much the
	// peer may send on a stream before this end has read it. It is credit,
	// not an allocation: yamux buffers only what the reader has not taken
	// yet, so an idle stream holds nothing, and a stream whose reader lags
	// up to the window (kept, at its largest, for the stream's life).
	// DefaultConfig, the hub's, has 256 KiB; DefaultAgentConfig 1 MiB.
	StreamWindowSize uint32
	// AcceptBacklog bounds the streams opened by the peer and not yet
	// accepted; the peer blocks opening more.
	AcceptBacklog int
	// StreamOpenTimeout bounds how long an opened stream may wait for the
	// peer's acknowledgement; a peer that does not acknowledge in time
	// ends the session.
	StreamOpenTimeout time.Duration
	// StreamCloseTimeout bounds how long a half-closed stream waits for
	// the peer's close before it is reset.
	StreamCloseTimeout time.Duration
	// MaxTransports bounds the gRPC connections (yamux streams the peer
	// opened) a session serves at once; streams beyond it are closed
	// unserved. One gRPC ClientConn uses one at a time.
	MaxTransports int
	// MaxStreams bounds the yamux streams open on a session at once, in
	// both directions, counting those not yet accepted and those closed on
	// one side only. A stream the peer opens beyond it is reset before
	// yamux allocates anything for it. With StreamWindowSize it bounds what
	// a peer can make the session buffer: MaxStreams × StreamWindowSize.
	MaxStreams int

	// MaxRecvMsgSize and MaxSendMsgSize bound one gRPC message, in bytes.
	// A larger message fails that call with codes.ResourceExhausted; the
	// session and other calls go on.
	MaxRecvMsgSize int
	MaxSendMsgSize int
	// MaxHeaderListSize bounds the gRPC metadata of one call, in bytes.
	MaxHeaderListSize uint32
	// MaxConcurrentStreams bounds concurrent calls on one gRPC transport.
	MaxConcurrentStreams uint32
	// ReadBufferSize and WriteBufferSize are gRPC's per-transport buffer
	// sizes; 0 disables the buffer. Write buffers come from a shared pool
	// (gRPC shares write buffers by default), so only the read buffer is held
	// while idle. A WriteBufferSize of 16 KiB or more is trimmed to whole
	// TLS records less yamux's 12-byte frame header (32 KiB gives 32756
	// bytes), so that a full buffer leaves no runt record behind.
	ReadBufferSize  int
	WriteBufferSize int
	// InitialWindowSize and InitialConnWindowSize are gRPC's HTTP/2 flow
	// control windows per stream and per transport; 0 keeps gRPC's default
	// (64 KiB, grown by bandwidth-delay probing).
	InitialWindowSize     int32
	InitialConnWindowSize int32
	// HandshakeTimeout bounds the HTTP/2 handshake of a new gRPC transport
	// and, if ServeConn or Dial is given a *tls.Conn whose handshake has not
	// run yet, the TLS handshake.
	HandshakeTimeout time.Duration
	// ClientIdleTimeout is how long a ClientConn may go without calls
	// before its transport (and its goroutines and buffers) is released;
	// the next call reopens it.
	ClientIdleTimeout time.Duration

	// Logger receives session events; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the configuration of the hub's end of a tunnel;
// the agent uses DefaultAgentConfig, which differs in its receive window.
func DefaultConfig() Config {
	return Config{
		KeepAliveInterval:      30 * time.Second,
		ConnectionWriteTimeout: 10 * time.Second,
		StreamWindowSize:       256 << 10,
		AcceptBacklog:          32,
		StreamOpenTimeout:      30 * time.Second,
		StreamCloseTimeout:     30 * time.Second,
		MaxTransports:          8,
		MaxStreams:             32,

		MaxRecvMsgSize:       4 << 20,
		MaxSendMsgSize:       4 << 20,
		MaxHeaderListSize:    64 << 10,
		MaxConcurrentStreams: 64,
		ReadBufferSize:       0,
		WriteBufferSize:      32 << 10,
		// Fixed windows turn off gRPC's bandwidth-delay probing, which sent
		// a ping round trip after almost every heartbeat (half the hub's
		// heartbeat CPU in the fleet benchmark). Windows are not allocated
		// up front, so 1 MiB costs nothing while idle.
		InitialWindowSize:     1 << 20,
		InitialConnWindowSize: 1 << 20,
		HandshakeTimeout:      20 * time.Second,
		ClientIdleTimeout:     5 * time.Minute,
	}
}

// agentStreamWindow is DefaultAgentConfig's StreamWindowSize.
const agentStreamWindow = 1 << 20

// DefaultAgentConfig returns the configuration of the agent's end: that of
// DefaultConfig but for a 1 MiB StreamWindowSize instead of 256 KiB.
// A receive window is a budget of the receiving end. The hub, with
// thousands of peers, keeps yamux's smallest; an agent has one peer and
// receives the large transfers (charts, desired state), for which 256 KiB
// stalls the hub between window updates (on loopback a 64 KiB-message
// stream ran at 0.73× plain gRPC with it, 0.88× with 1 MiB) and caps a
// download at 256 KiB per round trip (2.5 MB/s at 100 ms). 1 MiB matches
// gRPC's InitialWindowSize, so neither window throttles below the other.
// What a misbehaving hub can make an agent buffer is MaxStreams × 1 MiB.
func DefaultAgentConfig() Config {
	c := DefaultConfig()
	c.StreamWindowSize = agentStreamWindow
	return c
}

// Hard ceilings Validate enforces, so a typo cannot unbound memory.
const (
	maxMsgSizeLimit  = 64 << 20
	maxWindowLimit   = 16 << 20
	maxBacklogLimit  = 4096
	maxTransportsCap = 1024
)

// Validate reports the first setting that is out of range.
func (c *Config) Validate() error {
	type check struct {
		ok   bool
		what string
		val  any
	}
	checks := []check{
		{c.KeepAliveInterval > 0, "KeepAliveInterval must be positive", c.KeepAliveInterval},
		{c.ConnectionWriteTimeout > 0, "ConnectionWriteTimeout must be positive", c.ConnectionWriteTimeout},
		{c.StreamWindowSize >= 256<<10 && c.StreamWindowSize <= maxWindowLimit, "StreamWindowSize must be in [256 KiB, 16 MiB]", c.StreamWindowSize},
		{c.AcceptBacklog > 0 && c.AcceptBacklog <= maxBacklogLimit, "AcceptBacklog must be in [1, 4096]", c.AcceptBacklog},
		{c.StreamOpenTimeout > 0, "StreamOpenTimeout must be positive", c.StreamOpenTimeout},
		{c.StreamCloseTimeout > 0, "StreamCloseTimeout must be positive", c.StreamCloseTimeout},
		{c.MaxTransports > 0 && c.MaxTransports <= maxTransportsCap, "MaxTransports must be in [1, 1024]", c.MaxTransports},
		{c.MaxStreams >= c.MaxTransports && c.MaxStreams <= maxBacklogLimit, "MaxStreams must be in [MaxTransports, 4096]", c.MaxStreams},
		{c.MaxRecvMsgSize > 0 && c.MaxRecvMsgSize <= maxMsgSizeLimit, "MaxRecvMsgSize must be in [1, 64 MiB]", c.MaxRecvMsgSize},
		{c.MaxSendMsgSize > 0 && c.MaxSendMsgSize <= maxMsgSizeLimit, "MaxSendMsgSize must be in [1, 64 MiB]", c.MaxSendMsgSize},
		{c.MaxHeaderListSize > 0 && c.MaxHeaderListSize <= 1<<20, "MaxHeaderListSize must be in [1, 1 MiB]", c.MaxHeaderListSize},
		{c.MaxConcurrentStreams > 0, "MaxConcurrentStreams must be positive", c.MaxConcurrentStreams},
		{c.ReadBufferSize >= 0 && c.ReadBufferSize <= 1<<20, "ReadBufferSize must be in [0, 1 MiB]", c.ReadBufferSize},
		{c.WriteBufferSize >= 0 && c.WriteBufferSize <= 1<<20, "WriteBufferSize must be in [0, 1 MiB]", c.WriteBufferSize},
		{c.InitialWindowSize == 0 || (c.InitialWindowSize >= 64<<10 && c.InitialWindowSize <= maxWindowLimit), "InitialWindowSize must be 0 or in [64 KiB, 16 MiB]", c.InitialWindowSize},
		{c.InitialConnWindowSize == 0 || (c.InitialConnWindowSize >= 64<<10 && c.InitialConnWindowSize <= maxWindowLimit), "InitialConnWindowSize must be 0 or in [64 KiB, 16 MiB]", c.InitialConnWindowSize},
		{c.HandshakeTimeout > 0, "HandshakeTimeout must be positive", c.HandshakeTimeout},
		{c.ClientIdleTimeout > 0, "ClientIdleTimeout must be positive", c.ClientIdleTimeout},
	}
	for _, ch := range checks {
		if !ch.ok {
			return fmt.Errorf("%w: %s, got %v", ErrInvalidConfig, ch.what, ch.val)
		}
	}
	return nil
}

func (c *Config) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

func (c *Config) yamux(log *slog.Logger) *yamux.Config {
	return &yamux.Config{
		AcceptBacklog:          c.AcceptBacklog,
		EnableKeepAlive:        !c.NoKeepAlive,
		KeepAliveInterval:      c.KeepAliveInterval,
		ConnectionWriteTimeout: c.ConnectionWriteTimeout,
		MaxStreamWindowSize:    c.StreamWindowSize,
		StreamOpenTimeout:      c.StreamOpenTimeout,
		StreamCloseTimeout:     c.StreamCloseTimeout,
		Logger:                 yamuxLogger{log},
	}
}

// ServerOptions returns the options a grpc.Server served on tunnel
// sessions must be created with: the tunnel's transport credentials (so
// FromContext works in handlers) and the size, buffer and keepalive
// settings of cfg. Append your own interceptors and services.
// cfg is not validated here; NewServer and Dial validate it.
func ServerOptions(cfg Config) []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.Creds(transportCredentials{}),
		grpc.MaxRecvMsgSize(cfg.MaxRecvMsgSize),
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		grpc.MaxHeaderListSize(cfg.MaxHeaderListSize),
		grpc.MaxConcurrentStreams(cfg.MaxConcurrentStreams),
		grpc.ReadBufferSize(cfg.ReadBufferSize),
		grpc.WriteBufferSize(grpcWriteBufferSize(cfg.WriteBufferSize)),
		grpc.ConnectionTimeout(cfg.HandshakeTimeout),
		// yamux keepalive is the liveness check: no HTTP/2 pings from the
		// server, and a client that pings more than once a minute is cut.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: infinity}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Minute}),
	}
	if cfg.InitialWindowSize > 0 {
		opts = append(opts, grpc.InitialWindowSize(cfg.InitialWindowSize))
	}
	if cfg.InitialConnWindowSize > 0 {
		opts = append(opts, grpc.InitialConnWindowSize(cfg.InitialConnWindowSize))
	}
	return opts
}

const infinity = time.Duration(math.MaxInt64)

// grpcWriteBufferSize is the write buffer gRPC gets for a WriteBufferSize
// of n. gRPC writes a full buffer as one Write, which becomes one yamux
// data frame: 12 bytes of header and the buffer. A buffer of whole TLS
// records would leave those 12 bytes in a record (and a syscall) of their
// own, so n is rounded down to whole records less the header: 32 KiB
// becomes 32756 bytes, whose frame fills exactly two records. Sizes under
// one record are left as they are.
func grpcWriteBufferSize(n int) int {
	if n < tlsRecordSize {
		return n
	}
	return n/tlsRecordSize*tlsRecordSize - yamuxHeaderSize
}

// dialOptions are the ClientConn options for a session's ClientConn.
func (c *Config) dialOptions(dial func(context.Context, string) (net.Conn, error)) []grpc.DialOption {
	opts := []grpc.DialOption{
		grpc.WithContextDialer(dial),
		grpc.WithTransportCredentials(transportCredentials{}),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(c.MaxRecvMsgSize),
			grpc.MaxCallSendMsgSize(c.MaxSendMsgSize),
		),
		grpc.WithMaxHeaderListSize(c.MaxHeaderListSize),
		grpc.WithReadBufferSize(c.ReadBufferSize),
		grpc.WithWriteBufferSize(grpcWriteBufferSize(c.WriteBufferSize)),
		grpc.WithIdleTimeout(c.ClientIdleTimeout),
		// A service config from the "server" makes no sense in a tunnel.
		grpc.WithDisableServiceConfig(),
	}
	if c.InitialWindowSize > 0 {
		opts = append(opts, grpc.WithInitialWindowSize(c.InitialWindowSize))
	}
	if c.InitialConnWindowSize > 0 {
		opts = append(opts, grpc.WithInitialConnWindowSize(c.InitialConnWindowSize))
	}
	return opts
}

// yamuxLogger sends yamux's log lines ("[ERR] yamux: ...") to slog.
type yamuxLogger struct{ log *slog.Logger }

func (l yamuxLogger) Print(v ...any)                 { l.emit(fmt.Sprint(v...)) }
func (l yamuxLogger) Printf(format string, v ...any) { l.emit(fmt.Sprintf(format, v...)) }
func (l yamuxLogger) Println(v ...any)               { l.emit(fmt.Sprintln(v...)) }

func (l yamuxLogger) emit(msg string) {
	msg = strings.TrimSpace(msg)
	level := slog.LevelInfo
	switch {
	case strings.HasPrefix(msg, "[ERR]"):
		level, msg = slog.LevelWarn, strings.TrimSpace(strings.TrimPrefix(msg, "[ERR]"))
	case strings.HasPrefix(msg, "[WARN]"):
		level, msg = slog.LevelWarn, strings.TrimSpace(strings.TrimPrefix(msg, "[WARN]"))
	}
	if floodNoise(msg) {
		// One line per frame or stream a hostile peer sends: not worth a
		// warning each; the session counts refusals (Session.Refused).
		level = slog.LevelDebug
	}
	l.log.Log(context.Background(), level, msg)
}

// floodNoise reports yamux messages a peer can trigger once per frame.
func floodNoise(msg string) bool {
	for _, m := range []string{"backlog exceeded", "Discarding data for stream", "frame for missing stream"} {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}
