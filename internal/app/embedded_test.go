package app

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// nats.embedded.token is the embedded server's auth, one key: the
// dispatcher's own connection uses it, a client without it is refused.
func TestEmbeddedServerToken(t *testing.T) {
	cfg := config.Default()
	cfg.NATS.Embedded = config.Embedded{Listen: testenv.FreeAddr(t), DataDir: t.TempDir(), Token: "s3cret"}
	conn, err := Connect(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !conn.NC.IsConnected() {
		t.Fatal("the dispatcher's own connection is not up")
	}
	url := conn.Server.ClientURL()
	if nc, err := nats.Connect(url); err == nil {
		nc.Close()
		t.Error("a client without the token was accepted")
	}
	nc, err := nats.Connect(url, nats.Token("s3cret"))
	if err != nil {
		t.Fatalf("a client with the token: %v", err)
	}
	nc.Close()
}

// Without a token, the embedded server may only listen on loopback.
func TestEmbeddedServerBeyondLoopbackNeedsAToken(t *testing.T) {
	for listen, ok := range map[string]bool{
		"127.0.0.1:4222": true, "localhost:4222": true, "[::1]:4222": true,
		":4222": false, "0.0.0.0:4222": false, "10.0.0.5:4222": false,
	} {
		cfg := config.Default()
		cfg.NATS.Embedded.Listen = listen
		err := cfg.Validate()
		if ok != (err == nil) {
			t.Errorf("%s: %v", listen, err)
		}
		cfg.NATS.Embedded.Token = "t"
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s with a token: %v", listen, err)
		}
	}
}
