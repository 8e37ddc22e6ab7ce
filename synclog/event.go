package synclog

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// Op is the kind of change an Event records.
type Op uint8

// The operations the FUSE layer records. Values are part of the on-disk
// format: never renumber, only append.
const (
	OpCreate      Op = 1  // a new regular file at Path (open with O_CREAT that created it)
	OpWrite       Op = 2  // bytes in Ranges of Path changed (write, fallocate, copy_file_range target)
	OpTruncate    Op = 3  // Path was truncated or extended to Size bytes
	OpMkdir       Op = 4  // a new directory at Path
	OpRmdir       Op = 5  // the directory Path was removed
	OpUnlink      Op = 6  // the name Path was removed; Path2: the file's handle if other names keep it (see FileHandle)
	OpRename      Op = 7  // Path was renamed to Path2; Flags holds RENAME_NOREPLACE / RENAME_EXCHANGE; Name: the replaced file's handle if other names keep it
	OpLink        Op = 8  // Path2 is a new hard link to Path
	OpSymlink     Op = 9  // Path is a new symlink whose target is Path2
	OpMknod       Op = 10 // Path is a new special file (fifo); Flags holds the mode
	OpSetattr     Op = 11 // attributes of Path changed; Flags is a mask of Attr* bits
	OpSetxattr    Op = 12 // extended attribute Name of Path was set
	OpRemovexattr Op = 13 // extended attribute Name of Path was removed
	OpRescan      Op = 14 // Path may have changed without events (found after an unclean stop): ship it whole
	opMax         Op = 15
)

// Bits of Event.Flags for OpSetattr: which attributes changed.
const (
	AttrMode  uint32 = 1 << 0
	AttrOwner uint32 = 1 << 1
	AttrTimes uint32 = 1 << 2
)

var opNames = [...]string{
	OpCreate: "create", OpWrite: "write", OpTruncate: "truncate",
	OpMkdir: "mkdir", OpRmdir: "rmdir", OpUnlink: "unlink", OpRename: "rename",
	OpLink: "link", OpSymlink: "symlink", OpMknod: "mknod", OpSetattr: "setattr",
	OpSetxattr: "setxattr", OpRemovexattr: "removexattr", OpRescan: "rescan",
}

func (o Op) String() string {
	if o > 0 && o < opMax {
		return opNames[o]
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// Valid reports whether o is a known operation.
func (o Op) Valid() bool { return o > 0 && o < opMax }

// Range is a span of bytes [Off, Off+Len) of a file that changed.
type Range struct {
	Off uint64 `json:"off"`
	Len uint64 `json:"len"`
}

// Event is one change the mail server made to the spool. It names what
// changed, never the content: the replicator reads current content from the
// backing directory when it ships.
//
// Paths are relative to the spool root, slash-separated and clean, with no
// leading slash; the root itself is ".".
type Event struct {
	Seq    uint64  `json:"seq"`              // assigned by Log.Append, strictly increasing from 1
	Time   int64   `json:"time"`             // Unix nanoseconds when the change was logged
	Op     Op      `json:"op"`               //
	Path   string  `json:"path"`             //
	Path2  string  `json:"path2,omitempty"`  // rename/link destination, symlink target
	Name   string  `json:"name,omitempty"`   // xattr name
	Ino    uint64  `json:"ino,omitempty"`    // inode number in the backing filesystem
	Size   uint64  `json:"size,omitempty"`   // truncate: the new size
	Flags  uint32  `json:"flags,omitempty"`  // op-specific, see the Op constants
	Ranges []Range `json:"ranges,omitempty"` // write: the changed byte ranges, sorted, not overlapping
}

// MarshalText makes the op appear by name in JSON (`spoolsync log dump`).
func (o Op) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText accepts the names MarshalText writes.
func (o *Op) UnmarshalText(b []byte) error {
	for i, n := range opNames {
		if n != "" && n == string(b) {
			*o = Op(i)
			return nil
		}
	}
	return fmt.Errorf("unknown op %q", b)
}

// FileHandle is how an OpUnlink's Path2 (and an OpRename's Name, for the
// file the rename replaces) names a regular file that other hard links
// keep after the name is gone: its name_to_handle_at(2) handle,
// as "fh:<type>:<hex>". Writes made through Path and not yet shipped must
// still reach the replica's copy of that file, which its other names
// share, and once Path is gone the handle is the only way to read them
// (the other names may never have been seen by the mount).
func FileHandle(typ int32, handle []byte) string {
	return fmt.Sprintf("fh:%d:%x", typ, handle)
}

// ParseFileHandle reverses FileHandle; ok is false for anything else.
func ParseFileHandle(s string) (typ int32, handle []byte, ok bool) {
	rest, found := strings.CutPrefix(s, "fh:")
	if !found {
		return 0, nil, false
	}
	t, h, found := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(t, 10, 32)
	if !found || err != nil {
		return 0, nil, false
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) == 0 || len(b) > 128 { // MAX_HANDLE_SZ
		return 0, nil, false
	}
	return int32(n), b, true
}
