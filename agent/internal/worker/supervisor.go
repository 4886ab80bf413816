package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tetherfleet/tether/protocol/backoff"
	workerv1 "github.com/tetherfleet/tether/protocol/worker/v1"
)

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("helm worker: supervisor closed")

// Config configures a Supervisor.
type Config struct {
	// Path is the worker binary (tether-agent-helm). Required.
	Path string
	// Args are passed to the worker (its flags: kubeconfig, log level, …).
	Args []string
	// Env is the worker's environment; nil inherits the agent's.
	Env []string
	// IdleTimeout: a worker with no call in flight for this long is
	// stopped, and started again on the next call. Default 20s; negative:
	// keep it running.
	IdleTimeout time.Duration
	// StartTimeout bounds a start: exec, then the worker's Hello once its
	// Helm engine is built. Default 1m.
	StartTimeout time.Duration
	// MinBackoff and MaxBackoff space restarts after crashes (capped
	// exponential with jitter, from protocol/backoff). Defaults 1s, 1m.
	MinBackoff, MaxBackoff time.Duration
	// Records is served to the worker: the release records in the agent's
	// bbolt file. Required.
	Records Records
	// Stderr receives the worker's stderr and stdout (its logs). Default
	// os.Stderr.
	Stderr io.Writer
	// AgentVersion is sent in Hello.
	AgentVersion string
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock of the statistics. Default time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults; Path and Records must be set.
func DefaultConfig() Config {
	return Config{IdleTimeout: 20 * time.Second, StartTimeout: time.Minute, MinBackoff: time.Second, MaxBackoff: time.Minute}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.IdleTimeout == 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = d.StartTimeout
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = d.MinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = d.MaxBackoff
	}
	if c.Stderr == nil {
		c.Stderr = os.Stderr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate reports a configuration that cannot work, changing nothing.
func (c *Config) Validate() error {
	switch {
	case c.Path == "":
		return errors.New("helm worker: Config.Path (the tether-agent-helm binary) is required")
	case c.Records == nil:
		return errors.New("helm worker: Config.Records is required")
	}
	return nil
}

// Stats says what the supervisor did with its worker; `tether-agent
// status` shows it.
type Stats struct {
	// State is "stopped" (no worker runs: none was needed lately),
	// "starting" or "running".
	State string `json:"state"`
	PID   int    `json:"pid,omitempty"`
	// Path is the worker binary.
	Path string `json:"path"`
	// Starts and Crashes count since the agent started. A crash is an exit
	// the supervisor did not ask for.
	Starts  int `json:"starts"`
	Crashes int `json:"crashes"`
	// LastCrash is the last crash's exit status and the worker's last
	// line of output.
	LastCrash   string    `json:"lastCrash,omitempty"`
	LastCrashAt time.Time `json:"lastCrashAt,omitzero"`
	// StartError is the last failed start's error (binary missing, …).
	StartError string `json:"startError,omitempty"`
}

// Supervisor runs the Helm worker on demand: the first call starts it, a
// worker idle for IdleTimeout is stopped, a crashed one is started again
// on the next call (after a backoff when it keeps crashing). Safe for
// concurrent use; calls run concurrently in one worker.
type Supervisor struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	cur       *process // starting, running or stopping; nil when none
	stats     Stats
	streak    int       // crashes or failed starts since the last good call
	nextStart time.Time // no start before this, after a crash
	closed    bool
	wg        sync.WaitGroup // one per process: its waiter
}

type process struct {
	ready  chan struct{} // closed once started (err nil) or failed
	err    error
	cmd    *exec.Cmd
	peer   *peer
	engine workerv1.EngineClient
	pid    int
	output *tail

	exited  chan struct{} // closed after the process was reaped
	exitErr error

	inflight int
	idle     *time.Timer
	stopping bool // asked to stop (idle or Close): its exit is no crash
}

// New returns a supervisor; no worker runs before the first call.
func New(cfg Config) (*Supervisor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Supervisor{cfg: cfg, log: cfg.Logger, stats: Stats{State: "stopped", Path: cfg.Path}}, nil
}

// Stats returns a snapshot.
func (s *Supervisor) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// Do runs fn against a running worker, starting one if none runs. op names
// the call in errors. When the worker dies during fn, the error says so
// with its exit status.
func (s *Supervisor) Do(ctx context.Context, op string, fn func(context.Context, workerv1.EngineClient) error) error {
	p, err := s.acquire(ctx)
	if err != nil {
		return err
	}
	err = fn(ctx, p.engine)
	transport := err != nil && isTransportError(err) && ctx.Err() == nil
	if transport {
		// The session broke: most likely the process died. Wait a moment
		// for it to be reaped so the error can say how.
		select {
		case <-p.exited:
			err = fmt.Errorf("helm worker (pid %d) exited during %s: %s", p.pid, op, describeExit(p))
		case <-time.After(5 * time.Second):
			err = fmt.Errorf("helm worker (pid %d) connection lost during %s: %w", p.pid, op, err)
		}
	}
	s.release(p, err == nil)
	return err
}

// isTransportError: the call failed in gRPC or the session, not in the
// worker's engine (engine errors travel in the response's Error).
func isTransportError(err error) bool {
	if st, ok := status.FromError(err); ok {
		switch st.Code() {
		case codes.Unavailable, codes.Internal, codes.Canceled, codes.Unknown:
			return true
		}
		return false
	}
	return isClosed(err)
}

func (s *Supervisor) acquire(ctx context.Context) (*process, error) {
	s.mu.Lock()
	for {
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		p := s.cur
		if p != nil && !p.stopping {
			p.inflight++
			if p.idle != nil {
				p.idle.Stop()
				p.idle = nil
			}
			s.mu.Unlock()
			select {
			case <-p.ready:
			case <-ctx.Done():
				s.release(p, false)
				return nil, ctx.Err()
			}
			if p.err != nil {
				s.release(p, false)
				return nil, p.err
			}
			return p, nil
		}
		if p != nil {
			// Stopping: wait until it is gone, then start a new one.
			s.mu.Unlock()
			select {
			case <-p.exited:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			s.mu.Lock()
			continue
		}
		if wait := s.nextStart.Sub(s.cfg.Now()); wait > 0 {
			s.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			}
			s.mu.Lock()
			continue
		}
		p = &process{ready: make(chan struct{}), exited: make(chan struct{}), inflight: 1, output: newTail(2048)}
		s.cur = p
		s.stats.State = "starting"
		s.mu.Unlock()
		s.start(p)
		if p.err != nil {
			s.release(p, false)
			return nil, p.err
		}
		return p, nil
	}
}

// start execs the worker and waits for its Hello; it closes p.ready.
func (s *Supervisor) start(p *process) {
	defer close(p.ready)
	fail := func(err error) {
		p.err = fmt.Errorf("start helm worker %s: %w", s.cfg.Path, err)
		s.mu.Lock()
		s.stats.StartError = p.err.Error()
		s.streak++
		s.nextStart = s.cfg.Now().Add(backoff.Delay(s.cfg.MinBackoff, s.cfg.MaxBackoff, s.streak-1))
		s.mu.Unlock()
		s.log.Error("helm worker did not start", "path", s.cfg.Path, "err", err)
	}
	conn, child, err := socketpair()
	if err != nil {
		s.finishFailedStart(p)
		fail(err)
		return
	}
	cmd := exec.Command(s.cfg.Path, s.cfg.Args...)
	cmd.Env = s.cfg.Env
	cmd.ExtraFiles = []*os.File{child}
	out := io.MultiWriter(s.cfg.Stderr, p.output)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		conn.Close()
		child.Close()
		s.finishFailedStart(p)
		fail(err)
		return
	}
	child.Close()
	p.cmd, p.pid = cmd, cmd.Process.Pid
	s.wg.Add(1)
	go s.wait(p)
	p.peer, err = newPeer(conn, true, s.log, func(srv *grpc.Server, _ *grpc.ClientConn) {
		workerv1.RegisterRecordsServer(srv, &recordsServer{records: s.cfg.Records})
	})
	if err != nil {
		conn.Close()
		s.kill(p)
		fail(err)
		return
	}
	p.engine = workerv1.NewEngineClient(p.peer.cc)
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.StartTimeout)
	defer cancel()
	resp, err := p.engine.Hello(ctx, &workerv1.HelloRequest{AgentVersion: s.cfg.AgentVersion})
	if err == nil && resp.GetError() != nil {
		err = errors.New(resp.GetError().GetMessage())
	}
	if err != nil {
		s.kill(p)
		if out := p.output.String(); out != "" {
			err = fmt.Errorf("%w (worker output: %s)", err, lastLine(out))
		}
		fail(err)
		return
	}
	s.mu.Lock()
	s.stats.Starts++
	s.stats.State, s.stats.PID, s.stats.StartError = "running", p.pid, ""
	s.mu.Unlock()
	s.log.Info("helm worker started", "pid", p.pid, "version", resp.GetWorkerVersion())
}

// kill ends a process whose start failed; its exit is no crash.
func (s *Supervisor) kill(p *process) {
	s.mu.Lock()
	p.stopping = true
	s.mu.Unlock()
	p.cmd.Process.Kill()
	<-p.exited
}

// finishFailedStart forgets a process that never ran.
func (s *Supervisor) finishFailedStart(p *process) {
	s.mu.Lock()
	if s.cur == p {
		s.cur = nil
		s.stats.State, s.stats.PID = "stopped", 0
	}
	s.mu.Unlock()
	close(p.exited)
}

// wait reaps the process and records how it ended.
func (s *Supervisor) wait(p *process) {
	defer s.wg.Done()
	p.exitErr = p.cmd.Wait()
	if p.peer != nil {
		p.peer.Close()
	}
	s.mu.Lock()
	if s.cur == p {
		s.cur = nil
		s.stats.State, s.stats.PID = "stopped", 0
	}
	crashed := !p.stopping && p.err == nil
	if crashed {
		s.stats.Crashes++
		s.stats.LastCrash = describeExit(p)
		s.stats.LastCrashAt = s.cfg.Now()
		s.streak++
		s.nextStart = s.cfg.Now().Add(backoff.Delay(s.cfg.MinBackoff, s.cfg.MaxBackoff, s.streak-1))
	}
	if p.idle != nil {
		p.idle.Stop()
	}
	s.mu.Unlock()
	close(p.exited)
	if crashed {
		s.log.Error("helm worker crashed; it is started again on the next call", "pid", p.pid, "exit", describeExit(p))
	} else {
		s.log.Debug("helm worker stopped", "pid", p.pid)
	}
}

func describeExit(p *process) string {
	msg := "exited"
	if p.exitErr != nil {
		msg = p.exitErr.Error()
	}
	if l := lastLine(p.output.String()); l != "" {
		msg += "; last output: " + l
	}
	return msg
}

// release ends one call; the last call out arms the idle timer.
func (s *Supervisor) release(p *process, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.inflight--
	if ok {
		s.streak = 0
		s.nextStart = time.Time{}
	}
	if p.inflight > 0 || p.stopping || s.cur != p || p.err != nil || s.cfg.IdleTimeout < 0 {
		return
	}
	p.idle = time.AfterFunc(s.cfg.IdleTimeout, func() { s.stopIdle(p) })
}

func (s *Supervisor) stopIdle(p *process) {
	s.mu.Lock()
	if p.inflight > 0 || p.stopping || s.cur != p {
		s.mu.Unlock()
		return
	}
	p.stopping = true
	s.mu.Unlock()
	s.log.Debug("helm worker idle; stopping it", "pid", p.pid, "idle", s.cfg.IdleTimeout)
	s.stop(p)
}

// stop asks p to exit by closing its session (the worker exits when the
// agent's end closes), then kills it if it has not exited in 10 s.
func (s *Supervisor) stop(p *process) {
	<-p.ready
	if p.peer != nil {
		p.peer.Close()
	}
	select {
	case <-p.exited:
		return
	case <-time.After(10 * time.Second):
	}
	if p.cmd != nil {
		p.cmd.Process.Kill()
	}
	<-p.exited
}

// Close stops the worker, if one runs, and waits until it is reaped. Calls
// in flight fail. Idempotent.
func (s *Supervisor) Close() error {
	s.mu.Lock()
	s.closed = true
	p := s.cur
	if p != nil {
		p.stopping = true
	}
	s.mu.Unlock()
	if p != nil {
		s.stop(p)
	}
	s.wg.Wait()
	return nil
}
