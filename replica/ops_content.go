package replica

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
)

// Put makes p a regular file with content and meta. The content lands in a
// temp file in Root/.spoolsync/tmp, which is written, given meta (mtime
// last), fsynced and renamed over p: readers see the old entry or the whole
// new file, never a part. Whatever non-directory was at p is replaced (a
// hard link to p's old inode keeps the old content, as on the master when a
// mail server writes a new file and renames it); a directory at p is an
// error. The content is indexed under its GUID (Options.GUIDMode).
func (t *Txn) Put(p string, meta Meta, content io.Reader) error {
	return opErr("put", p, t.put(p, meta, content))
}

func (t *Txn) put(p string, meta Meta, content io.Reader) error {
	if err := t.check(); err != nil {
		return err
	}
	par, err := openParent(t.s.rootfd, p)
	if err != nil {
		return err
	}
	defer par.close()
	f, name, g, err := t.writeTemp(meta, content)
	if err != nil {
		return err
	}
	defer f.Close()
	return t.finish(f, name, meta, par, p, g)
}

// hashMode is the mode content is hashed and indexed in: the sender's
// (Meta.GUIDMode), else the store's.
func (s *Store) hashMode(meta Meta) guid.Mode {
	if meta.GUIDMode.Valid() && meta.GUIDMode != guid.None {
		return meta.GUIDMode
	}
	return s.mode
}

// writeTemp writes content to a new temp file, hashing it in the sender's
// mode (Meta.GUIDMode) or the store's.
func (t *Txn) writeTemp(meta Meta, content io.Reader) (*os.File, string, guid.GUID, error) {
	name, fd, err := t.createTemp()
	if err != nil {
		return nil, "", guid.GUID{}, fmt.Errorf("create temp file: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	mode := t.s.hashMode(meta)
	h := guid.New(mode)
	w := &sparseWriter{f: f}
	_, err = io.Copy(w, io.TeeReader(content, h))
	if err == nil {
		err = w.finish()
	}
	if err != nil {
		f.Close()
		t.dropTemp(name)
		return nil, "", guid.GUID{}, fmt.Errorf("write: %w", err)
	}
	return f, name, guid.FromHash(mode, h), nil
}

// Staged is content written to a temp file with its attributes, made
// durable by SyncStaged, waiting for Txn.PutStaged to put it in place.
//
// A batch of many new messages would otherwise cost one fsync per file,
// and on ext4 every fsync is a journal commit and a disk cache flush:
// staging them all, one syncfs, then the renames in batch order keeps
// "content lands by temp file, sync, rename" for every file at the cost of
// one commit per batch. Staging needs no Txn, so a server stages a batch's
// files as they arrive, while the master is still sending the rest, and
// takes the batch lock only to put them in place.
type Staged struct {
	name   string
	meta   Meta
	g      guid.GUID
	landed bool // put in place: no temp file left to drop
}

// Stage writes the content fill produces, and meta, to a new temp file,
// without syncing it. A Staged that is not put in place must be dropped
// (DropStaged).
func (s *Store) Stage(meta Meta, fill func(io.Writer) error) (*Staged, error) {
	if err := s.checkPrivileged(false, AttrAll, meta); err != nil {
		return nil, opErr("stage", "", err) // before a byte of it is stored
	}
	name := fmt.Sprintf("stage-%016x.tmp", s.stageSerial.Add(1))
	fd, err := unix.Openat(s.tmpfd, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, opErr("stage", "", fmt.Errorf("create temp file: %w", err))
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	h := guid.New(s.hashMode(meta))
	w := &sparseWriter{f: f}
	err = fill(io.MultiWriter(w, h))
	if err == nil {
		err = w.finish()
	}
	if err == nil {
		err = s.setTempMeta(fd, meta)
	}
	if err != nil {
		unix.Unlinkat(s.tmpfd, name, 0)
		return nil, opErr("stage", "", err)
	}
	return &Staged{name: name, meta: meta, g: guid.FromHash(s.hashMode(meta), h)}, nil
}

// DropStaged removes the temp files of staged content not put in place.
func (s *Store) DropStaged(staged []*Staged) {
	for _, st := range staged {
		if st != nil && !st.landed {
			unix.Unlinkat(s.tmpfd, st.name, 0)
		}
	}
}

// SyncStaged makes every staged file durable, data and attributes, with
// one syncfs of the replica's filesystem.
func (s *Store) SyncStaged() error {
	if err := unix.Syncfs(s.tmpfd); err != nil {
		return opErr("sync staged files", "", err)
	}
	return nil
}

// setTempMeta gives a new temp file, open as fd, meta's owner, mode and
// xattrs, and its mtime last. Through the descriptor: a name lookup in the
// busy temp dir for each would cost more than the calls themselves.
func (s *Store) setTempMeta(fd int, meta Meta) error {
	if err := s.checkPrivileged(false, AttrAll, meta); err != nil {
		return err
	}
	if s.owner {
		if err := unix.Fchown(fd, int(meta.Uid), int(meta.Gid)); err != nil {
			return fmt.Errorf("chown %d:%d: %w", meta.Uid, meta.Gid, err)
		}
	}
	if err := unix.Fchmod(fd, meta.Mode&07777); err != nil {
		return fmt.Errorf("chmod %04o: %w", meta.Mode&07777, err)
	}
	for _, x := range meta.Xattrs {
		if err := unix.Fsetxattr(fd, x.Name, x.Value, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x.Name, err)
		}
	}
	// utimensat(fd, NULL, ...) is futimens(3): the file itself.
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(meta.Mtime)}
	if _, _, errno := unix.Syscall6(unix.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0); errno != 0 {
		return fmt.Errorf("set mtime: %w", errno)
	}
	return nil
}

// PutStaged puts a staged file (after SyncStaged) in place at p, replacing
// what is there, as Put does.
func (t *Txn) PutStaged(p string, s *Staged) error {
	return opErr("put", p, t.putStaged(p, s))
}

func (t *Txn) putStaged(p string, s *Staged) error {
	if err := t.live(); err != nil {
		return err
	}
	if err := checkPath(p); err != nil {
		return err
	}
	dir, name := splitPath(p)
	if t.putDir.fd < 0 || t.putDir.path != dir {
		t.forgetPutDir()
		fd, err := openDirBeneath(t.s.rootfd, dir)
		if err != nil {
			return err
		}
		t.putDir = putDir{path: dir, fd: fd}
	}
	if err := t.landIndexed(s.name, parent{fd: t.putDir.fd, name: name}, p, s.g); err != nil {
		return err
	}
	s.landed = true
	return nil
}

// finish lands a written temp file at p: meta (mtime last), fsync, rename
// over p, and index p as holding g.
func (t *Txn) finish(f *os.File, name string, meta Meta, par parent, p string, g guid.GUID) error {
	err := t.applyMeta(parent{t.s.tmpfd, name}, AttrAll, meta)
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		t.dropTemp(name)
		return err
	}
	return t.landIndexed(name, par, p, g)
}

// landIndexed renames a durable temp file over p and indexes p as g.
func (t *Txn) landIndexed(name string, par parent, p string, g guid.GUID) error {
	if err := t.land(name, par); err != nil {
		return err
	}
	// Stamp after the rename, which moves ctime. Only this Txn changes
	// the tree, so the name still holds the file just landed.
	st, err := par.lstat()
	if err != nil {
		return t.ix().del(p)
	}
	t.s.cache.Store(&st, g)
	return t.ix().put(p, g, &st)
}

// PutGUID makes p a copy of a local file whose content has GUID g, so the
// master need not send the bytes. Each indexed location of g is verified
// before use: if lstat shows it changed since it was indexed (inode, size,
// mtime or ctime), the copy is hashed and used only if it still has GUID g.
// ok=false, with nothing changed, when no verified source exists: the caller
// then asks the master for the content. PutGUID never puts content other
// than g's at p. The copy is a reflink where the filesystem can, else
// copy_file_range; never a hard link, since a later in-place write to one
// name must not change the other.
func (t *Txn) PutGUID(p string, meta Meta, g guid.GUID) (ok bool, err error) {
	ok, err = t.putGUID(p, meta, g)
	return ok, opErr("put "+g.String(), p, err)
}

func (t *Txn) putGUID(p string, meta Meta, g guid.GUID) (bool, error) {
	if err := t.check(); err != nil {
		return false, err
	}
	if g.Mode == guid.None || !g.Mode.Valid() {
		return false, nil
	}
	par, err := openParent(t.s.rootfd, p)
	if err != nil {
		return false, err
	}
	defer par.close()
	for _, c := range t.ix().lookup(g) {
		ok, err := t.copyFrom(c, g, meta, par, p)
		if ok || err != nil {
			return ok, err
		}
	}
	if pin, ok := t.pins[g]; ok {
		return t.copyPinned(pin, g, meta, par, p)
	}
	return false, nil
}

// pinned is a verified source of a GUID, held open from the start of the
// batch (Pin).
type pinned struct {
	f   *os.File
	rec record // the index's record of it, which it matched when opened
}

// maxPins bounds the files a batch holds open as copy sources: one per
// distinct GUID put by GUID, which a large sync_batch_size could make many
// thousands. A batch past it that removes an unpinned source before its
// copy fails as before and is sent again with the content inline.
const maxPins = 1024

// Pin opens, before any op of the batch runs, a verified source of each
// GUID the batch will put by GUID. The batch may remove or replace a
// source's name before the put that copies it (a message moved to another
// folder and the old name expunged, in an order that puts the removal
// first), and the master offered the GUID because the replica held it
// when the batch was planned; the open file still holds the content.
// Without it such a batch failed with "lacking GUID" and was sent again
// whole after a reconnect. PutGUID uses a pin when no indexed name of g
// is left; the pins are closed when the batch ends.
func (t *Txn) Pin(gs []guid.GUID) {
	for _, g := range gs {
		if len(t.pins) >= maxPins {
			return
		}
		if _, ok := t.pins[g]; ok || t.check() != nil {
			continue
		}
		for _, c := range t.ix().lookup(g) {
			f, err := t.openIndexed(c.path)
			if err != nil {
				continue
			}
			var st unix.Stat_t
			if unix.Fstat(int(f.Fd()), &st) != nil || !c.rec.matches(&st) {
				f.Close()
				continue
			}
			if t.pins == nil {
				t.pins = map[guid.GUID]pinned{}
			}
			t.pins[g] = pinned{f, c.rec}
			break
		}
	}
}

// closePins closes the batch's pinned sources.
func (t *Txn) closePins() {
	for g, pin := range t.pins {
		pin.f.Close()
		delete(t.pins, g)
	}
}

// copyPinned puts at p a copy of a pinned source. The pin is vouched for by
// the index while the file is unchanged since (its inode's record, ctime
// included, which an unlink of one of its names also moves); otherwise the
// copy must hash to g.
func (t *Txn) copyPinned(pin pinned, g guid.GUID, meta Meta, par parent, p string) (bool, error) {
	if _, err := pin.f.Seek(0, io.SeekStart); err != nil {
		return false, nil
	}
	dst, name, ok, err := t.copyChecked(pin.f, g, func() bool {
		var now unix.Stat_t
		return unix.Fstat(int(pin.f.Fd()), &now) == nil && recordOf(&now) == pin.rec
	})
	if !ok {
		return false, err
	}
	defer dst.Close()
	return true, t.finish(dst, name, meta, par, p, g)
}

// copyChecked copies src into a new temp file. vouched, asked once the copy
// is made, says whether the index vouches for what src held meanwhile; if
// not, the copy must hash to g. ok is false, the temp file dropped, when
// it does not (or err, when the copy failed).
func (t *Txn) copyChecked(src *os.File, g guid.GUID, vouched func() bool) (dst *os.File, name string, ok bool, err error) {
	name, fd, err := t.createTemp()
	if err != nil {
		return nil, "", false, fmt.Errorf("create temp file: %w", err)
	}
	dst = os.NewFile(uintptr(fd), name)
	if err := copyFile(dst, src); err != nil {
		dst.Close()
		t.dropTemp(name)
		return nil, "", false, fmt.Errorf("copy from %s: %w", src.Name(), err)
	}
	if !vouched() {
		got, _, err := guid.Sum(g.Mode, io.NewSectionReader(dst, 0, math.MaxInt64))
		if err != nil || got != g {
			dst.Close()
			t.dropTemp(name)
			return nil, "", false, nil
		}
	}
	return dst, name, true, nil
}

// copyFrom tries one candidate source of g. A source that is gone, not a
// regular file, or whose copy does not hash to g is dropped from the index
// and reported as (false, nil).
func (t *Txn) copyFrom(c candidate, g guid.GUID, meta Meta, par parent, p string) (bool, error) {
	src, err := t.openIndexed(c.path)
	if err != nil {
		return false, t.ix().del(c.path)
	}
	defer src.Close()
	var before, after unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &before); err != nil {
		return false, t.ix().del(c.path)
	}
	var unchanged bool
	dst, name, ok, err := t.copyChecked(src, g, func() bool {
		unchanged = unix.Fstat(int(src.Fd()), &after) == nil && recordOf(&before) == recordOf(&after)
		return unchanged && c.rec.matches(&before)
	})
	if err != nil {
		return false, err
	}
	if !ok {
		return false, t.ix().del(c.path)
	}
	defer dst.Close()
	if !unchanged || !c.rec.matches(&before) {
		// Vouched for by the hash, not the index: the index learns it.
		if !unchanged {
			err = t.ix().del(c.path)
		} else {
			err = t.ix().put(c.path, g, &after)
		}
		if err != nil {
			t.dropTemp(name)
			return false, err
		}
	}
	return true, t.finish(dst, name, meta, par, p, g)
}

// openIndexed opens an indexed path read-only, confined like any client
// path (the index is not trusted to name safe paths).
func (t *Txn) openIndexed(p string) (*os.File, error) {
	par, err := openParent(t.s.rootfd, p)
	if err != nil {
		return nil, err
	}
	defer par.close()
	fd, err := par.openFile(unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

// copyFile copies src to the empty dst: a reflink (FICLONE) where the
// filesystem shares extents, else io.Copy, which uses copy_file_range.
func copyFile(dst, src *os.File) error {
	if unix.IoctlFileClone(int(dst.Fd()), int(src.Fd())) == nil {
		return nil
	}
	_, err := io.Copy(dst, src)
	return err
}

// Lacks reports, for each GUID, whether the replica has no verified local
// copy of it (so PutGUID would fail and the master should send the bytes).
// The check is cheap: index lookup and lstat, no hashing; entries that fail
// it are dropped from the index. Duplicate GUIDs get the same answer.
func (t *Txn) Lacks(gs []guid.GUID) []bool {
	out := make([]bool, len(gs))
	for i, g := range gs {
		out[i] = true
		if t.check() != nil {
			continue
		}
		for _, c := range t.ix().lookup(g) {
			if t.stillValid(c) {
				out[i] = false
				break
			}
			t.ix().del(c.path)
		}
	}
	return out
}

func (t *Txn) stillValid(c candidate) bool {
	par, err := openParent(t.s.rootfd, c.path)
	if err != nil {
		return false
	}
	defer par.close()
	st, err := par.lstat()
	return err == nil && c.rec.matches(&st)
}

// Range is a byte range of a file: Len bytes at offset Off.
type Range struct {
	Off, Len int64
}

// WriteRanges writes into the existing regular file p in place, as the
// master did (mbox append, index rewrite): for each range in order, the next
// r.Len bytes of data are written at r.Off; then the file is truncated or
// extended to size. Ranges must lie within [0, size). It consumes exactly
// the ranges' total length from data, also when it skips a missing file
// during a replay. The file is fsynced at Commit. Its mtime is whatever the
// writes make it; the master sends SetAttr for the mtime it wants. p's index
// entry is dropped.
func (t *Txn) WriteRanges(p string, size int64, ranges []Range, data io.Reader) error {
	return opErr("write", p, t.writeRanges(p, size, ranges, data))
}

func (t *Txn) writeRanges(p string, size int64, ranges []Range, data io.Reader) error {
	if err := t.check(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	var total int64
	for _, r := range ranges {
		if r.Off < 0 || r.Len < 0 || r.Off > size || r.Len > size-r.Off {
			return fmt.Errorf("range %d+%d outside file size %d", r.Off, r.Len, size)
		}
		total += r.Len
	}
	fd, err := t.openInPlace(p)
	if fd < 0 {
		if err == nil { // skipped in replay
			_, err = io.CopyN(io.Discard, data, total)
		}
		return err
	}
	buf := make([]byte, min(total, 1<<16))
	for _, r := range ranges {
		if err := pwriteFrom(fd, r, data, buf); err != nil {
			t.touchFile(fd)
			return err
		}
	}
	err = unix.Ftruncate(fd, size)
	t.touchFile(fd)
	if err != nil {
		return fmt.Errorf("truncate to %d: %w", size, err)
	}
	return nil
}

func pwriteFrom(fd int, r Range, data io.Reader, buf []byte) error {
	for off, end := r.Off, r.Off+r.Len; off < end; {
		chunk := buf[:min(int64(len(buf)), end-off)]
		if _, err := io.ReadFull(data, chunk); err != nil {
			return fmt.Errorf("read range %d+%d: %w", r.Off, r.Len, err)
		}
		for len(chunk) > 0 {
			n, err := unix.Pwrite(fd, chunk, off)
			if err != nil {
				return fmt.Errorf("write at %d: %w", off, err)
			}
			chunk, off = chunk[n:], off+int64(n)
		}
	}
	return nil
}

// openInPlace opens the existing regular file p for writing and drops its
// index entry (its content is about to change). It returns fd -1 and a nil
// error when p is missing during a replay.
func (t *Txn) openInPlace(p string) (int, error) {
	par, err := openParent(t.s.rootfd, p)
	if err == nil {
		defer par.close()
		var fd int
		fd, err = par.openFile(unix.O_WRONLY)
		if err == nil {
			return fd, t.ix().del(p)
		}
	}
	if t.replay && errors.Is(err, unix.ENOENT) {
		return -1, nil
	}
	return -1, err
}

// Truncate sets the size of the existing regular file p in place.
func (t *Txn) Truncate(p string, size int64) error {
	return opErr("truncate", p, t.truncate(p, size))
}

func (t *Txn) truncate(p string, size int64) error {
	if err := t.check(); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("negative size %d", size)
	}
	fd, err := t.openInPlace(p)
	if fd < 0 {
		return err
	}
	err = unix.Ftruncate(fd, size)
	t.touchFile(fd)
	return err
}
