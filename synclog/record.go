package synclog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
)

// Record framing: see doc.go for the byte layout.
const (
	recordHeaderSize = 8         // uint32 length + uint32 CRC32-C
	maxPayload       = 512 << 10 // larger than any valid event (3 × 64 KiB strings + MaxRanges ranges)
	sectorSize       = 512       // the unit a disk persists atomically (or not at all) on power loss
	readChunk        = 256 << 10 // how much a reader fetches per read(2)
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// Outcomes of decodeRecord other than a valid record. errNoRecord is the
// clean end of written data; the others mean the bytes at that offset are
// not a record, and whether that is a torn tail or corruption depends on
// what follows (see classifyTail).
var (
	errNoRecord      = errors.New("no record (zero header)")
	errShortRecord   = errors.New("record runs past the end of the file")
	errRecordLength  = errors.New("record length out of range")
	errRecordCRC     = errors.New("record checksum mismatch")
	errRecordPadding = errors.New("nonzero record padding")
)

// recordSize is the on-disk size of a record carrying n payload bytes:
// header, payload, zero padding to a multiple of 8.
func recordSize(n int) int { return (recordHeaderSize + n + 7) &^ 7 }

// recordCRC is the checksum stored in a record header: CRC32-C over the
// four length bytes followed by the payload, so a damaged length is caught
// even when it happens to point at a plausible payload.
func recordCRC(lenBytes, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(lenBytes, crcTable), crcTable, payload)
}

// sealRecord fills in the header of the record whose header starts at
// b[start] and whose payload runs to the end of b, and appends the padding.
func sealRecord(b []byte, start int) []byte {
	n := len(b) - start - recordHeaderSize
	hdr := b[start : start+recordHeaderSize]
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(n))
	binary.LittleEndian.PutUint32(hdr[4:8], recordCRC(hdr[0:4], b[start+recordHeaderSize:]))
	pad := recordSize(n) - recordHeaderSize - n
	return append(b, zeroPage[:pad]...)
}

// appendRecord frames payload as one record at the end of dst.
func appendRecord(dst, payload []byte) []byte {
	start := len(dst)
	dst = append(dst, zeroPage[:recordHeaderSize]...)
	dst = append(dst, payload...)
	return sealRecord(dst, start)
}

// decodeRecord decodes the record at the start of b, which holds every byte
// up to the end of the segment file (or at least recordSize of the length
// in the header). The payload aliases b.
func decodeRecord(b []byte) (payload []byte, size int, err error) {
	if len(b) < recordHeaderSize {
		if allZero(b) {
			return nil, 0, errNoRecord // the segment is full
		}
		return nil, 0, errShortRecord
	}
	n := binary.LittleEndian.Uint32(b[0:4])
	crc := binary.LittleEndian.Uint32(b[4:8])
	if n == 0 && crc == 0 {
		return nil, 0, errNoRecord
	}
	if n == 0 || n > maxPayload {
		return nil, 0, errRecordLength
	}
	size = recordSize(int(n))
	if len(b) < size {
		return nil, 0, errShortRecord
	}
	payload = b[recordHeaderSize : recordHeaderSize+int(n)]
	if recordCRC(b[0:4], payload) != crc {
		return nil, 0, errRecordCRC
	}
	if !allZero(b[recordHeaderSize+int(n) : size]) {
		return nil, 0, errRecordPadding
	}
	return payload, size, nil
}

// recReader reads records from a segment file through a buffer. The file
// may change under it (appends by the writer): whoever sees the end of the
// data or a bad record calls reset and looks again before deciding.
type recReader struct {
	f   io.ReaderAt
	end int64  // size of the file: no record extends past it
	buf []byte // file bytes [off, off+len(buf))
	off int64
}

func (r *recReader) reset() { r.buf = r.buf[:0] }

// peek returns the bytes [off, off+n), or fewer if the file ends sooner.
// n is at most recordSize(maxPayload), so the buffer stays bounded.
func (r *recReader) peek(off int64, n int) ([]byte, error) {
	if rem := r.end - off; int64(n) > rem {
		n = int(max(rem, 0))
	}
	if off >= r.off && off+int64(n) <= r.off+int64(len(r.buf)) {
		i := int(off - r.off)
		return r.buf[i : i+n], nil
	}
	size := int(min(int64(max(n, readChunk)), max(r.end-off, 0)))
	if cap(r.buf) < size {
		r.buf = make([]byte, size)
	}
	r.buf = r.buf[:size]
	m, err := r.f.ReadAt(r.buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		r.buf = r.buf[:0]
		return nil, err
	}
	r.buf, r.off = r.buf[:m], off
	return r.buf[:min(m, n)], nil
}

// record reads and checks the framing of the record at off.
func (r *recReader) record(off int64) (payload []byte, size int, err error) {
	h, err := r.peek(off, recordHeaderSize)
	if err != nil {
		return nil, 0, err
	}
	want := recordHeaderSize
	if len(h) == recordHeaderSize {
		if n := binary.LittleEndian.Uint32(h); n > 0 && n <= maxPayload {
			want = recordSize(int(n))
		}
	}
	b, err := r.peek(off, want)
	if err != nil {
		return nil, 0, err
	}
	return decodeRecord(b)
}

// isFramingError reports whether err came from decodeRecord rather than
// from reading the file.
func isFramingError(err error) bool {
	return errors.Is(err, errShortRecord) || errors.Is(err, errRecordLength) ||
		errors.Is(err, errRecordCRC) || errors.Is(err, errRecordPadding)
}

// tail describes a segment from the first offset that holds no valid record
// to the end of the file.
type tail struct {
	validAt     int64 // first later offset holding a valid record with Seq >= the expected one, or -1
	zeroSector  bool  // an all-zero 512-byte sector starts after the bad offset and before validAt
	lastNonZero int64 // offset just past the last nonzero byte (== the bad offset if all zero)
}

// torn reports whether the damage at the scanned offset is explainable by
// a write that never (completely) reached the disk: nothing valid follows,
// or a whole sector before the next valid record was never written. Data
// after an unwritten sector was never fdatasync'ed (syncs cover a prefix),
// so it was never acknowledged and may be dropped.
func (t tail) torn() bool { return t.validAt < 0 || t.zeroSector }

// scanTail streams [start, end) of f. It never holds more than a chunk and
// one candidate record in memory.
func scanTail(f io.ReaderAt, start, end int64, minSeq uint64) (tail, error) {
	t := tail{validAt: -1, lastNonZero: start}
	firstZero := int64(-1)
	cand := recReader{f: f, end: end}
	chunk := make([]byte, 1<<20)
	for off := start; off < end; {
		// Chunks after the first start on a sector boundary, so sectors
		// never straddle two chunks.
		next := min((off+int64(len(chunk)))&^(sectorSize-1), end)
		if next <= off {
			next = min(off+int64(len(chunk)), end)
		}
		b := chunk[:next-off]
		m, err := f.ReadAt(b, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return t, err
		}
		b = b[:m] // bytes past EOF count as zero
		if i := lastNonZeroIndex(b); i >= 0 {
			t.lastNonZero = off + int64(i) + 1
		}
		if t.validAt < 0 {
			if firstZero < 0 {
				firstZero = firstZeroSector(b, off, start)
			}
			for o := (off + 7) &^ 7; o+recordHeaderSize <= off+int64(len(b)); o += 8 {
				if o < start+recordHeaderSize {
					continue
				}
				h := b[o-off : o-off+recordHeaderSize]
				if n := binary.LittleEndian.Uint32(h); n == 0 || n > maxPayload || o+int64(recordSize(int(n))) > end {
					continue
				}
				p, _, err := cand.record(o)
				if err != nil {
					continue
				}
				if ev, err := decodeEvent(p); err == nil && ev.Seq >= minSeq {
					t.validAt = o
					break
				}
			}
		}
		if m < len(b) || int64(m) < next-off {
			break // EOF
		}
		off = next
	}
	t.zeroSector = firstZero >= 0 && (t.validAt < 0 || firstZero < t.validAt)
	return t, nil
}

// firstZeroSector returns the file offset of the first all-zero sector that
// lies wholly in b (which starts at file offset off) and starts after
// start, or -1.
func firstZeroSector(b []byte, off, start int64) int64 {
	for s := (off + sectorSize - 1) &^ (sectorSize - 1); s < off+int64(len(b)); s += sectorSize {
		if s <= start {
			continue
		}
		e := min(s+sectorSize, off+int64(len(b)))
		if allZero(b[s-off : e-off]) {
			return s
		}
	}
	return -1
}

var zeroPage = make([]byte, 64<<10)

func allZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroPage))
		if !bytes.Equal(b[:n], zeroPage[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

func lastNonZeroIndex(b []byte) int {
	for i := len(b); i > 0; {
		j := max(i-4096, 0)
		if !allZero(b[j:i]) {
			for k := i - 1; k >= j; k-- {
				if b[k] != 0 {
					return k
				}
			}
		}
		i = j
	}
	return -1
}
