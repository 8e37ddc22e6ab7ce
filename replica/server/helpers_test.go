package server

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"spoolsync/guid"
	"spoolsync/internal/testenv"
	"spoolsync/replica"
	"spoolsync/wire"
)

// testServer is a Server on a fresh replica root, with an "outside"
// directory beside the root that nothing may change.
type testServer struct {
	t                    *testing.T
	srv                  *Server
	store                *replica.Store
	root, state, outside string
}

func newTestServer(t *testing.T, tweak ...func(*Options)) *testServer {
	t.Helper()
	return newTestServerIn(t, t.TempDir(), tweak...)
}

// newTestServerIn is newTestServer with its root and state under base.
// The Store gets the MaxFileSize that tweak sets.
func newTestServerIn(t *testing.T, base string, tweak ...func(*Options)) *testServer {
	t.Helper()
	ts := &testServer{t: t, root: filepath.Join(base, "root"), state: filepath.Join(base, "state"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{ts.root, ts.outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ts.outside, "x"), []byte("outside"), 0o644); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	opts := Options{Root: ts.root, SpoolDir: filepath.Join(ts.state, "spool"), Logger: log,
		SpoolMemory: 4096, // small, so the tests cover spilling to disk
		Tarpit:      -1,   // refusals at once; TestTarpit has it
		Wire:        testenv.ReplicaAuth()}
	for _, f := range tweak {
		f(&opts)
	}
	var err error
	ts.store, err = replica.Open(replica.Options{Root: ts.root, StateDir: ts.state, Logger: log, MaxFileSize: opts.MaxFileSize})
	if err != nil {
		t.Fatal(err)
	}
	opts.Store = ts.store
	ts.srv, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := ts.store.Close(); err != nil {
			t.Errorf("close store: %v", err)
		}
	})
	return ts
}

// dial connects a client over net.Pipe (compressed, as a master would).
func (ts *testServer) dial() *wire.Conn {
	ts.t.Helper()
	cn, sn := net.Pipe()
	go ts.srv.ServeConn(sn)
	c, err := wire.Client(context.Background(), cn, wire.ClientConfig{AuthName: "master", Password: "pw", Compress: 3})
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { c.Close() })
	return c
}

// op is one op of a test batch, with its content when it has some.
type op struct {
	m    wire.Message
	data []byte
}

// sendBatch sends batch seq with ops and flushes.
func sendBatch(t *testing.T, c *wire.Conn, seq uint64, channel string, ops ...op) {
	t.Helper()
	must(t, c.Send(&wire.BatchBegin{Seq: seq, Channel: channel}))
	for _, o := range ops {
		must(t, c.Send(o.m))
		if len(o.data) > 0 {
			must(t, c.SendData(bytes.NewReader(o.data), int64(len(o.data))))
		}
	}
	must(t, c.Send(&wire.BatchEnd{Seq: seq, OpCount: uint64(len(ops))}))
	must(t, c.Flush())
}

// recv reads the next message, failing the test on an error.
func recv[T wire.Message](t *testing.T, c *wire.Conn) T {
	t.Helper()
	m, err := c.Recv()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	v, ok := m.(T)
	if !ok {
		t.Fatalf("got %v %+v, want %T", m.Type(), m, v)
	}
	return v
}

func put(p, content string) op {
	return op{&wire.Put{Path: p, Content: wire.ContentInline, Mode: 0o640, Mtime: 1e18, Size: uint64(len(content)),
		GUID: wireGUID(content)}, []byte(content)}
}

func putGUID(p, content string) op {
	return op{m: &wire.Put{Path: p, Content: wire.ContentByGUID, Mode: 0o600, Mtime: 2e18, Size: uint64(len(content)), GUID: wireGUID(content)}}
}

func wireGUID(content string) wire.GUID {
	g, _, _ := guid.Sum(guid.SHA256, bytes.NewReader([]byte(content)))
	return fromGUID(g)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (ts *testServer) read(p string) string {
	ts.t.Helper()
	b, err := os.ReadFile(filepath.Join(ts.root, p))
	if err != nil {
		ts.t.Fatal(err)
	}
	return string(b)
}

func (ts *testServer) gone(p string) {
	ts.t.Helper()
	if _, err := os.Lstat(filepath.Join(ts.root, p)); !errors.Is(err, os.ErrNotExist) {
		ts.t.Errorf("%s: %v, want it absent", p, err)
	}
}

// listen serves ts on a loopback TCP port and returns its address.
func (ts *testServer) listen() string {
	ts.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ts.t.Fatal(err)
	}
	go ts.srv.Serve(ln)
	return ln.Addr().String()
}

// dialFrom opens a TCP connection to addr from the loopback address
// from (127.0.0.0/8 is all loopback on Linux), so that tests can be
// several source addresses.
func dialFrom(t *testing.T, from, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 10 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}
