package server

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/wire"
)

// allOps is one batch holding every op kind; big is large enough to cross
// the spool's memory limit and several Data frames.
func allOps(big string) []op {
	return []op{
		{m: &wire.Mkdir{Path: "user", Mode: 0o755, Mtime: 5e17}},
		{m: &wire.Mkdir{Path: "user/bob", Mode: 0o700}},
		put("user/bob/1", "hello world"),
		put("user/bob/big", big),
		putGUID("user/bob/2", "hello world"), // provided by the inline Put above
		{&wire.WriteRanges{Path: "user/bob/1", Size: 11, Ranges: []wire.Range{{Off: 0, Len: 5}}}, []byte("HELLO")},
		{m: &wire.Truncate{Path: "user/bob/2", Size: 5}},
		{m: &wire.Rename{Src: "user/bob/2", Dst: "user/bob/3"}},
		{m: &wire.Link{Existing: "user/bob/3", New: "user/bob/3.link"}},
		{m: &wire.Symlink{Path: "user/alias", Target: "../../etc/passwd"}},
		{m: &wire.Mknod{Path: "user/fifo", Kind: wire.KindFIFO, Mode: 0o600}},
		{m: &wire.Mknod{Path: "user/lmtp", Kind: wire.KindSocket, Mode: 0o666}},
		{m: &wire.SetAttr{Path: "user/bob/1", Mask: wire.AttrMode | wire.AttrTimes, Mode: 0o604, Mtime: 1234567890}},
		{m: &wire.SetXattr{Path: "user/bob/1", Name: "user.seen", Value: []byte("yes")}},
		{m: &wire.SetXattr{Path: "user/bob/1", Name: "user.gone", Value: []byte("x")}},
		{m: &wire.RemoveXattr{Path: "user/bob/1", Name: "user.gone"}},
		{m: &wire.Mkdir{Path: "tmp"}},
		put("tmp/x", "x"),
		{m: &wire.Unlink{Path: "tmp/x"}},
		{m: &wire.Rmdir{Path: "tmp"}},
	}
}

func TestBatchAllOps(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	big := strings.Repeat("0123456789abcdef", 40000) // 640 KB
	sendBatch(t, c, 1, "", allOps(big)...)
	if a := recv[*wire.Ack](t, c); a.Seq != 1 {
		t.Fatalf("Ack %d, want 1", a.Seq)
	}
	checks := map[string]string{"user/bob/1": "HELLO world", "user/bob/big": big, "user/bob/3": "hello", "user/bob/3.link": "hello"}
	for p, want := range checks {
		if got := ts.read(p); got != want {
			t.Errorf("%s: %.40q, want %.40q", p, got, want)
		}
	}
	var st1, st3, stl unix.Stat_t
	must(t, unix.Lstat(filepath.Join(ts.root, "user/bob/1"), &st1))
	must(t, unix.Lstat(filepath.Join(ts.root, "user/bob/3"), &st3))
	must(t, unix.Lstat(filepath.Join(ts.root, "user/bob/3.link"), &stl))
	if st1.Mode&0o7777 != 0o604 || st1.Mtim.Nano() != 1234567890 {
		t.Errorf("user/bob/1: mode %#o mtime %d, want 0604 1234567890", st1.Mode&0o7777, st1.Mtim.Nano())
	}
	if st3.Ino != stl.Ino {
		t.Errorf("user/bob/3.link is not a hard link of user/bob/3")
	}
	if tgt, err := os.Readlink(filepath.Join(ts.root, "user/alias")); err != nil || tgt != "../../etc/passwd" {
		t.Errorf("user/alias -> %q, %v", tgt, err)
	}
	if fi, err := os.Lstat(filepath.Join(ts.root, "user/fifo")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("user/fifo: %v, %v; want a fifo", fi, err)
	}
	if fi, err := os.Lstat(filepath.Join(ts.root, "user/lmtp")); err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o666 {
		t.Errorf("user/lmtp: %v, %v; want a socket, mode 0666", fi, err)
	}
	buf := make([]byte, 16)
	if n, err := unix.Lgetxattr(filepath.Join(ts.root, "user/bob/1"), "user.seen", buf); err != nil || string(buf[:n]) != "yes" {
		t.Errorf("user.seen = %q, %v", buf[:n], err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(ts.root, "user/bob/1"), "user.gone", buf); err != unix.ENODATA {
		t.Errorf("user.gone: %v, want ENODATA", err)
	}
	ts.gone("tmp")

	// The same batch again, on a new connection (a resend after a lost
	// Ack): acked, nothing changes — not even an inode.
	c.Send(&wire.Goodbye{})
	c.Flush()
	c2 := ts.dial()
	sendBatch(t, c2, 1, "", allOps(big)...)
	if a := recv[*wire.Ack](t, c2); a.Seq != 1 {
		t.Fatalf("Ack %d, want 1", a.Seq)
	}
	var again unix.Stat_t
	must(t, unix.Lstat(filepath.Join(ts.root, "user/bob/1"), &again))
	if again.Ino != st1.Ino || again.Ctim != st1.Ctim {
		t.Errorf("user/bob/1 changed by the resent batch")
	}
	if got := ts.read("user/bob/1"); got != "HELLO world" {
		t.Errorf("user/bob/1 = %q after the resend", got)
	}
	// Position says where the source stands; another channel is separate.
	must(t, c2.Send(&wire.PositionRequest{}))
	must(t, c2.Send(&wire.PositionRequest{Channel: "dr"}))
	must(t, c2.Flush())
	if got, want := recv[*wire.Position](t, c2), (&wire.Position{Applied: 1}); !reflect.DeepEqual(got, want) {
		t.Errorf("Position: %+v, want %+v", got, want)
	}
	if got, want := recv[*wire.Position](t, c2), (&wire.Position{Channel: "dr"}); !reflect.DeepEqual(got, want) {
		t.Errorf("Position dr: %+v, want %+v", got, want)
	}
	if got := ts.store.AppliedSeq("master/"); got != 1 {
		t.Errorf("AppliedSeq(master/) = %d, want 1 (source is identity/channel)", got)
	}
}

func TestOfferDedup(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sendBatch(t, c, 1, "", put("a", "content A"))
	recv[*wire.Ack](t, c)
	must(t, c.Send(&wire.Offer{ID: 7, GUIDs: []wire.GUID{wireGUID("content A"), wireGUID("content B")}}))
	must(t, c.Flush())
	if got := recv[*wire.Lacks](t, c); got.ID != 7 || !reflect.DeepEqual(got.Lacking, []bool{false, true}) {
		t.Fatalf("Lacks %+v, want id 7 [false true]", got)
	}
	// Held content goes by GUID: the replica copies it locally.
	sendBatch(t, c, 2, "", putGUID("b", "content A"), put("c", "content B"))
	recv[*wire.Ack](t, c)
	if got := ts.read("b"); got != "content A" {
		t.Errorf("b = %q, want a copy of a", got)
	}
	var sa, sb unix.Stat_t
	must(t, unix.Stat(filepath.Join(ts.root, "a"), &sa))
	must(t, unix.Stat(filepath.Join(ts.root, "b"), &sb))
	if sa.Ino == sb.Ino {
		t.Errorf("b is a hard link of a; a copy was expected (in-place writes must not leak)")
	}
}

func TestLackingGUID(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sendBatch(t, c, 1, "", op{m: &wire.Mkdir{Path: "d"}}, putGUID("d/f", "never sent"))
	_, err := c.Recv()
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || pe.Code != wire.CodeLackingGUID || pe.Path != "d/f" || pe.Seq != 1 ||
		!strings.Contains(pe.Msg, wireGUID("never sent").String()) {
		t.Fatalf("got %v, want a lacking-guid error naming d/f, batch 1 and the GUID", err)
	}
	ts.gone("d")
	if got := ts.store.AppliedSeq("master/"); got != 0 {
		t.Errorf("AppliedSeq = %d, want 0: the batch was not applied", got)
	}
	if _, ok := ts.store.Interrupted("master/"); ok {
		t.Errorf("the refused batch is reported interrupted; nothing of it should have run")
	}
}

func TestManifest(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sendBatch(t, c, 1, "", op{m: &wire.Mkdir{Path: "a", Mode: 0o755}}, put("a/b", "bb"), put("a.txt", "t"),
		op{m: &wire.Symlink{Path: "a/l", Target: "b"}}, op{m: &wire.Mkdir{Path: "z", Mode: 0o700}})
	recv[*wire.Ack](t, c)
	type ent struct {
		path string
		kind uint8
	}
	manifest := func(paths ...string) []ent {
		t.Helper()
		must(t, c.Send(&wire.ManifestRequest{Paths: paths, GUIDMode: wire.GUIDSHA256}))
		must(t, c.Flush())
		var out []ent
		for {
			m, err := c.Recv()
			must(t, err)
			switch m := m.(type) {
			case *wire.ManifestEntry:
				if m.Kind == wire.KindFile && m.GUID != wireGUID(ts.read(m.Path)) {
					t.Errorf("%s: GUID %v does not match its content", m.Path, m.GUID)
				}
				if m.Kind == wire.KindSymlink && m.Target != "b" {
					t.Errorf("%s: target %q", m.Path, m.Target)
				}
				out = append(out, ent{m.Path, m.Kind})
			case *wire.ManifestEnd:
				if m.Count != uint64(len(out)) {
					t.Errorf("ManifestEnd %d after %d entries", m.Count, len(out))
				}
				return out
			default:
				t.Fatalf("got %v in a manifest", m.Type())
			}
		}
	}
	all := []ent{{"a", wire.KindDir}, {"a/b", wire.KindFile}, {"a/l", wire.KindSymlink}, {"a.txt", wire.KindFile}, {"z", wire.KindDir}}
	if got := manifest(); !reflect.DeepEqual(got, all) {
		t.Errorf("whole tree: %v, want %v", got, all)
	}
	want := []ent{{"a", wire.KindDir}, {"a/b", wire.KindFile}, {"a/l", wire.KindSymlink}, {"z", wire.KindDir}}
	if got := manifest("a", "missing", "z"); !reflect.DeepEqual(got, want) {
		t.Errorf("a, missing, z: %v, want %v", got, want)
	}
}

// TestPingInsideBatch: a Ping between ops is answered at once.
func TestPingInsideBatch(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	must(t, c.Send(&wire.BatchBegin{Seq: 3}))
	must(t, c.Send(&wire.Ping{ID: 9}))
	must(t, c.Flush())
	if p := recv[*wire.Pong](t, c); p.ID != 9 {
		t.Errorf("Pong %d, want 9", p.ID)
	}
	must(t, c.Send(&wire.Mkdir{Path: "d"}))
	must(t, c.Send(&wire.BatchEnd{Seq: 3, OpCount: 1}))
	must(t, c.Flush())
	recv[*wire.Ack](t, c)
}

// TestApplyErrorEscapes: ops that would leave the root through a symlink
// already in the tree are refused with an error naming the path, and the
// directory beside the root is untouched.
func TestApplyErrorEscapes(t *testing.T) {
	cases := map[string][]op{
		"put through symlink":    {put("esc/x", "pwned")},
		"rename through symlink": {put("f", "pwned"), {m: &wire.Rename{Src: "f", Dst: "esc/x"}}},
		"mkdir through symlink":  {{m: &wire.Mkdir{Path: "esc/new"}}},
		"unlink through symlink": {{m: &wire.Unlink{Path: "esc/x"}}},
	}
	for name, ops := range cases {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t)
			must(t, os.Symlink(ts.outside, filepath.Join(ts.root, "esc")))
			c := ts.dial()
			sendBatch(t, c, 1, "", ops...)
			_, err := c.Recv()
			var pe *wire.ProtoError
			if !errors.As(err, &pe) || !pe.Remote || pe.Seq != 1 || pe.Path == "" || !strings.Contains(pe.Msg, "esc/") {
				t.Fatalf("got %v, want the replica's error for batch 1 naming esc/...", err)
			}
			if b, err := os.ReadFile(filepath.Join(ts.outside, "x")); err != nil || string(b) != "outside" {
				t.Errorf("outside/x: %q, %v", b, err)
			}
			if _, err := os.Lstat(filepath.Join(ts.outside, "new")); !errors.Is(err, syscall.ENOENT) {
				t.Errorf("outside/new exists")
			}
		})
	}
}

// TestUnmetOpsAreOwed: an op whose precondition does not hold on the
// replica's tree neither fails the batch nor stops it (issue 14: queued
// batches naming in-between maildir names were refused as missing, then
// healed one step per retry, for hours). The replica skips it, applies the
// rest — the op's content, still in the spool, included — and before the
// Ack lists the paths the skipped op touched (the topmost missing
// ancestor for a missing directory): the master owes them its present
// state.
func TestUnmetOpsAreOwed(t *testing.T) {
	wr := op{&wire.WriteRanges{Path: "gone", Size: 5, Ranges: []wire.Range{{Off: 0, Len: 5}}}, []byte("hello")}
	cases := []struct {
		name string
		ops  []op
		owed []string
	}{
		{"rename of a missing file", []op{{m: &wire.Rename{Src: "gone", Dst: "b"}}}, []string{"b", "gone"}},
		{"exchange with a missing file", []op{put("a", "x"), {m: &wire.Rename{Src: "a", Dst: "gone", Flags: wire.RenameExchange}}}, []string{"a", "gone"}},
		{"link of a missing file", []op{{m: &wire.Link{Existing: "gone", New: "b"}}}, []string{"b", "gone"}},
		{"put into a missing directory", []op{put("nodir/sub/a", "x")}, []string{"nodir"}},
		{"write to a missing file", []op{wr}, []string{"gone"}},
		{"attributes of a missing file", []op{{m: &wire.SetAttr{Path: "gone", Mask: wire.AttrMode, Mode: 0o600}}}, []string{"gone"}},
		{"rmdir of a directory not empty", []op{{m: &wire.Mkdir{Path: "d", Mode: 0o755}}, put("d/f", "x"), {m: &wire.Rmdir{Path: "d"}}}, []string{"d"}},
		{"mkdir where a file is", []op{put("f", "x"), {m: &wire.Mkdir{Path: "f", Mode: 0o755}}}, []string{"f"}},
		// TestRandomOps: the batch was refused, three times, then passed.
		{"write to a symlink", []op{{m: &wire.Symlink{Path: "gone", Target: "x"}}, wr}, []string{"gone"}},
		{"link of a directory", []op{{m: &wire.Mkdir{Path: "d", Mode: 0o755}}, {m: &wire.Link{Existing: "d", New: "b"}}}, []string{"b", "d"}},
		{"chmod of a symlink", []op{{m: &wire.Symlink{Path: "s", Target: "x"}}, {m: &wire.SetAttr{Path: "s", Mask: wire.AttrMode, Mode: 0o600}}}, []string{"s"}},
		{"write to a fifo", []op{{m: &wire.Mknod{Path: "gone", Kind: wire.KindFIFO, Mode: 0o600}}, wr}, []string{"gone"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ts := newTestServer(t)
			conn := ts.dial()
			sendBatch(t, conn, 1, "", append(c.ops, put("after", "applied"))...)
			o := recv[*wire.Owed](t, conn)
			if o.Seq != 1 || !slices.Equal(o.Paths, c.owed) {
				t.Errorf("owed %q for batch %d, want %q for batch 1", o.Paths, o.Seq, c.owed)
			}
			if a := recv[*wire.Ack](t, conn); a.Seq != 1 {
				t.Errorf("ack %d, want 1", a.Seq)
			}
			if got := ts.read("after"); got != "applied" {
				t.Errorf("the op after the skipped one: %q, want applied", got)
			}
			// The next batch applies as usual, with nothing owed.
			sendBatch(t, conn, 2, "", put("next", "x"))
			if a := recv[*wire.Ack](t, conn); a.Seq != 2 {
				t.Errorf("ack %d, want 2", a.Seq)
			}
		})
	}
}

// TestSlowClientDoesNotStallOthers: a master stuck in the middle of a
// batch holds no lock: another master's batch is applied and acked.
func TestSlowClientDoesNotStallOthers(t *testing.T) {
	ts := newTestServer(t)
	slow := ts.dial()
	must(t, slow.Send(&wire.BatchBegin{Seq: 1, Channel: "slow"}))
	must(t, slow.Send(&wire.Put{Path: "half", Content: wire.ContentInline, Size: 1 << 20}))
	must(t, slow.SendData(strings.NewReader("only a little"), 13))
	must(t, slow.Flush())
	fast := ts.dial()
	sendBatch(t, fast, 1, "fast", put("fast", "done"))
	recv[*wire.Ack](t, fast)
	ts.gone("half")
	if got := ts.read("fast"); got != "done" {
		t.Errorf("fast = %q", got)
	}
}

// TestShutdownBetweenBatches: Shutdown says Goodbye to an idle client.
func TestShutdownBetweenBatches(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sendBatch(t, c, 1, "", put("a", "a"))
	recv[*wire.Ack](t, c)
	done := make(chan error, 1)
	go func() { done <- ts.srv.Shutdown(t.Context()) }()
	if g := recv[*wire.Goodbye](t, c); !strings.Contains(g.Reason, "shutting down") {
		t.Errorf("Goodbye %q", g.Reason)
	}
	must(t, <-done)
}

// TestStagedContentDropped: content staged as it arrived leaves no temp
// file behind when its batch is refused or cut short by the client.
func TestStagedContentDropped(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sendBatch(t, c, 1, "", put("a", "staged, then refused"), putGUID("b", "never sent"))
	if _, err := c.Recv(); err == nil {
		t.Fatal("a batch with a lacking GUID was accepted")
	}
	ts.gone("a")
	ts.noTemps()

	c = ts.dial()
	must(t, c.Send(&wire.BatchBegin{Seq: 2, Channel: "cut"}))
	for _, o := range []op{put("x", "complete"), put("y", "complete too")} {
		must(t, c.Send(o.m))
		must(t, c.SendData(bytes.NewReader(o.data), int64(len(o.data))))
	}
	must(t, c.Send(&wire.Put{Path: "half", Content: wire.ContentInline, Size: 1 << 20}))
	must(t, c.SendData(strings.NewReader("only a little"), 13))
	must(t, c.Flush())
	c.Close()
	ts.noTemps()
	ts.gone("x")
}

// noTemps waits (a session ends after its client) until the replica's temp
// dir is empty.
func (ts *testServer) noTemps() {
	ts.t.Helper()
	dir := filepath.Join(ts.root, ".spoolsync", "tmp")
	var names []string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ents, err := os.ReadDir(dir)
		must(ts.t, err)
		names = names[:0]
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if len(names) == 0 {
			return
		}
	}
	ts.t.Errorf("temp files left behind: %v", names)
}

// TestPipelinedBatches: a client may send the next batch (and its offer)
// before the last one is acknowledged; both are applied in order and
// acknowledged in order. When the first fails, the error names it, the
// second is not applied, and nothing staged is left behind.
func TestPipelinedBatches(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	sendBatch(t, c, 1, "", op{m: &wire.Mkdir{Path: "d", Mode: 0o755}}, put("d/a", "first"))
	must(t, c.Send(&wire.Offer{ID: 2, GUIDs: []wire.GUID{wireGUID("first"), wireGUID("never sent")}}))
	sendBatch(t, c, 2, "", put("d/b", "second"), putGUID("d/c", "first"))
	var acks []uint64
	var lacks *wire.Lacks
	for len(acks) < 2 {
		m, err := c.Recv()
		must(t, err)
		switch m := m.(type) {
		case *wire.Ack:
			acks = append(acks, m.Seq)
		case *wire.Lacks:
			lacks = m
		default:
			t.Fatalf("got %v", m.Type())
		}
	}
	if acks[0] != 1 || acks[1] != 2 {
		t.Errorf("acks %v, want [1 2]", acks)
	}
	if lacks == nil {
		lacks = recv[*wire.Lacks](t, c)
	}
	if len(lacks.Lacking) != 2 || !lacks.Lacking[1] {
		t.Errorf("lacks %v, want the second GUID lacking", lacks.Lacking)
	}
	for p, want := range map[string]string{"d/a": "first", "d/b": "second", "d/c": "first"} {
		if got := ts.read(p); got != want {
			t.Errorf("%s = %q, want %q", p, got, want)
		}
	}

	c = ts.dial()
	sendBatch(t, c, 1, "x", put("e", "refused"), putGUID("f", "never sent"))
	// The replica may close the connection while this one is sent.
	go func() {
		o := put("g", "after a refused batch")
		c.Send(&wire.BatchBegin{Seq: 2, Channel: "x"})
		c.Send(o.m)
		c.SendData(bytes.NewReader(o.data), int64(len(o.data)))
		c.Send(&wire.BatchEnd{Seq: 2, OpCount: 1})
		c.Flush()
	}()
	_, err := c.Recv()
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || pe.Code != wire.CodeLackingGUID || pe.Seq != 1 {
		t.Fatalf("got %v, want lacking-guid for batch 1", err)
	}
	ts.gone("e")
	ts.gone("g")
	ts.noTemps()
}

// TestPrivilegedPutRefused: a master's setuid file is refused with an
// Error frame naming it, and nothing lands (replica.TestPrivilegedRefused
// has every case).
func TestPrivilegedPutRefused(t *testing.T) {
	ts := newTestServer(t)
	c := ts.dial()
	setuid := put("bin/su", "#!/bin/sh")
	setuid.m.(*wire.Put).Mode = 0o4755
	sendBatch(t, c, 1, "", op{m: &wire.Mkdir{Path: "bin", Mode: 0o755}}, setuid)
	_, err := c.Recv()
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || pe.Code != wire.CodeApply || !strings.Contains(pe.Msg, "replica_allow_privileged") {
		t.Fatalf("got %v, want an apply error naming replica_allow_privileged", err)
	}
	ts.gone("bin/su")
	ts.gone("bin")
}
