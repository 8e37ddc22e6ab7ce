package replica

import (
	"errors"
	"strings"
)

// Sentinel errors callers tell apart with errors.Is.
var (
	// ErrBadPath: the path is not relative, clean, slash-separated and
	// within the length limits, or names the reserved .spoolsync dir.
	ErrBadPath = errors.New("bad path")
	// ErrOutsideRoot: the path would leave the replica root, lexically
	// ("..", absolute) or by resolving through a symlink.
	ErrOutsideRoot = errors.New("outside the replica root")
	// ErrAlreadyApplied: Begin was given a seq at or below AppliedSeq.
	ErrAlreadyApplied = errors.New("batch already applied")
	// ErrLocked: another process serves this state dir or root.
	ErrLocked = errors.New("locked by another spoolsync server")
	// ErrTxnDone: an op on a Txn after Commit or Abort.
	ErrTxnDone = errors.New("batch already committed or aborted")
	// ErrPrivileged: set-id bits on a non-directory, or a file
	// capability or ACL xattr, on a Store without AllowPrivileged.
	ErrPrivileged = errors.New("refused by this replica (set replica_allow_privileged: yes on it to allow)")
)

// Error is the error every replica operation returns: it names the op, the
// path(s) and the reason, e.g.
//
//	replica: rename user/bob/cur/1 -> user/bob/cur/1:2,S: no such file or directory
type Error struct {
	Op    string
	Path  string
	Path2 string // rename and link destination, else empty
	Err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("replica: ")
	b.WriteString(e.Op)
	if e.Path != "" {
		b.WriteString(" ")
		b.WriteString(e.Path)
	}
	if e.Path2 != "" {
		b.WriteString(" -> ")
		b.WriteString(e.Path2)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func opErr(op, p string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Path: p, Err: err}
}

func opErr2(op, p, p2 string, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Op: op, Path: p, Path2: p2, Err: err}
}
