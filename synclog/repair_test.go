package synclog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spoolsync/internal/testenv"
)

// TestTornTailEveryOffset cuts the last record at every offset, by
// truncating the file and by zeroing the rest of the (preallocated) file:
// the earlier records stay, the torn one goes, appends continue at its seq.
func TestTornTailEveryOffset(t *testing.T) {
	const n = 5
	dir := t.TempDir()
	l := openTestLog(t, dir, Options{FlushInterval: -1})
	appendN(t, l, n, 0)
	l.Close()
	path := segmentFiles(t, dir)[0]
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	recs := records(t, path)
	last := recs[n-1]
	for _, mode := range []string{"truncate", "zero"} {
		for cut := last.off; cut < last.off+last.size; cut++ {
			damaged := pristine[:cut]
			if mode == "zero" {
				damaged = append(damaged[:cut:cut], make([]byte, int64(len(pristine))-cut)...)
			}
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			// Cutting off only zero bytes (padding, a trailing zero varint)
			// leaves the record whole.
			want := uint64(n - 1)
			if allZero(pristine[cut : last.off+last.size]) {
				want = n
			}
			l, err := Open(Options{Dir: dir, SegmentSize: 64 << 10, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatalf("%s at %d: Open: %v", mode, cut, err)
			}
			if got := l.LastSeq(); got != want {
				t.Fatalf("%s at %d: LastSeq = %d, want %d", mode, cut, got, want)
			}
			if seq, err := l.Append(testEvent(want+1, 0)); err != nil || seq != want+1 {
				t.Fatalf("%s at %d: Append = %d, %v; want %d", mode, cut, seq, err, want+1)
			}
			if err := l.Sync(want + 1); err != nil {
				t.Fatal(err)
			}
			r, err := l.NewReader(1)
			if err != nil {
				t.Fatal(err)
			}
			readSeqs(t, r, 1, want+1, 0)
			r.Close()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// corruptFunc damages the single segment at path, whose records are recs,
// and says what Open must make of it.
type corruptFunc func(t *testing.T, path string, recs []recordPos) outcome

type outcome struct {
	keep      uint64 // torn tail: records that survive
	corruptAt int64  // corruption: offset the error names (-1: not corrupt)
}

func torn(keep uint64) outcome  { return outcome{keep: keep, corruptAt: -1} }
func corrupt(off int64) outcome { return outcome{corruptAt: off} }

func patch(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	patch(t, path, off, []byte{b[off] ^ 0x10})
}

// survivors counts the records that end at or before off.
func survivors(recs []recordPos, off int64) uint64 {
	var n uint64
	for _, r := range recs {
		if r.off+r.size <= off {
			n++
		}
	}
	return n
}

// TestRepair runs every kind of damage through one test, as etcd's
// repair tests do: torn tails are repaired by Open and waited on by
// OpenReader; corruption stops both with ErrCorrupt naming file and offset.
func TestRepair(t *testing.T) {
	const n = 20
	mid := n / 2
	cases := map[string]corruptFunc{
		"truncate inside the last record": func(t *testing.T, path string, recs []recordPos) outcome {
			last := recs[n-1]
			if err := os.Truncate(path, last.off+last.size/2); err != nil {
				t.Fatal(err)
			}
			return torn(n - 1)
		},
		"tear the last sector": func(t *testing.T, path string, recs []recordPos) outcome {
			last := recs[n-1]
			s := (last.off + last.size - 1) &^ (sectorSize - 1)
			patch(t, path, s, make([]byte, sectorSize))
			return torn(survivors(recs, s))
		},
		"zero a middle sector": func(t *testing.T, path string, recs []recordPos) outcome {
			// Unwritten sector in the middle: what follows was never
			// synced (syncs cover a prefix), so it is a torn tail too.
			s := (recs[mid].off + 100) &^ (sectorSize - 1)
			patch(t, path, s, make([]byte, sectorSize))
			return torn(survivors(recs, s))
		},
		"garbage after the last record": func(t *testing.T, path string, recs []recordPos) outcome {
			last := recs[n-1]
			patch(t, path, last.off+last.size, []byte("leftover of a failed write"))
			return torn(n)
		},
		"stale record after the last": func(t *testing.T, path string, recs []recordPos) outcome {
			b, _ := os.ReadFile(path)
			r := recs[3]
			patch(t, path, recs[n-1].off+recs[n-1].size, b[r.off:r.off+r.size])
			return torn(n)
		},
		"flip a payload byte of a middle record": func(t *testing.T, path string, recs []recordPos) outcome {
			flipByte(t, path, recs[mid].off+recordHeaderSize+7)
			return corrupt(recs[mid].off)
		},
		"flip a length byte of a middle record": func(t *testing.T, path string, recs []recordPos) outcome {
			flipByte(t, path, recs[mid].off+1)
			return corrupt(recs[mid].off)
		},
		"flip a CRC byte of a middle record": func(t *testing.T, path string, recs []recordPos) outcome {
			flipByte(t, path, recs[mid].off+5)
			return corrupt(recs[mid].off)
		},
		"flip a byte of the first record": func(t *testing.T, path string, recs []recordPos) outcome {
			flipByte(t, path, recs[0].off+recordHeaderSize+3)
			return corrupt(recs[0].off)
		},
		"flip a byte of the segment header": func(t *testing.T, path string, recs []recordPos) outcome {
			flipByte(t, path, 17)
			return corrupt(0)
		},
	}
	for name, damage := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l := openTestLog(t, dir, Options{FlushInterval: -1})
			appendN(t, l, n, 150) // records of ~200 bytes, some across sectors
			l.Close()
			path := segmentFiles(t, dir)[0]
			want := damage(t, path, records(t, path))

			// A reader from another process, before any repair.
			r, err := OpenReader(dir, 1)
			if want.corruptAt == 0 {
				checkCorrupt(t, "OpenReader", err, path, 0)
			} else {
				if err != nil {
					t.Fatal(err)
				}
				stop := want.keep
				if want.corruptAt > 0 {
					stop = survivors(records(t, path), want.corruptAt)
				}
				readSeqs(t, r, 1, stop, 150)
				if want.corruptAt > 0 {
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					_, err = r.Next(ctx)
					cancel()
					checkCorrupt(t, "OpenReader.Next", err, path, want.corruptAt)
				} else {
					expectNothing(t, r) // a torn tail is "not written yet"
				}
				r.Close()
				checkTryNext(t, dir, stop, want.corruptAt, path)
			}

			var logged testenv.Buffer
			l, err = Open(Options{Dir: dir, SegmentSize: 64 << 10, Logger: slog.New(slog.NewTextHandler(&logged, nil))})
			if want.corruptAt >= 0 {
				checkCorrupt(t, "Open", err, path, want.corruptAt)
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer l.Close()
			if got := l.LastSeq(); got != want.keep {
				t.Fatalf("LastSeq after repair = %d, want %d", got, want.keep)
			}
			if want.keep < n || name == "garbage after the last record" {
				if s := logged.String(); !strings.Contains(s, "torn tail") || !strings.Contains(s, filepath.Base(path)) {
					t.Errorf("repair not logged with the segment name: %q", s)
				}
			}
			appendN(t, l, 3, 150)
			r, err = l.NewReader(1)
			if err != nil {
				t.Fatal(err)
			}
			readSeqs(t, r, 1, want.keep+3, 150)
			r.Close()
			l.Close()
			// Repaired for good: a second open finds nothing to drop.
			logged = testenv.Buffer{}
			l = openTestLog(t, dir, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))})
			if l.LastSeq() != want.keep+3 || logged.String() != "" {
				t.Fatalf("second reopen: LastSeq %d (want %d), logged %q", l.LastSeq(), want.keep+3, logged.String())
			}
		})
	}
}

func checkCorrupt(t *testing.T, what string, err error, path string, off int64) {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("%s = %v, want ErrCorrupt", what, err)
	}
	var ce *CorruptError
	if !errors.As(err, &ce) || ce.Path != path || ce.Offset != off {
		t.Fatalf("%s = %v, want a CorruptError for %s at offset %d", what, err, path, off)
	}
	if msg := err.Error(); !strings.Contains(msg, filepath.Base(path)) || !strings.Contains(msg, fmt.Sprintf("offset %d", off)) ||
		!strings.Contains(msg, "resync") {
		t.Fatalf("%s: message %q should name the segment, the offset and what to do", what, msg)
	}
}

// TestCorruptOlderSegment: Open only scans the last segment, but a reader
// reaching damage in an older one stops with ErrCorrupt.
func TestCorruptOlderSegment(t *testing.T) {
	dir := t.TempDir()
	l := openTestLog(t, dir, Options{SegmentSize: 4 << 10})
	appendN(t, l, 100, 20)
	l.Close()
	first := segmentFiles(t, dir)[0]
	recs := records(t, first)
	flipByte(t, first, recs[2].off+recordHeaderSize+4)

	l = openTestLog(t, dir, Options{SegmentSize: 4 << 10})
	r, err := l.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readSeqs(t, r, 1, 2, 20)
	_, err = r.Next(context.Background())
	checkCorrupt(t, "Next", err, first, recs[2].off)
	// The last record of a full older segment is no torn tail either.
	r2, err := OpenReader(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	readSeqs(t, r2, 1, 2, 20)
	_, err = r2.Next(context.Background())
	checkCorrupt(t, "OpenReader.Next", err, first, recs[2].off)
}

// checkTryNext: the non-blocking read of `log dump` returns the events
// before the damage, then the end of the log (torn) or ErrCorrupt.
func checkTryNext(t *testing.T, dir string, n uint64, corruptAt int64, path string) {
	t.Helper()
	r, err := OpenReader(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got uint64
	for {
		ev, err := r.TryNext()
		if err != nil {
			if corruptAt < 0 {
				t.Fatalf("TryNext after %d events: %v", got, err)
			}
			checkCorrupt(t, "TryNext", err, path, corruptAt)
			break
		}
		if ev == nil {
			if corruptAt >= 0 {
				t.Fatalf("TryNext reported the end of the log after %d events, want ErrCorrupt", got)
			}
			break
		}
		got++
	}
	if got != n {
		t.Fatalf("TryNext returned %d events before stopping, want %d", got, n)
	}
}
