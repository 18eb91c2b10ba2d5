package faults

import "syscall"

// childAttr makes the kernel kill a child if the test process dies, so an
// interrupted run leaves no nats-server or dispatcher behind.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
