package guid

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

func openTestCache(t *testing.T) (*Cache, string) {
	t.Helper()
	dir := t.TempDir()
	c, err := OpenCache(filepath.Join(dir, "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, dir
}

func lstat(t *testing.T, p string) *unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return &st
}

func TestCacheHit(t *testing.T) {
	c, dir := openTestCache(t)
	p := filepath.Join(dir, "m")
	os.WriteFile(p, []byte("hello"), 0o600)
	// A planted entry proves the second call is answered from the cache.
	fake := GUID{Mode: SHA256}
	fake.Sum[0] = 1
	if err := c.Store(lstat(t, p), fake); err != nil {
		t.Fatal(err)
	}
	got, err := c.HashAt(unix.AT_FDCWD, p, SHA256)
	if err != nil || got != fake {
		t.Fatalf("HashAt = %v, %v; want cached %v", got, err, fake)
	}
	// Other modes are separate entries.
	b3, _ := FileAt(BLAKE3, unix.AT_FDCWD, p)
	if got, _ := c.HashAt(unix.AT_FDCWD, p, BLAKE3); got != b3 {
		t.Fatalf("HashAt(blake3) = %v; want %v", got, b3)
	}
}

// TestCacheCtimeInvalidates rewrites a file behind the cache's back with the
// same size and mtime; only ctime differs, and the cache must not answer.
func TestCacheCtimeInvalidates(t *testing.T) {
	c, dir := openTestCache(t)
	p := filepath.Join(dir, "m")
	os.WriteFile(p, []byte("AAAA"), 0o600)
	first, err := c.HashAt(unix.AT_FDCWD, p, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	st := lstat(t, p)
	mtime := time.Unix(0, st.Mtim.Nano())
	for {
		// ctime has the resolution of the kernel clock tick; rewrite until
		// it moves (usually the first time).
		os.WriteFile(p, []byte("BBBB"), 0o600)
		os.Chtimes(p, mtime, mtime)
		if lstat(t, p).Ctim != st.Ctim {
			break
		}
	}
	now := lstat(t, p)
	if now.Size != st.Size || now.Mtim != st.Mtim || now.Ino != st.Ino {
		t.Fatal("test setup: size, mtime or inode changed")
	}
	second, err := c.HashAt(unix.AT_FDCWD, p, SHA256)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := FileAt(SHA256, unix.AT_FDCWD, p)
	if second == first || second != want {
		t.Fatalf("after rewrite: got %v, want %v (first was %v)", second, want, first)
	}
}

func TestCachePersists(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "cache.db")
	p := filepath.Join(dir, "m")
	os.WriteFile(p, []byte("x"), 0o600)
	c, err := OpenCache(db)
	if err != nil {
		t.Fatal(err)
	}
	g := GUID{Mode: SHA1}
	g.Sum[3] = 9
	c.Store(lstat(t, p), g)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c, err = OpenCache(db)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, ok := c.Lookup(lstat(t, p), SHA1); !ok || got != g {
		t.Fatalf("after reopen Lookup = %v, %v; want %v", got, ok, g)
	}
}

func TestCacheBoundedFlush(t *testing.T) {
	c, dir := openTestCache(t)
	p := filepath.Join(dir, "m")
	os.WriteFile(p, nil, 0o600)
	st := *lstat(t, p)
	for i := range flushAt + 10 {
		st.Ino = uint64(i + 1)
		if err := c.Store(&st, GUID{Mode: SHA256}); err != nil {
			t.Fatal(err)
		}
	}
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	if n >= flushAt {
		t.Fatalf("pending = %d, want < %d", n, flushAt)
	}
	st.Ino = 1
	if _, ok := c.Lookup(&st, SHA256); !ok {
		t.Fatal("flushed entry not found")
	}
}

func TestHashAtNoFollow(t *testing.T) {
	c, dir := openTestCache(t)
	os.WriteFile(filepath.Join(dir, "real"), []byte("x"), 0o600)
	os.Symlink("real", filepath.Join(dir, "link"))
	if _, err := c.HashAt(unix.AT_FDCWD, filepath.Join(dir, "link"), SHA256); err == nil {
		t.Fatal("HashAt followed a symlink")
	}
}

func FuzzDecodeCacheValue(f *testing.F) {
	f.Add(uint8(1), make([]byte, 32))
	f.Add(uint8(3), make([]byte, 20))
	f.Add(uint8(0), []byte{})
	f.Fuzz(func(t *testing.T, m uint8, v []byte) {
		g, ok := decodeCacheValue(Mode(m), v)
		if !ok {
			return
		}
		if !g.Mode.Valid() || g.Mode == None || len(v) != g.Mode.Size() {
			t.Fatalf("accepted mode %d with %d bytes", m, len(v))
		}
		if back, err := Parse(g.String()); err != nil || back != g {
			t.Fatalf("round trip %v: %v, %v", g, back, err)
		}
	})
}

// TestCacheSharedReader: lookups share one read transaction; writes
// between them are seen, a write never waits for it (bbolt may grow and
// remap the file), and it is renewed after maxReaderUses lookups.
func TestCacheSharedReader(t *testing.T) {
	c, dir := openTestCache(t)
	p := filepath.Join(dir, "m")
	os.WriteFile(p, nil, 0o600)
	st := *lstat(t, p)
	for round := range 3 {
		st.Ino = 1000
		c.Lookup(&st, SHA256) // opens the shared reader
		// Enough entries that bbolt must grow its file past the first
		// mapping while the reader is open.
		for i := range 20000 {
			st.Ino = uint64(round*100000 + i + 1)
			g := GUID{Mode: SHA256}
			g.Sum[0], g.Sum[1] = byte(i), byte(round)
			if err := c.Store(&st, g); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		for _, i := range []int{0, 777, 19999} {
			st.Ino = uint64(round*100000 + i + 1)
			g, ok := c.Lookup(&st, SHA256)
			if !ok || g.Sum[0] != byte(i) || g.Sum[1] != byte(round) {
				t.Fatalf("round %d, entry %d: %v %v after a flush", round, i, g, ok)
			}
		}
	}
	for range maxReaderUses + 5 {
		c.Lookup(&st, SHA256)
	}
	c.readerMu.Lock()
	uses := c.readerUses
	c.readerMu.Unlock()
	if uses > maxReaderUses {
		t.Errorf("one read transaction served %d lookups, more than %d", uses, maxReaderUses)
	}
}

// TestCachePrunesOldStates: writing an entry removes the entries of the same
// inode in other states (an earlier content, or a deleted file whose inode
// number was reused), keeps the same state in another mode, and leaves other
// inodes alone — so the cache does not grow with every file ever seen.
func TestCachePrunesOldStates(t *testing.T) {
	c, _ := openTestCache(t)
	stat := func(dev, ino uint64, mtime int64) *unix.Stat_t {
		return &unix.Stat_t{Dev: dev, Ino: ino, Size: 100, Mode: unix.S_IFREG | 0o600,
			Mtim: unix.NsecToTimespec(mtime), Ctim: unix.NsecToTimespec(mtime)}
	}
	sum := func(m Mode, b byte) GUID { g := GUID{Mode: m}; g.Sum[0] = b; return g }
	store := func(st *unix.Stat_t, g GUID) {
		t.Helper()
		if err := c.Store(st, g); err != nil {
			t.Fatal(err)
		}
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	old, neighbour, otherDev := stat(1, 42, 1000), stat(1, 43, 1000), stat(2, 42, 1000)
	store(old, sum(SHA256, 1))
	store(old, sum(BLAKE3, 2))
	store(neighbour, sum(SHA256, 3))
	store(otherDev, sum(SHA256, 4))
	if n := countEntries(t, c); n != 4 {
		t.Fatalf("%d entries before the rewrite; want 4", n)
	}

	now := stat(1, 42, 2000) // the same inode, rewritten
	store(now, sum(SHA256, 5))
	if _, ok := c.Lookup(old, SHA256); ok {
		t.Error("the old state's sha256 entry survived the rewrite")
	}
	if _, ok := c.Lookup(old, BLAKE3); ok {
		t.Error("the old state's blake3 entry survived the rewrite")
	}
	for _, st := range []*unix.Stat_t{now, neighbour, otherDev} {
		if _, ok := c.Lookup(st, SHA256); !ok {
			t.Errorf("entry of dev %d ino %d mtime %d lost", st.Dev, st.Ino, st.Mtim.Nano())
		}
	}
	store(now, sum(BLAKE3, 6)) // the same state in another mode is kept
	if _, ok := c.Lookup(now, SHA256); !ok {
		t.Error("storing the blake3 GUID removed the sha256 one of the same state")
	}
	if n := countEntries(t, c); n != 4 {
		t.Fatalf("%d entries after the rewrite; want 4 (now ×2 modes, neighbour, other dev)", n)
	}

	// Two states of one inode in one flushed batch leave one of them.
	c.Store(stat(1, 50, 1), sum(SHA256, 7))
	c.Store(stat(1, 50, 2), sum(SHA256, 8))
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := countEntries(t, c); n != 5 {
		t.Fatalf("%d entries after one batch with two states of an inode; want 5", n)
	}
}

func countEntries(t *testing.T, c *Cache) int {
	t.Helper()
	n := 0
	if err := c.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(cacheBucket).ForEach(func(k, v []byte) error { n++; return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// BenchmarkCacheStore is the cost of recording a new file's GUID, flushes
// included (what a seed pays per file on each side).
func BenchmarkCacheStore(b *testing.B) {
	c, err := OpenCache(filepath.Join(b.TempDir(), "cache.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	g := GUID{Mode: SHA256}
	for i := 0; b.Loop(); i++ {
		st := unix.Stat_t{Dev: 1, Ino: uint64(i)*7919%1000003 + 1, Size: 100, Mode: unix.S_IFREG | 0o600}
		if err := c.Store(&st, g); err != nil {
			b.Fatal(err)
		}
	}
	if err := c.Flush(); err != nil {
		b.Fatal(err)
	}
}
