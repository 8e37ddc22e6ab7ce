package replica

import (
	"errors"
	"path"
	"slices"

	"golang.org/x/sys/unix"

	"spoolsync/wire"
)

// errWrongType: an op found another type of entry at its name than it
// acts on (a symlink or fifo where it writes a file, a directory where it
// links one).
var errWrongType = errors.New("another type of entry is at the name")

// Unmet reports whether err, returned by an op of a Txn, means that the
// op's precondition does not hold on the tree: its object is gone, a name
// is in the way (another type, a non-empty directory), or a directory
// that should hold it is missing or not a directory. Such an op is not
// retried or refused: the caller records its paths with Owe and goes on
// with the batch, and the master brings those paths to its present state.
// A path the replica refuses (ErrBadPath, ErrOutsideRoot) or an error of
// the disk itself is not unmet.
func Unmet(err error) bool {
	var re *Error
	if !errors.As(err, &re) || errors.Is(err, ErrBadPath) || errors.Is(err, ErrOutsideRoot) || errors.Is(err, ErrTxnDone) {
		return false
	}
	if errors.Is(err, errWrongType) {
		return true
	}
	// ELOOP: the final name is a symlink where the op wants a file (a
	// symlink on the way to it is ErrOutsideRoot, refused above); ENXIO:
	// it is a fifo, which a non-blocking open for writing meets so.
	for _, e := range []unix.Errno{unix.ENOENT, unix.EEXIST, unix.ENOTEMPTY, unix.EISDIR, unix.ENOTDIR, unix.EINVAL, unix.ELOOP, unix.ENXIO} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// Owe records that the batch skipped an op touching paths (Unmet): the
// master owes the replica its present state of each. A path whose parent
// the replica lacks, or has as something else than a directory, is
// recorded as the topmost such ancestor, so that bringing the owed path
// to the master's state can create what is under it.
func (t *Txn) Owe(paths ...string) {
	if t.owed == nil {
		t.owed = map[string]bool{}
	}
	for _, p := range paths {
		if wire.ValidPath(p) != nil {
			continue
		}
		for d := path.Dir(p); d != "." && !t.isDir(d); d = path.Dir(d) {
			p = d
		}
		t.owed[p] = true
	}
}

// isDir reports whether p is a directory on the tree (not following
// symlinks).
func (t *Txn) isDir(p string) bool {
	par, err := openParent(t.s.rootfd, p)
	if err != nil {
		return false
	}
	defer par.close()
	st, err := par.lstat()
	return err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR
}

// Owed lists the paths Owe recorded, in wire.ComparePaths order, none
// inside another (the master's state of a directory covers what is
// below it).
func (t *Txn) Owed() []string {
	var out []string
	for p := range t.owed {
		out = append(out, p)
	}
	slices.SortFunc(out, wire.ComparePaths)
	top := out[:0]
	for _, p := range out {
		if n := len(top); n > 0 && (p == top[n-1] || len(p) > len(top[n-1]) && p[:len(top[n-1])+1] == top[n-1]+"/") {
			continue
		}
		top = append(top, p)
	}
	return top
}
