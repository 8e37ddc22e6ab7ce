package synclog

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// WriteOut writes every record appended so far to the disk and waits for
// the writes to complete, without flushing the disk's write cache
// (sync_file_range). It returns the seq then on the device but not yet
// durable. The caller makes it durable with a cache flush of its own and
// reports that with Flushed.
//
// This is how a durable delivery costs one cache flush, not two: the FUSE
// layer writes the log out, then fsyncs the mail file on the same ext4
// filesystem, whose journal commit flushes the cache (REQ_PREFLUSH) and so
// also makes the log's completed writes durable. The segment's size and
// block map were synced when it was preallocated, so its data is all an
// fdatasync would write. fs.SharedFlush decides when this holds.
//
// Concurrent callers share write-outs: one whose records were covered by a
// write-out that has completed returns at once with that write-out's seq.
func (l *Log) WriteOut() (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	want := l.last.Load()
	for {
		switch {
		case l.failed != nil:
			return 0, l.failed
		case l.closed:
			return 0, ErrClosed
		case want <= l.durable.Load():
			return want, nil
		case want <= l.writtenSeq:
			// Group commit: a write-out that started after our records
			// were written has completed; our flush covers them too.
			return l.writtenSeq, nil
		case l.syncing:
			l.cond.Wait()
			continue
		}
		break
	}
	l.syncing = true
	f, name, target := l.active, l.activeSeg.name(), l.last.Load()
	// Only the records not yet written out: the whole file (offset 0,
	// length 0) made the kernel walk all of a 64 MiB segment's page cache
	// on every call, 63 µs of CPU per delivery (docs/BENCHMARKS.md, Mount).
	from, to := l.writtenOff, l.lastEnd
	l.mu.Unlock()
	var err error
	if to > from { // a length of 0 would mean "to the end of the file"
		err = unix.SyncFileRange(int(f.Fd()), from, to-from,
			unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	}
	l.mu.Lock()
	l.syncing = false
	l.cond.Broadcast()
	if err != nil {
		l.fail(fmt.Errorf("synclog: write out %s: %w; restart spoolsync (reopening repairs the log)", name, err))
		return 0, l.failed
	}
	l.writtenSeq, l.writtenOff = max(l.writtenSeq, target), to
	return target, nil
}

// Flushed records that the disk's write cache was flushed after a
// WriteOut that returned seq: every record up to seq is durable.
func (l *Log) Flushed(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.advanceDurable(seq)
}
