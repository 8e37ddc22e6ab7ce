package synclog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path"
	"strings"
)

// Limits of an Event, checked by Append and by the decoder.
const (
	MaxStringLen = 64 << 10 // longest Path, Path2 or Name
	MaxRanges    = 4096     // most Ranges in one event; the FS layer splits or widens beyond this
)

// eventFormat is the first payload byte: the version of the event encoding.
// A new encoding gets a new value; the decoder rejects values it does not
// know rather than guess.
const eventFormat = 1

// errEncoding marks payloads that passed the CRC but are not a valid event.
var errEncoding = errors.New("bad event encoding")

// Validate reports whether e can be logged: a known Op, the fields that Op
// needs, clean relative paths, bounded lengths. It does not look at Seq or
// Time, which Append assigns.
func (e *Event) Validate() error {
	if !e.Op.Valid() {
		return fmt.Errorf("unknown op %d", uint8(e.Op))
	}
	if err := checkPath("path", e.Path); err != nil {
		return err
	}
	switch e.Op {
	case OpRename, OpLink:
		if err := checkPath("path2", e.Path2); err != nil {
			return err
		}
	case OpSymlink:
		if e.Path2 == "" {
			return errors.New("symlink without a target (path2)")
		}
	case OpSetxattr, OpRemovexattr:
		if e.Name == "" {
			return fmt.Errorf("%s without an attribute name", e.Op)
		}
	}
	if err := checkString("path2", e.Path2); err != nil {
		return err
	}
	if err := checkString("name", e.Name); err != nil {
		return err
	}
	if len(e.Ranges) > MaxRanges {
		return fmt.Errorf("%d ranges, more than %d", len(e.Ranges), MaxRanges)
	}
	for i, r := range e.Ranges {
		if r.Len == 0 || r.Off > math.MaxUint64-r.Len {
			return fmt.Errorf("range %d [%d, +%d) is empty or overflows", i, r.Off, r.Len)
		}
	}
	return nil
}

// checkString bounds a string and keeps NUL out of it: no path, symlink
// target or xattr name can hold one, and it keeps long zero runs out of
// records (a torn sector is recognised by being all zero).
func checkString(what, s string) error {
	if len(s) > MaxStringLen {
		return fmt.Errorf("%s is %d bytes, more than %d", what, len(s), MaxStringLen)
	}
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%s contains a NUL byte", what)
	}
	return nil
}

// checkPath accepts what DESIGN.md promises: relative, slash-separated,
// clean, the root being ".".
func checkPath(what, p string) error {
	if err := checkString(what, p); err != nil {
		return err
	}
	if p == "" {
		return fmt.Errorf("%s is empty", what)
	}
	if p[0] == '/' || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("%s %q is not a clean relative path", what, p)
	}
	return nil
}

// appendEvent appends the encoding of e (layout in doc.go) to b.
func appendEvent(b []byte, e *Event) []byte {
	b = append(b, eventFormat, byte(e.Op))
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendVarint(b, e.Time)
	b = binary.AppendUvarint(b, e.Ino)
	b = binary.AppendUvarint(b, e.Size)
	b = binary.AppendUvarint(b, uint64(e.Flags))
	for _, s := range [...]string{e.Path, e.Path2, e.Name} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(e.Ranges)))
	for _, r := range e.Ranges {
		b = binary.AppendUvarint(b, r.Off)
		b = binary.AppendUvarint(b, r.Len)
	}
	return b
}

// decodeEvent decodes and validates an event payload. Every length is
// checked against what is left of b before anything is allocated, and only
// the minimal varint encoding is accepted, so a payload has exactly one
// decoding and re-encodes to the same bytes.
func decodeEvent(b []byte) (*Event, error) {
	if len(b) < 2 {
		return nil, fmt.Errorf("%w: %d bytes", errEncoding, len(b))
	}
	if b[0] != eventFormat {
		return nil, fmt.Errorf("%w: unknown format %d (written by a newer spoolsync?)", errEncoding, b[0])
	}
	e := &Event{Op: Op(b[1])}
	d := decoder{b: b[2:]}
	e.Seq = d.uvarint("seq")
	e.Time = d.varint("time")
	e.Ino = d.uvarint("ino")
	e.Size = d.uvarint("size")
	flags := d.uvarint("flags")
	e.Path = d.string("path")
	e.Path2 = d.string("path2")
	e.Name = d.string("name")
	n := d.uvarint("range count")
	if d.err == nil && (n > MaxRanges || n > uint64(len(d.b))/2) {
		d.fail("range count %d is more than %d or than the bytes left", n, MaxRanges)
	}
	if d.err == nil && n > 0 {
		e.Ranges = make([]Range, n)
		for i := range e.Ranges {
			e.Ranges[i] = Range{Off: d.uvarint("range offset"), Len: d.uvarint("range length")}
		}
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err == nil && flags > math.MaxUint32 {
		d.fail("flags %#x overflow 32 bits", flags)
	}
	if d.err == nil && e.Seq == 0 {
		d.fail("seq 0")
	}
	if d.err != nil {
		return nil, d.err
	}
	e.Flags = uint32(flags)
	if err := e.Validate(); err != nil {
		return nil, fmt.Errorf("%w: seq %d: %v", errEncoding, e.Seq, err)
	}
	return e, nil
}

// decoder consumes b; the first error sticks and later calls return zero.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errEncoding}, args...)...)
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: truncated or overlong varint", what)
		return 0
	}
	if n > 1 && d.b[n-1] == 0 {
		d.fail("%s: non-minimal varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	u := d.uvarint(what) // zigzag, as binary.AppendVarint writes it
	return int64(u>>1) ^ -int64(u&1)
}

func (d *decoder) string(what string) string {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return ""
	}
	if n > MaxStringLen || n > uint64(len(d.b)) {
		d.fail("%s length %d is more than %d or than the %d bytes left", what, n, MaxStringLen, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
