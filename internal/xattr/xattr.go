// Package xattr reads a file's extended attributes without following a
// final symlink, naming the file by an open directory and a name.
//
// Listing is the common case (a spool's files rarely carry any), and a
// resync lists every file of both trees: listxattrat(2) (Linux 6.13) does
// it relative to the directory, where the older llistxattr(2) must resolve
// a path — for a directory fd, its /proc/self/fd magic link, which measured
// as a fifth of a replica's manifest time. Older kernels fall back to that
// path. Values, rarely needed, are read through the path.
package xattr

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Attr is one extended attribute.
type Attr struct {
	Name  string
	Value []byte
}

// Path names the entry name of the directory open as dirfd for the xattr
// syscalls that have no *at form: through the directory's /proc/self/fd
// magic link, which already points where dirfd does, so only the single
// final component is resolved (and, with the l* calls, not followed).
// With unix.AT_FDCWD, name is a path and is returned as is.
func Path(dirfd int, name string) string {
	if dirfd == unix.AT_FDCWD {
		return name
	}
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// noListAt is set once the kernel has said it lacks listxattrat.
var noListAt atomic.Bool

func list(dirfd int, name string, buf []byte) (int, error) {
	if !noListAt.Load() {
		p, err := unix.BytePtrFromString(name)
		if err != nil {
			return 0, err
		}
		var bp unsafe.Pointer
		if len(buf) > 0 {
			bp = unsafe.Pointer(&buf[0])
		}
		n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
			unix.AT_SYMLINK_NOFOLLOW, uintptr(bp), uintptr(len(buf)), 0)
		if errno != unix.ENOSYS {
			if errno != 0 {
				return 0, errno
			}
			return int(n), nil
		}
		noListAt.Store(true)
	}
	return unix.Llistxattr(Path(dirfd, name), buf)
}

// List returns the names of the entry's extended attributes, sorted.
func List(dirfd int, name string) ([]string, error) {
	return listWith(func(buf []byte) (int, error) { return list(dirfd, name, buf) })
}

// Read returns the entry's extended attributes, sorted by name. One
// removed while it is read is left out.
func Read(dirfd int, name string) ([]Attr, error) {
	names, err := List(dirfd, name)
	if err != nil || len(names) == 0 {
		return nil, err
	}
	p := Path(dirfd, name)
	return readWith(names, func(attr string, buf []byte) (int, error) { return unix.Lgetxattr(p, attr, buf) })
}

// ReadFD is Read for an open file (not an O_PATH descriptor): the file a
// replicator reaches through its file handle, no name being left to it.
func ReadFD(fd int) ([]Attr, error) {
	names, err := listWith(func(buf []byte) (int, error) { return unix.Flistxattr(fd, buf) })
	if err != nil || len(names) == 0 {
		return nil, err
	}
	return readWith(names, func(attr string, buf []byte) (int, error) { return unix.Fgetxattr(fd, attr, buf) })
}

// listWith lists names with a listxattr-like call, growing the buffer
// when the list grew in between.
func listWith(list func(buf []byte) (int, error)) ([]string, error) {
	var small [256]byte
	n, err := list(small[:])
	buf := small[:]
	for err == unix.ERANGE {
		if n, err = list(nil); err != nil {
			return nil, err
		}
		buf = make([]byte, n)
		n, err = list(buf) // ERANGE again: it grew in between
	}
	if err != nil || n == 0 {
		return nil, err
	}
	var names []string
	for s := range strings.SplitSeq(string(buf[:n]), "\x00") {
		if s != "" {
			names = append(names, s)
		}
	}
	slices.Sort(names)
	return names, nil
}

// readWith reads the values of names with a getxattr-like call; one
// removed meanwhile is left out.
func readWith(names []string, get func(attr string, buf []byte) (int, error)) ([]Attr, error) {
	out := make([]Attr, 0, len(names))
	for _, attr := range names {
		for {
			n, err := get(attr, nil)
			if err == unix.ENODATA {
				break
			}
			if err != nil {
				return nil, &getError{attr, err}
			}
			v := make([]byte, n)
			n, err = get(attr, v)
			if err == unix.ERANGE {
				continue // grew in between
			}
			if err == unix.ENODATA {
				break
			}
			if err != nil {
				return nil, &getError{attr, err}
			}
			out = append(out, Attr{attr, v[:n]})
			break
		}
	}
	return out, nil
}

type getError struct {
	name string
	err  error
}

func (e *getError) Error() string { return "get xattr " + e.name + ": " + e.err.Error() }
func (e *getError) Unwrap() error { return e.err }
