package replica

import (
	"bytes"
	"testing"

	"spoolsync/guid"
)

// Golden bytes of a v1 record: the on-disk format must not drift.
func TestRecordGolden(t *testing.T) {
	r := record{dev: 1, ino: 2, size: 3, mtime: 4, ctime: 5}
	want := []byte{1,
		0, 0, 0, 0, 0, 0, 0, 1,
		0, 0, 0, 0, 0, 0, 0, 2,
		0, 0, 0, 0, 0, 0, 0, 3,
		0, 0, 0, 0, 0, 0, 0, 4,
		0, 0, 0, 0, 0, 0, 0, 5}
	if got := r.encode(); !bytes.Equal(got, want) {
		t.Fatalf("encode = %v\nwant %v", got, want)
	}
	if back, err := decodeRecord(want); err != nil || back != r {
		t.Fatalf("decode = %+v, %v", back, err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(record{dev: 1, ino: 2, size: 3, mtime: 4, ctime: 5}.encode())
	f.Add([]byte{})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if !bytes.Equal(r.encode(), b) {
			t.Fatalf("accepted %x, re-encodes as %x", b, r.encode())
		}
	})
}

func FuzzDecodeEntryKey(f *testing.F) {
	g, _, _ := guid.Sum(guid.SHA1, bytes.NewReader(nil))
	f.Add(append(guidKey(g), "user/bob/cur/1"...))
	f.Add([]byte{1})
	f.Add(append(guidKey(g), "../etc/passwd"...))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, p, err := decodeEntryKey(b)
		if err != nil {
			return
		}
		if checkPath(p) != nil {
			t.Fatalf("accepted bad path %q", p)
		}
		if !bytes.Equal(append(guidKey(g), p...), b) {
			t.Fatalf("accepted %x, re-encodes differently", b)
		}
	})
}
