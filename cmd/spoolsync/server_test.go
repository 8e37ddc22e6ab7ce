package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	enc "encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"spoolsync/wire"
)

// replicaEnv is a replica's directories and configuration for one test:
// users "master" (an admin, password "pw") and "bob" (not an admin,
// password "bobpw"), and a directory "outside" beside the root that
// nothing a client sends may change.
type replicaEnv struct {
	dir, root, state, conf, passwd, outside string
}

func newReplicaEnv(t *testing.T, extraConf string) *replicaEnv {
	t.Helper()
	dir := t.TempDir()
	e := &replicaEnv{dir: dir, root: filepath.Join(dir, "root"), state: filepath.Join(dir, "state"),
		conf: filepath.Join(dir, "spoolsync.conf"), passwd: filepath.Join(dir, "passwd"), outside: filepath.Join(dir, "outside")}
	for _, d := range []string{e.root, e.outside} {
		must(t, os.Mkdir(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(e.outside, "x"), []byte("outside"), 0o644))
	var pw bytes.Buffer
	for _, u := range [][2]string{{"master", "pw"}, {"bob", "bobpw"}} {
		h, err := bcrypt.GenerateFromPassword([]byte(u[1]), bcrypt.MinCost)
		must(t, err)
		fmt.Fprintf(&pw, "%s:%s\n", u[0], h)
	}
	must(t, os.WriteFile(e.passwd, pw.Bytes(), 0o600))
	e.writeConf(t, fmt.Sprintf("admins: master\nsasl_passwd_file: %s\n%s", e.passwd, extraConf))
	return e
}

func (e *replicaEnv) writeConf(t *testing.T, body string) {
	t.Helper()
	must(t, os.WriteFile(e.conf, []byte(fmt.Sprintf("state_dir: %s\n%s", e.state, body)), 0o644))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// startServer starts `spoolsync server` on 127.0.0.1 and waits for its
// ready line; it returns the process and the address it listens on. The
// process is killed when the test ends.
func startServer(t *testing.T, e *replicaEnv) (*proc, string) {
	t.Helper()
	p, addr, err := startServerAt(t, e, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return p, addr
}

func dialReplica(t *testing.T, addr string, cfg wire.ClientConfig) (*wire.Conn, error) {
	t.Helper()
	cfg.Addr = addr
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := wire.Dial(ctx, cfg)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func master(addr string) wire.ClientConfig {
	return wire.ClientConfig{Addr: addr, AuthName: "master", Password: "pw", Compress: 3}
}

func TestServerRefuses(t *testing.T) {
	e := newReplicaEnv(t, "")
	cases := map[string]struct {
		conf string // "" = the env's configuration
		args []string
		want string
	}{
		"no root":           {"", nil, "--root DIR is required"},
		"missing root":      {"", []string{"--root", filepath.Join(e.dir, "nope")}, "does not exist: create it"},
		"state inside root": {fmt.Sprintf("state_dir: %s/st\nadmins: master\nsasl_passwd_file: %s\n", e.root, e.passwd), []string{"--root", e.root}, "is inside the replica root"},
		"no admins":         {fmt.Sprintf("state_dir: %s\nsasl_passwd_file: %s\n", e.state, e.passwd), []string{"--root", e.root}, "no admins"},
		"no way to auth":    {fmt.Sprintf("state_dir: %s\nadmins: master\n", e.state), []string{"--root", e.root}, "set sasl_passwd_file"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			conf := e.conf
			if tc.conf != "" {
				conf = filepath.Join(t.TempDir(), "c.conf")
				must(t, os.WriteFile(conf, []byte(tc.conf), 0o644))
			}
			out, err := exec.Command(binary, append([]string{"server", "-c", conf, "--listen", "127.0.0.1:0"}, tc.args...)...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) {
				t.Errorf("got %v, %q; want exit 2 saying %q", err, out, tc.want)
			}
		})
	}
	t.Run("root already served", func(t *testing.T) {
		startServer(t, e)
		out, err := exec.Command(binary, "server", "-c", e.conf, "--listen", "127.0.0.1:0", "--root", e.root).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "already being served") {
			t.Errorf("second server on one root: %v, %q; want a refusal saying it is already served", err, out)
		}
	})
}

// TestServerEndToEnd: a batch through the real binary, then a clean stop.
func TestServerEndToEnd(t *testing.T) {
	e := newReplicaEnv(t, "")
	p, addr := startServer(t, e)
	c, err := dialReplica(t, addr, master(addr))
	must(t, err)
	if s := c.Session(); s.Identity != "master" || !s.Compressed {
		t.Errorf("session %+v, want identity master, compressed", s)
	}
	sendOps(t, c, 1, []wire.Message{&wire.Mkdir{Path: "d", Mode: 0o755}, &wire.Put{Path: "d/f", Content: wire.ContentInline, Mode: 0o600, Size: 5}}, "hello")
	expectAck(t, c, 1)
	if b, err := os.ReadFile(filepath.Join(e.root, "d/f")); err != nil || string(b) != "hello" {
		t.Errorf("d/f = %q, %v", b, err)
	}
	p.stop(t, syscall.SIGTERM)
	if p.err != nil {
		t.Errorf("server exit: %v, want 0\n%s", p.err, p.stderr)
	}
}

// sendOps sends one batch; content feeds the Puts with content inline, in
// order, each taking its Size bytes.
func sendOps(t *testing.T, c *wire.Conn, seq uint64, ops []wire.Message, content string) {
	t.Helper()
	must(t, c.Send(&wire.BatchBegin{Seq: seq}))
	for _, m := range ops {
		must(t, c.Send(m))
		if p, ok := m.(*wire.Put); ok && p.DataLen() > 0 {
			must(t, c.SendData(strings.NewReader(content[:p.Size]), int64(p.Size)))
			content = content[p.Size:]
		}
	}
	must(t, c.Send(&wire.BatchEnd{Seq: seq, OpCount: uint64(len(ops))}))
	must(t, c.Flush())
}

func expectAck(t *testing.T, c *wire.Conn, seq uint64) {
	t.Helper()
	m, err := c.Recv()
	if err != nil {
		t.Fatalf("waiting for Ack %d: %v", seq, err)
	}
	if a, ok := m.(*wire.Ack); !ok || a.Seq != seq {
		t.Fatalf("got %v %+v, want Ack %d", m.Type(), m, seq)
	}
}

func TestServerAuthRefusals(t *testing.T) {
	dir := t.TempDir()
	pk := writePKI(t, dir)
	e := newReplicaEnv(t, fmt.Sprintf("tls_cert_file: %s\ntls_key_file: %s\ntls_ca_file: %s\n", pk.serverCert, pk.serverKey, pk.ca))
	_, addr := startServer(t, e)
	clientTLS := func(cert, key string) *tls.Config {
		cfg := &tls.Config{RootCAs: pk.pool, ServerName: "localhost"}
		if cert != "" {
			kp, err := tls.LoadX509KeyPair(cert, key)
			must(t, err)
			cfg.Certificates = []tls.Certificate{kp}
		}
		return cfg
	}
	var authMsg string
	for _, tc := range []struct {
		name string
		cfg  wire.ClientConfig
		want error
	}{
		{"wrong password", wire.ClientConfig{AuthName: "master", Password: "nope", TLS: clientTLS("", "")}, wire.ErrAuth},
		{"unknown user", wire.ClientConfig{AuthName: "mallory", Password: "nope", TLS: clientTLS("", "")}, wire.ErrAuth},
		{"not an admin", wire.ClientConfig{AuthName: "bob", Password: "bobpw", TLS: clientTLS("", "")}, wire.ErrNotAdmin},
		{"cert from another CA", wire.ClientConfig{AuthName: "master", Mech: "EXTERNAL", TLS: clientTLS(pk.foreignCert, pk.foreignKey)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialReplica(t, addr, tc.cfg)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want a refusal (%v)", err, tc.want)
			}
			if tc.want == wire.ErrAuth {
				// Wrong password and unknown user look the same to a client.
				msg := strings.ReplaceAll(err.Error(), "mallory", "master")
				if authMsg != "" && msg != authMsg {
					t.Errorf("refusals differ: %q vs %q", msg, authMsg)
				}
				authMsg = msg
			}
		})
	}
	// What works: PLAIN over TLS, EXTERNAL with a certificate of the
	// configured CA, and PLAIN without TLS from loopback (by design; the
	// non-loopback refusal is tested in wire).
	for name, cfg := range map[string]wire.ClientConfig{
		"plain over tls":    {AuthName: "master", Password: "pw", TLS: clientTLS("", "")},
		"external":          {AuthName: "master", Mech: "EXTERNAL", TLS: clientTLS(pk.clientCert, pk.clientKey)},
		"plaintext from lo": {AuthName: "master", Password: "pw"},
	} {
		c, err := dialReplica(t, addr, cfg)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if c.Session().Identity != "master" {
			t.Errorf("%s: identity %q", name, c.Session().Identity)
		}
	}
}

// rawOp builds an op frame without the client-side validation, as a
// hostile master would: wire's encoder refuses these paths.
func rawOp(t wire.MsgType, paths ...string) []byte {
	var p []byte
	for _, s := range paths {
		p = append(enc.AppendUvarint(p, uint64(len(s))), s...)
	}
	switch t {
	case wire.TypeMkdir:
		p = append(p, 0o7, 0, 0, 0) // mode uid gid mtime
	case wire.TypeRename:
		p = append(p, 0) // flags
	}
	return append(enc.AppendUvarint([]byte{byte(t)}, uint64(len(p))), p...)
}

// TestServerConfinement: paths and symlinks that try to leave the root,
// sent to the real server. Each gets a clear error and changes nothing
// outside the root.
func TestServerConfinement(t *testing.T) {
	e := newReplicaEnv(t, "")
	must(t, os.Symlink(e.outside, filepath.Join(e.root, "esc")))
	_, addr := startServer(t, e)
	long := strings.Repeat("n", 256)
	huge := strings.Repeat("d/", 2100) + "x"
	raw := map[string][]byte{
		"dotdot":       rawOp(wire.TypeMkdir, "../x"),
		"absolute":     rawOp(wire.TypeMkdir, e.outside+"/new"),
		"a/../../x":    rawOp(wire.TypeUnlink, "a/../../x"),
		"NUL":          rawOp(wire.TypeMkdir, "a\x00b"),
		"long name":    rawOp(wire.TypeMkdir, long),
		"long path":    rawOp(wire.TypeMkdir, huge),
		"rename out":   rawOp(wire.TypeRename, "a", "../x"),
		"rename in":    rawOp(wire.TypeRename, "../outside/x", "stolen"),
		"reserved dir": rawOp(wire.TypeUnlink, ".spoolsync/lock"),
	}
	for name, op := range raw {
		t.Run(name, func(t *testing.T) {
			cfg := master(addr)
			cfg.Compress = 0 // raw frames go straight onto the socket
			nc, err := net.Dial("tcp", addr)
			must(t, err)
			c, err := wire.Client(context.Background(), nc, cfg)
			must(t, err)
			defer c.Close()
			begin, _ := wire.AppendFrame(nil, &wire.BatchBegin{Seq: 1})
			end, _ := wire.AppendFrame(nil, &wire.BatchEnd{Seq: 1, OpCount: 1})
			_, err = nc.Write(append(append(begin, op...), end...))
			must(t, err)
			_, err = c.Recv()
			if !errors.Is(err, wire.ErrBadPath) && !errors.Is(err, wire.ErrTooLarge) {
				t.Errorf("got %v, want the replica's badpath error", err)
			}
			checkOutside(t, e)
		})
	}
	// Valid paths through a symlink already in the tree. Seqs increase
	// across subtests: a seq already applied would just be acked again.
	seq := uint64(0)
	for name, ops := range map[string][]wire.Message{
		"put through symlink":    {&wire.Put{Path: "esc/x", Content: wire.ContentInline, Size: 5}},
		"write through symlink":  {&wire.Truncate{Path: "esc/x", Size: 0}},
		"rename through symlink": {&wire.Put{Path: "f", Content: wire.ContentInline, Size: 5}, &wire.Rename{Src: "f", Dst: "esc/x"}},
		"rename onto symlink":    {&wire.Put{Path: "f", Content: wire.ContentInline, Size: 5}, &wire.Rename{Src: "f", Dst: "esc"}},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := dialReplica(t, addr, master(addr))
			must(t, err)
			seq++
			sendOps(t, c, seq, ops, "pwned")
			if name == "rename onto symlink" {
				// Replacing the symlink itself is allowed and stays inside.
				expectAck(t, c, seq)
				if fi, err := os.Lstat(filepath.Join(e.root, "esc")); err != nil || !fi.Mode().IsRegular() {
					t.Errorf("esc: %v, %v; want the renamed file", fi, err)
				}
				must(t, os.Remove(filepath.Join(e.root, "esc")))
				must(t, os.Symlink(e.outside, filepath.Join(e.root, "esc")))
			} else {
				_, err = c.Recv()
				var pe *wire.ProtoError
				if !errors.As(err, &pe) || pe.Seq != seq || !strings.Contains(pe.Msg, "symlink") {
					t.Errorf("got %v, want an error for batch %d saying a symlink was not followed", err, seq)
				}
			}
			checkOutside(t, e)
		})
	}
}

func checkOutside(t *testing.T, e *replicaEnv) {
	t.Helper()
	ents, err := os.ReadDir(e.outside)
	must(t, err)
	if len(ents) != 1 {
		t.Errorf("outside holds %d entries, want only x", len(ents))
	}
	if b, err := os.ReadFile(filepath.Join(e.outside, "x")); err != nil || string(b) != "outside" {
		t.Errorf("outside/x = %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(e.dir, "x")); err == nil {
		t.Errorf("%s/x was created", e.dir)
	}
}

// pkiFiles are PEM files of a throwaway CA, a server and a client
// certificate from it, and a client certificate from another CA.
type pkiFiles struct {
	ca, serverCert, serverKey, clientCert, clientKey, foreignCert, foreignKey string
	pool                                                                      *x509.CertPool
}

// The server certificate is for localhost, 127.0.0.1 and serverIPs.
func writePKI(t *testing.T, dir string, serverIPs ...net.IP) *pkiFiles {
	t.Helper()
	f := &pkiFiles{pool: x509.NewCertPool()}
	caKey, caCert := makeCert(t, "spoolsync test CA", nil, nil, nil, nil)
	fKey, fCert := makeCert(t, "someone else's CA", nil, nil, nil, nil)
	f.pool.AddCert(caCert)
	write := func(name string, der []byte, typ string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	leaf := func(name, cn string, signKey *ecdsa.PrivateKey, signCert *x509.Certificate, usage x509.ExtKeyUsage) (string, string) {
		k, c := makeCert(t, cn, signKey, signCert, &usage, serverIPs)
		kder, err := x509.MarshalECPrivateKey(k)
		must(t, err)
		return write(name+".pem", c.Raw, "CERTIFICATE"), write(name+".key", kder, "EC PRIVATE KEY")
	}
	f.ca = write("ca.pem", caCert.Raw, "CERTIFICATE")
	f.serverCert, f.serverKey = leaf("server", "localhost", caKey, caCert, x509.ExtKeyUsageServerAuth)
	f.clientCert, f.clientKey = leaf("client", "master", caKey, caCert, x509.ExtKeyUsageClientAuth)
	f.foreignCert, f.foreignKey = leaf("foreign", "master", fKey, fCert, x509.ExtKeyUsageClientAuth)
	return f
}

// makeCert makes a CA (parent nil) or a leaf signed by parent; a leaf
// for "localhost" is also valid for 127.0.0.1 and ips.
func makeCert(t *testing.T, cn string, parentKey *ecdsa.PrivateKey, parent *x509.Certificate, usage *x509.ExtKeyUsage, ips []net.IP) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid, tmpl.KeyUsage = true, true, x509.KeyUsageCertSign
		parent, parentKey = tmpl, key
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{*usage}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if cn == "localhost" {
			tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, append([]net.IP{net.IPv4(127, 0, 0, 1)}, ips...)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	must(t, err)
	cert, err := x509.ParseCertificate(der)
	must(t, err)
	return key, cert
}

// TestServerCrash kills the server with SIGKILL while a big batch arrives
// and again while it is applied; after each restart no temp file is
// visible, and the resent batch gives exactly the tree it describes.
func TestServerCrash(t *testing.T) {
	e := newReplicaEnv(t, "")
	const n, size = 300, 32 << 10
	content := strings.Repeat("x", size)
	ops := []wire.Message{&wire.Mkdir{Path: "m", Mode: 0o755}}
	for i := range n {
		ops = append(ops, &wire.Put{Path: fmt.Sprintf("m/%03d", i), Content: wire.ContentInline, Mode: 0o600, Size: size})
	}
	all := strings.Repeat(content, n)

	// 1. Killed while the batch arrives: half of it is sent, not ended.
	p, addr := startServer(t, e)
	c, err := dialReplica(t, addr, master(addr))
	must(t, err)
	must(t, c.Send(&wire.BatchBegin{Seq: 1}))
	for _, m := range ops[:n/2] {
		must(t, c.Send(m))
		if put, ok := m.(*wire.Put); ok {
			must(t, c.SendData(strings.NewReader(content), int64(put.Size)))
		}
	}
	must(t, c.Flush())
	p.stop(t, syscall.SIGKILL)

	// 2. Killed while it is applied: once some files have landed.
	p, addr = startServer(t, e)
	checkNoTemp(t, e)
	c, err = dialReplica(t, addr, master(addr))
	must(t, err)
	sendOps(t, c, 1, ops, all)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if ents, _ := os.ReadDir(filepath.Join(e.root, "m")); len(ents) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no file of the batch applied after 30s: cannot kill the server mid-batch")
		}
	}
	p.stop(t, syscall.SIGKILL)
	landed, _ := os.ReadDir(filepath.Join(e.root, "m"))
	t.Logf("killed with %d of %d files applied", len(landed), n)

	// 3. Restart: no temp files; the resent batch is accepted and acked.
	_, addr = startServer(t, e)
	checkNoTemp(t, e)
	c, err = dialReplica(t, addr, master(addr))
	must(t, err)
	must(t, c.Send(&wire.PositionRequest{}))
	must(t, c.Flush())
	m, err := c.Recv()
	must(t, err)
	if pos, ok := m.(*wire.Position); !ok || pos.Applied != 0 && pos.Applied != 1 {
		t.Fatalf("got %+v, want a Position", m)
	}
	sendOps(t, c, 1, ops, all)
	expectAck(t, c, 1)
	ents, err := os.ReadDir(filepath.Join(e.root, "m"))
	must(t, err)
	if len(ents) != n {
		t.Errorf("m holds %d files, want %d", len(ents), n)
	}
	for _, de := range ents {
		if b, err := os.ReadFile(filepath.Join(e.root, "m", de.Name())); err != nil || string(b) != content {
			t.Errorf("m/%s: %d bytes, %v; want %d bytes of x", de.Name(), len(b), err, size)
		}
	}
}

// checkNoTemp: nothing but the batch's files in the root, and the replica's
// temp dir and spool empty.
func checkNoTemp(t *testing.T, e *replicaEnv) {
	t.Helper()
	filepath.WalkDir(e.root, func(p string, d os.DirEntry, err error) error {
		rel, _ := filepath.Rel(e.root, p)
		switch rel {
		case ".", "m", ".spoolsync", ".spoolsync/lock", ".spoolsync/tmp", ".spoolsync/epoch", ".spoolsync/epoch.lock":
			return nil // the replica's own state (fence records the epoch)
		}
		if strings.HasPrefix(rel, "m/") && !strings.Contains(rel, ".tmp") {
			return nil
		}
		t.Errorf("left in the root after a crash: %s", rel)
		return nil
	})
	if ents, _ := os.ReadDir(filepath.Join(e.state, "replica", "spool")); len(ents) > 0 {
		t.Errorf("spool holds %d files after a restart", len(ents))
	}
}

func TestPasswd(t *testing.T) {
	e := newReplicaEnv(t, "")
	passwd := func(name, pw string) ([]byte, error) {
		cmd := exec.Command(binary, "passwd", "-c", e.conf, name)
		cmd.Stdin = strings.NewReader(pw + "\n")
		return cmd.CombinedOutput()
	}
	if out, err := passwd("carol", "c4rol pass"); err != nil {
		t.Fatalf("passwd carol: %v\n%s", err, out)
	}
	if out, err := passwd("master", "new-pw"); err != nil {
		t.Fatalf("passwd master: %v\n%s", err, out)
	}
	b, err := os.ReadFile(e.passwd)
	must(t, err)
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[1], "bob:") || !strings.HasPrefix(lines[2], "carol:$2") {
		t.Errorf("passwd file after two updates:\n%s", b)
	}
	if fi, _ := os.Stat(e.passwd); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %#o, want 0600", fi.Mode().Perm())
	}
	e.writeConf(t, fmt.Sprintf("admins: master carol\nsasl_passwd_file: %s\n", e.passwd))
	_, addr := startServer(t, e)
	for user, pw := range map[string]string{"master": "new-pw", "carol": "c4rol pass"} {
		if _, err := dialReplica(t, addr, wire.ClientConfig{AuthName: user, Password: pw}); err != nil {
			t.Errorf("%s with the password passwd set: %v", user, err)
		}
	}
	if _, err := dialReplica(t, addr, wire.ClientConfig{AuthName: "master", Password: "pw"}); !errors.Is(err, wire.ErrAuth) {
		t.Errorf("master with the old password: %v, want refused", err)
	}
	// Refusals: a bad name, and no sasl_passwd_file configured.
	for _, name := range []string{"a:b", "a b"} {
		if out, err := passwd(name, "x"); err == nil || !strings.Contains(string(out), "user name") {
			t.Errorf("passwd %q: %v, %s; want a refusal", name, err, out)
		}
	}
	e.writeConf(t, "admins: master\n")
	if out, err := passwd("dave", "x"); err == nil || !strings.Contains(string(out), "sasl_passwd_file is not set") {
		t.Errorf("passwd without sasl_passwd_file: %v, %s", err, out)
	}
}
