package synclog

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// needRoot skips a test that needs root, except where
// SPOOLSYNC_REQUIRE_FUSE=1 says the environment must provide it (CI).
func needRoot(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("SPOOLSYNC_REQUIRE_FUSE") == "1" {
		t.Fatalf("%s (SPOOLSYNC_REQUIRE_FUSE=1 requires it)", why)
	}
	t.Skip(why)
}

// TestDiskFull fills a tiny tmpfs: appends fail instead of claiming
// success, and work again, without holes, once space is freed.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		needRoot(t, "mounting a 2 MiB tmpfs needs root")
	}
	mnt := t.TempDir()
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=2m"); err != nil {
		needRoot(t, "cannot mount a tmpfs: "+err.Error())
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(mnt, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	dir := filepath.Join(mnt, "log")
	opts := Options{Dir: dir, SegmentSize: 128 << 10, Logger: slog.New(slog.DiscardHandler)}
	l, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	filler := filepath.Join(mnt, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = f.Write(make([]byte, 4096))
	}
	f.Close()
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("filling the tmpfs: %v, want ENOSPC", err)
	}

	var good uint64 // every seq up to here was acknowledged
	var failure error
	for i := 0; i < 10000 && failure == nil; i++ {
		seq := l.LastSeq() + 1
		last, err := l.Append(testEvent(seq, 100))
		if err == nil {
			err = l.Sync(last)
		}
		if err != nil {
			failure = err
			break
		}
		good = last
	}
	if failure == nil {
		t.Fatal("appended 10000 events to a full filesystem without an error")
	}
	t.Logf("after seq %d: %v", good, failure)
	if !errors.Is(failure, syscall.ENOSPC) {
		t.Errorf("error %v does not say ENOSPC", failure)
	}
	if _, err := l.Append(testEvent(good+1, 100)); err == nil {
		t.Fatal("Append succeeded while the filesystem is still full")
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		seq := l.LastSeq() + 1
		if seq != good+1 {
			t.Fatalf("next seq %d after the failures, want %d", seq, good+1)
		}
		last, err := l.Append(testEvent(seq, 100))
		if err == nil {
			err = l.Sync(last)
		}
		if err != nil {
			t.Fatalf("Append after freeing space: %v", err)
		}
		good = last
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	l = openTestLog(t, dir, opts)
	if l.LastSeq() != good {
		t.Fatalf("LastSeq after reopen = %d, want %d", l.LastSeq(), good)
	}
	r, err := l.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readSeqs(t, r, 1, good, 100)
}
