// Package digest computes a Merkle tree over a spool: one digest per
// directory, covering the names, attributes and content GUIDs of
// everything below it. The master and the replica compute it the same way
// over their own trees (the backing directory, the replica root), so that
// the continuous verifier (replicator/verify.go) can compare two trees by
// exchanging a few digests, and read only the subtrees whose digests
// differ.
//
// # Format
//
// All hashes are SHA-256, whatever the guid_mode: the tree's own hash is
// not the content hash, which only feeds it. Fields use the wire package's
// encodings (uvarint, zigzag varint, length-prefixed strings, a GUID as
// its mode byte and digest).
//
// An entry of a directory (a file, directory, symlink or FIFO; sockets and
// devices are left out, as resync leaves them) has an attribute hash
//
//	attr = SHA-256( "spoolsync-digest-entry-1"
//	                name:string  kind:u8
//	                [mode:uvarint, not for symlinks]  uid:uvarint  gid:uvarint  mtime:varint
//	                [files: size:uvarint  nlink:uvarint  guid]
//	                [symlinks: nlink:uvarint  target:string]
//	                [not symlinks: n:uvarint  n×(xname:string  xvalue:bytes)] )
//
// with kind as in wire (1 file, 2 directory, 3 symlink, 4 FIFO), mtime in
// Unix nanoseconds, the GUID in the mode the comparison asked for (mode
// none: no digest bytes, so size and mtime stand for content, as in
// resync), and the xattrs sorted by name. A symlink's mode and xattrs are
// not replicated (Linux has no such thing to set), so they are not
// covered. Atimes never are. These are exactly the fields resync compares:
// two trees with equal digests are trees resync finds nothing to do in.
//
// A directory's digest covers its entries, sorted by name byte-wise:
//
//	dir = SHA-256( "spoolsync-digest-dir-1"  n:uvarint
//	               n×( attr:32 bytes  sub:32 bytes ) )
//
// where sub is the entry's own directory digest for a subdirectory and 32
// zero bytes otherwise. A directory's own attributes are in its parent's
// entry, not in its digest; the root's are in no digest (resync does not
// compare the root either). At the top of a tree, spoolsync's reserved
// names (fence.Reserved: .spoolsync, .spoolsync-quarantine) are left out.
//
// # Cost: a cache validated by stat
//
// Computing a digest from scratch reads every xattr and hashes every file
// (through the GUID cache, so mostly a lookup). A Tree keeps, per entry,
// the attribute hash with the stat it was computed from, and reuses it
// while the entry's inode, ctime, mtime, size, mode and link count are
// unchanged. ctime moves on every change of an inode — content, size,
// mode, owner, xattrs, links — and cannot be set from user space, so an
// unchanged ctime means an unchanged entry. An entry whose ctime was
// within CacheSlack of the moment it was read is not reused (its next
// change could fall in the same clock tick: git's "racily clean" index
// entries). So a digest of an unchanged tree costs one getdents per
// directory and one fstatat per entry: no file is opened, no xattr read.
//
// Why not "updated as batches apply": a digest kept by the code that
// applies batches says what the replica should hold, not what it holds.
// The verifier exists for what changed behind spoolsync's back (an
// administrator, a restore, a disk): only a look at the tree sees that,
// and a stat is the cheapest look that sees every change. The same cache
// serves the master's side, whose backing directory the mail server
// changes through the mount only.
//
// Invariants: every method honours its context between directories; a
// Tree is safe for concurrent use (one computation at a time); memory is
// one cached record per entry of the tree (about 100 bytes).
package digest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/guid"
	"spoolsync/internal/walk"
	"spoolsync/internal/xattr"
)

// Sum is one SHA-256 hash of the tree.
type Sum [32]byte

// IsZero reports whether s is the zero sum (the sub of a non-directory).
func (s Sum) IsZero() bool { return s == Sum{} }

// Entry kinds, the same numbers as wire's.
const (
	KindFile    uint8 = 1
	KindDir     uint8 = 2
	KindSymlink uint8 = 3
	KindFIFO    uint8 = 4
)

// Entry is one name of a directory listing.
type Entry struct {
	Name string
	Kind uint8
	Attr Sum // the attribute hash (see the package doc)
	Sub  Sum // a directory's own digest; zero for other kinds
}

// Dir is a directory's digest and its entries, sorted by name.
type Dir struct {
	Digest  Sum
	Entries []Entry
}

// CacheSlack is how long after its last change an entry's attribute hash
// starts being reused: within it, a change in the same clock tick would
// leave ctime as it was.
const CacheSlack = time.Second

// Options say how a Tree reads its tree.
type Options struct {
	// OpenDir opens a directory of the tree ("." for its root) as an
	// O_RDONLY|O_DIRECTORY descriptor, never following a symlink.
	OpenDir func(dir string) (int, error)
	// Cache gives the files' GUIDs (looked up by stat, hashed if absent).
	Cache *guid.Cache
	// Mode is the GUID mode the digests cover (the master's guid_mode).
	Mode guid.Mode
	// Pace, when set, is called after each directory with the time spent
	// on it; it may sleep to bound the tree's share of the machine, and
	// its error (the context's) stops the computation.
	Pace func(ctx context.Context, spent time.Duration) error
}

// Tree computes and caches the digests of one tree.
type Tree struct {
	o  Options
	mu sync.Mutex
	// dirs holds, per directory path ("." for the root), the cached
	// entries and the last listing computed.
	dirs  map[string]*dirCache
	reads int // attribute hashes computed, not reused (for tests)
}

type dirCache struct {
	ino     uint64
	entries map[string]cached
	list    *Dir
}

// cached is an entry's attribute hash and what validates it.
type cached struct {
	ino, nlink   uint64
	ctime, mtime int64
	size         int64
	mode         uint32
	kind         uint8
	attr         Sum
	readAt       int64 // when the attributes were read (Unix ns)
}

// New returns a Tree with an empty cache.
func New(o Options) *Tree { return &Tree{o: o, dirs: map[string]*dirCache{}} }

// ErrNotDir is returned for a path that exists and is not a directory.
var ErrNotDir = errors.New("not a directory")

// Refresh recomputes the digests of the subtree at dir ("." or "" for the
// root) from the tree as it is now, reusing cached attribute hashes of
// unchanged entries, and returns dir's listing. A missing dir is an error
// satisfying errors.Is(err, os.ErrNotExist); a non-directory, ErrNotDir.
// The listings of every directory of the subtree are then available
// through Listing until the next Refresh that covers them.
func (t *Tree) Refresh(ctx context.Context, dir string) (*Dir, error) {
	if dir == "" {
		dir = "."
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fd, err := t.o.OpenDir(dir)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("digest %s: %w", dir, ErrNotDir)
		}
		return nil, fmt.Errorf("digest %s: %w", dir, err)
	}
	seen := map[string]bool{}
	d, err := t.dir(ctx, dir, fd, seen)
	if err != nil {
		return nil, err
	}
	// Forget the directories of this subtree that are gone.
	for p := range t.dirs {
		if !seen[p] && under(p, dir) {
			delete(t.dirs, p)
		}
	}
	return d, nil
}

// Listing returns dir's listing as the last Refresh covering it computed
// it, or nil if none did (or dir was gone then).
func (t *Tree) Listing(dir string) *Dir {
	if dir == "" {
		dir = "."
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if dc := t.dirs[dir]; dc != nil {
		return dc.list
	}
	return nil
}

func under(p, d string) bool {
	return d == "." || p == d || len(p) > len(d) && p[len(d)] == '/' && p[:len(d)] == d
}

func join(dir, name string) string {
	if dir == "." {
		return name
	}
	return dir + "/" + name
}

// dir computes the listing of the directory open as fd (which it closes).
func (t *Tree) dir(ctx context.Context, path string, fd int, seen map[string]bool) (*Dir, error) {
	if err := ctx.Err(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	start := time.Now()
	seen[path] = true
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("digest %s: %w", path, err)
	}
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("digest %s: read directory: %w", path, err)
	}
	slices.Sort(names)
	old := t.dirs[path]
	if old != nil && old.ino != st.Ino {
		old = nil // another directory took the name
	}
	dc := &dirCache{ino: st.Ino, entries: make(map[string]cached, len(names))}
	list := &Dir{Entries: make([]Entry, 0, len(names))}
	var subdirs []int // indexes of list.Entries that are directories
	now := time.Now().UnixNano()
	for _, name := range names {
		if path == "." && fence.Reserved(name) {
			continue
		}
		var est unix.Stat_t
		if err := unix.Fstatat(fd, name, &est, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // removed since it was listed
			}
			return nil, fmt.Errorf("digest %s: %w", join(path, name), err)
		}
		kind := kindOf(est.Mode)
		if kind == 0 {
			continue
		}
		c, ok := cached{}, false
		if old != nil {
			c, ok = old.entries[name]
			ok = ok && c.valid(&est, kind)
		}
		if !ok {
			t.reads++
			c, err = t.read(fd, name, &est, kind, now)
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("digest %s: %w", join(path, name), err)
			}
		}
		dc.entries[name] = c
		if kind == KindDir {
			subdirs = append(subdirs, len(list.Entries))
		}
		list.Entries = append(list.Entries, Entry{Name: name, Kind: kind, Attr: c.attr})
	}
	if t.o.Pace != nil {
		if err := t.o.Pace(ctx, time.Since(start)); err != nil {
			return nil, err
		}
	}
	for _, i := range subdirs {
		e := &list.Entries[i]
		sub := join(path, e.Name)
		cfd, err := unix.Openat(fd, e.Name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
				// Replaced since it was listed: the tree is changing
				// under us; its digest is that of an empty directory,
				// and the next verify sees the rest.
				e.Sub = digestOf(nil)
				continue
			}
			return nil, fmt.Errorf("digest %s: %w", sub, err)
		}
		d, err := t.dir(ctx, sub, cfd, seen)
		if err != nil {
			return nil, err
		}
		e.Sub = d.Digest
	}
	list.Digest = digestOf(list.Entries)
	dc.list = list
	t.dirs[path] = dc
	return list, nil
}

func (c *cached) valid(st *unix.Stat_t, kind uint8) bool {
	return c.kind == kind && c.ino == st.Ino && c.nlink == uint64(st.Nlink) &&
		c.ctime == st.Ctim.Nano() && c.mtime == st.Mtim.Nano() && c.size == st.Size &&
		c.mode == st.Mode && c.readAt-c.ctime >= int64(cacheSlack)
}

// cacheSlack is CacheSlack; tests lower it to see the cache at work.
var cacheSlack = CacheSlack

// read computes an entry's attribute hash from the tree.
func (t *Tree) read(dirfd int, name string, st *unix.Stat_t, kind uint8, now int64) (cached, error) {
	a := Attrs{Name: name, Kind: kind, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid,
		Mtime: st.Mtim.Nano(), Nlink: uint64(st.Nlink)}
	switch kind {
	case KindFile:
		a.Size = uint64(st.Size)
		if t.o.Mode != guid.None {
			g, err := t.o.Cache.HashAt(dirfd, name, t.o.Mode)
			if err != nil {
				return cached{}, err
			}
			a.GUID = g
		}
	case KindSymlink:
		target, err := walk.Readlink(dirfd, name)
		if err != nil {
			return cached{}, err
		}
		a.Target = target
	}
	if kind != KindSymlink {
		xs, err := xattr.Read(dirfd, name)
		if err != nil && !errors.Is(err, unix.EOPNOTSUPP) {
			return cached{}, err
		}
		a.Xattrs = xs
	}
	return cached{ino: st.Ino, nlink: uint64(st.Nlink), ctime: st.Ctim.Nano(), mtime: st.Mtim.Nano(),
		size: st.Size, mode: st.Mode, kind: kind, attr: a.Hash(), readAt: now}, nil
}

func kindOf(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return KindFile
	case unix.S_IFDIR:
		return KindDir
	case unix.S_IFLNK:
		return KindSymlink
	case unix.S_IFIFO:
		return KindFIFO
	}
	return 0
}

// Attrs is what an entry's attribute hash covers (see the package doc).
type Attrs struct {
	Name     string
	Kind     uint8
	Mode     uint32 // permission bits; not for symlinks
	UID, GID uint32
	Mtime    int64 // ns
	Size     uint64
	Nlink    uint64 // files and symlinks
	GUID     guid.GUID
	Target   string
	Xattrs   []xattr.Attr // sorted by name; not for symlinks
}

const (
	entryTag = "spoolsync-digest-entry-1"
	dirTag   = "spoolsync-digest-dir-1"
)

// Hash is the attribute hash of a.
func (a *Attrs) Hash() Sum {
	b := make([]byte, 0, 128)
	b = append(b, entryTag...)
	b = appendString(b, a.Name)
	b = append(b, a.Kind)
	if a.Kind != KindSymlink {
		b = binary.AppendUvarint(b, uint64(a.Mode))
	}
	b = binary.AppendUvarint(b, uint64(a.UID))
	b = binary.AppendUvarint(b, uint64(a.GID))
	b = binary.AppendVarint(b, a.Mtime)
	switch a.Kind {
	case KindFile:
		b = binary.AppendUvarint(b, a.Size)
		b = binary.AppendUvarint(b, a.Nlink)
		b = append(b, byte(a.GUID.Mode))
		b = append(b, a.GUID.Bytes()...)
	case KindSymlink:
		b = binary.AppendUvarint(b, a.Nlink)
		b = appendString(b, a.Target)
	}
	if a.Kind != KindSymlink {
		xs := slices.Clone(a.Xattrs)
		slices.SortFunc(xs, func(x, y xattr.Attr) int { return bytes.Compare([]byte(x.Name), []byte(y.Name)) })
		b = binary.AppendUvarint(b, uint64(len(xs)))
		for _, x := range xs {
			b = appendString(b, x.Name)
			b = appendString(b, string(x.Value))
		}
	}
	return sha256.Sum256(b)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// DigestOf is the digest of a directory holding entries (sorted by name).
func DigestOf(entries []Entry) Sum { return digestOf(entries) }

func digestOf(entries []Entry) Sum {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	h.Write([]byte(dirTag))
	h.Write(binary.AppendUvarint(n[:0], uint64(len(entries))))
	for i := range entries {
		h.Write(entries[i].Attr[:])
		h.Write(entries[i].Sub[:])
	}
	var s Sum
	h.Sum(s[:0])
	return s
}
