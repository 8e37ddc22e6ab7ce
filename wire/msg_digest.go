package wire

import "strings"

// Digest messages: the continuous verifier's questions (see the package
// doc, "Digests", and package digest for what a digest covers).

// MaxDigestDirs is the most directories one DigestRequest names.
const MaxDigestDirs = 1024

// DigestSize is the size of a tree digest (SHA-256).
const DigestSize = 32

// Digest is a directory digest or an entry's attribute hash.
type Digest [DigestSize]byte

// DigestDirReq is one directory a DigestRequest names, with the client's
// own digest of it.
type DigestDirReq struct {
	Path   string // "" for the root
	Digest Digest
}

// DigestRequest asks, between batches, for the digests of directories of
// the replica's tree, computed with file GUIDs in GUIDMode.
type DigestRequest struct {
	GUIDMode uint8
	Dirs     []DigestDirReq // 1 to MaxDigestDirs, strictly increasing (ComparePaths), "" first if present
}

// DigestTag byte values: what DigestReply says of a directory.
const (
	DigestAbsent uint8 = 0 // no such path on the replica
	DigestSame   uint8 = 1 // the replica's digest is the one asked about; no entries follow
	DigestDiffer uint8 = 2 // it differs: Count DigestEntry messages follow
	DigestNotDir uint8 = 3 // the path is there, but is not a directory
)

func (*DigestRequest) Type() MsgType { return TypeDigestRequest }
func (m *DigestRequest) appendPayload(b []byte) []byte {
	b = append(b, m.GUIDMode)
	b = appendUvarint(b, uint64(len(m.Dirs)))
	for _, d := range m.Dirs {
		b = append(appendString(b, d.Path), d.Digest[:]...)
	}
	return b
}
func (m *DigestRequest) decode(d *decoder) {
	m.GUIDMode = d.u8("guid mode")
	n := d.count("dirs", MaxDigestDirs, 1+DigestSize)
	m.Dirs = make([]DigestDirReq, n)
	for i := range m.Dirs {
		m.Dirs[i].Path = d.str("path", MaxPathLen)
		m.Dirs[i].Digest = d.digest("digest")
	}
}
func (m *DigestRequest) validate() error {
	if guidSize(m.GUIDMode) < 0 {
		return protoErrf(CodeProtocol, "DigestRequest: unknown GUID mode %d", m.GUIDMode)
	}
	if len(m.Dirs) == 0 || len(m.Dirs) > MaxDigestDirs {
		return protoErrf(CodeProtocol, "DigestRequest: %d directories, want 1 to %d", len(m.Dirs), MaxDigestDirs)
	}
	for i, d := range m.Dirs {
		if err := checkDigestPath("DigestRequest", d.Path); err != nil {
			return err
		}
		if i > 0 && (d.Path == "" || ComparePaths(m.Dirs[i-1].Path, d.Path) >= 0) {
			return &ProtoError{Code: CodeProtocol, Msg: "DigestRequest: directories not in order, or repeated", Path: truncPath(d.Path)}
		}
	}
	return nil
}

// checkDigestPath: "" (the root) or a valid path.
func checkDigestPath(msg, p string) error {
	if p == "" {
		return nil
	}
	return checkPath(msg, "path", p)
}

// DigestReply answers one directory of a DigestRequest, in the request's
// order. Digest is the replica's digest of Path (zero when Tag is
// DigestAbsent or DigestNotDir); with DigestDiffer, Count DigestEntry
// messages follow, the directory's entries sorted by name.
type DigestReply struct {
	Path   string
	Tag    uint8
	Digest Digest
	Count  uint64
}

func (*DigestReply) Type() MsgType { return TypeDigestReply }
func (m *DigestReply) appendPayload(b []byte) []byte {
	b = append(appendString(b, m.Path), m.Tag)
	return appendUvarint(append(b, m.Digest[:]...), m.Count)
}
func (m *DigestReply) decode(d *decoder) {
	m.Path, m.Tag = d.str("path", MaxPathLen), d.u8("tag")
	m.Digest, m.Count = d.digest("digest"), d.uvarint("count")
}
func (m *DigestReply) validate() error {
	if err := checkDigestPath("DigestReply", m.Path); err != nil {
		return err
	}
	switch m.Tag {
	case DigestAbsent, DigestNotDir:
		if m.Digest != (Digest{}) || m.Count != 0 {
			return protoErrf(CodeProtocol, "DigestReply %q: digest or entries for a path that is no directory", m.Path)
		}
	case DigestSame:
		if m.Count != 0 {
			return protoErrf(CodeProtocol, "DigestReply %q: entries for a directory that is the same", m.Path)
		}
	case DigestDiffer:
	default:
		return protoErrf(CodeProtocol, "DigestReply %q: unknown tag %d", m.Path, m.Tag)
	}
	return nil
}

// DigestEntry is one entry of the directory the last DigestReply named:
// its name (one path component), kind (KindFile...), attribute hash and,
// for a directory only, its digest.
type DigestEntry struct {
	Name string
	Kind uint8
	Attr Digest
	Sub  Digest // directories only; zero otherwise
}

func (*DigestEntry) Type() MsgType { return TypeDigestEntry }
func (m *DigestEntry) appendPayload(b []byte) []byte {
	b = append(appendString(b, m.Name), m.Kind)
	b = append(b, m.Attr[:]...)
	if m.Kind == KindDir {
		b = append(b, m.Sub[:]...)
	}
	return b
}
func (m *DigestEntry) decode(d *decoder) {
	m.Name, m.Kind, m.Attr = d.str("name", MaxNameLen), d.u8("kind"), d.digest("attr")
	if m.Kind == KindDir {
		m.Sub = d.digest("sub")
	}
}
func (m *DigestEntry) validate() error {
	if ValidPath(m.Name) != nil || strings.IndexByte(m.Name, '/') >= 0 {
		return &ProtoError{Code: CodeBadPath, Msg: "DigestEntry: name is not one path component", Path: truncPath(m.Name)}
	}
	switch m.Kind {
	case KindFile, KindSymlink, KindFIFO:
		if m.Sub != (Digest{}) {
			return protoErrf(CodeProtocol, "DigestEntry %q: digest of a non-directory", m.Name)
		}
	case KindDir:
	default:
		return protoErrf(CodeProtocol, "DigestEntry %q: unknown kind %d", m.Name, m.Kind)
	}
	return nil
}

func (d *decoder) digest(field string) Digest {
	var v Digest
	if d.err != nil {
		return v
	}
	if len(d.b) < DigestSize {
		d.fail(CodeProtocol, field, "truncated")
		return v
	}
	copy(v[:], d.b)
	d.b = d.b[DigestSize:]
	return v
}
