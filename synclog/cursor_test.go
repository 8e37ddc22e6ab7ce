package synclog

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestCursorSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, Options{})
	if seq, err := l.Cursor("replica1"); err != nil || seq != 0 {
		t.Fatalf("new cursor = %d, %v; want 0, nil", seq, err)
	}
	appendN(t, l, 10, 0)
	for _, seq := range []uint64{3, 4, 7} { // both slots get used
		if err := l.CommitCursor("replica1", seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.CommitCursor("replica1", 5); err == nil {
		t.Error("cursor moved backwards")
	}
	if err := l.CommitCursor("replica1", 11); err == nil {
		t.Error("cursor moved past DurableSeq")
	}
	if err := l.CommitCursor("../etc", 1); err == nil {
		t.Error("cursor name with a slash accepted")
	}
	l.Close()

	l = openTestLog(t, dir, Options{})
	if seq, err := l.Cursor("replica1"); err != nil || seq != 7 {
		t.Fatalf("cursor after restart = %d, %v; want 7, nil", seq, err)
	}
	if err := l.DropCursor("replica1"); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l = openTestLog(t, dir, Options{})
	if seq, err := l.Cursor("replica1"); err != nil || seq != 0 {
		t.Fatalf("dropped cursor = %d, %v; want a new one at 0", seq, err)
	}
}

// TestCursorTornSlot: if the slot being written is torn, the other slot
// still holds the previous commit.
func TestCursorTornSlot(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, Options{})
	appendN(t, l, 10, 0)
	for _, seq := range []uint64{4, 6} {
		if err := l.CommitCursor("c", seq); err != nil {
			t.Fatal(err)
		}
	}
	l.Close()
	path := filepath.Join(dir, "c"+cursorSuffix)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[slotOffset(3)+20] ^= 1 // generation 3 holds seq 6
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	l = openTestLog(t, dir, Options{})
	if seq, err := l.Cursor("c"); err != nil || seq != 4 {
		t.Fatalf("cursor with a torn newest slot = %d, %v; want the previous 4", seq, err)
	}
	l.Close()
	b[slotOffset(2)] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with both cursor slots bad = %v, want ErrCorrupt", err)
	}
}

// TestSegmentDeletion: a segment goes when every registered cursor has
// passed its last seq; the slow cursor holds the others back.
func TestSegmentDeletion(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, Options{SegmentSize: 4 << 10})
	appendN(t, l, 200, 20)
	all := segmentFiles(t, dir)
	if len(all) < 4 {
		t.Fatalf("%d segments, want at least 4", len(all))
	}
	// No cursor: nothing is deleted.
	if err := l.purge(); err != nil || len(segmentFiles(t, dir)) != len(all) {
		t.Fatalf("purge without cursors: %v, %d segments left of %d", err, len(segmentFiles(t, dir)), len(all))
	}
	lastOf := func(i int) uint64 { // last seq of segment i
		s, _ := parseSegmentName(filepath.Base(all[i+1]))
		return s.firstSeq - 1
	}
	if _, err := l.Cursor("slow"); err != nil {
		t.Fatal(err)
	}
	if err := l.CommitCursor("fast", 200); err != nil {
		t.Fatal(err)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, all) {
		t.Fatalf("slow cursor at 0, yet segments were deleted: %v", got)
	}
	// One short of the end of segment 1: only segment 0 may go.
	if err := l.CommitCursor("slow", lastOf(1)-1); err != nil {
		t.Fatal(err)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, all[1:]) {
		t.Fatalf("slow cursor at %d: segments %v, want %v", lastOf(1)-1, got, all[1:])
	}
	if _, err := l.NewReader(1); !errors.Is(err, ErrPurged) {
		t.Fatalf("NewReader(1) after deletion = %v, want ErrPurged", err)
	}
	r, err := l.NewReader(lastOf(0) + 1)
	if err != nil {
		t.Fatal(err)
	}
	readSeqs(t, r, lastOf(0)+1, 200, 20)
	r.Close()
	// Dropping the slow cursor frees everything but the active segment.
	if err := l.DropCursor("slow"); err != nil {
		t.Fatal(err)
	}
	if got := segmentFiles(t, dir); !slices.Equal(got, all[len(all)-1:]) {
		t.Fatalf("after dropping the slow cursor: %v, want only %v", got, all[len(all)-1:])
	}
	l.Close()
	l = openTestLog(t, dir, Options{SegmentSize: 4 << 10})
	if l.LastSeq() != 200 {
		t.Fatalf("LastSeq after deletions and reopen = %d, want 200", l.LastSeq())
	}
	appendN(t, l, 1, 20)
}
