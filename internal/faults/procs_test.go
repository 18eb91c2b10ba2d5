package faults

// Processes: the nats-server and dispatcher binaries, built once per test
// run, started as children, killed with SIGKILL and restarted. Each
// process's output goes to a log file in the test's temporary directory;
// a failing test prints the paths.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/freeport"
)

var (
	longFlag    = flag.Bool("long", false, "run the long fault scenarios (also CHAPAR_FAULTS=long)")
	resultsFlag = flag.String("results", "", "write the results table (markdown) to this file")
)

// long reports whether the long versions run.
func long() bool { return *longFlag || os.Getenv("CHAPAR_FAULTS") == "long" }

// bins are the binaries under test, built by TestMain.
var bins struct{ natsServer, dispatcher string }

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "chapar-faults-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.natsServer = filepath.Join(dir, "nats-server")
	bins.dispatcher = filepath.Join(dir, "dispatcher")
	for pkg, out := range map[string]string{
		"github.com/nats-io/nats-server/v2":           bins.natsServer,
		"github.com/chapar-dev/chapar/cmd/dispatcher": bins.dispatcher,
	} {
		if err := goBuild(pkg, out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			_ = os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	writeResults()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func goBuild(pkg, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// proc is one child process that can be killed and started again with the
// same arguments, appending to the same log file.
type proc struct {
	t    testing.TB
	name string
	args []string
	env  []string // added to the test's environment
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func newProc(t testing.TB, dir, name string, args ...string) *proc {
	p := &proc{t: t, name: name, args: args, log: filepath.Join(dir, name+".log")}
	t.Cleanup(func() {
		p.kill()
	})
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	fmt.Fprintf(f, "==== %s start %s\n", time.Now().Format(time.RFC3339Nano), strings.Join(p.args, " "))
	cmd := exec.Command(p.args[0], p.args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks for a graceful exit (SIGTERM), then kills after grace.
func (p *proc) stop(grace time.Duration) {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.kill()
	}
}

// natsNode is one nats-server with JetStream on a file store.
type natsNode struct {
	*proc
	name     string
	port     int
	storeDir string
}

func (n *natsNode) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", n.port) }

// startNATS starts n nats-servers: one standalone server, or a cluster
// whose every node routes to the others.
func startNATS(t testing.TB, dir string, n int) []*natsNode {
	t.Helper()
	ports := make([]int, n)
	cports := make([]int, n)
	for i := range n {
		ports[i], cports[i] = freeport.Port(t), freeport.Port(t)
	}
	nodes := make([]*natsNode, n)
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		store := filepath.Join(dir, name+"-store")
		conf := fmt.Sprintf("server_name: %s\nlisten: 127.0.0.1:%d\njetstream {\n  store_dir: %q\n  max_memory_store: 256MB\n  max_file_store: 4GB\n}\n", name, ports[i], store)
		if n > 1 {
			var routes []string
			for j := range n {
				if j != i {
					routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cports[j]))
				}
			}
			conf += fmt.Sprintf("cluster {\n  name: chapar-faults\n  listen: 127.0.0.1:%d\n  routes: [%s]\n}\n", cports[i], strings.Join(routes, ", "))
		}
		file := filepath.Join(dir, name+".conf")
		if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		node := &natsNode{proc: newProc(t, dir, "nats-"+name, bins.natsServer, "-c", file), name: name, port: ports[i], storeDir: store}
		node.start()
		nodes[i] = node
	}
	for _, node := range nodes {
		node.waitListening(t)
	}
	waitJetStream(t, urls(nodes))
	if n > 1 {
		waitReplicated(t, urls(nodes), n)
	}
	return nodes
}

// waitReplicated waits until the cluster can place a stream on n nodes: a
// meta leader answering account info is not enough, its peers may still be
// joining.
func waitReplicated(t testing.TB, url string, n int) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	eventually(t, 60*time.Second, fmt.Sprintf("the cluster to place an R%d stream", n), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "FAULTS_PROBE", Subjects: []string{"faults.probe"}, Replicas: n})
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, "FAULTS_PROBE"); err != nil {
		t.Fatal(err)
	}
}

func urls(nodes []*natsNode) string {
	var u []string
	for _, n := range nodes {
		u = append(u, n.url())
	}
	return strings.Join(u, ",")
}

// waitListening waits until the node accepts TCP connections.
func (n *natsNode) waitListening(t testing.TB) {
	t.Helper()
	eventually(t, 20*time.Second, n.name+" listening", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
		}
		return err == nil
	})
}

// restart starts a killed node again on the same store and port, and waits
// for JetStream to answer through it.
func (n *natsNode) restart(t testing.TB) {
	t.Helper()
	n.start()
	n.waitListening(t)
	waitJetStream(t, n.url())
}

// waitJetStream waits until JetStream answers account info through url
// (on a cluster: once a meta leader is elected).
func waitJetStream(t testing.TB, url string) {
	t.Helper()
	// A server just started may accept and then reset a connection while
	// it is still starting (seen in CI on a loaded machine): keep trying,
	// within the wait below, rather than fail on the first attempt.
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	eventually(t, 30*time.Second, "JetStream ready at "+url, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
}

// dispatcherProc is one dispatcher replica: `dispatcher run` with its own
// config file (each replica has its own admin port for /readyz).
type dispatcherProc struct {
	*proc
	admin string
	file  string // its config file, rewritten by reconfigure
}

func startDispatcher(t testing.TB, dir, name string, cfg dispatcherConfig, natsURL string) *dispatcherProc {
	t.Helper()
	cfg.AdminListen = fmt.Sprintf("127.0.0.1:%d", freeport.Port(t))
	return startDispatcherYAML(t, dir, name, cfg.yaml(), cfg.AdminListen, natsURL, nil)
}

// startDispatcherYAML starts a replica with a config of the caller's own
// (admin is its admin.listen) and env added to its environment.
func startDispatcherYAML(t testing.TB, dir, name, yaml, admin, natsURL string, env []string) *dispatcherProc {
	t.Helper()
	file := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &dispatcherProc{
		proc:  newProc(t, dir, name, bins.dispatcher, "run", "--config", file, "--nats-url", natsURL),
		admin: admin,
		file:  file,
	}
	d.env = env
	d.restart(t)
	return d
}

// reconfigure stops the replica gracefully, as a rolling deploy does,
// writes cfg (on the same admin port) and starts it again.
func (d *dispatcherProc) reconfigure(t testing.TB, cfg dispatcherConfig) {
	t.Helper()
	d.stop(10 * time.Second)
	cfg.AdminListen = d.admin
	if err := os.WriteFile(d.file, []byte(cfg.yaml()), 0o644); err != nil {
		t.Fatal(err)
	}
	d.restart(t)
}

// metric reads one sample of the replica's /metrics: the value of the
// line that starts with series (e.g. `chapar_sink_fenced{sink="chabok"}`),
// and false if there is none or the replica does not answer.
func (d *dispatcherProc) metric(series string) (float64, bool) {
	resp, err := http.Get("http://" + d.admin + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// restart starts the replica and waits until it reports ready.
func (d *dispatcherProc) restart(t testing.TB) {
	t.Helper()
	d.start()
	eventually(t, 30*time.Second, d.name+" ready", func() bool {
		if !d.running() {
			t.Fatalf("%s exited; log: %s", d.name, d.log)
		}
		resp, err := http.Get("http://" + d.admin + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// eventually polls cond until it holds or fails the test after timeout.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if err := waitFor(timeout, cond); err != nil {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timeout")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// dispatcherConfig is the config file every replica of a scenario shares
// (bar its admin port): one Chabok sink, served by the vendor ledger, that
// every chapar.track event is routed to. Retries are short so scenarios
// resolve in seconds.
type dispatcherConfig struct {
	Replicas         int           // streams.replicas: 1, or 3 on a cluster
	AckWait          time.Duration // a dead replica's work moves on after this
	Concurrency      int           // per replica
	InitialInterval  time.Duration
	MaxInterval      time.Duration
	MaxAttempts      int
	MaxElapsed       time.Duration
	FailureThreshold int
	OpenTimeout      time.Duration
	VendorURL        string // the ledger's base URL
	AdminListen      string // set by startDispatcher
	// SinkExtra is YAML added to the chabok sink (e.g. "    order: by_user\n").
	SinkExtra string
	// ExtraSinks is YAML of more sinks, appended to the sinks list.
	ExtraSinks string
	// Routes is the routes list's YAML; empty: every chapar.track to chabok.
	Routes string
}

func defaultConfig(vendorURL string) dispatcherConfig {
	return dispatcherConfig{
		Replicas:         1,
		AckWait:          3 * time.Second,
		Concurrency:      16,
		InitialInterval:  200 * time.Millisecond,
		MaxInterval:      2 * time.Second,
		MaxAttempts:      6,
		MaxElapsed:       5 * time.Minute,
		FailureThreshold: 5,
		OpenTimeout:      time.Second,
		VendorURL:        vendorURL,
	}
}

func (c dispatcherConfig) yaml() string {
	return fmt.Sprintf(`# generated by internal/faults
streams:
  replicas: %d
  storage: file
dispatcher:
  ack_wait: %s
  shutdown_grace: 2s
  log_format: json
  log_level: info
admin:
  listen: %q
sink_defaults:
  concurrency: %d
  max_ack_pending: 1000
  timeout: 5s
  retry:
    initial_interval: %s
    multiplier: 2
    jitter: 0.2
    max_interval: %s
    max_attempts: %d
    max_elapsed: %s
  breaker:
    failure_threshold: %d
    open_timeout: %s
    interval: 1m
sinks:
  - name: chabok
    vendor: chabok
    base_url: %s/api
    settings:
      app_id: faults
      access_token: %s
%s%sroutes:
%s`, c.Replicas, c.AckWait, c.AdminListen, c.Concurrency, c.InitialInterval, c.MaxInterval, c.MaxAttempts,
		c.MaxElapsed, c.FailureThreshold, c.OpenTimeout, c.VendorURL, vendorToken, c.SinkExtra, c.ExtraSinks, c.routes())
}

func (c dispatcherConfig) routes() string {
	if c.Routes != "" {
		return c.Routes
	}
	return "  - types: [chapar.track]\n    sinks: [chabok]\n"
}
