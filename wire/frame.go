package wire

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Frame size limits. Each end states in the handshake the largest payload
// it accepts (MaxFrameSize), within [MinFrameSize, MaxFrameSizeLimit], and
// never sends a larger one.
const (
	DefaultMaxFrameSize = 4 << 20
	MinFrameSize        = 64 << 10
	MaxFrameSizeLimit   = 64 << 20
)

// Preamble is the first bytes each side sends: magic "CSYNC" and the
// protocol version.
const (
	Magic   = "CSYNC"
	Version = 1
)

const preamble = Magic + "\x01"

// maxHeaderLen is a frame header's largest size: the type byte and a
// 10-byte uvarint.
const maxHeaderLen = 11

// frameReader reads frames from a byte stream. The payload buffer is
// reused from frame to frame and grows only up to max, and only after the
// length was checked.
type frameReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

// next returns the next frame whose type this end knows or that is
// required (below 0x80); optional frames of unknown type are skipped by
// length without being buffered. A clean end of stream between frames is
// io.EOF; one inside a frame is io.ErrUnexpectedEOF; a bad header or an
// oversized length is a *ProtoError. The payload is valid until the next
// call.
func (fr *frameReader) next() (MsgType, []byte, error) {
	for {
		tb, err := fr.r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		t := MsgType(tb)
		n, err := readUvarint(fr.r)
		if err != nil {
			return 0, nil, fmt.Errorf("read %v frame length: %w", t, err)
		}
		if n > uint64(fr.max) {
			return 0, nil, &ProtoError{Code: CodeTooLarge, Msg: fmt.Sprintf("%v frame of %d bytes, over the limit %d", t, n, fr.max)}
		}
		if t.Optional() && newMessage(t) == nil {
			if _, err := fr.r.Discard(int(n)); err != nil {
				return 0, nil, fmt.Errorf("skip %v frame: %w", t, noEOF(err))
			}
			continue
		}
		if cap(fr.buf) < int(n) {
			fr.buf = make([]byte, n)
		}
		p := fr.buf[:n]
		if _, err := io.ReadFull(fr.r, p); err != nil {
			return 0, nil, fmt.Errorf("read %v frame payload of %d bytes: %w", t, n, noEOF(err))
		}
		return t, p, nil
	}
}

// readUvarint reads a minimal uvarint; end of stream inside it is
// io.ErrUnexpectedEOF.
func readUvarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, noEOF(err)
		}
		if i == 9 && b > 1 {
			break
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			if i > 0 && b == 0 {
				return 0, protoErrf(CodeProtocol, "non-minimal varint")
			}
			return v, nil
		}
	}
	return 0, protoErrf(CodeProtocol, "varint overflows 64 bits")
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// appendHeader appends a frame header for a payload of n bytes.
func appendHeader(b []byte, t MsgType, n int) []byte {
	return appendUvarint(append(b, byte(t)), uint64(n))
}

// AppendFrame appends m as a whole frame (header and payload) to b, after
// checking m is valid. It does not check a frame size limit.
func AppendFrame(b []byte, m Message) ([]byte, error) {
	p, err := Marshal(m)
	if err != nil {
		return b, err
	}
	return append(appendHeader(b, m.Type(), len(p)), p...), nil
}
