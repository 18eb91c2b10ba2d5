package app

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
)

func startServer(t *testing.T, edit func(*server.Options)) string {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir()}
	edit(opts)
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(5 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}

func TestConnectWithProductionAuth(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	seedFile := filepath.Join(t.TempDir(), "chapar.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		server func(*server.Options)
		good   func(*config.NATS)
		bad    func(*config.NATS)
	}{
		{"token", func(o *server.Options) { o.Authorization = "s3cr3t" },
			func(n *config.NATS) { n.Token = "s3cr3t" }, func(n *config.NATS) { n.Token = "wrong" }},
		{"user and password", func(o *server.Options) { o.Username, o.Password = "chapar", "pw" },
			func(n *config.NATS) { n.User, n.Password = "chapar", "pw" }, func(n *config.NATS) { n.User, n.Password = "chapar", "nope" }},
		{"nkey", func(o *server.Options) { o.Nkeys = []*server.NkeyUser{{Nkey: pub}} },
			func(n *config.NATS) { n.NKeyFile = seedFile }, func(n *config.NATS) {}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := startServer(t, tt.server)
			for _, c := range []struct {
				edit func(*config.NATS)
				ok   bool
			}{{tt.good, true}, {tt.bad, false}} {
				cfg := config.Default()
				cfg.NATS.URL = url
				c.edit(&cfg.NATS)
				conn, err := Connect(context.Background(), cfg, zap.NewNop())
				if c.ok {
					if err != nil {
						t.Fatalf("good credentials: %v", err)
					}
					if _, err := conn.JS.AccountInfo(context.Background()); err != nil {
						t.Errorf("JetStream over the authenticated connection: %v", err)
					}
					conn.Close()
				} else if err == nil || !strings.Contains(err.Error(), "nats.url") {
					t.Errorf("bad credentials: %v", err)
				}
			}
		})
	}
}
