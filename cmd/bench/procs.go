package main

// Process control: building the programs under test, starting each as its
// own process with its log in the work directory, stopping it as an
// operator would (SIGTERM, then a grace period), and the nats-server
// helper process.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// proc is one child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// startProc runs bin with args, output appended to logFile. The child is
// killed if the bench dies.
func startProc(name, logFile string, env []string, bin string, args ...string) (*proc, error) {
	return startProcStdin(name, logFile, env, nil, bin, args...)
}

// startProcStdin is startProc with the child's stdin (nil: none): the
// HTTP ceiling reads its events there (ceilings.go).
func startProcStdin(name, logFile string, env []string, stdin *os.File, bin string, args ...string) (*proc, error) {
	out, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if stdin != nil {
		cmd.Stdin = stdin
	}
	cmd.Env = append(os.Environ(), env...)
	if raceBuild && os.Getenv("GORACE") == "" {
		// A race-built program sleeps a second at exit by default.
		cmd.Env = append(cmd.Env, "GORACE=atexit_sleep_ms=0")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logFile, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exitedEarly says why the process is gone, or nil while it runs.
func (p *proc) exitedEarly() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited unexpectedly (%v); last log lines:\n%s", p.name, p.err, p.tail())
	default:
		return nil
	}
}

// awaitReady polls url until it answers 200, the process exits or within
// passes.
func (p *proc) awaitReady(url string, within time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if err := p.exitedEarly(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready at %s within %s; last log lines:\n%s", p.name, url, within, p.tail())
		}
		select {
		case <-p.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and waits up to grace for a clean exit, then kills.
func (p *proc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return p.exitedEarly()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			return fmt.Errorf("%s: exit after SIGTERM: %w; last log lines:\n%s", p.name, p.err, p.tail())
		}
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM; killed", p.name, grace)
	}
}

// tail is the end of the process's log.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "  " + strings.Join(lines[max(0, len(lines)-15):], "\n  ")
}

// natsHelperEnv makes the bench binary (or its test binary) run as
// nats-server instead.
const natsHelperEnv = "CHAPAR_BENCH_ROLE=nats-server"

func isNATSHelper() bool {
	k, v, _ := strings.Cut(natsHelperEnv, "=")
	return os.Getenv(k) == v
}

// natsServer is a fresh nats-server with JetStream (file storage) on
// loopback: one process, or a cluster of nodes, one process each.
type natsServer struct {
	nodes []*proc
	url   string // every node's client URL, comma-separated
}

// publisher connects the bench's publisher: one connection, and a
// JetStream handle keeping up to 1,000 async publishes in flight.
func (ns *natsServer) publisher() (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(ns.url, nats.Name("bench-publisher"))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1000))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func (ns *natsServer) pids() []int {
	out := make([]int, len(ns.nodes))
	for i, p := range ns.nodes {
		out[i] = p.pid()
	}
	return out
}

// stop stops every node, returning the first error.
func (ns *natsServer) stop(grace time.Duration) error {
	var first error
	for _, p := range ns.nodes {
		if err := p.stop(grace); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// startNATS starts a nats-server of nodes processes (1: a single server;
// more: a cluster named bench on loopback routes, each node with its own
// store), and waits until each accepts clients.
func startNATS(self, dir string, nodes int) (*natsServer, error) {
	nodes = max(nodes, 1)
	ports, routes := make([]int, nodes), make([]int, nodes)
	for i := range nodes {
		var err error
		if ports[i], err = freePort(); err != nil {
			return nil, err
		}
		if routes[i], err = freePort(); err != nil {
			return nil, err
		}
	}
	ns := &natsServer{}
	var urls []string
	for i := range nodes {
		name, store := "bench", filepath.Join(dir, "jetstream")
		args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(ports[i]), "-js"}
		if nodes > 1 {
			name, store = fmt.Sprintf("bench-%d", i+1), filepath.Join(dir, fmt.Sprintf("jetstream-%d", i+1))
			var peers []string
			for j, r := range routes {
				if j != i {
					peers = append(peers, fmt.Sprintf("nats://127.0.0.1:%d", r))
				}
			}
			args = append(args, "--cluster_name", "bench", "--cluster", fmt.Sprintf("nats://127.0.0.1:%d", routes[i]),
				"--routes", strings.Join(peers, ","))
		}
		args = append(args, "-sd", store, "-n", name)
		p, err := startProc(name, filepath.Join(dir, name+".log"), []string{natsHelperEnv}, self, args...)
		if err != nil {
			_ = ns.stop(5 * time.Second)
			return nil, err
		}
		ns.nodes = append(ns.nodes, p)
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	ns.url = strings.Join(urls, ",")
	deadline := time.Now().Add(15 * time.Second)
	for i, p := range ns.nodes {
		for {
			nc, err := nats.Connect(urls[i], nats.Timeout(time.Second))
			if err == nil {
				nc.Close()
				break
			}
			if e := p.exitedEarly(); e != nil {
				_ = ns.stop(5 * time.Second)
				return nil, e
			}
			if time.Now().After(deadline) {
				_ = ns.stop(5 * time.Second)
				return nil, fmt.Errorf("%s did not accept connections in 15s: %w", p.name, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return ns, nil
}

// fleet is a system's processes: one, or several replicas of it.
type fleet []*proc

func (f fleet) pids() []int {
	out := make([]int, len(f))
	for i, p := range f {
		out[i] = p.pid()
	}
	return out
}

// exitedEarly says why a process of the fleet is gone, or nil.
func (f fleet) exitedEarly() error {
	for _, p := range f {
		if err := p.exitedEarly(); err != nil {
			return err
		}
	}
	return nil
}

// stop stops every process as an operator would, returning the first error.
func (f fleet) stop(grace time.Duration) error {
	var first error
	for _, p := range f {
		if err := p.stop(grace); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// moduleRoot is the directory of Chapar's go.mod.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run the bench inside the Chapar repository")
	}
	return filepath.Dir(gomod), nil
}

// goBuild runs go build in dir.
func goBuild(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "go", append([]string{"build"}, args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (in %s): %w\n%s", strings.Join(args, " "), dir, err, stderr.String())
	}
	return nil
}

// buildDispatcher builds cmd/dispatcher as users build it (tags: none),
// or with build tags for a variant measured against it.
func buildDispatcher(ctx context.Context, root, out string, tags ...string) error {
	args := []string{"-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	if raceBuild {
		args = append(args, "-race") // reuse the packages go test -race compiled
	}
	return goBuild(ctx, root, append(args, "./cmd/dispatcher")...)
}

// buildPeers builds the peers module (bench/peers) into dir: the peers and
// the ceilings.
func buildPeers(ctx context.Context, root, dir string) error {
	return goBuild(ctx, filepath.Join(root, "bench", "peers"), "-o", dir+string(filepath.Separator), "./cmd/lean", "./cmd/watermill", "./cmd/jsceiling", "./cmd/httpceiling")
}

// countLines counts the lines of file that contain s.
func countLines(file, s string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, err
	}
	n := 0
	for line := range bytes.Lines(b) {
		if bytes.Contains(line, []byte(s)) {
			n++
		}
	}
	return n, nil
}
