package replicator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// TestOwedPathsAreResynced: the replica skipped ops its tree did not
// allow and says which paths are owed before its Ack. The batch counts as
// shipped (no retry, no single-step healing), and those paths are asked
// for, durably, before the cursor moves past it: they get the master's
// present state before the next batch.
func TestOwedPathsAreResynced(t *testing.T) {
	c := newTestChannel(t)
	ps, err := openPending(c.log.Dir(), "default")
	if err != nil {
		t.Fatal(err)
	}
	c.pending, c.res, c.logger = ps, &resolver{backing: t.TempDir()}, slog.New(slog.NewTextHandler(io.Discard, nil))
	c.acks = newAckState(0)
	e := ev("unlink u/tmp/gone")
	seq, err := c.log.Append(e)
	if err == nil {
		err = c.log.Sync(seq)
	}
	if err != nil {
		t.Fatal(err)
	}
	e.Seq = seq
	conn := &owingReplica{owed: []string{"u/cur/1:2,S", "u/tmp"}}
	if err := c.ship(conn, []*synclog.Event{e}); err != nil {
		t.Fatalf("ship: %v; want the batch taken as applied", err)
	}
	if cur, _ := c.log.Cursor("default"); cur != 1 {
		t.Errorf("cursor %d, want 1", cur)
	}
	b, err := os.ReadFile(c.resyncMarker())
	if err != nil {
		t.Fatalf("no resync asked for: %v", err)
	}
	if dirs, whole := decodeResyncMarker(b); whole || !slices.Equal(dirs, conn.owed) {
		t.Errorf("resync of %q (whole %v), want %q", dirs, whole, conn.owed)
	}
}

// owingReplica answers a batch with Owed{owed} and its Ack.
type owingReplica struct {
	owed    []string
	answers []wire.Message
}

func (f *owingReplica) Send(m wire.Message) error {
	if e, ok := m.(*wire.BatchEnd); ok {
		f.answers = append(f.answers, &wire.Owed{Seq: e.Seq, Paths: f.owed}, &wire.Ack{Seq: e.Seq})
	}
	return nil
}
func (f *owingReplica) SendData(io.Reader, int64) error { return nil }
func (f *owingReplica) Flush() error                    { return nil }
func (f *owingReplica) Recv() (wire.Message, error) {
	if len(f.answers) == 0 {
		return nil, io.EOF
	}
	m := f.answers[0]
	f.answers = f.answers[1:]
	return m, nil
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
	ah, err := openAhead(lg.Dir(), "default")
	if err != nil {
		t.Fatal(err)
	}
	return &Channel{cfg: ChannelConfig{Name: "default"}, log: lg, ahead: ah}
}

// TestOldTreeOpsOnResyncedPathsAreOwed: after a resync brought a subtree
// to the master's state at log position 10, a batch still holding older
// events must not replay their renames, exchanges, links and removals
// there (a replayed exchange swaps back, a rename moves a newer object):
// their paths are owed instead. Newer ops, and ops elsewhere, go as they
// are; once the cursor passes 10, nothing is held back (and the record
// survives a restart until then).
func TestOldTreeOpsOnResyncedPathsAreOwed(t *testing.T) {
	c := newTestChannel(t)
	if err := c.ahead.add([]string{"u/a"}, 10); err != nil {
		t.Fatal(err)
	}
	steps := []step{
		{kind: stepRename, path: "u/a/x", path2: "u/b/x", flags: unix.RENAME_EXCHANGE, seq: 9},
		{kind: stepUnlink, path: "u/b/y", seq: 9},
		{kind: stepLink, path: "u/c/z", path2: "u/a/z", seq: 10},
		{kind: stepRename, path: "u/a/w", path2: "u/a/v", seq: 11},
		{kind: stepPut, path: "u/a/p", src: "u/a/p", seq: 5},
	}
	kept, owed := c.ahead.stale(slices.Clone(steps))
	if want := []string{"u/a/x", "u/b/x", "u/c/z", "u/a/z"}; !slices.Equal(owed, want) {
		t.Errorf("owed %q, want %q", owed, want)
	}
	if len(kept) != 3 || kept[0].path != "u/b/y" || kept[1].path != "u/a/w" || kept[2].kind != stepPut {
		t.Errorf("kept %v, want the unlink elsewhere, the newer rename and the put", kept)
	}
	again, err := openAhead(c.log.Dir(), "default")
	if err != nil {
		t.Fatal(err)
	}
	if _, owed := again.stale(slices.Clone(steps)); len(owed) != 4 {
		t.Errorf("after a restart: owed %q, want the same 4 paths", owed)
	}
	if err := c.ahead.passed(10); err != nil {
		t.Fatal(err)
	}
	if kept, owed := c.ahead.stale(slices.Clone(steps)); len(owed) != 0 || len(kept) != len(steps) {
		t.Errorf("past the resync: kept %d of %d steps, owed %q", len(kept), len(steps), owed)
	}
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

// TestOwesSaysWhatAndSince: a channel that owes the replica a resync says
// which and since when — the first request's time, not the last one's —
// and says nothing once it is done.
func TestOwesSaysWhatAndSince(t *testing.T) {
	c := newTestChannel(t)
	if what, _ := c.owes(); what != "" {
		t.Fatalf("a new channel owes %q", what)
	}
	before := time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.askResync([]string{"u/a/cur", "u/b"}))
	what, since := c.owes()
	if !strings.Contains(what, "2 paths (u/a/cur, u/b)") || since.Before(before) || time.Since(since) > time.Minute {
		t.Errorf("owes %q since %v; want the 2 paths, since the request", what, since)
	}
	time.Sleep(10 * time.Millisecond)
	must(c.askResync([]string{"u/c", "u/d", "u/e"}))
	what, since2 := c.owes()
	if !strings.Contains(what, "5 paths (u/a/cur, u/b, u/c and 2 more)") || !since2.Equal(since) {
		t.Errorf("owes %q since %v; want 5 paths since the first request (%v)", what, since2, since)
	}
	b, err := os.ReadFile(c.resyncMarker())
	must(err)
	must(c.resyncDone(b))
	if what, _ := c.owes(); what != "" {
		t.Errorf("owes %q after the resync was done", what)
	}
	must(os.WriteFile(c.failbackMarker(), []byte("0 0\n"), 0o600))
	if what, _ := c.owes(); !strings.Contains(what, "whole tree") {
		t.Errorf("owes %q with a failback pending; want the whole tree", what)
	}
}

// FuzzAhead: whatever an ahead record on disk holds, decoding never
// panics, and what it yields filters a plan without panicking and never
// drops a step it does not owe.
func FuzzAhead(f *testing.F) {
	f.Add([]byte(`{"upto":10,"paths":["u/a"]}`))
	f.Add([]byte(`{"upto":10,"whole":true}`))
	f.Add([]byte(`{"upto":3,"paths":["../x"]}`))
	f.Add([]byte(`garbage`))
	f.Fuzz(func(t *testing.T, b []byte) {
		as := &aheadStore{a: decodeAhead(b)}
		steps := []step{
			{kind: stepRename, path: "u/a/x", path2: "u/b/x", seq: 5},
			{kind: stepUnlink, path: "v", seq: 1},
			{kind: stepPut, path: "u/a/p", src: "u/a/p", seq: 2},
		}
		kept, owed := as.stale(slices.Clone(steps))
		if len(kept)+len(owed) < len(steps) {
			t.Errorf("kept %d and owed %d paths of %d steps", len(kept), len(owed), len(steps))
		}
	})
}

// TestPendingWrittenOnlyWhenChanged: saving the same pending entries
// again does not rewrite (and fsync) the file.
func TestPendingWrittenOnlyWhenChanged(t *testing.T) {
	dir := t.TempDir()
	ps, err := openPending(dir, "default")
	if err != nil {
		t.Fatal(err)
	}
	list := []pendingEntry{{Path: "a", ReplicaHas: true, Ranges: []synclog.Range{{Off: 1, Len: 2}}}}
	if err := ps.replace(list); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1e9, 0)
	if err := os.Chtimes(ps.path, old, old); err != nil {
		t.Fatal(err)
	}
	if err := ps.replace(slices.Clone(list)); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(ps.path); err != nil || !st.ModTime().Equal(old) {
		t.Errorf("pending file rewritten with the same entries (%v)", err)
	}
	if err := ps.replace(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ps.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pending file left with no entries: %v", err)
	}
}
