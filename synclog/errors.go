package synclog

import (
	"errors"
	"fmt"
)

// Errors callers tell apart with errors.Is.
var (
	// ErrCorrupt: the log holds bytes that are neither valid records nor a
	// torn tail. Readers stop at it and Open refuses the log; it is always
	// wrapped in a *CorruptError that names the file and offset.
	ErrCorrupt = errors.New("synclog: corrupt sync log")
	// ErrLocked: another process has the log open for writing.
	ErrLocked = errors.New("synclog: sync log is locked by another process")
	// ErrPurged: the requested events were deleted after every cursor had
	// passed them; the channel needs a full resync.
	ErrPurged = errors.New("synclog: events no longer in the sync log")
	// ErrClosed: the Log or Reader was closed.
	ErrClosed = errors.New("synclog: closed")
	// ErrTooLarge: one Append call does not fit in a segment.
	ErrTooLarge = errors.New("synclog: append too large for a segment")
)

// CorruptError says where the log is damaged and what to do about it.
type CorruptError struct {
	Path   string // segment or cursor file
	Offset int64  // byte offset of the first bad record (0: the file header)
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("synclog: corrupt sync log: %s at offset %d: %s; "+
		"the events from there on cannot be trusted: keep a copy of the file for diagnosis, "+
		"move the sync_log_dir aside (spoolsync starts a new log) and run `spoolsync resync` "+
		"to bring every replica up to date", e.Path, e.Offset, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }
