package server

import (
	"io/fs"

	"spoolsync/guid"
	"spoolsync/replica"
	"spoolsync/wire"
)

// Conversions between wire structs and replica types, all in one place.
// The numeric GUID modes are the same in both packages (both are protocol
// and on-disk values), so a GUID converts field by field.

func toGUID(g wire.GUID) guid.GUID { return guid.GUID{Mode: guid.Mode(g.Mode), Sum: g.Sum} }

func fromGUID(g guid.GUID) wire.GUID { return wire.GUID{Mode: uint8(g.Mode), Sum: g.Sum} }

func meta(mode, uid, gid uint32, mtime int64) replica.Meta {
	return replica.Meta{Mode: mode, Uid: uid, Gid: gid, Mtime: mtime}
}

func ranges(rs []wire.Range) []replica.Range {
	out := make([]replica.Range, len(rs))
	for i, r := range rs {
		// wire validates offsets and lengths against a size ≤ 2^63-1.
		out[i] = replica.Range{Off: int64(r.Off), Len: int64(r.Len)}
	}
	return out
}

func renameFlags(f uint32) replica.RenameFlags {
	var out replica.RenameFlags
	if f&wire.RenameNoReplace != 0 {
		out |= replica.NoReplace
	}
	if f&wire.RenameExchange != 0 {
		out |= replica.Exchange
	}
	return out
}

// setAttr maps a SetAttr mask: wire's AttrTimes carries mtime and atime,
// and the replica does not replicate atimes, so it becomes AttrMtime.
func setAttr(m *wire.SetAttr) (replica.Attr, replica.Meta) {
	var a replica.Attr
	if m.Mask&wire.AttrMode != 0 {
		a |= replica.AttrMode
	}
	if m.Mask&wire.AttrOwner != 0 {
		a |= replica.AttrOwner
	}
	if m.Mask&wire.AttrTimes != 0 {
		a |= replica.AttrMtime
	}
	return a, meta(m.Mode, m.UID, m.GID, m.Mtime)
}

// manifestEntry converts a replica entry; ok is false for kinds the
// protocol has no name for (devices), which a client cannot have
// created and which resync therefore leaves alone.
func manifestEntry(e replica.Entry) (*wire.ManifestEntry, bool) {
	m := &wire.ManifestEntry{Path: e.Path, Mode: e.Mode, UID: e.Uid, GID: e.Gid, Mtime: e.Mtime,
		Size: uint64(e.Size), Nlink: e.Nlink, Inode: e.Ino}
	switch e.Type {
	case 0:
		m.Kind, m.GUID = wire.KindFile, fromGUID(e.GUID)
	case fs.ModeDir:
		m.Kind, m.Size = wire.KindDir, 0
	case fs.ModeSymlink:
		m.Kind, m.Target = wire.KindSymlink, e.Target
	case fs.ModeNamedPipe:
		m.Kind = wire.KindFIFO
	case fs.ModeSocket:
		m.Kind = wire.KindSocket
	default:
		return nil, false
	}
	for _, x := range e.Xattrs {
		m.Xattrs = append(m.Xattrs, wire.Xattr{Name: x.Name, Value: x.Value})
	}
	return m, true
}
