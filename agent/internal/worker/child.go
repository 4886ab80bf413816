package worker

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"google.golang.org/grpc"

	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// ServeChild is the worker's side, for tether-agent-helm's main: it takes
// the socketpair end at ChildFD, builds the engine with newEngine (given
// the agent's records, reached over the same connection) and serves it
// until the agent closes its end or dies. A failed build is reported in
// Hello, so the agent can say why no worker runs.
func ServeChild(log *slog.Logger, newEngine func(RemoteRecords) (workerv1.EngineServer, error)) error {
	f := os.NewFile(ChildFD, "tether-worker")
	if f == nil {
		return fmt.Errorf("helm worker: no file descriptor %d: this program is started by tether-agent, not by hand", ChildFD)
	}
	conn, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("helm worker: file descriptor %d is not the agent's socket (this program is started by tether-agent, not by hand): %w", ChildFD, err)
	}
	return serveConn(conn, log, newEngine)
}

func serveConn(conn net.Conn, log *slog.Logger, newEngine func(RemoteRecords) (workerv1.EngineServer, error)) error {
	p, err := newPeer(conn, false, log, func(srv *grpc.Server, cc *grpc.ClientConn) {
		eng, err := newEngine(RemoteRecords{client: workerv1.NewRecordsClient(cc)})
		if err != nil {
			log.Error("helm engine not built", "err", err)
			eng = brokenEngine{err: err}
		}
		workerv1.RegisterEngineServer(srv, eng)
	})
	if err != nil {
		conn.Close()
		return err
	}
	<-p.done()
	return p.Close()
}

// brokenEngine answers Hello with why the engine could not be built.
type brokenEngine struct {
	workerv1.UnimplementedEngineServer
	err error
}

func (b brokenEngine) Hello(context.Context, *workerv1.HelloRequest) (*workerv1.HelloResponse, error) {
	return &workerv1.HelloResponse{Pid: int32(os.Getpid()), Error: &workerv1.Error{Message: b.err.Error()}}, nil
}
