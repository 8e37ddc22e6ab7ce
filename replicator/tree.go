package replicator

import (
	"fmt"
	"os"
	"path"

	"golang.org/x/sys/unix"

	"spoolsync/internal/walk"
	"spoolsync/internal/xattr"
	"spoolsync/synclog"
	"spoolsync/wire"
)

// tree reads entries of the backing dir by their spool paths, never
// following a symlink anywhere in a path: a user who swaps a directory of
// their own for a symlink between an event and its batch must not make the
// replicator (which runs as root) read a file outside the spool and ship
// it as theirs. It keeps the last parent directory open, since the steps
// of a batch come in path order.
//
// A tree serves one batch: open it, resolve, close it.
type tree struct {
	backing string
	rootfd  int
	dev     uint64 // the backing dir's device
	dir     string // the directory dirfd is open at, "" for none
	dirfd   int
}

func openTree(backing string) (*tree, error) {
	fd, err := unix.Open(backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open the backing dir %s: %w", backing, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat the backing dir %s: %w", backing, err)
	}
	return &tree{backing: backing, rootfd: fd, dev: uint64(st.Dev), dirfd: -1}, nil
}

// sameObject reports whether st is the object whose events gave inode
// number ino (0: not known; trusted). The mount's inode numbers are the
// backing dir's on its own device; on another device (a filesystem
// mounted inside the spool) they are mixed with the device, and not
// compared.
func (t *tree) sameObject(st *unix.Stat_t, ino uint64) bool {
	return ino == 0 || uint64(st.Dev) != t.dev || st.Ino == ino
}

func (t *tree) close() {
	t.forgetDir()
	unix.Close(t.rootfd)
}

func (t *tree) forgetDir() {
	if t.dirfd >= 0 {
		unix.Close(t.dirfd)
	}
	t.dir, t.dirfd = "", -1
}

// parent opens the directory of spool path p beneath the root and returns
// it with p's final name. An error means there is no such directory now
// (or a symlink stands in its path): the object is gone.
func (t *tree) parent(p string) (int, string, error) {
	if p == "" || p == "." {
		return -1, "", os.ErrNotExist
	}
	dir, name := path.Split(p)
	dir = path.Clean(dir) // "." for the root
	if dir != t.dir || t.dirfd < 0 {
		t.forgetDir()
		fd, err := openBeneath(t.rootfd, dir)
		if err != nil {
			return -1, "", err
		}
		t.dir, t.dirfd = dir, fd
	}
	return t.dirfd, name, nil
}

// lstat stats the entry at p without following it.
func (t *tree) lstat(p string) (*unix.Stat_t, error) {
	dirfd, name, err := t.parent(p)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return nil, err
	}
	return &st, nil
}

// open opens the regular file at p; ok is false when there is no regular
// file there now. O_NONBLOCK: a fifo put there meanwhile must not block
// the replicator (the fstat then refuses it).
func (t *tree) open(p string) (*os.File, *unix.Stat_t, bool) {
	dirfd, name, err := t.parent(p)
	if err != nil {
		return nil, nil, false
	}
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
	if err == unix.EPERM { // O_NOATIME on a file we do not own
		fd, err = unix.Openat(dirfd, name, flags, 0)
	}
	if err != nil {
		return nil, nil, false
	}
	return regularFile(fd, path.Join(t.backing, p))
}

// regularFile wraps fd if it is a regular file, else closes it.
func regularFile(fd int, name string) (*os.File, *unix.Stat_t, bool) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, nil, false
	}
	return os.NewFile(uintptr(fd), name), &st, true
}

// openHandle opens the regular file a synclog.FileHandle names, on the
// backing dir's filesystem; false if it is gone (a stale handle) or not a
// regular file. The handle comes from the sync log, which only this
// process writes; a handle never outlives its inode's generation, so it
// cannot open a later file that reuses the inode number.
func (t *tree) openHandle(h string) (*os.File, *unix.Stat_t, bool) {
	typ, b, ok := synclog.ParseFileHandle(h)
	if !ok {
		return nil, nil, false
	}
	fd, err := unix.OpenByHandleAt(t.rootfd, unix.NewFileHandle(typ, b), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC)
	if err != nil {
		return nil, nil, false
	}
	return regularFile(fd, "handle "+h)
}

// statHandle stats the object a synclog.FileHandle names, of any type (a
// symlink's handle cannot be opened for reading); false if it is gone.
func (t *tree) statHandle(h string) (*unix.Stat_t, bool) {
	typ, b, ok := synclog.ParseFileHandle(h)
	if !ok {
		return nil, false
	}
	fd, err := unix.OpenByHandleAt(t.rootfd, unix.NewFileHandle(typ, b), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return nil, false
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return nil, false
	}
	return &st, true
}

// readlink returns the target of the symlink at p.
func (t *tree) readlink(p string) (string, error) {
	dirfd, name, err := t.parent(p)
	if err != nil {
		return "", err
	}
	return walk.Readlink(dirfd, name)
}

// xattrs returns the extended attributes of the entry at p (not following
// it), sorted by name; none when they cannot be read (it is gone, or the
// filesystem has none).
func (t *tree) xattrs(p string) []wire.Xattr {
	dirfd, name, err := t.parent(p)
	if err != nil {
		return nil
	}
	attrs, _ := xattr.Read(dirfd, name)
	return wireXattrs(attrs)
}

// openBeneath opens a directory of the backing tree without following a
// symlink anywhere in its path: a user's symlink in the spool must not
// take the walk out of it.
func openBeneath(rootfd int, dir string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS}
	for {
		fd, err := unix.Openat2(rootfd, dir, &how)
		switch err {
		case unix.EAGAIN, unix.EINTR:
			continue // a concurrent rename; RESOLVE_BENEATH asks to retry
		case unix.ENOSYS: // before Linux 5.6: only the last component is guarded
			return unix.Openat(rootfd, dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		return fd, err
	}
}
