package synclog

import (
	"bytes"
	"testing"
)

func fuzzSeeds(f *testing.F, record bool) {
	for seq := uint64(1); seq <= uint64(len(allOps)); seq++ {
		e := testEvent(seq, 0)
		e.Seq = seq
		p := appendEvent(nil, e)
		if record {
			p = appendRecord(nil, p)
		}
		f.Add(p)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 16))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
}

// FuzzDecodeRecord: arbitrary bytes never panic or allocate beyond the
// input; a record that decodes re-encodes to the same bytes.
func FuzzDecodeRecord(f *testing.F) {
	fuzzSeeds(f, true)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, n, err := decodeRecord(b)
		if err != nil {
			return
		}
		if n > len(b) || n != recordSize(len(p)) {
			t.Fatalf("decodeRecord size %d for a %d-byte payload in %d bytes", n, len(p), len(b))
		}
		if again := appendRecord(nil, p); !bytes.Equal(again, b[:n]) {
			t.Fatalf("re-encoded record differs:\n got %x\nwant %x", again, b[:n])
		}
		decodeEvent(p)
	})
}

// FuzzDecodeEvent: arbitrary payloads never panic; allocations are bounded
// by the input (lengths are checked first); a payload that decodes is the
// one canonical encoding of its event.
func FuzzDecodeEvent(f *testing.F) {
	fuzzSeeds(f, false)
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := decodeEvent(b)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("decoded an invalid event: %v", err)
		}
		if again := appendEvent(nil, e); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded event differs:\n got %x\nwant %x", again, b)
		}
	})
}
