package wire

import (
	"math"
	"strings"
)

// Op messages, allowed only between BatchBegin and BatchEnd. Every path is
// relative to the replica root and passes ValidPath. Modes are permission
// bits only (07777); file types are implied by the op. Times are Unix
// nanoseconds. See the package doc for each op's meaning.

// Limits on op fields.
const (
	MaxRanges       = 1024     // ranges in one WriteRanges
	MaxXattrNameLen = 255      // XATTR_NAME_MAX
	MaxXattrValue   = 64 << 10 // XATTR_SIZE_MAX
	maxFileSize     = math.MaxInt64
)

// Content sources of a Put.
const (
	ContentInline uint8 = 1 // Size bytes follow in Data frames
	ContentByGUID uint8 = 2 // the replica copies content it already holds under GUID
)

// Put creates or replaces the regular file at Path as a whole.
type Put struct {
	Path     string
	Content  uint8 // ContentInline or ContentByGUID
	Mode     uint32
	UID, GID uint32
	Mtime    int64
	Size     uint64
	GUID     GUID // required for ContentByGUID, optional (zero) otherwise
}

func (*Put) Type() MsgType { return TypePut }

func (m *Put) appendPayload(b []byte) []byte {
	b = appendString(b, m.Path)
	b = append(b, m.Content)
	b = appendOwner(b, m.Mode, m.UID, m.GID, m.Mtime)
	b = appendUvarint(b, m.Size)
	return appendGUID(b, m.GUID)
}

func (m *Put) decode(d *decoder) {
	m.Path = d.str("path", MaxPathLen)
	m.Content = d.u8("content")
	m.Mode, m.UID, m.GID, m.Mtime = d.owner()
	m.Size = d.uvarint("size")
	m.GUID = d.guid("guid")
}

func (m *Put) validate() error {
	if err := firstErr(checkPath("Put", "path", m.Path), checkPerm("Put", m.Mode), checkSize("Put", m.Size), checkGUID("Put", m.GUID)); err != nil {
		return err
	}
	switch m.Content {
	case ContentInline:
	case ContentByGUID:
		if m.GUID.IsZero() {
			return protoErrf(CodeProtocol, "Put %q: content by GUID without a GUID", m.Path)
		}
	default:
		return protoErrf(CodeProtocol, "Put %q: unknown content source %d", m.Path, m.Content)
	}
	return nil
}

// DataLen is how many content bytes follow the Put in Data frames.
func (m *Put) DataLen() uint64 {
	if m.Content == ContentInline {
		return m.Size
	}
	return 0
}

// Range is a span [Off, Off+Len) of a file.
type Range struct{ Off, Len uint64 }

// WriteRanges changes part of the existing regular file at Path: it is set
// to Size bytes, then each range's bytes, which follow in Data frames in
// range order, are written at its offset. GUID, when not zero, is the
// file's GUID afterwards.
type WriteRanges struct {
	Path   string
	Size   uint64
	Ranges []Range
	GUID   GUID
}

func (*WriteRanges) Type() MsgType { return TypeWriteRanges }

func (m *WriteRanges) appendPayload(b []byte) []byte {
	b = appendString(b, m.Path)
	b = appendUvarint(b, m.Size)
	b = appendUvarint(b, uint64(len(m.Ranges)))
	for _, r := range m.Ranges {
		b = appendUvarint(b, r.Off)
		b = appendUvarint(b, r.Len)
	}
	return appendGUID(b, m.GUID)
}

func (m *WriteRanges) decode(d *decoder) {
	m.Path = d.str("path", MaxPathLen)
	m.Size = d.uvarint("size")
	n := d.count("ranges", MaxRanges, 2)
	m.Ranges = make([]Range, n)
	for i := range m.Ranges {
		m.Ranges[i] = Range{d.uvarint("range offset"), d.uvarint("range length")}
	}
	m.GUID = d.guid("guid")
}

func (m *WriteRanges) validate() error {
	if err := firstErr(checkPath("WriteRanges", "path", m.Path), checkSize("WriteRanges", m.Size), checkGUID("WriteRanges", m.GUID)); err != nil {
		return err
	}
	if len(m.Ranges) == 0 || len(m.Ranges) > MaxRanges {
		return protoErrf(CodeProtocol, "WriteRanges %q: %d ranges, want 1 to %d", m.Path, len(m.Ranges), MaxRanges)
	}
	var end uint64
	for i, r := range m.Ranges {
		switch {
		case r.Len == 0:
			return protoErrf(CodeProtocol, "WriteRanges %q: range %d is empty", m.Path, i)
		case i > 0 && r.Off < end:
			return protoErrf(CodeProtocol, "WriteRanges %q: range %d overlaps or is out of order", m.Path, i)
		case r.Off > m.Size || r.Len > m.Size-r.Off:
			return protoErrf(CodeProtocol, "WriteRanges %q: range %d [%d,+%d) ends past size %d", m.Path, i, r.Off, r.Len, m.Size)
		}
		end = r.Off + r.Len
	}
	return nil
}

// DataLen is how many content bytes follow in Data frames: the ranges'
// lengths added up.
func (m *WriteRanges) DataLen() uint64 {
	var n uint64
	for _, r := range m.Ranges {
		n += r.Len
	}
	return n
}

// Truncate sets the size of the existing regular file at Path.
type Truncate struct {
	Path string
	Size uint64
}

func (*Truncate) Type() MsgType { return TypeTruncate }
func (m *Truncate) appendPayload(b []byte) []byte {
	return appendUvarint(appendString(b, m.Path), m.Size)
}
func (m *Truncate) decode(d *decoder) { m.Path, m.Size = d.str("path", MaxPathLen), d.uvarint("size") }
func (m *Truncate) validate() error {
	return firstErr(checkPath("Truncate", "path", m.Path), checkSize("Truncate", m.Size))
}

// Mkdir creates the directory Path (or updates its attributes if it exists).
type Mkdir struct {
	Path     string
	Mode     uint32
	UID, GID uint32
	Mtime    int64
}

func (*Mkdir) Type() MsgType { return TypeMkdir }
func (m *Mkdir) appendPayload(b []byte) []byte {
	return appendOwner(appendString(b, m.Path), m.Mode, m.UID, m.GID, m.Mtime)
}
func (m *Mkdir) decode(d *decoder) {
	m.Path = d.str("path", MaxPathLen)
	m.Mode, m.UID, m.GID, m.Mtime = d.owner()
}
func (m *Mkdir) validate() error {
	return firstErr(checkPath("Mkdir", "path", m.Path), checkPerm("Mkdir", m.Mode))
}

// Rmdir removes the empty directory Path.
type Rmdir struct{ Path string }

func (*Rmdir) Type() MsgType                   { return TypeRmdir }
func (m *Rmdir) appendPayload(b []byte) []byte { return appendString(b, m.Path) }
func (m *Rmdir) decode(d *decoder)             { m.Path = d.str("path", MaxPathLen) }
func (m *Rmdir) validate() error               { return checkPath("Rmdir", "path", m.Path) }

// Unlink removes the non-directory name Path.
type Unlink struct{ Path string }

func (*Unlink) Type() MsgType                   { return TypeUnlink }
func (m *Unlink) appendPayload(b []byte) []byte { return appendString(b, m.Path) }
func (m *Unlink) decode(d *decoder)             { m.Path = d.str("path", MaxPathLen) }
func (m *Unlink) validate() error               { return checkPath("Unlink", "path", m.Path) }

// Rename flags, the values of Linux renameat2(2).
const (
	RenameNoReplace uint32 = 1 << 0 // fail if Dst exists
	RenameExchange  uint32 = 1 << 1 // swap Src and Dst atomically
)

// Rename renames Src to Dst, as renameat2(2) with Flags.
type Rename struct {
	Src, Dst string
	Flags    uint32
}

func (*Rename) Type() MsgType { return TypeRename }
func (m *Rename) appendPayload(b []byte) []byte {
	return appendUvarint(appendString(appendString(b, m.Src), m.Dst), uint64(m.Flags))
}
func (m *Rename) decode(d *decoder) {
	m.Src, m.Dst, m.Flags = d.str("src", MaxPathLen), d.str("dst", MaxPathLen), d.uint32v("flags")
}
func (m *Rename) validate() error {
	if err := firstErr(checkPath("Rename", "src", m.Src), checkPath("Rename", "dst", m.Dst)); err != nil {
		return err
	}
	if m.Flags&^(RenameNoReplace|RenameExchange) != 0 || m.Flags == RenameNoReplace|RenameExchange {
		return protoErrf(CodeProtocol, "Rename %q: invalid flags %#x", m.Src, m.Flags)
	}
	return nil
}

// Link makes New a hard link to the existing file Existing.
type Link struct{ Existing, New string }

func (*Link) Type() MsgType { return TypeLink }
func (m *Link) appendPayload(b []byte) []byte {
	return appendString(appendString(b, m.Existing), m.New)
}
func (m *Link) decode(d *decoder) {
	m.Existing, m.New = d.str("existing", MaxPathLen), d.str("new", MaxPathLen)
}
func (m *Link) validate() error {
	return firstErr(checkPath("Link", "existing", m.Existing), checkPath("Link", "new", m.New))
}

// Symlink creates the symbolic link Path pointing to Target. Target is
// stored verbatim and never followed by the replica, so it may be absolute
// or contain "..": only its length and NUL are checked.
type Symlink struct {
	Path, Target string
	UID, GID     uint32
	Mtime        int64
}

func (*Symlink) Type() MsgType { return TypeSymlink }
func (m *Symlink) appendPayload(b []byte) []byte {
	b = appendString(appendString(b, m.Path), m.Target)
	return appendVarint(appendUvarint(appendUvarint(b, uint64(m.UID)), uint64(m.GID)), m.Mtime)
}
func (m *Symlink) decode(d *decoder) {
	m.Path, m.Target = d.str("path", MaxPathLen), d.str("target", MaxPathLen)
	m.UID, m.GID, m.Mtime = d.uint32v("uid"), d.uint32v("gid"), d.varint("mtime")
}
func (m *Symlink) validate() error {
	if err := checkPath("Symlink", "path", m.Path); err != nil {
		return err
	}
	return checkTarget("Symlink", m.Path, m.Target)
}

// Mknod creates the special file Path of Kind, KindFIFO or KindSocket (the
// name a bind(2) left; a replica has nothing listening on it): a spool has
// no devices.
type Mknod struct {
	Path     string
	Kind     uint8
	Mode     uint32
	UID, GID uint32
	Mtime    int64
}

func (*Mknod) Type() MsgType { return TypeMknod }
func (m *Mknod) appendPayload(b []byte) []byte {
	return appendOwner(append(appendString(b, m.Path), m.Kind), m.Mode, m.UID, m.GID, m.Mtime)
}
func (m *Mknod) decode(d *decoder) {
	m.Path, m.Kind = d.str("path", MaxPathLen), d.u8("kind")
	m.Mode, m.UID, m.GID, m.Mtime = d.owner()
}
func (m *Mknod) validate() error {
	if err := firstErr(checkPath("Mknod", "path", m.Path), checkPerm("Mknod", m.Mode)); err != nil {
		return err
	}
	if m.Kind != KindFIFO && m.Kind != KindSocket {
		return protoErrf(CodeProtocol, "Mknod %q: unknown kind %d", m.Path, m.Kind)
	}
	return nil
}

// SetAttr mask bits: which attributes to set. Fields not in the mask are
// encoded but ignored.
const (
	AttrMode  uint32 = 1 << 0 // Mode
	AttrOwner uint32 = 1 << 1 // UID and GID
	AttrTimes uint32 = 1 << 2 // Mtime and Atime
	attrAll          = AttrMode | AttrOwner | AttrTimes
)

// SetAttr changes attributes of Path, without following it if it is a
// symlink.
type SetAttr struct {
	Path         string
	Mask         uint32
	Mode         uint32
	UID, GID     uint32
	Mtime, Atime int64
}

func (*SetAttr) Type() MsgType { return TypeSetAttr }
func (m *SetAttr) appendPayload(b []byte) []byte {
	b = appendUvarint(appendString(b, m.Path), uint64(m.Mask))
	return appendVarint(appendOwner(b, m.Mode, m.UID, m.GID, m.Mtime), m.Atime)
}
func (m *SetAttr) decode(d *decoder) {
	m.Path, m.Mask = d.str("path", MaxPathLen), d.uint32v("mask")
	m.Mode, m.UID, m.GID, m.Mtime = d.owner()
	m.Atime = d.varint("atime")
}
func (m *SetAttr) validate() error {
	if err := firstErr(checkPath("SetAttr", "path", m.Path), checkPerm("SetAttr", m.Mode)); err != nil {
		return err
	}
	if m.Mask == 0 || m.Mask&^attrAll != 0 {
		return protoErrf(CodeProtocol, "SetAttr %q: invalid mask %#x", m.Path, m.Mask)
	}
	return nil
}

// SetXattr sets the extended attribute Name of Path (not following a
// symlink) to Value.
type SetXattr struct {
	Path, Name string
	Value      []byte
}

func (*SetXattr) Type() MsgType { return TypeSetXattr }
func (m *SetXattr) appendPayload(b []byte) []byte {
	return appendBytes(appendString(appendString(b, m.Path), m.Name), m.Value)
}
func (m *SetXattr) decode(d *decoder) {
	m.Path, m.Name = d.str("path", MaxPathLen), d.str("name", MaxXattrNameLen)
	m.Value = d.bytes("value", MaxXattrValue)
}
func (m *SetXattr) validate() error {
	return firstErr(checkPath("SetXattr", "path", m.Path), checkXattr("SetXattr", m.Path, m.Name, m.Value))
}

// RemoveXattr removes the extended attribute Name of Path.
type RemoveXattr struct{ Path, Name string }

func (*RemoveXattr) Type() MsgType { return TypeRemoveXattr }
func (m *RemoveXattr) appendPayload(b []byte) []byte {
	return appendString(appendString(b, m.Path), m.Name)
}
func (m *RemoveXattr) decode(d *decoder) {
	m.Path, m.Name = d.str("path", MaxPathLen), d.str("name", MaxXattrNameLen)
}
func (m *RemoveXattr) validate() error {
	return firstErr(checkPath("RemoveXattr", "path", m.Path), checkXattr("RemoveXattr", m.Path, m.Name, nil))
}

// SetXattrs makes Attrs (sorted by name, names unique) the extended
// attributes of Path (not following a symlink): the others in the user.
// and trusted. namespaces are removed (see the package doc).
type SetXattrs struct {
	Path  string
	Attrs []Xattr
}

func (*SetXattrs) Type() MsgType { return TypeSetXattrs }
func (m *SetXattrs) appendPayload(b []byte) []byte {
	return appendXattrs(appendString(b, m.Path), m.Attrs)
}
func (m *SetXattrs) decode(d *decoder) {
	m.Path, m.Attrs = d.str("path", MaxPathLen), d.xattrs()
}
func (m *SetXattrs) validate() error {
	return firstErr(checkPath("SetXattrs", "path", m.Path), checkXattrs("SetXattrs", m.Path, m.Attrs))
}

// Quarantine moves Path (a file, or a directory with everything below it)
// out of the live tree into the replica's quarantine, as
// .spoolsync-quarantine/<Epoch>/<Path>. A master sends it, in failback,
// for what only the replica holds: mail the old master received after its
// last shipped batch is kept for the administrator, never deleted.
type Quarantine struct {
	Path  string
	Epoch uint64
}

func (*Quarantine) Type() MsgType { return TypeQuarantine }
func (m *Quarantine) appendPayload(b []byte) []byte {
	return appendUvarint(appendString(b, m.Path), m.Epoch)
}
func (m *Quarantine) decode(d *decoder) {
	m.Path, m.Epoch = d.str("path", MaxPathLen), d.uvarint("epoch")
}
func (m *Quarantine) validate() error { return checkPath("Quarantine", "path", m.Path) }

// appendOwner writes the mode, uid, gid, mtime group shared by several ops.
func appendOwner(b []byte, mode, uid, gid uint32, mtime int64) []byte {
	b = appendUvarint(b, uint64(mode))
	b = appendUvarint(b, uint64(uid))
	b = appendUvarint(b, uint64(gid))
	return appendVarint(b, mtime)
}

func (d *decoder) owner() (mode, uid, gid uint32, mtime int64) {
	return d.uint32v("mode"), d.uint32v("uid"), d.uint32v("gid"), d.varint("mtime")
}

func checkSize(msg string, n uint64) error {
	if n > maxFileSize {
		return protoErrf(CodeProtocol, "%s: size %d over the limit %d", msg, n, uint64(maxFileSize))
	}
	return nil
}

func checkGUID(msg string, g GUID) error {
	if err := g.Valid(); err != nil {
		return protoErrf(CodeProtocol, "%s: %v", msg, err)
	}
	return nil
}

func checkTarget(msg, p, target string) error {
	if target == "" || len(target) > MaxPathLen || strings.IndexByte(target, 0) >= 0 {
		return &ProtoError{Code: CodeBadPath, Msg: msg + ": symlink target is empty, over 4096 bytes or contains NUL", Path: truncPath(p)}
	}
	return nil
}

// xattrNamespaces are the namespaces Linux accepts (xattr(7)).
var xattrNamespaces = []string{"user.", "trusted.", "security.", "system."}

// appendXattrs writes a list of xattrs: n:uvarint n×(name:string value:bytes).
func appendXattrs(b []byte, xs []Xattr) []byte {
	b = appendUvarint(b, uint64(len(xs)))
	for _, x := range xs {
		b = appendBytes(appendString(b, x.Name), x.Value)
	}
	return b
}

// xattrs reads what appendXattrs wrote; nil for none.
func (d *decoder) xattrs() []Xattr {
	n := d.count("xattrs", MaxXattrs, 2)
	if n == 0 {
		return nil
	}
	xs := make([]Xattr, n)
	for i := range xs {
		xs[i] = Xattr{d.str("xattr name", MaxXattrNameLen), d.bytes("xattr value", MaxXattrValue)}
	}
	return xs
}

// checkXattrs checks a list of xattrs: at most MaxXattrs, each valid,
// sorted by name with no name twice.
func checkXattrs(msg, p string, xs []Xattr) error {
	if len(xs) > MaxXattrs {
		return protoErrf(CodeTooLarge, "%s %q: %d xattrs, over the limit %d", msg, p, len(xs), MaxXattrs)
	}
	for i, x := range xs {
		if err := checkXattr(msg, p, x.Name, x.Value); err != nil {
			return err
		}
		if i > 0 && xs[i-1].Name >= x.Name {
			return protoErrf(CodeProtocol, "%s %q: xattrs not sorted or repeated", msg, p)
		}
	}
	return nil
}

func checkXattr(msg, p, name string, value []byte) error {
	ns := false
	for _, prefix := range xattrNamespaces {
		ns = ns || (strings.HasPrefix(name, prefix) && len(name) > len(prefix))
	}
	switch {
	case len(name) > MaxXattrNameLen || strings.IndexByte(name, 0) >= 0 || !ns:
		return protoErrf(CodeProtocol, "%s %q: invalid xattr name %q", msg, p, truncPath(name))
	case len(value) > MaxXattrValue:
		return protoErrf(CodeTooLarge, "%s %q: xattr value of %d bytes, over the limit %d", msg, p, len(value), MaxXattrValue)
	}
	return nil
}
