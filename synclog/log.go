package synclog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults and bounds of Options.
const (
	DefaultSegmentSize   = 64 << 20
	DefaultFlushInterval = 20 * time.Millisecond
	minSegmentSize       = 4096
)

// Options configure Open.
type Options struct {
	Dir         string // sync_log_dir; created 0700 if missing
	SegmentSize int64  // bytes per segment file; default 64 MiB, rounded up to 4 KiB
	// FlushInterval bounds how long appended events wait for an fdatasync
	// when nobody calls Sync, and so how long readers wait for them.
	// Default 20 ms; negative disables the background flush.
	FlushInterval time.Duration
	Logger        *slog.Logger // default slog.Default()
}

// Log is the single writer of a sync log directory. Its methods are safe
// for concurrent use.
//
// Lock order, where two nest: wmu before mu (Append and Close hold wmu
// while they take mu), cmu before mu (trimming behind the cursors holds
// cmu while it reads the segment list). Nothing takes wmu or cmu while
// holding mu; Close takes cmu (in release) while it holds wmu, so the
// whole order is wmu, cmu, mu.
type Log struct {
	dir    string
	size   int64 // size of new segments
	logger *slog.Logger
	lockf  *os.File
	pipe   *pipeline

	wmu  sync.Mutex // serializes Append, roll and Close
	wbuf []byte     // encoding buffer, wmu
	off  int64      // where the next record goes in the active segment, wmu
	end  int64      // size of the active segment, wmu

	mu        sync.Mutex
	cond      *sync.Cond    // signalled when a sync finishes
	segs      []segment     // every segment on disk, oldest first; the last is active
	active    *os.File      // the last segment
	activeSeg segment       // its name (f.Name() is the temp name it was created under); wmu or mu
	syncing   bool          // an fdatasync (or a roll) is in flight
	failed    error         // sticky: an fdatasync failed
	closed    bool          //
	durableCh chan struct{} // closed and replaced when durable advances, on failure and on Close

	last    atomic.Uint64 // highest Seq written; changed under mu
	durable atomic.Uint64 // highest Seq fdatasync'ed; changed under mu
	lastEnd int64         // offset just past record last in the active segment; mu

	// written out to the device (WriteOut) but not necessarily flushed:
	// every seq <= writtenSeq, every byte of the active segment below
	// writtenOff. mu.
	writtenSeq uint64
	writtenOff int64
	syncs      atomic.Uint64 // fdatasync calls on segments, for tests and benchmarks

	cmu     sync.Mutex
	cursors map[string]*cursor

	kick      chan struct{} // an append happened: the flusher arms its timer
	stop      chan struct{}
	flushDone chan struct{}
}

// Open opens (creating if needed) the sync log in opts.Dir for writing. It
// takes an exclusive lock on Dir/LOCK, repairs a torn tail of the last
// segment (zeroing it and logging what was dropped) and refuses a corrupt
// log with a *CorruptError.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("synclog: no directory given (sync_log_dir)")
	}
	size := opts.SegmentSize
	if size == 0 {
		size = DefaultSegmentSize
	}
	if size < minSegmentSize {
		return nil, fmt.Errorf("synclog: segment size %d is below the minimum %d", size, minSegmentSize)
	}
	size = (size + minSegmentSize - 1) &^ (minSegmentSize - 1)
	interval := opts.FlushInterval
	if interval == 0 {
		interval = DefaultFlushInterval
	}
	l := &Log{
		dir:       opts.Dir,
		size:      size,
		logger:    opts.Logger,
		durableCh: make(chan struct{}),
		cursors:   make(map[string]*cursor),
		kick:      make(chan struct{}, 1),
		stop:      make(chan struct{}),
		flushDone: make(chan struct{}),
	}
	if l.logger == nil {
		l.logger = slog.Default()
	}
	l.cond = sync.NewCond(&l.mu)
	if err := l.open(); err != nil {
		l.release()
		return nil, err
	}
	l.pipe = newPipeline(l.dir, l.size)
	if interval > 0 {
		go l.flushLoop(interval)
	} else {
		close(l.flushDone)
	}
	if err := l.purge(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Log) open() error {
	if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return fmt.Errorf("synclog: create %w", err)
	}
	lockPath := filepath.Join(l.dir, "LOCK")
	f, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("synclog: open lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s (lock %s held; is another spoolsync mount running?)", ErrLocked, l.dir, lockPath)
		}
		return fmt.Errorf("synclog: lock %s: %w", lockPath, err)
	}
	l.lockf = f
	if err := removeTemps(l.dir); err != nil {
		return err
	}
	if l.segs, err = listSegments(l.dir); err != nil {
		return err
	}
	if err := l.loadCursors(); err != nil {
		return err
	}
	if len(l.segs) == 0 {
		return l.create()
	}
	return l.recover()
}

// create starts an empty log: segment 0, whose first seq is 1.
func (l *Log) create() error {
	tmp := filepath.Join(l.dir, "first"+tempSuffix)
	f, err := preallocate(tmp, l.size)
	if err == nil {
		err = seal(l.dir, f, tmp, segment{index: 0, firstSeq: 1})
	}
	if err != nil {
		return fmt.Errorf("synclog: start a new log in %s: %w", l.dir, err)
	}
	s := segment{index: 0, firstSeq: 1}
	l.segs, l.activeSeg = []segment{s}, s
	l.active, l.off, l.end = f, segmentHeaderSize, l.size
	l.lastEnd, l.writtenOff = segmentHeaderSize, segmentHeaderSize
	return nil
}

// recover finds the end of the last segment. Records that follow one
// another with consecutive seqs are kept. At the first offset that holds no
// valid record, the rest of the segment is scanned: if it is a torn tail
// (see tail.torn) its bytes are zeroed, so the writer continues there; if
// valid records follow the damage, the log is corrupt.
func (l *Log) recover() error {
	s := l.segs[len(l.segs)-1]
	path := filepath.Join(l.dir, s.name())
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("synclog: open last segment: %w", err)
	}
	l.active, l.activeSeg = f, s
	if err := s.checkHeader(f); err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("synclog: stat %w", err)
	}
	l.end = fi.Size()
	if l.end < l.size {
		// Cut short (by hand, or a filesystem that lost the size): make it
		// whole again so appends do not allocate blocks.
		if err := writeZeros(f, l.end, l.size); err != nil {
			return fmt.Errorf("synclog: extend %s to %d bytes: %w", path, l.size, err)
		}
		l.end = l.size
	}
	rr := recReader{f: f, end: l.end}
	off, next := int64(segmentHeaderSize), s.firstSeq
	var reason error
	for {
		_, n, why, err := readEvent(&rr, off, next)
		if err != nil {
			return fmt.Errorf("synclog: read %s: %w", path, err)
		}
		if why != nil {
			reason = why
			break
		}
		off, next = off+int64(n), next+1
	}
	t, err := scanTail(f, off, l.end, next)
	if err != nil {
		return fmt.Errorf("synclog: scan tail of %s from offset %d: %w", path, off, err)
	}
	if !errors.Is(reason, errNoRecord) && !t.torn() {
		return &CorruptError{Path: path, Offset: off, Reason: fmt.Sprintf("%v, yet a valid record follows at offset %d", reason, t.validAt)}
	}
	if t.lastNonZero > off {
		if err := writeZeros(f, off, t.lastNonZero); err != nil {
			return fmt.Errorf("synclog: zero torn tail of %s at offset %d: %w", path, off, err)
		}
		l.logger.Warn("synclog: dropped torn tail of the sync log (writes that never completed before a crash)",
			"segment", path, "offset", off, "bytes", t.lastNonZero-off, "err", reason.Error(), "next_seq", next)
	}
	// Whatever was recovered may still be only in the page cache (the
	// previous process died before syncing): readers only see durable
	// events, so make them durable now.
	if err := fdatasync(f); err != nil {
		return fmt.Errorf("synclog: sync %s: %w", path, err)
	}
	l.off = off
	l.last.Store(next - 1)
	l.durable.Store(next - 1)
	l.lastEnd, l.writtenOff, l.writtenSeq = off, off, next-1
	return nil
}

// Append logs evs in order. It assigns each its Seq (continuing from
// LastSeq) and, where zero, its Time, and writes them with one write
// system call: when it returns they are written but not yet durable (see
// Sync). All or none of evs are logged; on error the Seq values assigned to
// evs are meaningless and a later Append reuses them, so the log has
// neither holes nor duplicates.
func (l *Log) Append(evs ...*Event) (last uint64, err error) {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	if err := l.usable(); err != nil {
		return 0, err
	}
	seq := l.last.Load()
	if len(evs) == 0 {
		return seq, nil
	}
	first := seq + 1
	now := time.Now().UnixNano()
	b := l.wbuf[:0]
	for _, e := range evs {
		if err := e.Validate(); err != nil {
			return 0, fmt.Errorf("synclog: append seq %d: %w", seq+1, err)
		}
		seq++
		e.Seq = seq
		if e.Time == 0 {
			e.Time = now
		}
		start := len(b)
		b = append(b, zeroPage[:recordHeaderSize]...)
		b = appendEvent(b, e)
		if len(b)-start-recordHeaderSize > maxPayload {
			return 0, fmt.Errorf("synclog: append seq %d: event of %d bytes: %w", seq, len(b)-start, ErrTooLarge)
		}
		b = sealRecord(b, start)
	}
	if cap(b) <= 1<<20 {
		l.wbuf = b
	}
	if l.off+int64(len(b)) > l.end {
		if segmentHeaderSize+int64(len(b)) > l.size {
			return 0, fmt.Errorf("synclog: append seq %d-%d: %d bytes, segments hold %d (SegmentSize): %w",
				first, seq, len(b), l.size-segmentHeaderSize, ErrTooLarge)
		}
		if err := l.roll(first); err != nil {
			return 0, fmt.Errorf("synclog: append seq %d: roll over from %s: %w", first, l.activeSeg.name(), err)
		}
	}
	if n, err := l.active.WriteAt(b, l.off); err != nil {
		return 0, l.undoWrite(first, n, err)
	}
	l.off += int64(len(b))
	if l.off > l.end/2 {
		l.pipe.request() // the next segment, prepared while this one fills
	}
	l.mu.Lock()
	l.last.Store(seq)
	l.lastEnd = l.off
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return seq, nil
}

// undoWrite handles a failed write of records from seq first on: the
// bytes that did land are zeroed so that a later, shorter append at the
// same offset cannot leave stale records behind it. If even that fails,
// the log stops taking appends; reopening it will treat the leftovers as a
// torn tail.
func (l *Log) undoWrite(first uint64, n int, werr error) error {
	err := fmt.Errorf("synclog: append seq %d to %s: %w", first, l.activeSeg.name(), werr)
	if n == 0 {
		return err
	}
	if zerr := writeZeros(l.active, l.off, l.off+int64(n)); zerr != nil {
		l.mu.Lock()
		l.fail(fmt.Errorf("%w (and zeroing the partial write failed: %v; restart spoolsync to repair the log)", err, zerr))
		l.mu.Unlock()
	}
	return err
}

func (l *Log) usable() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	return l.failed
}

// roll makes the active segment durable and switches to a new one whose
// first seq is first. The old segment is synced before the new one
// appears, so only the last segment can ever end in a torn write.
func (l *Log) roll(first uint64) error {
	f, tmp, err := l.pipe.take()
	if err != nil {
		return err
	}
	l.mu.Lock()
	for l.syncing {
		l.cond.Wait()
	}
	l.syncing = true
	old, oldSeg, target := l.active, l.activeSeg, l.last.Load()
	s := segment{index: l.segs[len(l.segs)-1].index + 1, firstSeq: first}
	l.mu.Unlock()

	err = fdatasync(old)
	l.syncs.Add(1)
	if err != nil {
		err = fmt.Errorf("sync %s: %w", oldSeg.name(), err)
		f.Close()
		os.Remove(tmp)
	} else {
		err = seal(l.dir, f, tmp, s)
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.syncing = false
	l.cond.Broadcast()
	if err != nil {
		return err
	}
	l.advanceDurable(target)
	l.segs = append(l.segs, s)
	l.active, l.activeSeg = f, s
	l.off, l.end = segmentHeaderSize, l.size
	l.lastEnd, l.writtenOff, l.writtenSeq = segmentHeaderSize, segmentHeaderSize, target
	old.Close()
	return nil
}

// Sync returns when every record with Seq <= seq is durable. Concurrent
// callers share fdatasync calls (group commit): one caller syncs whatever
// has been written when it starts, the others wait for it, and whoever
// still needs more starts the next one. A seq already durable returns at
// once. If fdatasync fails the log can no longer tell what is on disk:
// that error is returned from then on, and the process must reopen the log.
func (l *Log) Sync(seq uint64) error {
	if seq <= l.durable.Load() {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if last := l.last.Load(); seq > last {
		return fmt.Errorf("synclog: sync seq %d: only %d appended", seq, last)
	}
	for l.durable.Load() < seq {
		switch {
		case l.failed != nil:
			return l.failed
		case l.closed:
			return ErrClosed
		case l.syncing:
			l.cond.Wait()
			continue
		}
		l.syncing = true
		f, name, target, end := l.active, l.activeSeg.name(), l.last.Load(), l.lastEnd
		l.mu.Unlock()
		err := fdatasync(f)
		l.syncs.Add(1)
		l.mu.Lock()
		l.syncing = false
		l.cond.Broadcast()
		if err != nil {
			l.fail(fmt.Errorf("synclog: sync seq %d in %s: %w; the log cannot tell which writes reached the disk: restart spoolsync (reopening repairs the log)",
				seq, name, err))
			return l.failed
		}
		l.writtenSeq, l.writtenOff = max(l.writtenSeq, target), end
		l.advanceDurable(target)
	}
	return nil
}

// advanceDurable records that every seq <= target is durable and wakes
// readers. Called with mu held.
func (l *Log) advanceDurable(target uint64) {
	if target > l.durable.Load() {
		l.durable.Store(target)
		close(l.durableCh)
		l.durableCh = make(chan struct{})
	}
}

// fail makes err sticky. Called with mu held.
func (l *Log) fail(err error) {
	if l.failed != nil {
		return
	}
	l.failed = err
	l.logger.Error("synclog: sync log stopped accepting events", "dir", l.dir, "err", err)
	l.cond.Broadcast()
	close(l.durableCh)
	l.durableCh = make(chan struct{})
}

// waitDurable blocks until seq is durable, the log closes or fails, or
// ctx is done.
func (l *Log) waitDurable(ctx context.Context, seq uint64) error {
	for {
		l.mu.Lock()
		if l.durable.Load() >= seq {
			l.mu.Unlock()
			return nil
		}
		if err := l.failed; err != nil || l.closed {
			l.mu.Unlock()
			if err == nil {
				err = ErrClosed
			}
			return err
		}
		ch := l.durableCh
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// flushLoop syncs appended events that nobody else syncs within interval,
// so readers (who only see durable events) are not starved.
//
// It syncs only when the events that woke it are still not durable when
// the timer fires. While mail is being delivered, the fsyncs on the mount
// make every event durable within a message or two; syncing "whatever was
// appended since" every interval added ~50 cache flushes a second to a
// delivery stream and held up its WriteOuts behind them (docs/BENCHMARKS.md,
// Mount). An event appended while the timer runs is checked in the next
// round, so no event waits more than twice interval.
func (l *Log) flushLoop(interval time.Duration) {
	defer close(l.flushDone)
	t := time.NewTimer(interval)
	t.Stop()
	for {
		select {
		case <-l.kick:
		case <-l.stop:
			return
		}
		target := l.last.Load()
		t.Reset(interval)
		select {
		case <-t.C:
		case <-l.stop:
			t.Stop()
			return
		}
		if target <= l.durable.Load() {
			continue // someone else's sync covered them
		}
		// A failure is sticky and logged by fail; Append and Sync report it.
		_ = l.Sync(l.last.Load())
	}
}

// LastSeq is the Seq of the last event appended (0: none yet).
func (l *Log) LastSeq() uint64 { return l.last.Load() }

// DurableSeq is the highest Seq known to be on disk.
func (l *Log) DurableSeq() uint64 { return l.durable.Load() }

// Dir is the directory of the log.
func (l *Log) Dir() string { return l.dir }

// Close syncs what was appended, closes the files and releases the lock.
// Readers of the log return what is durable and then ErrClosed.
func (l *Log) Close() error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()
	close(l.stop)
	<-l.flushDone
	err := l.Sync(l.last.Load())
	l.pipe.close()
	l.mu.Lock()
	l.closed = true
	close(l.durableCh)
	l.durableCh = make(chan struct{})
	l.cond.Broadcast()
	l.mu.Unlock()
	l.release()
	return err
}

// release closes the files Open opened.
func (l *Log) release() {
	if l.active != nil {
		l.active.Close()
	}
	l.cmu.Lock()
	for _, c := range l.cursors {
		c.f.Close()
	}
	l.cmu.Unlock()
	if l.lockf != nil {
		l.lockf.Close() // drops the flock
	}
}

// Err is why the log stopped accepting events (a failed fdatasync, or
// ErrClosed once closed); nil while it works. Health checks (the systemd
// watchdog) read it.
func (l *Log) Err() error { return l.usable() }
