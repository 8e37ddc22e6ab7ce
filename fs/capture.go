package fs

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"spoolsync/synclog"
)

// Log is where the filesystem records events; *synclog.Log implements it.
type Log interface {
	// Append records events and assigns their sequence numbers; it need not
	// make them durable.
	Append(evs ...*synclog.Event) (last uint64, err error)
	// Sync returns when every event up to seq is durable.
	Sync(seq uint64) error
	// LastSeq is the sequence number of the last appended event.
	LastSeq() uint64
}

// ReplicaWaiter is what fsync waits on in sync_mode sync;
// *replicator.Replicator implements it.
type ReplicaWaiter interface {
	// WaitReplicated returns once every event up to seq is durable on the
	// replicas, or once it has stopped waiting for a replica that does not
	// answer (and said so in the log). It never fails an fsync: the events
	// are durable in the log either way.
	WaitReplicated(seq uint64)
}

// capture turns successful operations into events. One per mount.
type capture struct {
	log         Log
	logger      *slog.Logger
	passthrough bool          // read-only opens may use kernel passthrough
	shared      flushSharer   // non-nil: the backing fsync's flush makes the log durable
	replicas    ReplicaWaiter // non-nil: sync_mode sync

	// ns is the namespace lock (invariant 3 in the package doc): held for
	// reading while an event's path is computed and appended, for writing
	// across a rename.
	ns sync.RWMutex

	// failing is set while appends fail, so that writes fail early with EIO
	// instead of piling up data that cannot be recorded.
	failing atomic.Bool
	// lastReport rate-limits the error log while the log is failing.
	lastReport atomic.Int64

	// unlogged maps each node with written but unrecorded bytes to when
	// the first of them was written (see Mount.Checkpoint).
	unlogged sync.Map

	// pathOpHook, set only by tests, runs inside pathOp with the lock held.
	pathOpHook func(op string)
}

// append records ev. The caller holds c.ns (for reading or writing).
func (c *capture) append(ev *synclog.Event) syscall.Errno {
	if _, err := c.log.Append(ev); err != nil {
		c.failing.Store(true)
		now := time.Now().UnixNano()
		if last := c.lastReport.Load(); now-last > int64(time.Second) && c.lastReport.CompareAndSwap(last, now) {
			c.logger.Error("cannot record a change in the sync log; the operation fails with EIO until the log is writable again",
				"op", ev.Op.String(), "path", ev.Path, "err", err)
		}
		return syscall.EIO
	}
	if c.failing.Load() {
		c.failing.Store(false)
		c.logger.Info("sync log writable again; operations succeed")
	}
	return 0
}

// writable says whether data may be written to n: not while the log is
// failing, so that a write does not succeed when its event cannot be
// recorded. It retries n's pending ranges first: the append that succeeds
// is the one that ends the failing state.
func (c *capture) writable(n *Node) syscall.Errno {
	if !c.failing.Load() {
		return 0
	}
	if errno := n.flushDirty(); errno != 0 {
		return errno
	}
	if c.failing.Load() {
		return syscall.EIO
	}
	return 0
}

// sync makes every event appended so far durable.
func (c *capture) sync() syscall.Errno {
	if err := c.log.Sync(c.log.LastSeq()); err != nil {
		c.logger.Error("cannot make the sync log durable; fsync fails with EIO", "err", err)
		return syscall.EIO
	}
	return 0
}
