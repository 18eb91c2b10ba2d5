package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
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

// writeCA makes a CA and a server certificate for 127.0.0.1, returning the
// server's TLS config and the CA file a client trusts.
func writeCA(t *testing.T) (*tls.Config, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "chapar test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "nats"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: srvKey}}, MinVersion: tls.VersionTLS12}, caFile
}

func TestConnectOverTLS(t *testing.T) {
	tlsCfg, caFile := writeCA(t)
	url := startServer(t, func(o *server.Options) { o.TLSConfig = tlsCfg; o.TLS = true })
	cfg := config.Default()
	cfg.NATS.URL = strings.Replace(url, "nats://", "tls://", 1)
	cfg.NATS.TLS.CAFile = caFile
	conn, err := Connect(context.Background(), cfg, zap.NewNop())
	if err != nil {
		t.Fatalf("TLS with the CA: %v", err)
	}
	if !conn.NC.TLSRequired() {
		t.Error("connection is not TLS")
	}
	conn.Close()
	cfg.NATS.TLS.CAFile = ""
	if _, err := Connect(context.Background(), cfg, zap.NewNop()); err == nil {
		t.Error("connected without trusting the server's CA")
	}
}
