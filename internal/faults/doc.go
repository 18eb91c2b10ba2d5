// Package faults is Chapar's fault-injection suite. It treats Chapar as a
// black box: the dispatcher binary and real nats-server binaries run as
// separate processes, killed with SIGKILL and restarted, while the test
// process publishes events and plays the vendor (a ledger in front of the
// vendor emulator that records every request per event id).
//
// Every scenario accounts for every acked event: delivered (the vendor
// answered 2xx) or dead-lettered (a record in CHAPAR_DLQ); anything else
// after the system is idle is lost. See docs/reliability.md for the
// scenarios, the figures and how to run the long versions:
//
//	go test ./internal/faults -run . -long -v -timeout 60m -results /tmp/faults.md
//
// The package has tests only.
package faults
