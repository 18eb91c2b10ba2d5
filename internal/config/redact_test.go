package config_test

import (
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://user:pass@host:4222":                  "nats://user:***@host:4222",
		"nats://s3cr3t-token@host:4222":               "nats://***@host:4222",
		"nats://host:4222":                            "nats://host:4222",
		"nats://a:p1@n1:4222,nats://b:p2@n2:4222":     "nats://a:***@n1:4222,nats://b:***@n2:4222",
		"nats://a:p1@n1:4222, nats://n2:4222":         "nats://a:***@n1:4222, nats://n2:4222",
		"tls://u:p%40ss@host":                         "tls://u:***@host",
		"nats://u:pa ss@ho st":                        "nats://***@ho st",
		"https://user:pw@example.com/api?x=1":         "https://user:***@example.com/api?x=1",
		"":                                            "",
		"127.0.0.1:4222":                              "127.0.0.1:4222",
		"nats://user:pass@host:4222/path#frag":        "nats://user:***@host:4222/path#frag",
		"nats://%7Bweird%7D:pass@host":                "nats://%7Bweird%7D:***@host",
		"nats://user:pass@[::1]:4222":                 "nats://user:***@[::1]:4222",
		"nats://user:pass@host:4222,nats://host2:999": "nats://user:***@host:4222,nats://host2:999",
	} {
		if got := config.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
