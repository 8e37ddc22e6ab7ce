package replica

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
	"spoolsync/internal/xattr"
)

// Meta is the metadata of an entry as the master has it.
type Meta struct {
	Mode  uint32 // permission bits incl. setuid/setgid/sticky (07777); type bits are ignored
	Uid   uint32
	Gid   uint32
	Mtime int64 // ns since the epoch
	// Xattrs, when non-nil, is the exact set of user.* and trusted.*
	// attributes the entry must have: others in those namespaces are
	// removed. Attributes of other namespaces (security.*, system.*) are
	// set when listed and never removed. nil leaves xattrs alone.
	Xattrs []Xattr
	// GUIDMode is the mode Put indexes the content it wrote under: the
	// sender's, so that a later put by GUID in the sender's mode finds
	// it. Zero: the store's mode.
	GUIDMode guid.Mode
}

// Xattr is one extended attribute.
type Xattr = xattr.Attr

// Attr selects what SetAttr changes.
type Attr uint8

const (
	AttrOwner  Attr = 1 << iota // Uid, Gid (ignored unless the Store preserves owners)
	AttrMode                    // permission bits; an error on a symlink
	AttrMtime                   // Mtime
	AttrXattrs                  // Xattrs, exactly (see Meta)
	AttrAll    = AttrOwner | AttrMode | AttrMtime | AttrXattrs
)

// applyMeta sets meta on par's entry, never following it: owner first
// (chown clears setuid/setgid), then mode, xattrs, and mtime last because
// everything before it may move it.
func (t *Txn) applyMeta(par parent, mask Attr, meta Meta) error {
	st, err := par.lstat()
	if err != nil {
		return err
	}
	isLink := st.Mode&unix.S_IFMT == unix.S_IFLNK
	if err := t.s.checkPrivileged(st.Mode&unix.S_IFMT == unix.S_IFDIR, mask, meta); err != nil {
		return err
	}
	explicitMode := mask&AttrMode != 0 && mask != AttrAll
	// What already matches is not set again: each call moves the ctime,
	// which drops the entry's GUID index record (verified by ctime), and
	// costs a journal write for nothing.
	if mask&AttrOwner != 0 && st.Uid == meta.Uid && st.Gid == meta.Gid {
		mask &^= AttrOwner
	}
	if mask&AttrMtime != 0 && st.Mtim.Nano() == meta.Mtime {
		mask &^= AttrMtime
	}
	if mask&AttrOwner != 0 && t.s.owner {
		if err := unix.Fchownat(par.fd, par.name, int(meta.Uid), int(meta.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown %d:%d: %w", meta.Uid, meta.Gid, err)
		}
	}
	if mask&AttrMode != 0 && !isLink {
		if st.Mode&07777 == meta.Mode&07777 && mask&AttrOwner == 0 {
			// Unchanged, and no chown above cleared a setuid bit.
		} else if err := chmodNoFollow(par, meta.Mode&07777); err != nil {
			return fmt.Errorf("chmod %04o: %w", meta.Mode&07777, err)
		}
	} else if explicitMode {
		// An explicit chmod of a symlink: Linux has no symlink modes and
		// chmod(2) would follow it, so it cannot be what the master did.
		return fmt.Errorf("chmod: is a symlink, which is never followed: %w (%w)", unix.EOPNOTSUPP, errWrongType)
	}
	if mask&AttrXattrs != 0 && meta.Xattrs != nil {
		if err := setXattrsExact(par, meta.Xattrs); err != nil {
			return err
		}
	}
	if mask&AttrMtime != 0 {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(meta.Mtime)}
		if err := unix.UtimesNanoAt(par.fd, par.name, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set mtime: %w", err)
		}
	}
	return nil
}

// chmodNoFollow changes the mode of a non-symlink entry. fchmodat2 (Linux
// 6.6) takes AT_SYMLINK_NOFOLLOW; before it, an O_PATH|O_NOFOLLOW fd is
// checked not to be a symlink and chmod goes through its /proc magic link,
// which names the inode itself (what glibc's fchmodat emulation does).
func chmodNoFollow(par parent, mode uint32) error {
	err := unix.Fchmodat(par.fd, par.name, mode, unix.AT_SYMLINK_NOFOLLOW)
	if err != unix.EOPNOTSUPP && err != unix.ENOSYS {
		return err
	}
	fd, err := unix.Openat(par.fd, par.name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.EOPNOTSUPP
	}
	return unix.Fchmodat(unix.AT_FDCWD, "/proc/self/fd/"+strconv.Itoa(fd), mode, 0)
}

// checkPrivileged refuses, unless the Store allows them, what meta would
// set that a mail spool never needs and that would plant privileges on
// the standby: set-id bits on a non-directory (a directory's setgid is
// how shared mail folders keep their group, and stays allowed), file
// capabilities, and ACLs.
func (s *Store) checkPrivileged(isDir bool, mask Attr, meta Meta) error {
	if s.privOK {
		return nil
	}
	if mask&AttrMode != 0 && !isDir && meta.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
		return fmt.Errorf("set-id bits (mode %04o) on a non-directory: %w", meta.Mode&07777, ErrPrivileged)
	}
	if mask&AttrXattrs != 0 {
		for _, x := range meta.Xattrs {
			if err := s.checkXattr(x.Name); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkXattr refuses a privileged xattr name unless the Store allows it.
func (s *Store) checkXattr(name string) error {
	if !s.privOK && privilegedXattr(name) {
		return fmt.Errorf("xattr %s: %w", name, ErrPrivileged)
	}
	return nil
}

// privilegedXattr: file capabilities (which make a file's execution
// privileged as setuid does) and POSIX ACLs (which can grant what the mode
// bits deny).
func privilegedXattr(name string) bool {
	return name == "security.capability" || strings.HasPrefix(name, "system.posix_acl_")
}

// exactNamespace: xattrs in these namespaces are replaced exactly by Meta.
func exactNamespace(name string) bool {
	return strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.")
}

func setXattrsExact(par parent, want []Xattr) error {
	have, err := xattr.List(par.fd, par.name)
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, name := range have {
		if exactNamespace(name) && !slices.ContainsFunc(want, func(x Xattr) bool { return x.Name == name }) {
			if err := unix.Lremovexattr(par.proc(), name); err != nil && err != unix.ENODATA {
				return fmt.Errorf("remove xattr %s: %w", name, err)
			}
		}
	}
	for _, x := range want {
		if err := unix.Lsetxattr(par.proc(), x.Name, x.Value, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", x.Name, err)
		}
	}
	return nil
}

// SetAttr sets the parts of meta that mask selects on p, never following a
// symlink at p: AttrMode on a symlink is an error. Directory mtimes change
// only through SetAttr and Mkdir, never as a side effect the replica
// repairs: creating an entry moves its parent's mtime, so the master sends
// the parent's mtime after the children.
func (t *Txn) SetAttr(p string, mask Attr, meta Meta) error {
	return opErr("setattr", p, t.metaOp(p, func(par parent) error { return t.applyMeta(par, mask, meta) }))
}

// SetXattr sets one xattr on p (not following a symlink at p; Linux refuses
// user.* xattrs on symlinks).
func (t *Txn) SetXattr(p, name string, value []byte) error {
	if err := t.s.checkXattr(name); err != nil {
		return opErr("setxattr", p, err)
	}
	return opErr("setxattr "+name, p, t.metaOp(p, func(par parent) error {
		return unix.Lsetxattr(par.proc(), name, value, 0)
	}))
}

// RemoveXattr removes one xattr from p; a missing xattr is success.
func (t *Txn) RemoveXattr(p, name string) error {
	return opErr("removexattr "+name, p, t.metaOp(p, func(par parent) error {
		err := unix.Lremovexattr(par.proc(), name)
		if err == unix.ENODATA {
			return nil
		}
		return err
	}))
}

// metaOp runs a metadata change on p. It moves p's ctime, so an index entry
// for p that was valid before is re-stamped after (and one that was already
// stale is dropped).
func (t *Txn) metaOp(p string, fn func(parent) error) error {
	if err := t.check(); err != nil {
		return err
	}
	par, err := openParent(t.s.rootfd, p)
	if t.replay && errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer par.close()
	valid := t.indexValid(par, p)
	if err := fn(par); err != nil {
		if t.replay && errors.Is(err, unix.ENOENT) {
			return nil
		}
		return err
	}
	t.touchEntry(par)
	return t.restamp(par, p, valid)
}
