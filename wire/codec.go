package wire

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Payload field encodings (see the package doc, "Field encodings"). The
// append* helpers build a payload; decoder reads one back, strictly:
// non-minimal varints, out-of-range booleans and trailing bytes are errors,
// so every payload has exactly one encoding.

func appendUvarint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendVarint(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendBytes(b, v []byte) []byte {
	b = appendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendString(b []byte, s string) []byte {
	b = appendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendGUID(b []byte, g GUID) []byte {
	b = append(b, g.Mode)
	return append(b, g.Digest()...)
}

// decoder reads the fields of one payload. The first error sticks: later
// reads return zero values, so message decoders read straight through and
// check d.err once.
type decoder struct {
	typ MsgType // for errors
	b   []byte
	err error
}

func (d *decoder) fail(code Code, field, format string, args ...any) {
	if d.err == nil {
		d.err = &ProtoError{Code: code, Msg: fmt.Sprintf("decode %v: %s: %s", d.typ, field, fmt.Sprintf(format, args...))}
	}
}

func (d *decoder) uvarint(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	switch {
	case n == 0:
		d.fail(CodeProtocol, field, "truncated")
		return 0
	case n < 0:
		d.fail(CodeProtocol, field, "varint overflows 64 bits")
		return 0
	case n > 1 && d.b[n-1] == 0:
		d.fail(CodeProtocol, field, "non-minimal varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(field string) int64 {
	u := d.uvarint(field)
	// Zigzag, as encoding/binary.PutVarint writes it.
	v := int64(u >> 1)
	if u&1 != 0 {
		v = ^v
	}
	return v
}

// uint32v reads a uvarint that must fit in 32 bits (uid, gid, mode...).
func (d *decoder) uint32v(field string) uint32 {
	v := d.uvarint(field)
	if v > 1<<32-1 {
		d.fail(CodeProtocol, field, "value %d does not fit in 32 bits", v)
		return 0
	}
	return uint32(v)
}

func (d *decoder) u8(field string) uint8 {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail(CodeProtocol, field, "truncated")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bool(field string) bool {
	switch v := d.u8(field); v {
	case 0:
		return false
	case 1:
		return true
	default:
		d.fail(CodeProtocol, field, "boolean byte is %d, not 0 or 1", v)
		return false
	}
}

// rawBytes returns the next n-length field without copying.
func (d *decoder) rawBytes(field string, max int) []byte {
	n := d.uvarint(field)
	if d.err != nil {
		return nil
	}
	if n > uint64(max) {
		d.fail(CodeTooLarge, field, "length %d over the limit %d", n, max)
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail(CodeProtocol, field, "length %d but only %d bytes left", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// bytes returns a copy: payload buffers are reused by the Conn.
func (d *decoder) bytes(field string, max int) []byte {
	v := d.rawBytes(field, max)
	if v == nil {
		return nil
	}
	return append([]byte{}, v...)
}

// text reads a string that must be valid UTF-8 without NUL: names and
// messages meant for people and logs.
func (d *decoder) text(field string, max int) string {
	v := d.rawBytes(field, max)
	if d.err == nil && !utf8.Valid(v) {
		d.fail(CodeProtocol, field, "not valid UTF-8")
	}
	return string(v)
}

// str reads a string with no content rule besides its length; the message's
// validate method applies the field's rule (ValidPath, xattr name...).
func (d *decoder) str(field string, max int) string {
	return string(d.rawBytes(field, max))
}

// count reads an element count, bounded by max and by the bytes left (each
// element takes at least minSize bytes), so a count can never make the
// decoder allocate more than the frame it came in.
func (d *decoder) count(field string, max, minSize int) int {
	n := d.uvarint(field)
	if d.err != nil {
		return 0
	}
	if n > uint64(max) {
		d.fail(CodeTooLarge, field, "count %d over the limit %d", n, max)
		return 0
	}
	if n*uint64(minSize) > uint64(len(d.b)) {
		d.fail(CodeProtocol, field, "count %d but only %d bytes left", n, len(d.b))
		return 0
	}
	return int(n)
}

func (d *decoder) guid(field string) GUID {
	var g GUID
	g.Mode = d.u8(field)
	if d.err != nil {
		return g
	}
	n := guidSize(g.Mode)
	if n < 0 {
		d.fail(CodeProtocol, field, "unknown GUID mode %d", g.Mode)
		return g
	}
	if len(d.b) < n {
		d.fail(CodeProtocol, field, "truncated digest")
		return g
	}
	copy(g.Sum[:], d.b[:n])
	d.b = d.b[n:]
	return g
}

// finish reports trailing bytes as an error, then the first error seen.
func (d *decoder) finish() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail(CodeProtocol, "payload", "%d trailing bytes", len(d.b))
	}
	return d.err
}
