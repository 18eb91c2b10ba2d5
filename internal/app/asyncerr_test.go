package app

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// A subscription of the dispatcher's connection that falls behind and
// drops messages is logged in the dispatcher's log, with its subject, not
// printed to stderr by the client.
func TestAsynchronousNATSErrorsAreLogged(t *testing.T) {
	cfg := config.Default()
	cfg.NATS.Embedded = config.Embedded{Listen: testenv.FreeAddr(t), DataDir: t.TempDir()}
	core, logs := observer.New(zapcore.WarnLevel)
	conn, err := Connect(context.Background(), cfg, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sub, err := conn.NC.SubscribeSync("slow.reader")
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(1, -1); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if err := conn.NC.Publish("slow.reader", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the slow consumer logged", func() bool {
		for _, e := range logs.FilterMessage("NATS asynchronous error").All() {
			if e.ContextMap()["subject"] == "slow.reader" {
				return true
			}
		}
		return false
	})
}
