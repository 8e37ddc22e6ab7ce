package replica

import (
	"fmt"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Path limits, as Linux enforces them (NAME_MAX, PATH_MAX).
const (
	maxName = 255
	maxPath = 4096
)

// reserved is the replica's own directory under Root: temp files and the
// root lock. Clients can never name it.
const reserved = ".spoolsync"

// ValidPath reports whether p is a path a client may name: relative, clean,
// slash-separated, no NUL, no "." or ".." component, components of at most
// 255 bytes, at most 4096 bytes in all, and not .spoolsync or below it.
// The error names the path and wraps ErrBadPath (and ErrOutsideRoot for
// absolute paths and "..").
func ValidPath(p string) error {
	return opErr("check path", p, checkPath(p))
}

func checkPath(p string) error {
	bad := func(reason string) error { return fmt.Errorf("%s: %w", reason, ErrBadPath) }
	switch {
	case p == "":
		return bad("empty path")
	case len(p) > maxPath:
		return bad(fmt.Sprintf("path is %d bytes, longer than %d", len(p), maxPath))
	case strings.IndexByte(p, 0) >= 0:
		return bad("path contains a NUL byte")
	case p[0] == '/':
		return fmt.Errorf("absolute path: %w (%w)", ErrBadPath, ErrOutsideRoot)
	}
	for c := range strings.SplitSeq(p, "/") {
		switch {
		case c == "..":
			return fmt.Errorf(`".." component: %w (%w)`, ErrBadPath, ErrOutsideRoot)
		case c == "" || c == ".":
			return bad("path is not clean")
		case len(c) > maxName:
			return bad(fmt.Sprintf("component is %d bytes, longer than %d", len(c), maxName))
		}
	}
	if p == reserved || strings.HasPrefix(p, reserved+"/") {
		return bad(reserved + " is reserved for the replica's own state")
	}
	if p == QuarantineDir || strings.HasPrefix(p, QuarantineDir+"/") {
		return bad(QuarantineDir + " holds quarantined mail; only Quarantine moves files there")
	}
	return nil
}

// Resolution (see the package doc, "Confinement"): every path is split into
// its parent directory and final name. The parent is opened beneath the root
// fd with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS),
// so no symlink anywhere in it is followed, in-root or not; the final name is
// then used with *at syscalls that do not follow it (AT_SYMLINK_NOFOLLOW,
// O_NOFOLLOW, renameat2, unlinkat, linkat without AT_SYMLINK_FOLLOW).
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openDirBeneath opens dir (a checked path, or "." for the root) below
// rootfd as an O_RDONLY directory fd, which *at calls can use and fsync can
// flush.
func openDirBeneath(rootfd int, dir string) (int, error) {
	how := unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: resolveFlags}
	for range 8 {
		fd, err := unix.Openat2(rootfd, dir, &how)
		switch err {
		case nil:
			return fd, nil
		case unix.EAGAIN, unix.EINTR:
			// RESOLVE_BENEATH returns EAGAIN when a concurrent rename
			// could have moved a component; retry.
			continue
		case unix.ENOSYS:
			return walkDirBeneath(rootfd, dir)
		case unix.ELOOP, unix.EXDEV:
			return -1, fmt.Errorf("%q resolves through a symlink, which is never followed (%w): %w", dir, err, ErrOutsideRoot)
		default:
			return -1, err
		}
	}
	return -1, unix.EAGAIN
}

// walkDirBeneath is the fallback for kernels without openat2 (before 5.6):
// one openat(O_NOFOLLOW|O_DIRECTORY) per component of a checked path, which
// has no ".." and so cannot climb.
func walkDirBeneath(rootfd int, dir string) (int, error) {
	fd, err := unix.Openat(rootfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil || dir == "." {
		return fd, err
	}
	for c := range strings.SplitSeq(dir, "/") {
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOTDIR || err == unix.ELOOP {
			var st unix.Stat_t
			if unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = fmt.Errorf("%q resolves through a symlink, which is never followed (%w): %w", dir, unix.ELOOP, ErrOutsideRoot)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, err
		}
		fd = next
	}
	return fd, nil
}

// parent is an open parent directory and the final name within it.
type parent struct {
	fd   int
	name string
}

func (p parent) close() { unix.Close(p.fd) }

// proc names the entry through the parent's /proc/self/fd magic link. Only
// the dir fd is a magic link, and it already points beneath the root; name
// is a single component. The xattr syscalls have no *at form, so this is how
// they reach an entry without resolving its path again; with the l* forms
// (lsetxattr, ...) the final name is not followed either.
func (p parent) proc() string {
	return "/proc/self/fd/" + strconv.Itoa(p.fd) + "/" + p.name
}

// openParent checks p and opens its parent directory beneath rootfd.
func openParent(rootfd int, p string) (parent, error) {
	if err := checkPath(p); err != nil {
		return parent{}, err
	}
	dir, name := splitPath(p)
	fd, err := openDirBeneath(rootfd, dir)
	if err != nil {
		return parent{}, err
	}
	return parent{fd: fd, name: name}, nil
}

// splitPath splits a checked path into its directory ("." for the root)
// and its final name.
func splitPath(p string) (dir, name string) {
	dir, name = path.Split(p)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	return dir, name
}

// lstat stats the final name without following it.
func (p parent) lstat() (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(p.fd, p.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// openFile opens the final name as a regular file, never following a
// symlink and never blocking on a fifo.
func (p parent) openFile(flags int) (int, error) {
	fd, err := unix.Openat(p.fd, p.name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err == unix.ELOOP {
		return -1, fmt.Errorf("is a symlink, which is never followed: %w", err)
	}
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("not a regular file: %w", errWrongType)
	}
	return fd, nil
}

// fileID identifies an inode, to hold one fd per touched dir or file.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{uint64(st.Dev), st.Ino} }
