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
func (l *Log) WriteOut() (uint64, error) {
	l.mu.Lock()
	for l.syncing && l.failed == nil && !l.closed {
		l.cond.Wait()
	}
	switch {
	case l.failed != nil:
		err := l.failed
		l.mu.Unlock()
		return 0, err
	case l.closed:
		l.mu.Unlock()
		return 0, ErrClosed
	}
	target := l.last.Load()
	if target <= l.durable.Load() {
		l.mu.Unlock()
		return target, nil
	}
	l.syncing = true
	f, name := l.active, l.activeSeg.name()
	l.mu.Unlock()
	err := unix.SyncFileRange(int(f.Fd()), 0, 0,
		unix.SYNC_FILE_RANGE_WAIT_BEFORE|unix.SYNC_FILE_RANGE_WRITE|unix.SYNC_FILE_RANGE_WAIT_AFTER)
	l.mu.Lock()
	l.syncing = false
	l.cond.Broadcast()
	if err != nil {
		l.fail(fmt.Errorf("synclog: write out %s: %w; restart spoolsync (reopening repairs the log)", name, err))
		err = l.failed
	}
	l.mu.Unlock()
	return target, err
}

// Flushed records that the disk's write cache was flushed after a
// WriteOut that returned seq: every record up to seq is durable.
func (l *Log) Flushed(seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.advanceDurable(seq)
}
