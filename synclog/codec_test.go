package synclog

import (
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEventRoundTrip(t *testing.T) {
	for _, op := range allOps {
		t.Run(op.String(), func(t *testing.T) {
			// Every field set, whether or not the op uses it.
			want := &Event{
				Seq: 1<<40 + 7, Time: -1_700_000_000_123_456_789, Op: op,
				Path: "user/bob/cur/1700000000.M1P2.host:2,S", Path2: "user/bob/.Trash/cur/x",
				Name: "user.dovecot.guid", Ino: 1<<63 + 5, Size: 1 << 50, Flags: 0xffffffff,
				Ranges: []Range{{Off: 0, Len: 1}, {Off: 4096, Len: 1 << 33}},
			}
			b := appendEvent(nil, want)
			got, err := decodeEvent(b)
			if err != nil {
				t.Fatalf("decodeEvent: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("got %+v\nwant %+v", got, want)
			}
			rec := appendRecord(nil, b)
			p, n, err := decodeRecord(rec)
			if err != nil || n != len(rec) || string(p) != string(b) {
				t.Fatalf("decodeRecord = %d bytes, %d, %v; want %d bytes, %d, nil", len(p), n, err, len(b), len(rec))
			}
		})
	}
}

// TestRecordGolden pins the on-disk format described in doc.go.
func TestRecordGolden(t *testing.T) {
	e := &Event{Seq: 17, Time: 1_700_000_000_000_000_000, Op: OpRename,
		Path: "user/bob/cur/1.eml", Path2: "user/bob/new/1.eml", Ino: 42, Flags: 1}
	got := hex.EncodeToString(appendRecord(nil, appendEvent(nil, e)))
	// Cross-checked with an independent CRC32-C and varint encoder.
	want := "37000000" + "e69da97b" + // length 55, CRC32-C of length and payload
		"01" + "07" + "11" + // format 1, op rename, seq 17
		"8080d0e2c6bfce972f" + // time, zigzag varint
		"2a" + "00" + "01" + // ino 42, size 0, flags 1
		"12" + hex.EncodeToString([]byte("user/bob/cur/1.eml")) +
		"12" + hex.EncodeToString([]byte("user/bob/new/1.eml")) +
		"00" + "00" + // name "", no ranges
		"00" // padding to 64 bytes
	if got != want {
		t.Errorf("record bytes changed: the on-disk format is pinned\n got %s\nwant %s", got, want)
	}
	hdr := hex.EncodeToString(segment{index: 3, firstSeq: 0x12a00}.header())
	const wantHdr = "5350534c4f47310a" + "0300000000000000" + "002a010000000000" + "e679f0d3" + "00000000"
	if hdr != wantHdr {
		t.Errorf("segment header changed\n got %s\nwant %s", hdr, wantHdr)
	}
}

func TestEventValidate(t *testing.T) {
	long := strings.Repeat("a", MaxStringLen+1)
	for _, tc := range []struct {
		name string
		e    Event
		want string
	}{
		{"unknown op", Event{Op: opMax, Path: "a"}, "unknown op"},
		{"zero op", Event{Path: "a"}, "unknown op"},
		{"empty path", Event{Op: OpCreate}, "path is empty"},
		{"absolute", Event{Op: OpCreate, Path: "/etc/passwd"}, "not a clean relative path"},
		{"dotdot", Event{Op: OpCreate, Path: "../x"}, "not a clean relative path"},
		{"unclean", Event{Op: OpCreate, Path: "a//b"}, "not a clean relative path"},
		{"trailing slash", Event{Op: OpMkdir, Path: "a/"}, "not a clean relative path"},
		{"nul", Event{Op: OpCreate, Path: "a\x00b"}, "NUL"},
		{"long path", Event{Op: OpCreate, Path: long}, "more than"},
		{"long target", Event{Op: OpSymlink, Path: "l", Path2: long}, "more than"},
		{"rename without target", Event{Op: OpRename, Path: "a"}, "path2 is empty"},
		{"rename out of tree", Event{Op: OpRename, Path: "a", Path2: "/b"}, "not a clean relative path"},
		{"symlink without target", Event{Op: OpSymlink, Path: "a"}, "without a target"},
		{"xattr without name", Event{Op: OpSetxattr, Path: "a"}, "without an attribute name"},
		{"empty range", Event{Op: OpWrite, Path: "a", Ranges: []Range{{Off: 1}}}, "empty or overflows"},
		{"overflowing range", Event{Op: OpWrite, Path: "a", Ranges: []Range{{Off: 1 << 63, Len: 1 << 63}}}, "empty or overflows"},
		{"too many ranges", Event{Op: OpWrite, Path: "a", Ranges: make([]Range, MaxRanges+1)}, "more than"},
		{"root ok", Event{Op: OpSetattr, Path: "."}, ""},
		{"symlink anywhere ok", Event{Op: OpSymlink, Path: "l", Path2: "/var/../x"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.e.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestDecodeEventRejects(t *testing.T) {
	ev := testEvent(20, 0)
	ev.Seq = 20
	good := appendEvent(nil, ev)
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "0 bytes"},
		{"unknown format", append([]byte{2}, good[1:]...), "unknown format 2"},
		{"unknown op", append([]byte{1, 99}, good[2:]...), "unknown op"},
		{"truncated", good[:len(good)-1], "truncated"},
		{"trailing", append(good[:len(good):len(good)], 0), "trailing"},
		{"seq 0", []byte{1, 1, 0, 0, 0, 0, 0, 1, 'a', 0, 0, 0}, "seq 0"},
		{"non-minimal varint", []byte{1, 1, 0x81, 0x00, 0, 0, 0, 0, 1, 'a', 0, 0, 0}, "non-minimal"},
		{"huge string", []byte{1, 1, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "path length"},
		{"huge range count", []byte{1, 1, 1, 0, 0, 0, 0, 1, 'a', 0, 0, 0xff, 0xff, 0x03}, "range count"},
		{"flags overflow", []byte{1, 1, 1, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 1, 'a', 0, 0, 0}, "flags"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeEvent(tc.b)
			if err == nil || !errors.Is(err, errEncoding) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decodeEvent(%x) = %v, want errEncoding containing %q", tc.b, err, tc.want)
			}
		})
	}
}

func TestDecodeRecordOutcomes(t *testing.T) {
	rec := appendRecord(nil, appendEvent(nil, testEvent(5, 0)))
	flip := func(i int) []byte { b := append([]byte(nil), rec...); b[i] ^= 0x40; return b }
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"valid", rec, nil},
		{"zero header", make([]byte, 64), errNoRecord},
		{"segment full", make([]byte, 5), errNoRecord},
		{"short header", []byte{1, 2, 3}, errShortRecord},
		{"cut", rec[:len(rec)-9], errShortRecord},
		{"length too big", append([]byte{0, 0, 0, 0x10}, rec[4:]...), errRecordLength},
		{"zero length", append([]byte{0, 0, 0, 0}, rec[4:]...), errRecordLength},
		{"payload flip", flip(12), errRecordCRC},
		{"crc flip", flip(5), errRecordCRC},
		{"padding", flip(len(rec) - 1), errRecordPadding},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := decodeRecord(tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("decodeRecord = %v, want %v", err, tc.want)
			}
		})
	}
}
