package guid

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// flushAt bounds the number of cache entries held in memory before they are
// written to the bbolt file in one transaction.
const flushAt = 1024

var cacheBucket = []byte("guid-cache-v1")

// cacheKey is the 41-byte key described in the package doc.
type cacheKey [41]byte

func keyOf(st *unix.Stat_t, m Mode) cacheKey {
	var k cacheKey
	binary.BigEndian.PutUint64(k[0:], uint64(st.Dev))
	binary.BigEndian.PutUint64(k[8:], st.Ino)
	binary.BigEndian.PutUint64(k[16:], uint64(st.Size))
	binary.BigEndian.PutUint64(k[24:], uint64(st.Mtim.Nano()))
	binary.BigEndian.PutUint64(k[32:], uint64(st.Ctim.Nano()))
	k[40] = byte(m)
	return k
}

// Cache maps a file's identity and change stamps to its GUID, so that
// unchanged files are not hashed again. It is safe for concurrent use.
type Cache struct {
	db      *bolt.DB
	mu      sync.Mutex
	pending map[cacheKey]GUID

	// reader is one read transaction shared by lookups: beginning a
	// transaction and opening the bucket per lookup was half of a lookup's
	// cost, and a resync looks up every file. readerMu serializes its use
	// (a bbolt transaction is not safe for concurrent use) and is held by
	// Flush across its write, which must not wait for a read transaction
	// to end (bbolt may need to remap the file).
	readerMu   sync.Mutex
	reader     *bolt.Tx
	readBucket *bolt.Bucket
	readerUses int
}

// maxReaderUses bounds the lookups one shared read transaction serves.
// Flush ends it before it writes, so an old snapshot never keeps bbolt
// from reusing the pages a write frees.
const maxReaderUses = 10000

// OpenCache opens (creating if needed) the cache file at path, typically
// <state_dir>/guid-cache.db. A file another process holds is an error after
// a short wait rather than a hang.
func OpenCache(path string) (*Cache, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("guid cache %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(cacheBucket)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("guid cache %s: %w", path, err)
	}
	c := &Cache{db: db, pending: make(map[cacheKey]GUID)}
	c.Prefetch()
	return c, nil
}

// prefetchMax bounds the cache files Prefetch reads ahead: about a million
// files' entries.
const prefetchMax = 256 << 20

// Prefetch asks the kernel to read the whole cache file into the page cache
// in the background; call it before looking up a whole tree. A resync
// looks up every file of the spool, at keys spread over the whole file: on
// a cold cache, reading the file in large sequential requests beats one
// 4 KiB page fault per lookup. A larger file is left to page faults rather
// than pushing a mail server's working set out of memory.
func (c *Cache) Prefetch() {
	f, err := os.Open(c.db.Path())
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() <= prefetchMax {
		_ = unix.Fadvise(int(f.Fd()), 0, fi.Size(), unix.FADV_WILLNEED)
	}
}

// Lookup returns the cached GUID in mode m of the file whose stat is st.
func (c *Cache) Lookup(st *unix.Stat_t, m Mode) (GUID, bool) {
	if m == None || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return GUID{}, false
	}
	k := keyOf(st, m)
	c.mu.Lock()
	g, ok := c.pending[k]
	c.mu.Unlock()
	if ok {
		return g, true
	}
	c.readerMu.Lock()
	defer c.readerMu.Unlock()
	if c.readerUses >= maxReaderUses {
		c.endReader()
	}
	if c.reader == nil {
		tx, err := c.db.Begin(false)
		if err != nil {
			return GUID{}, false
		}
		c.reader, c.readBucket, c.readerUses = tx, tx.Bucket(cacheBucket), 0
	}
	c.readerUses++
	if v := c.readBucket.Get(k[:]); v != nil {
		g, ok = decodeCacheValue(m, v) // copies v, valid only in the transaction
	}
	return g, ok
}

// endReader ends the shared read transaction; readerMu is held.
func (c *Cache) endReader() {
	if c.reader != nil {
		c.reader.Rollback()
		c.reader, c.readBucket = nil, nil
	}
}

// decodeCacheValue checks a stored sum against the mode in its key; a value
// of the wrong length (a damaged file) is a miss, never a wrong GUID.
func decodeCacheValue(m Mode, v []byte) (GUID, bool) {
	g, err := FromBytes(m, v)
	return g, err == nil
}

// Store records g as the GUID of the file whose stat is st.
func (c *Cache) Store(st *unix.Stat_t, g GUID) error {
	if g.Mode == None || !g.Mode.Valid() || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	c.mu.Lock()
	c.pending[keyOf(st, g.Mode)] = g
	full := len(c.pending) >= flushAt
	c.mu.Unlock()
	if full {
		return c.Flush()
	}
	return nil
}

// Flush writes buffered entries to disk.
func (c *Cache) Flush() error {
	c.mu.Lock()
	batch := c.pending
	c.pending = make(map[cacheKey]GUID)
	c.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	c.readerMu.Lock()
	defer c.readerMu.Unlock()
	c.endReader()
	err := c.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(cacheBucket)
		for k, g := range batch {
			if err := pruneInode(b, k); err != nil {
				return err
			}
			if err := b.Put(k[:], g.Bytes()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("guid cache %s: flush: %w", c.db.Path(), err)
	}
	return nil
}

// pruneInode deletes the entries of the inode in k, (dev, ino), whose
// change stamps (size, mtime, ctime) differ from k's: they describe a state
// the inode is no longer in, an earlier content of the file or a deleted
// file whose inode number has been reused, and can never be looked up
// again. Entries for the same state in another mode stay (two GUID modes in
// use would otherwise evict each other). This is what bounds the cache by
// the inodes a filesystem has in use at once rather than by every file it
// ever held: a spool's deleted mail frees inode numbers that new mail gets.
func pruneInode(b *bolt.Bucket, k cacheKey) error {
	var stale [][]byte
	cur := b.Cursor()
	for ck, _ := cur.Seek(k[:16]); ck != nil && bytes.HasPrefix(ck, k[:16]); ck, _ = cur.Next() {
		if !bytes.Equal(ck[16:40], k[16:40]) {
			// Copied: a key is only valid until the transaction changes,
			// and a cursor's Delete mid-iteration can skip the next key.
			stale = append(stale, bytes.Clone(ck))
		}
	}
	for _, sk := range stale {
		if err := b.Delete(sk); err != nil {
			return err
		}
	}
	return nil
}

// Close flushes and closes the cache.
func (c *Cache) Close() error {
	err := c.Flush()
	c.readerMu.Lock()
	c.endReader()
	c.readerMu.Unlock()
	return errors.Join(err, c.db.Close())
}

// HashAt returns the GUID of the regular file name in the directory open
// as dirfd (unix.AT_FDCWD: name is a path), from the cache when none of the
// key fields changed, else by hashing it. A final symlink is not followed.
// The file is opened without an *os.File: a resync hashes every file of a
// spool, and the os.File bookkeeping (poller registration, its own fstat)
// was a third of the cost of opening one.
func (c *Cache) HashAt(dirfd int, name string, m Mode) (GUID, error) {
	return c.HashAtLimited(dirfd, name, m, Limit{})
}

// HashAtLimited is HashAt within lim.
func (c *Cache) HashAtLimited(dirfd int, name string, m Mode, lim Limit) (GUID, error) {
	fd, err := openAt(dirfd, name)
	if err != nil {
		return GUID{}, err
	}
	defer unix.Close(fd)
	return c.hashFD(fd, name, m, lim)
}

// Limit bounds one hash, so that no file (a sparse one of 2^50 bytes takes
// days to read) holds a CPU past what its caller allows. The zero Limit
// bounds nothing.
type Limit struct {
	// Ctx, when set, cancels the hash between two reads (of 64 KiB) with
	// its error.
	Ctx context.Context
	// MaxSize, when above 0, refuses a bigger file with ErrTooLarge:
	// before reading it, and when it grows past MaxSize while read.
	MaxSize int64
}

// ErrTooLarge: a file over Limit.MaxSize (max_file_size).
var ErrTooLarge = errors.New("file over max_file_size")

// check refuses a file of size bytes over the limit.
func (lim Limit) check(name string, size int64) error {
	if lim.MaxSize > 0 && size > lim.MaxSize {
		return fmt.Errorf("hash %s: %d bytes, over the limit of %d: %w (raise max_file_size, or remove the file)", name, size, lim.MaxSize, ErrTooLarge)
	}
	return nil
}

// reader is what a hash reads the file open as fd through: at most one
// byte past MaxSize (to notice growth), each read after checking Ctx.
func (lim Limit) reader(fd int) io.Reader {
	n := int64(math.MaxInt64)
	if lim.MaxSize > 0 {
		n = lim.MaxSize + 1
	}
	r := io.Reader(io.NewSectionReader(preader(fd), 0, n))
	if lim.Ctx != nil {
		r = ctxReader{lim.Ctx, r}
	}
	return r
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ReadaheadBytes is how much of a file Readahead asks for: a whole typical
// message, and for a large mbox enough to start the sequential read, whose
// own readahead takes over.
const ReadaheadBytes = 128 << 10

// Readahead starts reading the first ReadaheadBytes of the file name in the
// directory open as dirfd into the page cache, without waiting for them,
// for a HashAt that follows. Called for the files of a directory before
// any of them is hashed, it lets the disk see their reads together, where
// hashing one after another waits for each in turn: a resync seeding an
// empty replica from a cold spool of 54,000 messages went from 6.0 s to
// 4.2 s, the master's system time from 2.5 s to 1.4 s (docs/BENCHMARKS.md).
// It is only advice: errors are ignored, the hash reads what it reads.
func Readahead(dirfd int, name string) {
	if fd, err := openAt(dirfd, name); err == nil {
		unix.Fadvise(fd, 0, ReadaheadBytes, unix.FADV_WILLNEED)
		unix.Close(fd)
	}
}

// openAt opens name in the directory open as dirfd (unix.AT_FDCWD: name
// is a path) for hashing: never following a final symlink, never blocking
// on a fifo put there meanwhile (hashFD then refuses it).
func openAt(dirfd int, name string) (int, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: name, Err: err}
	}
	return fd, nil
}

// HashFD is HashAt for an open file; it reads f from offset 0 without
// moving its file offset. The result is cached only when the file did not
// change while it was being hashed.
func (c *Cache) HashFD(f *os.File, m Mode) (GUID, error) {
	return c.hashFD(int(f.Fd()), f.Name(), m, Limit{})
}

// HashFDLimited is HashFD within lim.
func (c *Cache) HashFDLimited(f *os.File, m Mode, lim Limit) (GUID, error) {
	return c.hashFD(int(f.Fd()), f.Name(), m, lim)
}

func (c *Cache) hashFD(fd int, name string, m Mode, lim Limit) (GUID, error) {
	if m == None {
		return GUID{}, fmt.Errorf("hash %s: %w", name, ErrNoHash)
	}
	before, err := statRegular(fd, name)
	if err != nil {
		return GUID{}, err
	}
	if g, ok := c.Lookup(&before, m); ok {
		return g, nil
	}
	if err := lim.check(name, before.Size); err != nil {
		return GUID{}, err
	}
	g, err := sumFD(fd, name, m, lim)
	if err != nil {
		return GUID{}, err
	}
	var after unix.Stat_t
	if err := unix.Fstat(fd, &after); err != nil {
		return GUID{}, fmt.Errorf("hash %s: %w", name, err)
	}
	if keyOf(&before, m) == keyOf(&after, m) {
		if err := c.Store(&after, g); err != nil {
			return g, err
		}
	}
	return g, nil
}

// statRegular stats the file open as fd, which must be a regular file.
func statRegular(fd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return st, fmt.Errorf("hash %s: %w", name, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return st, fmt.Errorf("hash %s: not a regular file", name)
	}
	return st, nil
}

// sumFD hashes the file open as fd from offset 0, leaving its offset.
func sumFD(fd int, name string, m Mode, lim Limit) (GUID, error) {
	g, n, err := Sum(m, lim.reader(fd))
	if err != nil {
		return GUID{}, fmt.Errorf("hash %s: %w", name, err)
	}
	if err := lim.check(name, n); err != nil {
		return GUID{}, err
	}
	return g, nil
}

// preader reads a file descriptor at offsets (pread), leaving its offset.
type preader int

func (fd preader) ReadAt(p []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(int(fd), p, off)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}
