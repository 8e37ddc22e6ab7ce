package uring

import (
	"errors"
	"testing"
)

// entry builds a fuse_uring_req_header as the kernel fills it.
func entry(total, opcode uint32, unique uint64, commitID uint64, payload uint32) []byte {
	h := make([]byte, headerSize)
	le.PutUint32(h[inOutOff:], total)
	le.PutUint32(h[inOutOff+4:], opcode)
	le.PutUint64(h[inOutOff+8:], unique)
	le.PutUint64(h[commitIDOff:], commitID)
	le.PutUint32(h[payloadSizeOff:], payload)
	return h
}

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		name          string
		hdr           []byte
		wantOp, wantN int
		wantErr       bool
	}{
		{"write: 40-byte fuse_write_in, 4 KiB data", entry(40+40+4096, opWrite, 8, 8, 4096), 40, 4096, false},
		{"lookup: empty arg 0, name in payload", entry(40+6, 1, 10, 10, 6), 0, 6, false},
		{"getattr: no payload", entry(40+16, 3, 12, 12, 0), 16, 0, false},
		{"payload larger than buffer", entry(40+9000, opWrite, 8, 8, 9000-40), 0, 0, true},
		{"length shorter than header and payload", entry(40, 1, 8, 8, 6), 0, 0, true},
		{"fixed argument beyond op_in", entry(40+200, 1, 8, 8, 0), 0, 0, true},
		{"commit id not the request's", entry(40+16, 3, 12, 14, 0), 0, 0, true},
		{"short header buffer", make([]byte, 100), 0, 0, true},
	} {
		r, err := parseEntry(tc.hdr, 8192)
		if tc.wantErr {
			if !errors.Is(err, errBadEntry) {
				t.Errorf("%s: err %v, want errBadEntry", tc.name, err)
			}
			continue
		}
		if err != nil || r.opLen != tc.wantOp || r.payloadLen != tc.wantN {
			t.Errorf("%s: got op %d payload %d err %v, want %d %d", tc.name, r.opLen, r.payloadLen, err, tc.wantOp, tc.wantN)
		}
	}
}

// FuzzParseEntry: whatever the header holds, parseEntry either refuses
// it or returns sizes that fit the buffers the request is sliced from.
func FuzzParseEntry(f *testing.F) {
	f.Add(entry(40+40+4096, opWrite, 8, 8, 4096))
	f.Add(entry(40+6, 1, 10, 10, 6))
	f.Fuzz(func(t *testing.T, hdr []byte) {
		const payloadCap = 8192
		r, err := parseEntry(hdr, payloadCap)
		if err != nil {
			if !errors.Is(err, errBadEntry) {
				t.Fatalf("error %v is not errBadEntry", err)
			}
			return
		}
		if r.opLen < 0 || r.opLen > opInSize || r.payloadLen < 0 || r.payloadLen > payloadCap {
			t.Fatalf("sizes op %d payload %d do not fit", r.opLen, r.payloadLen)
		}
		_ = hdr[opInOff : opInOff+r.opLen]
	})
}
