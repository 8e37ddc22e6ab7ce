package replica

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"spoolsync/guid"
)

// maxHeld bounds the fds a Txn keeps for its Commit-time fsyncs; past it the
// held files and dirs are synced early and closed.
const maxHeld = 2048

// Txn is one batch being applied. Its ops run in call order against the
// tree; Commit makes them durable and records the batch's seq. A Txn is not
// safe for concurrent use, and the Store runs one Txn at a time: Begin
// waits until the previous Txn is committed or aborted.
type Txn struct {
	s       *Store
	source  string
	seq     uint64
	tx      *bolt.Tx // index changes, committed with the applied seq
	replay  bool     // same seq as an interrupted batch: tolerate missing sources
	changed bool     // an op touched the tree
	done    bool
	err     error                // sticky: a failed early fsync fails Commit
	dirs    map[fileID]int       // touched directories, fsynced at Commit
	files   map[fileID]int       // files written in place, fsynced at Commit
	putDir  putDir               // kept open across consecutive PutStaged
	pins    map[guid.GUID]pinned // copy sources held open for the batch (Pin)
	owed    map[string]bool      // paths of ops skipped as Unmet (Owe)
}

// putDir is the directory the last PutStaged landed in, kept open while
// only PutStaged calls follow: a seed lands thousands of files in a few
// hundred directories, and resolving each one's path beneath the root
// again cost more than the rename. A PutStaged is a rename of a file and
// never removes or moves a directory, so between two of them a path keeps
// naming the same directory; every other op may not, and forgets it.
type putDir struct {
	path string
	fd   int // -1: none
}

// Begin starts applying batch seq from source (a master's channel
// identity). A seq at or below AppliedSeq(source) returns an error wrapping
// ErrAlreadyApplied and no Txn: the caller acknowledges the re-sent batch
// without applying it (and drains its ops from the wire).
//
// Begin durably marks the batch in flight before any op runs, so a crash
// leaves it reported by Interrupted. Beginning the seq of an interrupted
// batch again is a replay: ops whose target path is gone (a later op of the
// same batch already moved or removed it) are skipped instead of failing.
func (s *Store) Begin(source string, seq uint64) (*Txn, error) {
	op := fmt.Sprintf("begin batch %d from %q", seq, source)
	s.txnMu.Lock()
	if s.db == nil {
		s.txnMu.Unlock()
		return nil, opErr(op, "", errors.New("store is closed"))
	}
	if applied := s.AppliedSeq(source); seq <= applied {
		s.txnMu.Unlock()
		return nil, opErr(op, "", fmt.Errorf("%w (applied up to %d)", ErrAlreadyApplied, applied))
	}
	inflight, interrupted := s.Interrupted(source)
	t := &Txn{s: s, source: source, seq: seq, replay: interrupted && inflight == seq, putDir: putDir{fd: -1},
		dirs: map[fileID]int{}, files: map[fileID]int{}}
	if !t.replay {
		err := s.db.Update(func(tx *bolt.Tx) error {
			return tx.Bucket(bucketInflight).Put([]byte(source), encodeSeq(seq))
		})
		if err != nil {
			s.txnMu.Unlock()
			return nil, opErr(op, "", err)
		}
	} else {
		s.log.Info("replica: replaying an interrupted batch", "root", s.root, "source", source, "seq", seq)
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		s.txnMu.Unlock()
		return nil, opErr(op, "", err)
	}
	t.tx = tx
	return t, nil
}

// Seq returns the batch's seq.
func (t *Txn) Seq() uint64 { return t.seq }

func (t *Txn) ix() index { return index{t.tx} }

// check is called first by every op but PutStaged.
func (t *Txn) check() error {
	t.forgetPutDir()
	return t.live()
}

// live reports whether ops may still run.
func (t *Txn) live() error {
	if t.done {
		return ErrTxnDone
	}
	return t.err
}

func (t *Txn) forgetPutDir() {
	if t.putDir.fd >= 0 {
		unix.Close(t.putDir.fd)
	}
	t.putDir = putDir{fd: -1}
}

// touchDir remembers a directory whose entries changed, to fsync it at
// Commit. It keeps its own dup of the fd: a path could be renamed away by a
// later op, the inode cannot.
func (t *Txn) touchDir(fd int) {
	t.changed = true
	t.hold(t.dirs, fd, false)
}

// touchFile takes over fd, a file written in place, to fsync it at Commit.
func (t *Txn) touchFile(fd int) {
	t.changed = true
	t.hold(t.files, fd, true)
}

func (t *Txn) hold(m map[fileID]int, fd int, own bool) {
	var st unix.Stat_t
	err := unix.Fstat(fd, &st)
	if err == nil {
		if _, held := m[idOf(&st)]; held {
			if own {
				unix.Close(fd)
			}
			return
		}
		keep := fd
		if !own {
			keep, err = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		}
		if err == nil {
			m[idOf(&st)] = keep
			if len(t.dirs)+len(t.files) >= maxHeld {
				t.syncHeld()
			}
			return
		}
	}
	// Without an fd to keep there is no way to make this durable later:
	// sync now.
	if err := unix.Fsync(fd); err != nil && t.err == nil {
		t.err = fmt.Errorf("fsync: %w", err)
	}
	if own {
		unix.Close(fd)
	}
}

// syncHeld fsyncs held files, then held dirs, and closes them. Files go
// first so that a dir entry is never durable before the data it names.
func (t *Txn) syncHeld() error {
	// Past a few inodes, one syncfs is cheaper than an fsync each: on
	// ext4 every fsync is a journal commit and a disk cache flush, while
	// syncfs writes everything back and commits once.
	if len(t.files)+len(t.dirs) > syncfsThreshold {
		if err := unix.Syncfs(t.s.rootfd); err != nil && t.err == nil {
			t.err = fmt.Errorf("syncfs: %w", err)
		}
		t.closeHeld()
		return t.err
	}
	for _, m := range []map[fileID]int{t.files, t.dirs} {
		for id, fd := range m {
			if err := unix.Fsync(fd); err != nil && t.err == nil {
				t.err = fmt.Errorf("fsync: %w", err)
			}
			unix.Close(fd)
			delete(m, id)
		}
	}
	return t.err
}

// syncfsThreshold is how many touched inodes make Commit use one syncfs.
const syncfsThreshold = 4

func (t *Txn) closeHeld() {
	for _, m := range []map[fileID]int{t.files, t.dirs} {
		for id, fd := range m {
			unix.Close(fd)
			delete(m, id)
		}
	}
}

// Commit makes the batch durable: every file written in place and every
// directory touched is fsynced, and only then are the index changes and
// AppliedSeq(source) = seq committed (one bbolt transaction). If anything
// fails, the seq is not recorded and the batch stays Interrupted.
func (t *Txn) Commit() error {
	op := fmt.Sprintf("commit batch %d from %q", t.seq, t.source)
	if t.done {
		return opErr(op, "", ErrTxnDone)
	}
	t.done = true
	defer t.s.txnMu.Unlock()
	t.forgetPutDir()
	t.closePins()
	if err := t.syncHeld(); err != nil {
		t.tx.Rollback()
		return opErr(op, "", err)
	}
	src := []byte(t.source)
	err := t.tx.Bucket(bucketApplied).Put(src, encodeSeq(t.seq))
	if err == nil {
		err = t.tx.Bucket(bucketInflight).Delete(src)
	}
	if err != nil {
		t.tx.Rollback()
		return opErr(op, "", err)
	}
	if err := t.tx.Commit(); err != nil {
		return opErr(op, "", err)
	}
	return nil
}

// Abort ends the batch without recording it. Ops already run are not undone
// (the tree has no undo log): if any changed the tree, the batch stays
// Interrupted and the index changes are dropped — safe, because the index is
// verified by lstat before every use.
func (t *Txn) Abort() {
	if t.done {
		return
	}
	t.done = true
	defer t.s.txnMu.Unlock()
	t.forgetPutDir()
	t.closePins()
	t.closeHeld()
	t.tx.Rollback()
	if t.changed {
		t.s.log.Warn("replica: batch aborted after changing the tree; it stays interrupted",
			"root", t.s.root, "source", t.source, "seq", t.seq)
		return
	}
	if t.replay {
		return
	}
	t.s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInflight).Delete([]byte(t.source))
	})
}

// createTemp creates an empty temp file in Root/.spoolsync/tmp. Names are
// "<seq hex>-<serial>.tmp"; Open deletes whatever is there.
func (t *Txn) createTemp() (string, int, error) {
	for {
		t.s.tmpSerial++
		name := fmt.Sprintf("%016x-%06d.tmp", t.seq, t.s.tmpSerial)
		fd, err := unix.Openat(t.s.tmpfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		if err == unix.EEXIST {
			continue
		}
		return name, fd, err
	}
}

// tempName returns a fresh temp name for a symlink or fifo.
func (t *Txn) tempName() string {
	t.s.tmpSerial++
	return fmt.Sprintf("%016x-%06d.tmp", t.seq, t.s.tmpSerial)
}

func (t *Txn) dropTemp(name string) { unix.Unlinkat(t.s.tmpfd, name, 0) }

// land renames a finished temp entry over par's name (replacing a file,
// symlink or fifo there; a directory there fails with EISDIR) and marks the
// parent touched.
func (t *Txn) land(name string, par parent) error {
	if err := unix.Renameat(t.s.tmpfd, name, par.fd, par.name); err != nil {
		t.dropTemp(name)
		return err
	}
	t.touchDir(par.fd)
	return nil
}

// touchEntry remembers par's entry itself for fsync at Commit, because a
// metadata change (chmod, chown, utimes, xattrs, link count) is durable only
// by fsync of the inode. A symlink or fifo cannot be fsynced; its parent
// dir is synced instead, which journaling filesystems commit together.
func (t *Txn) touchEntry(par parent) {
	fd, err := unix.Openat(par.fd, par.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.touchDir(par.fd)
		return
	}
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || (st.Mode&unix.S_IFMT != unix.S_IFREG && st.Mode&unix.S_IFMT != unix.S_IFDIR) {
		// fsync(2) of a fifo fails with EINVAL.
		unix.Close(fd)
		t.touchDir(par.fd)
		return
	}
	t.touchFile(fd)
}

// indexValid reports whether p has an index entry that still matches the
// file (checked before an op that will move its ctime).
func (t *Txn) indexValid(par parent, p string) bool {
	_, rec, ok := t.ix().get(p)
	if !ok {
		return false
	}
	st, err := par.lstat()
	return err == nil && rec.matches(&st)
}

// restamp refreshes p's index entry after an op of ours moved its ctime:
// re-stamped if it was valid before the op, dropped otherwise.
func (t *Txn) restamp(par parent, p string, wasValid bool) error {
	g, _, ok := t.ix().get(p)
	if !ok {
		return nil
	}
	st, err := par.lstat()
	if !wasValid || err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return t.ix().del(p)
	}
	return t.ix().put(p, g, &st)
}
