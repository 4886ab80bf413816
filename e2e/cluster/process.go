package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long a component may take to exit after SIGTERM before
// its process group gets SIGKILL.
const stopGrace = 10 * time.Second

// Component describes one running process of a cluster.
type Component struct {
	Name    string // e.g. "etcd", "kube-apiserver"
	PID     int    // also its process group id
	LogPath string // combined stdout and stderr
	Ports   []int  // TCP ports it was told to listen on
}

// process is one component started in its own process group.
type process struct {
	Component
	cmd     *exec.Cmd
	log     *slog.Logger
	logFile *os.File
	done    chan struct{} // closed once cmd.Wait returned
	waitErr error         // set before done is closed
}

// startProcess runs bin with args in its own process group, its output
// appended to dir/<name>.log.
func startProcess(log *slog.Logger, dir, name, bin string, args []string, env []string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: open log: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = lf
	cmd.Stderr = lf
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// If the launching thread dies (a test binary killed by -timeout),
		// the kernel kills the child: no orphans even without Stop.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &process{
		Component: Component{Name: name, PID: cmd.Process.Pid, LogPath: logPath},
		cmd:       cmd,
		log:       log,
		logFile:   lf,
		done:      make(chan struct{}),
	}
	go func() { // owned by stop, which waits for done
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	log.Debug("started component", "component", name, "pid", p.PID, "log", logPath)
	return p, nil
}

// exited reports whether the process has exited, and how.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.waitErr
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group, then SIGKILL after the grace
// period, and waits for the process to be reaped. It is safe to call twice.
func (p *process) stop(grace time.Duration) {
	if done, _ := p.exited(); !done {
		start := time.Now()
		_ = syscall.Kill(-p.PID, syscall.SIGTERM)
		t := time.NewTimer(grace)
		select {
		case <-p.done:
			p.log.Debug("component stopped", "component", p.Name, "pid", p.PID, "elapsed", time.Since(start).Round(time.Millisecond))
		case <-t.C:
			_ = syscall.Kill(-p.PID, syscall.SIGKILL)
			<-p.done
			p.log.Info("component ignored SIGTERM; killed", "component", p.Name, "pid", p.PID, "grace", grace)
		}
		t.Stop()
	}
	// Sweep anything the component itself started in its group, and wait
	// until the kernel has taken it down (init reaps such orphans).
	if groupAlive(p.PID) {
		_ = syscall.Kill(-p.PID, syscall.SIGKILL)
		deadline := time.Now().Add(5 * time.Second)
		t := time.NewTicker(10 * time.Millisecond)
		for groupAlive(p.PID) && time.Now().Before(deadline) {
			<-t.C
		}
		t.Stop()
	}
	_ = p.logFile.Close()
}

// groupAlive reports whether process group pgid has a member that is not a
// zombie. kill(-pgid, 0) alone also counts zombies not yet reaped.
func groupAlive(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return true
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// After "pid (comm) ": state ppid pgrp ...
		i := bytes.LastIndexByte(st, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(st[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid && pid > 0 {
			return true
		}
	}
	return false
}

// tail returns the last n lines of the component's log.
func (p *process) tail(n int) string {
	return tailFile(p.LogPath, n)
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", path, err)
	}
	b = bytes.TrimRight(b, "\n")
	lines := bytes.Split(b, []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// portAllocator hands out free loopback ports and never the same one twice
// in one process, so clusters launched concurrently do not race for a port
// between "found free" and "bound by the component".
type portAllocator struct {
	mu   sync.Mutex
	used map[int]bool
}

// ports is process-wide on purpose: the port space is process-wide too.
var ports = &portAllocator{used: map[int]bool{}}

// free returns n distinct ports that were free on 127.0.0.1 a moment ago.
func (a *portAllocator) free(n int) ([]int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]int, 0, n)
	for tries := 0; len(out) < n; tries++ {
		if tries > 100*n {
			return nil, fmt.Errorf("find %d free loopback ports: gave up after %d tries", n, tries)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("find free loopback port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if a.used[port] {
			continue
		}
		a.used[port] = true
		out = append(out, port)
	}
	return out, nil
}

// errPortInUse marks a start that failed because a port was taken between
// picking it and binding it.
var errPortInUse = errors.New("port already in use")

// startWithPorts picks nports free ports and calls start, which launches a
// component and waits until it is ready. When the component's log shows a
// port conflict, it tries again with new ports.
func startWithPorts(ctx context.Context, name string, nports int, start func(ctx context.Context, ports []int) (*process, error)) (*process, error) {
	const attempts = 3
	var lastErr error
	for range attempts {
		ps, err := ports.free(nports)
		if err != nil {
			return nil, err
		}
		p, err := start(ctx, ps)
		if err == nil {
			return p, nil
		}
		lastErr = err
		if p == nil {
			return nil, err
		}
		conflict := bytes.Contains(readFile(p.LogPath), []byte("address already in use"))
		p.stop(0)
		if !conflict {
			return nil, err
		}
		// Truncate so the next attempt's log is not judged by this one's.
		_ = os.Truncate(p.LogPath, 0)
	}
	return nil, fmt.Errorf("start %s: %w after %d attempts: %w", name, errPortInUse, attempts, lastErr)
}

func readFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// waitFor polls cond every interval until it returns true, returns an
// error, p exits, or ctx ends.
func waitFor(ctx context.Context, what string, p *process, interval time.Duration, cond func(ctx context.Context) (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	var lastErr error
	for {
		ok, err := cond(ctx)
		if ok {
			return nil
		}
		if err != nil {
			lastErr = err
		}
		if p != nil {
			if done, werr := p.exited(); done {
				return fmt.Errorf("wait for %s: %s exited (%v); log tail:\n%s", what, p.Name, werr, p.tail(20))
			}
		}
		select {
		case <-ctx.Done():
			err := fmt.Errorf("wait for %s: %w", what, context.Cause(ctx))
			if lastErr != nil {
				err = fmt.Errorf("%w (last error: %v)", err, lastErr)
			}
			if p != nil {
				err = fmt.Errorf("%w; %s log tail:\n%s", err, p.Name, p.tail(20))
			}
			return err
		case <-t.C:
		}
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", itoa(port)) }
