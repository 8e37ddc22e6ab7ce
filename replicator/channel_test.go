package replicator

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"

	"spoolsync/synclog"
	"spoolsync/wire"
)

// TestAskResyncAddsUp: the mount's rescan after an unclean stop and a
// replayed batch can both ask for a resync at once (after a power loss of
// both hosts); neither request may overwrite the other, and a request
// made while a resync runs survives that resync's end.
func TestAskResyncAddsUp(t *testing.T) {
	c := newTestChannel(t)
	asked := func() ([]string, bool) {
		b, err := os.ReadFile(c.resyncMarker())
		if err != nil {
			t.Fatal(err)
		}
		return decodeResyncMarker(b)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.askResync([]string{"u/bob/Maildir/cur", "u/amy/Maildir/new"}))
	must(c.askResync([]string{"u/amy/Maildir/tmp", "u/bob/Maildir"}))
	if got, whole := asked(); whole || !slices.Equal(got, []string{"u/amy/Maildir/new", "u/amy/Maildir/tmp", "u/bob/Maildir"}) {
		t.Errorf("asked = %q (whole %v); want both requests, topmost", got, whole)
	}
	// A resync of what was asked runs; more is asked meanwhile.
	done, err := os.ReadFile(c.resyncMarker())
	must(err)
	must(c.askResync([]string{"u/dan/Maildir/cur"}))
	must(c.resyncDone(done))
	if got, whole := asked(); whole || !slices.Contains(got, "u/dan/Maildir/cur") {
		t.Errorf("asked = %q (whole %v) after the resync that ran before; want u/dan's request kept", got, whole)
	}
	now, err := os.ReadFile(c.resyncMarker())
	must(err)
	must(c.resyncDone(now))
	if _, err := os.Stat(c.resyncMarker()); !os.IsNotExist(err) {
		t.Errorf("request left after its resync: %v", err)
	}
	must(c.askResync(nil))
	must(c.askResync([]string{"u/cy"}))
	if got, whole := asked(); !whole {
		t.Errorf("asked = %q; want the whole tree to stay asked for", got)
	}
}

// TestHealMissingDirectory: the replica refuses a batch for lack of a
// directory. A directory cannot be sent whole as a file is (before, it was
// made pending as a file, and the batch failed again): it is resynced.
func TestHealMissingDirectory(t *testing.T) {
	backing := t.TempDir()
	if err := os.Mkdir(backing+"/b", 0o755); err != nil {
		t.Fatal(err)
	}
	c := newTestChannel(t)
	ps, err := openPending(c.log.Dir(), "default")
	if err != nil {
		t.Fatal(err)
	}
	c.pending, c.res, c.logger = ps, &resolver{backing: backing}, slog.New(slog.NewTextHandler(io.Discard, nil))
	refused := &wire.ProtoError{Remote: true, Code: wire.CodeMissing, Path: "b", Msg: "setattr b: no such file or directory"}
	if err := c.healMissing(refused); err != nil {
		t.Fatal(err)
	}
	if got := c.pending.entries(); len(got) != 0 {
		t.Errorf("pending %+v: a directory made pending as a file", got)
	}
	b, err := os.ReadFile(c.resyncMarker())
	if err != nil {
		t.Fatalf("no resync asked for: %v", err)
	}
	if dirs, whole := decodeResyncMarker(b); whole || !slices.Equal(dirs, []string{"b"}) {
		t.Errorf("resync of %q (whole %v), want b", dirs, whole)
	}
}

// TestFailbackRetryKeepsItsStart: a failback resync cut short and begun
// again stands for the log position of the first attempt, not the second:
// the first one's batches may have put on the replica what the master
// removed before the second walk, and only replaying the events logged
// since the first start removes it there.
func TestFailbackRetryKeepsItsStart(t *testing.T) {
	c := newTestChannel(t)
	appendEvents := func() uint64 {
		t.Helper()
		last, err := c.log.Append(&synclog.Event{Op: synclog.OpCreate, Path: "u/new/1"}, &synclog.Event{Op: synclog.OpUnlink, Path: "u/new/1"})
		if err == nil {
			err = c.log.Sync(last)
		}
		if err != nil {
			t.Fatal(err)
		}
		return last
	}
	first := appendEvents()
	start, err := c.beginFailback(0)
	if err != nil || start != first {
		t.Fatalf("first attempt stands for %d (%v), want the log's end %d", start, err, first)
	}
	appendEvents() // logged while the first attempt ran, which then failed
	if start, err = c.beginFailback(0); err != nil || start != first {
		t.Fatalf("second attempt stands for %d (%v), want the first one's start %d", start, err, first)
	}
	if err := os.Remove(c.failbackMarker()); err != nil { // the second attempt succeeded
		t.Fatal(err)
	}
	now := appendEvents()
	if start, err = c.beginFailback(0); err != nil || start != now {
		t.Errorf("a later failback stands for %d (%v), want the log's end %d", start, err, now)
	}
}

// newTestChannel is a channel named default on a fresh sync log, closed
// when the test ends; no replica.
func newTestChannel(t *testing.T) *Channel {
	t.Helper()
	lg, err := synclog.Open(synclog.Options{Dir: t.TempDir(), FlushInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close() })
	return &Channel{cfg: ChannelConfig{Name: "default"}, log: lg}
}

// TestBatchDirs: the directories a batch touches are its paths' and its
// renames' and links' destinations' — not a symlink's target or an
// unlink's file handle, which share Path2 and would have the whole tree
// (or a directory outside it) resynced.
func TestBatchDirs(t *testing.T) {
	evs := []*synclog.Event{
		{Op: synclog.OpSymlink, Path: "u/a/link", Path2: "/etc/passwd"},
		{Op: synclog.OpUnlink, Path: "u/b/gone", Path2: synclog.FileHandle(1, []byte{1, 2})},
		{Op: synclog.OpRename, Path: "u/c/tmp/1", Path2: "u/c/new/1"},
		{Op: synclog.OpLink, Path: "u/c/new/1", Path2: "u/d/1"},
	}
	want := []string{"u/a", "u/b", "u/c/new", "u/c/tmp", "u/d"}
	if got := batchDirs(evs); !slices.Equal(got, want) {
		t.Errorf("batchDirs = %q, want %q", got, want)
	}
}

// TestGatherWithinReplicaLimits: a batch gathered for a replica that
// announced an ops limit stays well under it, whatever sync_batch_size
// says (issue 15 item 8: the replica refuses a bigger batch).
func TestGatherWithinReplicaLimits(t *testing.T) {
	c := newTestChannel(t)
	c.cfg.BatchEvents, c.cfg.BatchBytes = 4096, 32<<20
	evs := make([]*synclog.Event, 100)
	for i := range evs {
		evs[i] = &synclog.Event{Op: synclog.OpCreate, Path: fmt.Sprintf("u/new/%d", i)}
	}
	last, err := c.log.Append(evs...)
	if err == nil {
		err = c.log.Sync(last)
	}
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.log.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c.peer = wire.Session{MaxBatchOps: 40, MaxBatchBytes: 1 << 20}
	got, _, err := c.gather(context.Background(), c.watch(nil), r, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 {
		t.Errorf("gathered %d events for a replica taking 40 ops, want 10 (a quarter)", len(got))
	}
	c.peer = wire.Session{}
	if got, _, _ = c.gather(context.Background(), c.watch(nil), r, 0); len(got) != 90 {
		t.Errorf("gathered %d events without announced limits, want the 90 left", len(got))
	}
}

// TestTransientRefusalKeepsCursor: a batch the replica refuses because
// its disk is full, over quota or failing is sent again and again (with
// backoff) and never gone past: the cursor stays before it, so status
// shows the true backlog. A refusal inherent in the batch is gone past
// after maxRefusals, with its directories resynced.
func TestTransientRefusalKeepsCursor(t *testing.T) {
	for _, tc := range []struct {
		msg      string
		goesPast bool
	}{
		{"batch 1 not applied: put u/new/1: write: no space left on device", false},
		{"batch 1 not applied: put u/new/1: write: disk quota exceeded", false},
		{"batch 1 not applied: rename u/new/1: input/output error", false},
		{"batch 1 not applied: mkdir u/new: not a directory", true},
	} {
		c := newTestChannel(t)
		c.logger = slog.New(slog.DiscardHandler)
		c.pending = &pendingStore{path: c.log.Dir() + "/default.pending"}
		last, err := c.log.Append(&synclog.Event{Op: synclog.OpCreate, Path: "u/new/1"})
		if err == nil {
			err = c.log.Sync(last)
		}
		if err != nil {
			t.Fatal(err)
		}
		evs := []*synclog.Event{{Seq: last, Op: synclog.OpCreate, Path: "u/new/1"}}
		refusal := &wire.ProtoError{Code: wire.CodeApply, Remote: true, Seq: last, Msg: tc.msg}
		for i := 0; i < 2*maxRefusals; i++ {
			if err := c.passRefused(last, evs, refusal); err != nil {
				t.Fatal(err)
			}
		}
		cursor, err := c.log.Cursor("default")
		if err != nil {
			t.Fatal(err)
		}
		if past := cursor == last; past != tc.goesPast {
			t.Errorf("%q refused %d times: cursor %d, batch %d; went past: %v, want %v", tc.msg, 2*maxRefusals, cursor, last, past, tc.goesPast)
		}
	}
}
