package synclog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAppendReopenRead(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, Options{SegmentSize: 8 << 10})
	appendN(t, l, 300, 40) // ~100 bytes a record: several segments
	if n := len(segmentFiles(t, dir)); n < 3 {
		t.Fatalf("%d segments, want several with 8 KiB segments", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openTestLog(t, dir, Options{SegmentSize: 8 << 10})
	if got := l.LastSeq(); got != 300 {
		t.Fatalf("LastSeq after reopen = %d, want 300", got)
	}
	if got := l.DurableSeq(); got != 300 {
		t.Fatalf("DurableSeq after reopen = %d, want 300", got)
	}
	appendN(t, l, 10, 40)
	for _, from := range []uint64{0, 1, 2, 77, 150, 299, 310} {
		r, err := l.NewReader(from)
		if err != nil {
			t.Fatalf("NewReader(%d): %v", from, err)
		}
		readSeqs(t, r, max(from, 1), 310, 40)
		expectNothing(t, r)
		r.Close()
	}
	// The same from another process's point of view.
	r, err := OpenReader(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readSeqs(t, r, 100, 310, 40)
	expectNothing(t, r)
}

func TestAppendAssigns(t *testing.T) {
	l := openTestLog(t, "", Options{})
	a, b := &Event{Op: OpMkdir, Path: "a"}, &Event{Op: OpMkdir, Path: "b", Time: 5}
	last, err := l.Append(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if last != 2 || a.Seq != 1 || b.Seq != 2 {
		t.Fatalf("seqs %d, %d, last %d; want 1, 2, 2", a.Seq, b.Seq, last)
	}
	if a.Time == 0 || b.Time != 5 {
		t.Fatalf("times %d, %d; want now, 5", a.Time, b.Time)
	}
	// A bad event fails the whole call and uses up no seq.
	if _, err := l.Append(&Event{Op: OpMkdir, Path: "c"}, &Event{Op: OpMkdir, Path: "/abs"}); err == nil {
		t.Fatal("Append of an invalid event succeeded")
	}
	if last, err := l.Append(&Event{Op: OpMkdir, Path: "c"}); err != nil || last != 3 {
		t.Fatalf("Append after a rejected one = %d, %v; want 3, nil", last, err)
	}
	// A batch larger than a segment is refused, not split.
	big := make([]*Event, 0, 400)
	for i := range 400 {
		big = append(big, &Event{Op: OpMkdir, Path: fmt.Sprintf("dir%d/%s", i, strings.Repeat("x", 200))})
	}
	if _, err := l.Append(big...); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of %d KiB = %v, want ErrTooLarge", 400*200/1024, err)
	}
	if err := l.Sync(99); err == nil {
		t.Fatal("Sync beyond LastSeq succeeded")
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openTestLog(t, dir, Options{})
	_, err := Open(Options{Dir: dir})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) {
		t.Fatalf("second Open = %v, want ErrLocked naming %s", err, dir)
	}
}

func TestClosed(t *testing.T) {
	l := openTestLog(t, "", Options{})
	appendN(t, l, 3, 0)
	r, err := l.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(testEvent(4, 0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
	// What is durable can still be read, then the reader learns of the close.
	readSeqs(t, r, 1, 3, 0)
	if _, err := r.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close = %v, want ErrClosed", err)
	}
}

// TestReadersSeeOnlyDurable: without the background flush, appended events
// stay invisible to readers until someone syncs them.
func TestReadersSeeOnlyDurable(t *testing.T) {
	l := openTestLog(t, "", Options{FlushInterval: -1})
	r, err := l.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := l.Append(testEvent(1, 0), testEvent(2, 0)); err != nil {
		t.Fatal(err)
	}
	expectNothing(t, r)
	if err := l.Sync(1); err != nil {
		t.Fatal(err)
	}
	if l.DurableSeq() < 1 {
		t.Fatalf("DurableSeq = %d after Sync(1)", l.DurableSeq())
	}
	readSeqs(t, r, 1, l.DurableSeq(), 0)
}

// TestBackgroundFlush: readers get events nobody syncs.
func TestBackgroundFlush(t *testing.T) {
	l := openTestLog(t, "", Options{FlushInterval: time.Millisecond})
	r, err := l.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for seq := uint64(1); seq <= 20; seq++ {
		if _, err := l.Append(testEvent(seq, 0)); err != nil {
			t.Fatal(err)
		}
	}
	readSeqs(t, r, 1, 20, 0)
}

// TestConcurrentAppendSyncRead: writers and readers at once (run with
// -race); every reader sees every seq once, in order, with its content.
func TestConcurrentAppendSyncRead(t *testing.T) {
	const writers, perWriter, readers = 8, 150, 3
	l := openTestLog(t, "", Options{SegmentSize: 16 << 10})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var rwg sync.WaitGroup
	errs := make(chan error, writers+readers)
	for range readers {
		r, err := l.NewReader(1)
		if err != nil {
			t.Fatal(err)
		}
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			defer r.Close()
			seen := make(map[string]bool)
			for want := uint64(1); want <= writers*perWriter; want++ {
				ev, err := r.Next(ctx)
				if err != nil {
					errs <- fmt.Errorf("reader at seq %d: %w", want, err)
					return
				}
				if ev.Seq != want || seen[ev.Path] {
					errs <- fmt.Errorf("reader got seq %d path %s, want seq %d (seen before: %v)", ev.Seq, ev.Path, want, seen[ev.Path])
					return
				}
				seen[ev.Path] = true
			}
		}()
	}
	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			for i := range perWriter {
				last, err := l.Append(&Event{Op: OpCreate, Path: fmt.Sprintf("w%d/%d", w, i)})
				if err == nil && i%3 == 0 {
					err = l.Sync(last)
				}
				if err == nil && l.DurableSeq() < last && i%3 == 0 {
					err = fmt.Errorf("DurableSeq %d < %d after Sync", l.DurableSeq(), last)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wwg.Wait()
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestGroupCommit: concurrent Append+Sync callers share fdatasync calls,
// and a Sync of a durable seq makes none.
func TestGroupCommit(t *testing.T) {
	const goroutines, perG = 8, 100
	l := openTestLog(t, "", Options{SegmentSize: 1 << 20, FlushInterval: -1})
	before := l.syncs.Load()
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perG {
				last, err := l.Append(&Event{Op: OpCreate, Path: fmt.Sprintf("g%d/%d", g, i)})
				if err == nil {
					err = l.Sync(last)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	syncs, calls := l.syncs.Load()-before, uint64(goroutines*perG)
	t.Logf("%d Sync calls, %d fdatasyncs", calls, syncs)
	if syncs >= calls {
		t.Errorf("%d fdatasyncs for %d concurrent Sync calls: want fewer (group commit)", syncs, calls)
	}
	before = l.syncs.Load()
	for seq := uint64(1); seq <= l.LastSeq(); seq += 50 {
		if err := l.Sync(seq); err != nil {
			t.Fatal(err)
		}
	}
	if n := l.syncs.Load() - before; n != 0 {
		t.Errorf("Sync of durable seqs made %d fdatasyncs, want 0", n)
	}
}

// TestOpenReaderFollows: a reader without the lock follows a writer
// across segments, seeing written (not only durable) events.
func TestOpenReaderFollows(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, Options{SegmentSize: 4 << 10, FlushInterval: -1})
	appendN(t, l, 5, 0)
	r, err := OpenReader(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readSeqs(t, r, 3, 5, 0)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for seq := uint64(6); seq <= 200; seq++ {
			if _, err := l.Append(testEvent(seq, 20)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for seq := uint64(6); seq <= 200; seq++ {
		ev, err := r.Next(ctx)
		if err != nil {
			t.Fatalf("Next (want %d): %v", seq, err)
		}
		checkEvent(t, ev, seq, 20)
	}
	<-done
	expectNothing(t, r)
}
