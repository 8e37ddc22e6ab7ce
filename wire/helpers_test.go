package wire

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"
)

// Test credentials.
const (
	testUser = "master"
	testPass = "s3cret"
)

func testAuthenticate(user, pass string) error {
	if user == testUser && pass == testPass || user == "bob" && pass == "bobpw" {
		return nil
	}
	return errors.New("bad user or password")
}

func testIsAdmin(id string) bool { return id == testUser || id == "master@example.org" }

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func baseServerConfig() ServerConfig {
	return ServerConfig{
		Authenticate: testAuthenticate,
		IsAdmin:      testIsAdmin,
		FailDelay:    time.Millisecond,
		Logger:       quietLogger(),
	}
}

func baseClientConfig() ClientConfig {
	return ClientConfig{AuthName: testUser, Password: testPass}
}

type result struct {
	c   *Conn
	err error
}

// handshakePair runs both ends of a handshake, the server on sconn and the
// client on cconn, and returns both results. Conns that came up are closed
// by t.Cleanup.
func handshakePair(t testing.TB, cconn, sconn net.Conn, ccfg ClientConfig, scfg ServerConfig) (client, server result) {
	t.Helper()
	ctx := context.Background()
	done := make(chan result, 1)
	go func() {
		c, err := Server(ctx, sconn, scfg)
		done <- result{c, err}
	}()
	c, err := Client(ctx, cconn, ccfg)
	client = result{c, err}
	if err != nil {
		// The client gave up; make sure the server is not left waiting.
		cconn.Close()
	}
	server = <-done
	for _, r := range []result{client, server} {
		if r.c != nil {
			t.Cleanup(func() { r.c.Close() })
		}
	}
	return client, server
}

// pipePair connects a client and a server over net.Pipe and fails the
// test unless both handshakes succeed.
func pipePair(t testing.TB, ccfg ClientConfig, scfg ServerConfig) (client, server *Conn) {
	t.Helper()
	cc, sc := net.Pipe()
	cr, sr := handshakePair(t, cc, sc, ccfg, scfg)
	if cr.err != nil || sr.err != nil {
		t.Fatalf("handshake: client: %v; server: %v", cr.err, sr.err)
	}
	return cr.c, sr.c
}

// addrConn reports a chosen remote address, to test what the server does
// with a peer that is not on loopback without ever leaving loopback.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (a addrConn) RemoteAddr() net.Addr { return a.remote }

var remoteAddr = &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 40000}

// pki is a throwaway certificate authority with a server and a client
// certificate.
type pki struct {
	caPool     *x509.CertPool
	server     tls.Certificate
	client     tls.Certificate // CN = testUser
	foreign    tls.Certificate // CN = testUser, from another CA
	foreignCAs *x509.CertPool
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	caKey, caCert := newCA(t, "spoolsync test CA")
	fKey, fCert := newCA(t, "someone else's CA")
	p := &pki{caPool: x509.NewCertPool(), foreignCAs: x509.NewCertPool()}
	p.caPool.AddCert(caCert)
	p.foreignCAs.AddCert(fCert)
	p.server = leaf(t, caKey, caCert, "replica", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, x509.ExtKeyUsageServerAuth)
	p.client = leaf(t, caKey, caCert, testUser, nil, nil, x509.ExtKeyUsageClientAuth)
	p.foreign = leaf(t, fKey, fCert, testUser, nil, nil, x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) serverTLS() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{p.server}, ClientCAs: p.caPool,
		ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS13}
}

func (p *pki) clientTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: p.caPool, ServerName: "localhost", MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serial int64

func template(cn string) *x509.Certificate {
	serial++
	return &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
}

func newCA(t testing.TB, cn string) (*ecdsa.PrivateKey, *x509.Certificate) {
	key := newKey(t)
	tmpl := template(cn)
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func leaf(t testing.TB, caKey *ecdsa.PrivateKey, ca *x509.Certificate, cn string, dns []string, ips []net.IP, usage x509.ExtKeyUsage) tls.Certificate {
	key := newKey(t)
	tmpl := template(cn)
	tmpl.DNSNames, tmpl.IPAddresses = dns, ips
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{usage}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
