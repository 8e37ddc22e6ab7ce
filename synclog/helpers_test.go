package synclog

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func init() { pollInterval = 5 * time.Millisecond }

// openTestLog opens a log in dir (a new temp dir if empty) with small
// segments, and closes it at the end of the test.
func openTestLog(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	opts.Dir = dir
	if opts.SegmentSize == 0 {
		opts.SegmentSize = 64 << 10
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l, err := Open(opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

var allOps = []Op{OpCreate, OpWrite, OpTruncate, OpMkdir, OpRmdir, OpUnlink, OpRename,
	OpLink, OpSymlink, OpMknod, OpSetattr, OpSetxattr, OpRemovexattr}

// testEvent is a valid event whose content depends only on i, so a test
// can check an event read back by its Seq. pad lengthens the path.
func testEvent(i uint64, pad int) *Event {
	op := allOps[i%uint64(len(allOps))]
	e := &Event{
		Op:   op,
		Path: fmt.Sprintf("user/u%d/cur/%d%s.eml", i%7, i, strings.Repeat("x", pad)),
		Ino:  i * 3,
		Time: int64(i)*1_000_000 + 1,
	}
	switch op {
	case OpWrite:
		e.Ranges = []Range{{Off: 0, Len: i + 1}, {Off: 1 << 20, Len: 4096}}
	case OpTruncate:
		e.Size = i * 100
	case OpRename, OpLink:
		e.Path2 = fmt.Sprintf("user/u%d/new/%d.eml", i%7, i)
		e.Flags = uint32(i % 3)
	case OpSymlink:
		e.Path2 = "../target"
	case OpSetattr:
		e.Flags = AttrMode | AttrTimes
	case OpSetxattr, OpRemovexattr:
		e.Name = "user.spoolsync.test"
	}
	return e
}

// appendN appends testEvent(seq) for seqs LastSeq()+1 .. +n and syncs.
func appendN(t testing.TB, l *Log, n, pad int) {
	t.Helper()
	for range n {
		seq := l.LastSeq() + 1
		got, err := l.Append(testEvent(seq, pad))
		if err != nil {
			t.Fatalf("Append seq %d: %v", seq, err)
		}
		if got != seq {
			t.Fatalf("Append returned seq %d, want %d", got, seq)
		}
	}
	if err := l.Sync(l.LastSeq()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
}

// checkEvent compares an event read back with the one appended.
func checkEvent(t testing.TB, got *Event, seq uint64, pad int) {
	t.Helper()
	want := testEvent(seq, pad)
	want.Seq = seq
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("event seq %d:\n got %+v\nwant %+v", seq, got, want)
	}
}

// readSeqs reads events from..to from r and checks each.
func readSeqs(t testing.TB, r *Reader, from, to uint64, pad int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for seq := from; seq <= to; seq++ {
		ev, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next (want seq %d): %v", seq, err)
		}
		checkEvent(t, ev, seq, pad)
	}
}

// expectNothing checks that r has nothing more to return for a moment.
func expectNothing(t testing.TB, r *Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if ev, err := r.Next(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Next = %+v, %v; want nothing (context.DeadlineExceeded)", ev, err)
	}
}

// recordPos is where a record sits in a segment file.
type recordPos struct {
	off, size int64
	seq       uint64
}

// records lists the records of a segment file.
func records(t testing.TB, path string) []recordPos {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	rr := recReader{f: f, end: fi.Size()}
	var out []recordPos
	for off := int64(segmentHeaderSize); ; {
		p, n, err := rr.record(off)
		if err != nil {
			return out
		}
		ev, err := decodeEvent(p)
		if err != nil {
			t.Fatalf("%s offset %d: %v", path, off, err)
		}
		out = append(out, recordPos{off: off, size: int64(n), seq: ev.Seq})
		off += int64(n)
	}
}

func segmentFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}
