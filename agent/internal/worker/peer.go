package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/yamux"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// MaxMessageSize bounds one message between agent and worker: a chart
// archive (the hub accepts up to 64 MiB, protocol/fleet/v1 limits.go) or
// a rendered manifest, with room for the envelope.
const MaxMessageSize = 80 << 20

// ChildFD is the file descriptor the worker finds its end of the
// socketpair on (the first of exec.Cmd.ExtraFiles).
const ChildFD = 3

// peer is one side of the agent↔worker connection: a yamux session over
// the socketpair, a gRPC server on the streams the other side opens, and a
// gRPC client whose every connection is a stream this side opens. The
// agent is yamux's client, the worker its server; both serve and call.
type peer struct {
	sess *yamux.Session
	srv  *grpc.Server
	cc   *grpc.ClientConn
	wg   sync.WaitGroup

	closeOnce sync.Once
}

// newPeer starts serving on conn. register adds the services this side
// serves to the gRPC server before it starts; it gets the client
// connection to the other side, for services that call back.
func newPeer(conn net.Conn, client bool, log *slog.Logger, register func(*grpc.Server, *grpc.ClientConn)) (*peer, error) {
	ycfg := yamux.DefaultConfig()
	ycfg.LogOutput = nil
	ycfg.Logger = slogPrinter{log}
	// A socketpair between two processes of one host: no keepalives (the
	// other side's death closes the socket), a wide window so a chart moves
	// in one go.
	ycfg.EnableKeepAlive = false
	ycfg.MaxStreamWindowSize = 4 << 20
	ycfg.ConnectionWriteTimeout = 2 * time.Minute
	var (
		sess *yamux.Session
		err  error
	)
	if client {
		sess, err = yamux.Client(conn, ycfg)
	} else {
		sess, err = yamux.Server(conn, ycfg)
	}
	if err != nil {
		return nil, fmt.Errorf("worker: yamux session: %w", err)
	}
	p := &peer{sess: sess, srv: grpc.NewServer(grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize))}
	p.cc, err = grpc.NewClient("passthrough:///tether-worker",
		grpc.WithContextDialer(func(context.Context, string) (net.Conn, error) { return sess.Open() }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
		grpc.WithDisableServiceConfig())
	if err != nil {
		sess.Close()
		return nil, fmt.Errorf("worker: grpc client: %w", err)
	}
	register(p.srv, p.cc)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		// Serve returns when the session closes (Accept fails).
		_ = p.srv.Serve(sess)
	}()
	return p, nil
}

// done is closed when the session ends (the other side closed or died).
func (p *peer) done() <-chan struct{} { return p.sess.CloseChan() }

// Close ends the session and waits for the server loop.
func (p *peer) Close() error {
	p.closeOnce.Do(func() {
		p.cc.Close()
		p.srv.Stop()
		p.sess.Close()
	})
	p.wg.Wait()
	return nil
}

// socketpair returns two connected stream sockets: the agent's end as a
// net.Conn and the worker's as a file to pass in ExtraFiles.
func socketpair() (net.Conn, *os.File, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "tether-worker-agent")
	theirs := os.NewFile(uintptr(fds[1]), "tether-worker-child")
	conn, err := net.FileConn(mine)
	mine.Close() // FileConn dups the descriptor
	if err != nil {
		theirs.Close()
		return nil, nil, fmt.Errorf("worker: socketpair conn: %w", err)
	}
	return conn, theirs, nil
}

// slogPrinter sends yamux's log lines to slog at debug level: a closed
// session is the normal end of a worker.
type slogPrinter struct{ log *slog.Logger }

func (s slogPrinter) Print(v ...any) { s.log.Debug(fmt.Sprint(v...), "component", "worker-mux") }
func (s slogPrinter) Printf(f string, v ...any) {
	s.log.Debug(fmt.Sprintf(f, v...), "component", "worker-mux")
}
func (s slogPrinter) Println(v ...any) { s.log.Debug(fmt.Sprint(v...), "component", "worker-mux") }

// isClosed reports errors that mean the connection is gone.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrSessionShutdown) || errors.Is(err, net.ErrClosed)
}
