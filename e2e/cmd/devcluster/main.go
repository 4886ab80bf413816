// Command devcluster runs one simulated Kubernetes cluster (etcd,
// kube-apiserver, controller-manager, scheduler and kwok nodes) for people
// trying Tether by hand; `make dev-cluster` and `make dev-cluster-down` call
// it.
//
//	devcluster up   -state-dir DIR [-nodes N] [-bin-dir DIR]  start in the background, print export KUBECONFIG=...
//	devcluster down -state-dir DIR                            stop it
//	devcluster run  -state-dir DIR [-nodes N] [-bin-dir DIR]  run in the foreground until SIGINT/SIGTERM
//	devcluster helm-repo -state-dir DIR [-addr A] CHARTDIR... serve charts as a Helm repository until SIGINT/SIGTERM
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tetherfleet/tether/e2e/cluster"
)

// State files under -state-dir.
const (
	pidFile        = "devcluster.pid"
	readyFile      = "ready"
	kubeconfigFile = "kubeconfig"
	logFile        = "devcluster.log"
	clusterDir     = "cluster"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet("devcluster "+cmd, flag.ExitOnError)
	stateDir := fs.String("state-dir", ".cache/dev-cluster", "folder for the pid file, kubeconfig, logs and cluster data")
	binDir := fs.String("bin-dir", "", "folder with the e2e binaries (default $"+cluster.BinDirEnv+" or e2e/.bin)")
	nodes := fs.Int("nodes", 3, "number of simulated (kwok) nodes")
	mgmt := fs.Bool("management", false, "make it a Cluster API management cluster (CAPI core, kubeadm and CAPD in-memory managers), for `tether serve --management-kubeconfig`")
	addr := fs.String("addr", "127.0.0.1:0", "helm-repo: address to serve on")
	_ = fs.Parse(args)
	dir, err := filepath.Abs(*stateDir)
	if err != nil {
		fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	switch cmd {
	case "up":
		err = up(dir, *binDir, *nodes, *mgmt)
	case "down":
		err = down(dir)
	case "run":
		err = run(log, dir, *binDir, *nodes, *mgmt)
	case "helm-repo":
		err = helmRepo(log, dir, *addr, fs.Args())
	default:
		usage()
	}
	if err != nil {
		fatal(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: devcluster up|down|run -state-dir DIR [-nodes N] [-management] [-bin-dir DIR]\n       devcluster helm-repo -state-dir DIR [-addr HOST:PORT] CHARTDIR...")
	os.Exit(2)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "devcluster:", err)
	os.Exit(1)
}

// run launches the cluster and keeps it up until SIGINT or SIGTERM.
func run(log *slog.Logger, dir, binDir string, nodes int, mgmt bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	_ = os.Remove(filepath.Join(dir, readyFile))
	data := filepath.Join(dir, clusterDir)
	if err := os.RemoveAll(data); err != nil { // always a fresh etcd
		return fmt.Errorf("clean %s: %w", data, err)
	}
	c, err := cluster.Launch(ctx, cluster.Options{Name: "dev", Dir: data, BinDir: binDir, NodeCount: nodes, Management: mgmt, Logger: log})
	if err != nil {
		return err
	}
	defer func() {
		if err := c.Stop(); err != nil {
			log.Error("stop", "err", err)
		}
		_ = os.Remove(filepath.Join(dir, readyFile))
	}()
	kc := filepath.Join(dir, kubeconfigFile)
	if err := os.WriteFile(kc, c.Kubeconfig, 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, readyFile), []byte(c.Server+"\n"), 0o644); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	var pids []string
	for _, comp := range c.Components() {
		pids = append(pids, fmt.Sprintf("%s=%d", comp.Name, comp.PID))
	}
	log.Info("dev cluster ready", "server", c.Server, "kubeconfig", kc, "nodes", c.Nodes, "components", strings.Join(pids, " "))
	<-ctx.Done()
	log.Info("stopping dev cluster")
	return nil
}

// up starts `devcluster run` detached, waits until it is ready and prints
// how to use it.
func up(dir, binDir string, nodes int, mgmt bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	kc := filepath.Join(dir, kubeconfigFile)
	if pid, ok := running(dir); ok {
		fmt.Fprintf(os.Stderr, "dev cluster already running (pid %d)\n", pid)
		fmt.Printf("export KUBECONFIG=%s\n", kc)
		return nil
	}
	_ = os.Remove(filepath.Join(dir, readyFile))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	lf, err := os.OpenFile(filepath.Join(dir, logFile), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	args := []string{"run", "-state-dir", dir, "-nodes", strconv.Itoa(nodes)}
	if binDir != "" {
		args = append(args, "-bin-dir", binDir)
	}
	if mgmt {
		args = append(args, "-management")
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own session: it outlives make and the terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s run: %w", self, err)
	}
	pid := cmd.Process.Pid
	if err := os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }() // reaped here if it dies during start-up
	fmt.Fprintf(os.Stderr, "starting dev cluster (pid %d, log %s)…\n", pid, lf.Name())
	deadline := time.NewTimer(5 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			_ = os.Remove(filepath.Join(dir, pidFile))
			b, _ := os.ReadFile(lf.Name())
			return fmt.Errorf("dev cluster exited during start-up (%v):\n%s", err, b)
		case <-deadline.C:
			_ = syscall.Kill(pid, syscall.SIGTERM)
			return fmt.Errorf("dev cluster not ready after 5m; see %s", lf.Name())
		case <-tick.C:
		}
		if _, err := os.Stat(filepath.Join(dir, readyFile)); err == nil {
			break
		}
	}
	if mgmt {
		fmt.Fprintln(os.Stderr, "dev management cluster ready (CAPI core, kubeadm, CAPD in-memory); stop it with `make dev-mgmt-down`")
	} else {
		fmt.Fprintf(os.Stderr, "dev cluster ready: %d kwok nodes; stop it with `make dev-cluster-down`\n", nodes)
	}
	fmt.Printf("export KUBECONFIG=%s\n", kc)
	return nil
}

// down stops the cluster `up` started and waits until its process is gone.
func down(dir string) error {
	pid, ok := running(dir)
	if !ok {
		fmt.Fprintln(os.Stderr, "no dev cluster running")
		_ = os.Remove(filepath.Join(dir, pidFile))
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal dev cluster pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return fmt.Errorf("dev cluster pid %d ignored SIGTERM for 30s; killed", pid)
		}
		time.Sleep(100 * time.Millisecond) // polling another process's exit; no wait() on a non-child
	}
	_ = os.Remove(filepath.Join(dir, pidFile))
	fmt.Fprintf(os.Stderr, "dev cluster stopped (pid %d)\n", pid)
	return nil
}

// running reads the pid file and reports whether that process is alive.
func running(dir string) (int, bool) {
	b, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, alive(pid)
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	// A zombie still answers kill 0; it has exited for our purpose.
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	if i := strings.LastIndexByte(string(st), ')'); i >= 0 && i+2 < len(st) && st[i+2] == 'Z' {
		return false
	}
	return true
}
