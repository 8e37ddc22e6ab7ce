package replica

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
)

// Mkdir makes p a directory with meta. If p already is a directory, only
// meta is applied (a re-sent Mkdir succeeds); anything else at p is an
// error.
func (t *Txn) Mkdir(p string, meta Meta) error {
	return opErr("mkdir", p, t.mkdir(p, meta))
}

func (t *Txn) mkdir(p string, meta Meta) error {
	if err := t.check(); err != nil {
		return err
	}
	par, err := openParent(t.s.rootfd, p)
	if err != nil {
		return err
	}
	defer par.close()
	// 0700 until meta is applied: no moment with wider permissions.
	switch err := unix.Mkdirat(par.fd, par.name, 0o700); err {
	case nil:
		t.touchDir(par.fd)
	case unix.EEXIST:
		if st, err := par.lstat(); err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("exists and is not a directory: %w", unix.EEXIST)
		}
	default:
		return err
	}
	if err := t.applyMeta(par, AttrAll, meta); err != nil {
		return err
	}
	t.touchEntry(par)
	return nil
}

// Rmdir removes the empty directory p. A missing p (or parent) is success.
func (t *Txn) Rmdir(p string) error {
	return opErr("rmdir", p, t.remove(p, unix.AT_REMOVEDIR))
}

// Unlink removes the non-directory p (the entry itself if it is a symlink).
// A missing p (or parent) is success.
func (t *Txn) Unlink(p string) error {
	return opErr("unlink", p, t.remove(p, 0))
}

func (t *Txn) remove(p string, flags int) error {
	if err := t.check(); err != nil {
		return err
	}
	par, err := openParent(t.s.rootfd, p)
	if errors.Is(err, unix.ENOENT) {
		return t.ix().delTree(p)
	}
	if err != nil {
		return err
	}
	defer par.close()
	switch err := unix.Unlinkat(par.fd, par.name, flags); err {
	case nil:
		t.touchDir(par.fd)
	case unix.ENOENT:
	default:
		return err
	}
	return t.ix().delTree(p)
}

// RenameFlags are renameat2 flags.
type RenameFlags uint

const (
	// NoReplace fails with EEXIST if dst exists.
	NoReplace RenameFlags = unix.RENAME_NOREPLACE
	// Exchange swaps src and dst atomically; both must exist.
	Exchange RenameFlags = unix.RENAME_EXCHANGE
)

// Rename renames src to dst (renameat2 with flags), moving the entry itself
// even if it is a symlink. Re-sent after a crash: if src is missing and dst
// exists, the rename is taken as already done and succeeds (without
// Exchange); in a replay (see Begin), NoReplace meeting an existing dst
// replaces it, since that dst is left from the interrupted apply. An Exchange is not idempotent — applied twice it swaps back —
// which is one reason an interrupted batch is reported by Interrupted.
func (t *Txn) Rename(src, dst string, flags RenameFlags) error {
	return opErr2("rename", src, dst, t.rename(src, dst, flags))
}

func (t *Txn) rename(src, dst string, flags RenameFlags) error {
	if err := t.check(); err != nil {
		return err
	}
	if flags&^(NoReplace|Exchange) != 0 || flags == NoReplace|Exchange {
		return fmt.Errorf("flags %#x: %w", uint(flags), unix.EINVAL)
	}
	sp, err := openParent(t.s.rootfd, src)
	if err != nil {
		return err
	}
	defer sp.close()
	dp, err := openParent(t.s.rootfd, dst)
	if err != nil {
		return err
	}
	defer dp.close()
	srcValid, dstValid := t.indexValid(sp, src), t.indexValid(dp, dst)
	err = unix.Renameat2(sp.fd, sp.name, dp.fd, dp.name, uint(flags))
	if err == unix.EEXIST && flags == NoReplace && t.replay {
		// The master's rename succeeded, so dst is left from the
		// interrupted first apply of this batch.
		err = unix.Renameat2(sp.fd, sp.name, dp.fd, dp.name, 0)
	}
	if err == unix.ENOENT && flags&Exchange == 0 && missing(sp) && !missing(dp) {
		return t.ix().delTree(src) // already done
	}
	if err != nil {
		return err
	}
	t.touchDir(sp.fd)
	t.touchDir(dp.fd)
	if src == dst {
		return nil
	}
	ix := t.ix()
	moved, err := ix.take(src)
	if err != nil {
		return err
	}
	if flags&Exchange != 0 {
		back, err := ix.take(dst)
		if err != nil {
			return err
		}
		if err := ix.place(src, back); err != nil {
			return err
		}
		if err := t.restamp(sp, src, dstValid); err != nil {
			return err
		}
	} else if err := ix.delTree(dst); err != nil {
		return err
	}
	if err := ix.place(dst, moved); err != nil {
		return err
	}
	return t.restamp(dp, dst, srcValid)
}

// missing reports whether par's entry does not exist.
func missing(par parent) bool {
	_, err := par.lstat()
	return err == unix.ENOENT
}

// Link makes newp another name of oldp's inode (the symlink itself if oldp
// is one). The link is made in the temp dir and renamed over newp, so a
// non-directory already at newp is replaced: the master's link(2)
// succeeded, so whatever is at newp here is left from an interrupted
// earlier apply. newp already a link to oldp, or oldp missing with newp
// present (re-sent after a crash), is success.
func (t *Txn) Link(oldp, newp string) error {
	return opErr2("link", oldp, newp, t.link(oldp, newp))
}

func (t *Txn) link(oldp, newp string) error {
	if err := t.check(); err != nil {
		return err
	}
	op, err := openParent(t.s.rootfd, oldp)
	if err != nil {
		return err
	}
	defer op.close()
	np, err := openParent(t.s.rootfd, newp)
	if err != nil {
		return err
	}
	defer np.close()
	ost, oerr := op.lstat()
	nst, nerr := np.lstat()
	switch {
	case oerr == unix.ENOENT && nerr == nil:
		return nil // already done, and oldp since removed
	case oerr != nil:
		return oerr
	case nerr == nil && idOf(&ost) == idOf(&nst):
		return nil // already done
	case ost.Mode&unix.S_IFMT == unix.S_IFDIR:
		// The master linked a file: a directory here is in its way
		// (link(2) would fail with EPERM).
		return fmt.Errorf("is a directory: %w", errWrongType)
	}
	oldValid := t.indexValid(op, oldp)
	name := t.tempName()
	if err := unix.Linkat(op.fd, op.name, t.s.tmpfd, name, 0); err != nil {
		return err
	}
	if err := t.land(name, np); err != nil {
		return err
	}
	t.touchEntry(np) // link count
	if err := t.restamp(op, oldp, oldValid); err != nil {
		return err
	}
	if g, _, ok := t.ix().get(oldp); ok {
		if st, err := np.lstat(); err == nil {
			return t.ix().put(newp, g, &st)
		}
	}
	return t.ix().del(newp)
}

// Symlink makes p a symlink to target (any string without NUL, up to 4095
// bytes; it is stored, never followed) with meta's owner, mtime and xattrs.
// Like Put, it is created in the temp dir and renamed over p, so it replaces
// a non-directory at p and a re-send succeeds.
func (t *Txn) Symlink(p, target string, meta Meta) error {
	return opErr("symlink", p, t.special(p, meta, func(name string) error {
		if target == "" || len(target) >= maxPath || strings.IndexByte(target, 0) >= 0 {
			return fmt.Errorf("bad symlink target (empty, NUL or %d bytes): %w", len(target), unix.EINVAL)
		}
		return unix.Symlinkat(target, t.s.tmpfd, name)
	}))
}

// Mknod makes p a fifo, or a socket when meta.Mode's file type says so,
// with meta: the special files a mail spool has (a socket is the name a
// bind(2) left, e.g. Cyrus's idle and lmtp sockets; nothing listens on
// the replica's). Device nodes are refused. Like Put, it replaces a
// non-directory at p.
func (t *Txn) Mknod(p string, meta Meta) error {
	return opErr("mknod", p, t.special(p, meta, func(name string) error {
		typ := meta.Mode & unix.S_IFMT
		switch typ {
		case 0:
			typ = unix.S_IFIFO
		case unix.S_IFIFO, unix.S_IFSOCK:
		default:
			return fmt.Errorf("file type %#o: only fifos and sockets are replicated: %w", typ, unix.EPERM)
		}
		return unix.Mknodat(t.s.tmpfd, name, typ|0o600, 0)
	}))
}

// special creates an entry in the temp dir with create, applies meta and
// renames it over p.
func (t *Txn) special(p string, meta Meta, create func(name string) error) error {
	if err := t.check(); err != nil {
		return err
	}
	par, err := openParent(t.s.rootfd, p)
	if err != nil {
		return err
	}
	defer par.close()
	name := t.tempName()
	if err := create(name); err != nil {
		return err
	}
	tmp := parent{t.s.tmpfd, name}
	if err := t.applyMeta(tmp, AttrAll, meta); err != nil {
		t.dropTemp(name)
		return err
	}
	if err := t.land(name, par); err != nil {
		return err
	}
	t.touchEntry(par)
	return t.ix().del(p)
}

// QuarantineDir is where Quarantine moves what a failback found only on
// this tree: <root>/.spoolsync-quarantine/<epoch>/<original path>. It is
// not part of the replicated tree (manifests leave it out, clients cannot
// name it) and `spoolsync quarantine` lists and restores it.
const QuarantineDir = fence.QuarantineDir

// Quarantine moves p (a file, or a directory and everything below it) to
// QuarantineDir/<epoch>/p, creating the directories on the way without
// following symlinks. A name already taken there gets a ".N" suffix, so
// nothing is ever overwritten. p already gone is success (a replay).
func (t *Txn) Quarantine(p string, epoch uint64) error {
	return opErr("quarantine", p, t.quarantine(p, epoch))
}

func (t *Txn) quarantine(p string, epoch uint64) error {
	if err := t.check(); err != nil {
		return err
	}
	sp, err := openParent(t.s.rootfd, p)
	if err != nil {
		return err
	}
	defer sp.close()
	if missing(sp) {
		return nil
	}
	dirs := append([]string{QuarantineDir, strconv.FormatUint(epoch, 10)}, strings.Split(p, "/")...)
	name := dirs[len(dirs)-1]
	dfd, err := unix.Dup(t.s.rootfd)
	if err != nil {
		return err
	}
	for _, d := range dirs[:len(dirs)-1] {
		next, err := mkdirOpen(dfd, d)
		unix.Close(dfd)
		if err != nil {
			return fmt.Errorf("quarantine directory %s: %w", d, err)
		}
		dfd = next
	}
	defer unix.Close(dfd)
	target := name
	for n := 1; ; n++ {
		err = unix.Renameat2(sp.fd, sp.name, dfd, target, unix.RENAME_NOREPLACE)
		if err != unix.EEXIST {
			break
		}
		target = fmt.Sprintf("%s.%d", name, n)
	}
	if err != nil {
		return err
	}
	t.touchDir(sp.fd)
	t.touchDir(dfd)
	t.s.log.Warn("replica: quarantined; restore with spoolsync quarantine restore", "path", p,
		"to", path.Join(QuarantineDir, strconv.FormatUint(epoch, 10), path.Dir(p), target))
	return t.ix().delTree(p)
}
