package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"spoolsync/digest"
	"spoolsync/guid"
)

// OwnerPolicy says whether Meta.Uid/Gid are applied.
type OwnerPolicy uint8

const (
	// OwnerAuto preserves owners when the process runs as root (only root
	// can give files away) and ignores them otherwise.
	OwnerAuto OwnerPolicy = iota
	OwnerPreserve
	OwnerIgnore
)

// Options configure a Store.
type Options struct {
	// Root is the replica root directory; it must exist.
	Root string
	// StateDir holds the GUID index and the applied-seq records
	// (index.db), the GUID cache (guid-cache.db) and the lock. It must not
	// be inside Root. It is created if missing.
	StateDir string
	// Logger gets one line per event worth an operator's attention;
	// nil means slog.Default().
	Logger *slog.Logger
	// Owner: see OwnerPolicy. The zero value is OwnerAuto.
	Owner OwnerPolicy
	// GUIDMode is the mode Put hashes content in, so that later PutGUIDs
	// in that mode can copy it; the server sets it from guid_mode. Zero
	// (guid.None) means guid.Default.
	GUIDMode guid.Mode
	// AllowPrivileged lets batches put set-id bits on non-directories
	// and set security.capability and POSIX ACL xattrs; without it those
	// are refused with ErrPrivileged (replica_allow_privileged). A mail
	// spool needs none of them, and on a standby they would be root's
	// setuid files planted by whoever holds a master's credentials.
	AllowPrivileged bool
	// MaxFileSize, when above 0, is the largest file Manifest hashes
	// (max_file_size).
	MaxFileSize int64
}

// Store is an open replica root. Its methods are safe for concurrent use;
// batches (Txn) are applied one at a time.
type Store struct {
	root      string
	rootfd    int
	tmpfd     int // Root/.spoolsync/tmp
	locks     []*os.File
	db        *bolt.DB
	cache     *guid.Cache
	log       *slog.Logger
	owner     bool
	mode      guid.Mode
	privOK    bool       // Options.AllowPrivileged
	maxFile   int64      // Options.MaxFileSize
	txnMu     sync.Mutex // held by the open Txn
	tmpSerial uint64     // guarded by txnMu

	stageSerial atomic.Uint64 // names of Stage's temp files

	digestMu sync.Mutex                 // guards digests (digest.go)
	digests  map[guid.Mode]*digest.Tree // one per GUID mode asked for
}

const (
	indexFile = "index.db"
	cacheFile = "guid-cache.db"
	lockFile  = "lock"
	tmpDir    = "tmp"
)

// Open opens the replica root described by opts. It refuses a missing Root
// and a StateDir inside Root, takes exclusive locks on StateDir and on
// Root/.spoolsync (two servers never serve one root or share one state dir),
// and deletes every leftover temp file of a server that died mid-batch.
func Open(opts Options) (_ *Store, err error) {
	s := &Store{rootfd: -1, tmpfd: -1, log: opts.Logger, mode: opts.GUIDMode, privOK: opts.AllowPrivileged, maxFile: opts.MaxFileSize}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.mode == guid.None {
		s.mode = guid.Default
	}
	if !s.mode.Valid() {
		return nil, opErr("open", opts.Root, fmt.Errorf("unknown guid mode %d", s.mode))
	}
	switch opts.Owner {
	case OwnerAuto:
		s.owner = os.Geteuid() == 0
	case OwnerPreserve:
		s.owner = true
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.root, err = realDir(opts.Root, false); err != nil {
		return nil, opErr("open root", opts.Root, err)
	}
	state, err := realDir(opts.StateDir, true)
	if err != nil {
		return nil, opErr("open state dir", opts.StateDir, err)
	}
	if rel, err := filepath.Rel(s.root, state); err == nil && (rel == "." || !strings.HasPrefix(rel, "..")) {
		return nil, opErr("open state dir", opts.StateDir, fmt.Errorf("is inside the replica root %s; clients could overwrite it: %w", s.root, ErrBadPath))
	}
	if err := s.lock(filepath.Join(state, lockFile)); err != nil {
		return nil, opErr("lock state dir", state, err)
	}
	if s.rootfd, err = unix.Open(s.root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return nil, opErr("open root", s.root, err)
	}
	if err := s.openReserved(); err != nil {
		return nil, opErr("open", filepath.Join(s.root, reserved), err)
	}
	if err := checkProc(); err != nil {
		return nil, opErr("open", "/proc/self/fd", err)
	}
	if s.db, err = openDB(filepath.Join(state, indexFile)); err != nil {
		return nil, opErr("open index", filepath.Join(state, indexFile), err)
	}
	if s.cache, err = guid.OpenCache(filepath.Join(state, cacheFile)); err != nil {
		return nil, opErr("open", filepath.Join(state, cacheFile), err)
	}
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketInflight).ForEach(func(k, v []byte) error {
			s.log.Warn("replica: a batch was interrupted before commit; its ops may be partly applied",
				"root", s.root, "source", string(k), "seq", decodeSeq(v))
			return nil
		})
	})
	return s, nil
}

// realDir makes dir absolute with symlinks resolved (creating it if create),
// and checks it is a directory.
func realDir(dir string, create bool) (string, error) {
	if dir == "" {
		return "", errors.New("not set")
	}
	if create {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(real); err != nil {
		return "", err
	} else if !fi.IsDir() {
		return "", unix.ENOTDIR
	}
	return real, nil
}

// lock takes a non-blocking exclusive flock on path, held until Close.
func (s *Store) lock(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return fmt.Errorf("%s: %w", path, ErrLocked)
		}
		return err
	}
	s.locks = append(s.locks, f)
	return nil
}

// openReserved creates Root/.spoolsync/tmp (never through a symlink), locks
// Root/.spoolsync/lock and empties tmp: everything there is a temp file of
// an unfinished op, never visible in the replica tree.
func (s *Store) openReserved() error {
	dirfd, err := mkdirOpen(s.rootfd, reserved)
	if err != nil {
		return err
	}
	defer unix.Close(dirfd)
	fd, err := unix.Openat(dirfd, lockFile, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.root, reserved, lockFile))
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if err == unix.EWOULDBLOCK {
			return fmt.Errorf("%s: %w", f.Name(), ErrLocked)
		}
		return err
	}
	s.locks = append(s.locks, f)
	if s.tmpfd, err = mkdirOpen(dirfd, tmpDir); err != nil {
		return err
	}
	names, err := readNames(s.tmpfd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := unix.Unlinkat(s.tmpfd, n, 0); err != nil {
			return fmt.Errorf("remove leftover temp file %s: %w", n, err)
		}
	}
	if len(names) > 0 {
		s.log.Info("replica: removed leftover temp files", "root", s.root, "count", len(names))
	}
	return unix.Fsync(s.tmpfd)
}

// mkdirOpen makes dirfd/name a directory if it is not one, and opens it
// without following a symlink.
func mkdirOpen(dirfd int, name string) (int, error) {
	if err := unix.Mkdirat(dirfd, name, 0o700); err != nil && err != unix.EEXIST {
		return -1, err
	}
	return unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
}

// readNames lists a directory fd (without moving its offset for others: it
// reads through a dup).
func readNames(dirfd int) ([]string, error) {
	fd, err := unix.Openat(dirfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "dir")
	defer f.Close()
	return f.Readdirnames(-1)
}

// checkProc makes sure /proc/self/fd is procfs: xattr ops reach entries
// through its magic links (see parent.proc).
func checkProc() error {
	var sfs unix.Statfs_t
	if err := unix.Statfs("/proc/self/fd", &sfs); err != nil {
		return err
	}
	if sfs.Type != unix.PROC_SUPER_MAGIC {
		return errors.New("is not procfs; mount /proc")
	}
	return nil
}

func openDB(path string) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketGUIDs, bucketPaths, bucketApplied, bucketInflight} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Close releases the root, the databases and the locks. It fails if a batch
// is still open.
func (s *Store) Close() error {
	if !s.txnMu.TryLock() {
		return opErr("close", s.root, errors.New("a batch is still open; Commit or Abort it first"))
	}
	defer s.txnMu.Unlock()
	var errs []error
	if s.cache != nil {
		errs = append(errs, s.cache.Close())
		s.cache = nil
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	for _, fd := range []*int{&s.tmpfd, &s.rootfd} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
	for _, f := range s.locks {
		errs = append(errs, f.Close())
	}
	s.locks = nil
	return errors.Join(errs...)
}

// Root returns the absolute, symlink-free replica root.
func (s *Store) Root() string { return s.root }

func encodeSeq(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func decodeSeq(v []byte) uint64 {
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// AppliedSeq returns the seq of the last batch from source that was
// durably applied (0 if none).
func (s *Store) AppliedSeq(source string) uint64 {
	var seq uint64
	if s.db == nil {
		return 0
	}
	s.db.View(func(tx *bolt.Tx) error {
		seq = decodeSeq(tx.Bucket(bucketApplied).Get([]byte(source)))
		return nil
	})
	return seq
}

// Interrupted reports a batch from source that was begun, changed the tree,
// and was neither committed nor cleanly aborted (the server died, or Abort
// after ops ran). Its ops may be partly applied. Beginning the same seq again
// replays it tolerantly (see Begin); the master then resyncs the batch's
// directories, because a few op sequences (Exchange; a rename whose source
// path is re-created later in the same batch) do not replay exactly.
// Commit of any later batch from source clears it.
func (s *Store) Interrupted(source string) (seq uint64, ok bool) {
	s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketInflight).Get([]byte(source))
		seq, ok = decodeSeq(v), v != nil
		return nil
	})
	return seq, ok
}
