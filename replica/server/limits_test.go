package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/internal/testenv"
	"spoolsync/wire"
)

// dialTCP logs in over loopback TCP, where a connection closed with
// unread bytes is reset (net.Pipe has no such thing).
func (ts *testServer) dialTCP(addr string) *wire.Conn {
	ts.t.Helper()
	c, err := wire.Dial(context.Background(), wire.ClientConfig{Addr: addr, AuthName: "master", Password: "pw", Compress: 3})
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { c.Close() })
	return c
}

// refusedWith sends a batch and expects an Error frame of code with msg
// in it, after the whole batch was sent (the server read it all).
func refusedWith(t *testing.T, c *wire.Conn, code wire.Code, msg string, ops ...op) {
	t.Helper()
	sendBatch(t, c, 1, "", ops...)
	_, err := c.Recv()
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || !pe.Remote || pe.Code != code || !strings.Contains(pe.Msg, msg) {
		t.Fatalf("got %v, want an Error frame %v containing %q", err, code, msg)
	}
}

func mkdirs(n int) []op {
	ops := make([]op, n)
	for i := range ops {
		ops[i] = op{m: &wire.Mkdir{Path: "d" + string(rune('a'+i)), Mode: 0o755}}
	}
	return ops
}

// TestBatchLimits: the server announces its limits and refuses a batch
// over them with an Error frame, applying none of it; a file bigger than
// the byte limit still travels alone.
func TestBatchLimits(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxBatchOps, o.MaxBatchBytes = 3, 10 })
	addr := ts.listen()
	c := ts.dialTCP(addr)
	if s := c.Session(); s.MaxBatchOps != 3 || s.MaxBatchBytes != 10 {
		t.Errorf("announced %d ops %d bytes, want 3 10", s.MaxBatchOps, s.MaxBatchBytes)
	}
	refusedWith(t, c, wire.CodeTooLarge, "more than 3 ops", mkdirs(5)...)
	ts.gone("da")

	c = ts.dialTCP(addr)
	refusedWith(t, c, wire.CodeTooLarge, "more than 10 bytes", put("big", strings.Repeat("x", 20)), put("small", "y"))
	ts.gone("big")

	c = ts.dialTCP(addr)
	sendBatch(t, c, 1, "", put("big", strings.Repeat("x", 20)))
	if a := recv[*wire.Ack](t, c); a.Seq != 1 {
		t.Fatalf("Ack %d", a.Seq)
	}
	ts.noTemps()
}

// TestMaxFileSize: a put, write or truncate beyond max_file_size is
// refused naming the key; a manifest refuses to hash a bigger file (one
// made on the replica by other means), naming it.
func TestMaxFileSize(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxFileSize = 1000 })
	addr := ts.listen()
	for _, o := range []op{
		put("big", strings.Repeat("x", 1001)),
		{m: &wire.Truncate{Path: "f", Size: 1 << 50}},
		{&wire.WriteRanges{Path: "f", Size: 1 << 40, Ranges: []wire.Range{{Off: 1<<40 - 1, Len: 1}}}, []byte("x")},
	} {
		refusedWith(t, ts.dialTCP(addr), wire.CodeTooLarge, "max_file_size", o)
	}
	ts.gone("big")

	sparse := filepath.Join(ts.root, "sparse")
	must(t, os.WriteFile(sparse, nil, 0o600))
	must(t, os.Truncate(sparse, 1<<40))
	c := ts.dialTCP(addr)
	must(t, c.Send(&wire.ManifestRequest{GUIDMode: wire.GUIDSHA256}))
	must(t, c.Flush())
	for {
		m, err := c.Recv()
		if err != nil {
			var pe *wire.ProtoError
			if !errors.As(err, &pe) || pe.Code != wire.CodeTooLarge || !strings.Contains(pe.Msg, "sparse") {
				t.Fatalf("manifest: %v, want toolarge naming the file", err)
			}
			break
		}
		if _, ok := m.(*wire.ManifestEnd); ok {
			t.Fatal("the manifest hashed a file over max_file_size")
		}
	}
}

// TestManifestEndsAtShutdown: a manifest hashing a huge sparse file does
// not hold the server's shutdown (issue 15: it ignored SIGTERM past its
// grace and needed SIGKILL).
func TestManifestEndsAtShutdown(t *testing.T) {
	ts := newTestServer(t)
	c := ts.hashingManifest()
	got := make(chan error, 1)
	go func() {
		for {
			if _, err := c.Recv(); err != nil {
				got <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the hash start
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(ctx) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Shutdown still waiting for the manifest a minute later")
	}
	var pe *wire.ProtoError
	if err := <-got; !errors.As(err, &pe) || pe.Code != wire.CodeShutdown {
		t.Errorf("client got %v, want a shutdown Error", err)
	}
}

// TestFreeSpaceChecked: content that would leave less than MinFreeSpace
// on the disk refuses the batch before a byte of it is stored (issue 15:
// a zstd bomb wrote 1.8 GB of zeros into the state dir), and the master
// reads why.
func TestFreeSpaceChecked(t *testing.T) {
	freeSpace = func(string) (uint64, uint64, error) { return 300 << 20, 100 << 30, nil }
	t.Cleanup(func() { freeSpace = statfsFree })
	ts := newTestServer(t, func(o *Options) { o.MinFreeSpace = 256 << 20 })
	addr := ts.listen()
	big := &wire.Put{Path: "zeros", Content: wire.ContentInline, Mode: 0o600, Size: 100 << 20}
	c := ts.dialTCP(addr)
	must(t, c.Send(&wire.BatchBegin{Seq: 1}))
	must(t, c.Send(big))
	// The server reads and drops the rest while it refuses: the master
	// gets to send it all and then reads the Error.
	must(t, c.SendData(zeroReader{}, int64(big.Size)))
	must(t, c.Send(&wire.BatchEnd{Seq: 1, OpCount: 1}))
	must(t, c.Flush())
	_, err := c.Recv()
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || pe.Code != wire.CodeApply || !strings.Contains(pe.Msg, "no space left") {
		t.Fatalf("got %v, want an apply Error saying no space is left", err)
	}
	ts.gone("zeros")
	ts.noTemps()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestDiskFullErrorFrame: a disk that fills while content is staged
// (the free-space check off) refuses the batch with an Error frame saying
// so, not a bare EOF (issue 15), and the server goes on serving.
func TestDiskFullErrorFrame(t *testing.T) {
	if os.Geteuid() != 0 {
		if testenv.Required() {
			t.Fatal("needs root to mount a small tmpfs")
		}
		t.Skip("needs root to mount a small tmpfs")
	}
	base := t.TempDir()
	if err := unix.Mount("tmpfs", base, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount a 4 MiB tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(base, unix.MNT_DETACH) })
	ts := newTestServerIn(t, base, func(o *Options) { o.MinFreeSpace = -1 })
	addr := ts.listen()
	// Staged in the tree.
	c := ts.dialTCP(addr)
	refusedWith(t, c, wire.CodeApply, "no space left on device", put("big", strings.Repeat("x", 8<<20)))
	ts.gone("big")
	ts.noTemps()
	c = ts.dialTCP(addr)
	sendBatch(t, c, 1, "", put("small", "fits"))
	if a := recv[*wire.Ack](t, c); a.Seq != 1 || ts.read("small") != "fits" {
		t.Fatalf("after the disk-full batch: ack %d", a.Seq)
	}
	// Spooled in the state dir (a write's data; it was a bare EOF).
	c = ts.dialTCP(addr)
	big := strings.Repeat("w", 8<<20)
	sendBatch(t, c, 2, "", op{&wire.WriteRanges{Path: "small", Size: uint64(len(big)), Ranges: []wire.Range{{Off: 0, Len: uint64(len(big))}}}, []byte(big)})
	_, err := c.Recv()
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || !pe.Remote || !strings.Contains(pe.Msg, "no space left on device") {
		t.Fatalf("spooling on a full disk: got %v, want an Error frame saying so", err)
	}
	if ts.read("small") != "fits" {
		t.Errorf("small changed by a refused batch")
	}
}

// TestTurnsFair: batches waiting to apply are served one identity after
// another, whatever the order they queued in.
func TestTurnsFair(t *testing.T) {
	var tu turns
	tu.acquire("holder")
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	queue := func(id string) {
		n := tu.waiting()
		wg.Go(func() {
			tu.acquire(id)
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
			tu.release()
		})
		for tu.waiting() == n {
			time.Sleep(time.Millisecond)
		}
	}
	for range 3 {
		queue("flood")
	}
	queue("mail")
	queue("other")
	tu.release()
	wg.Wait()
	if got, want := strings.Join(order, " "), "flood mail other flood flood"; got != want {
		t.Errorf("turns %q, want %q", got, want)
	}
}

// TestRefusalSurvivesPipelining: a master that already sent its next
// batch when the last one is refused still reads the Error frame: the
// server does not reset the connection under it by closing with bytes
// unread.
func TestRefusalSurvivesPipelining(t *testing.T) {
	ts := newTestServer(t, func(o *Options) { o.MaxBatchOps = 3 })
	c := ts.dialTCP(ts.listen())
	go func() {
		send := func(seq uint64, ops ...op) {
			c.Send(&wire.BatchBegin{Seq: seq})
			for _, o := range ops {
				c.Send(o.m)
				if len(o.data) > 0 {
					c.SendData(strings.NewReader(string(o.data)), int64(len(o.data)))
				}
			}
			c.Send(&wire.BatchEnd{Seq: seq, OpCount: uint64(len(ops))})
			c.Flush()
		}
		send(1, mkdirs(5)...)
		send(2, put("next", strings.Repeat("n", 4<<20)))
	}()
	_, err := c.Recv()
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || pe.Code != wire.CodeTooLarge {
		t.Fatalf("got %v, want the toolarge Error of batch 1", err)
	}
}

// TestManifestEndsWhenClientGone: a client that hangs up in the middle of
// a manifest ends it, even in the middle of hashing a huge file (issue 15:
// the server hashed on at one CPU after the client had gone).
func TestManifestEndsWhenClientGone(t *testing.T) {
	ts := newTestServer(t)
	c := ts.hashingManifest()
	sessions := func() int {
		ts.srv.mu.Lock()
		defer ts.srv.mu.Unlock()
		return len(ts.srv.sessions)
	}
	for sessions() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // into the hash
	c.Close()
	for deadline := time.Now().Add(time.Minute); sessions() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the manifest still runs a minute after its client hung up")
		}
	}
}

// hashingManifest puts a 1 TiB sparse file in the replica (hours of
// hashing) and asks for a manifest over TCP; it returns the connection.
func (ts *testServer) hashingManifest() *wire.Conn {
	ts.t.Helper()
	sparse := filepath.Join(ts.root, "sparse")
	must(ts.t, os.WriteFile(sparse, nil, 0o600))
	must(ts.t, os.Truncate(sparse, 1<<40))
	c := ts.dialTCP(ts.listen())
	must(ts.t, c.Send(&wire.ManifestRequest{GUIDMode: wire.GUIDSHA256}))
	must(ts.t, c.Flush())
	return c
}
