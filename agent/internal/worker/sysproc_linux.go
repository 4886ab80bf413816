package worker

import "syscall"

// sysProcAttr: the worker dies with the agent (it also exits when its
// socket closes; this covers an agent killed while the worker is stuck).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
