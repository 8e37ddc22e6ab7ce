package fs

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPathOpsExcludeRenames: every operation the loopback does by backing
// path runs while no rename through the mount can (pathops.go). Otherwise a
// user could swap a folder of theirs for a symlink between this daemon
// computing a backing path and using it, and have the daemon (root) chmod,
// truncate, stat or list what the symlink points at, outside the spool.
// For each such operation the test holds it open at pathOpHook and renames
// through the mount meanwhile: the rename must wait until the operation
// is done.
func TestPathOpsExcludeRenames(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	f := tc.m_("f")
	writeFile(t, f, "x")
	must(t, os.Symlink("f", tc.m_("link")))
	must(t, unix.Setxattr(f, "user.a", []byte("1"), 0))
	buf := make([]byte, 64)
	cases := []struct {
		op string
		do func() error
	}{
		{"setattr", func() error { return os.Chmod(f, 0o640) }},
		{"getattr", func() error {
			var st unix.Statx_t
			return unix.Statx(unix.AT_FDCWD, f, unix.AT_STATX_FORCE_SYNC, unix.STATX_BASIC_STATS, &st)
		}},
		{"statx", func() error {
			var st unix.Statx_t
			return unix.Statx(unix.AT_FDCWD, tc.m_("link"), unix.AT_STATX_FORCE_SYNC|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st)
		}},
		{"lookup", func() error {
			if _, err := os.Lstat(tc.m_("not-there")); !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("lstat of a missing name: %v", err)
			}
			return nil
		}},
		{"readlink", func() error { _, err := os.Readlink(tc.m_("link")); return err }},
		{"getxattr", func() error { _, err := unix.Getxattr(f, "user.a", buf); return err }},
		{"listxattr", func() error { _, err := unix.Listxattr(f, buf); return err }},
		{"setxattr", func() error { return unix.Setxattr(f, "user.b", []byte("2"), 0) }},
		{"removexattr", func() error { return unix.Removexattr(f, "user.b") }},
		{"opendir", func() error { _, err := os.ReadDir(tc.mnt); return err }},
	}

	var mu sync.Mutex
	armed := ""
	held := make(chan bool, 1) // per case: did a rename finish while the op was held?
	var renames sync.WaitGroup
	renameN := 0
	tc.m.c.pathOpHook = func(op string) {
		mu.Lock()
		hold := op == armed
		if !hold {
			mu.Unlock()
			return
		}
		armed = ""
		from, to := tc.m_(fmt.Sprintf("r%d", renameN)), tc.m_(fmt.Sprintf("r%d", renameN+1))
		renameN++
		mu.Unlock()
		done := make(chan struct{})
		renames.Add(1)
		go func() {
			defer renames.Done()
			if err := os.Rename(from, to); err != nil {
				t.Errorf("%s: rename: %v", op, err)
			}
			close(done)
		}()
		select {
		case <-done:
			held <- true
		case <-time.After(300 * time.Millisecond):
			held <- false
		}
	}
	writeFile(t, tc.m_("r0"), "")
	for _, c := range cases {
		// Warm the kernel's caches so that only the operation under test
		// reaches the daemon as that op.
		os.Lstat(f)
		mu.Lock()
		armed = c.op
		mu.Unlock()
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.op, err)
		}
		mu.Lock()
		missed := armed != ""
		armed = ""
		mu.Unlock()
		renames.Wait()
		if missed {
			t.Errorf("%s did not run as a path operation (pathOp)", c.op)
			continue
		}
		if <-held {
			t.Errorf("%s: a rename through the mount completed while the operation was using its backing path", c.op)
		}
		// The rename goes through once the op is done: rename to the next name again.
		mu.Lock()
		n := renameN
		mu.Unlock()
		if _, err := os.Stat(tc.m_(fmt.Sprintf("r%d", n))); err != nil {
			t.Fatalf("%s: the rename held back never completed: %v", c.op, err)
		}
	}
}

// TestStatxOfSymlink: statx(2) of a symlink through the mount describes the
// symlink, not what it points at (the kernel's FUSE_STATX carries no
// "do not follow" flag; a daemon that followed would report another
// file's size and owner — anywhere on the host, for an absolute target).
func TestStatxOfSymlink(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	writeFile(t, tc.m_("a-rather-long-target-name"), strings.Repeat("x", 1000))
	must(t, os.Symlink("a-rather-long-target-name", tc.m_("link")))
	var st unix.Statx_t
	must(t, unix.Statx(unix.AT_FDCWD, tc.m_("link"), unix.AT_STATX_FORCE_SYNC|unix.AT_SYMLINK_NOFOLLOW,
		unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st))
	if want := uint64(len("a-rather-long-target-name")); st.Size != want {
		t.Fatalf("statx of the symlink: size %d, want its own %d", st.Size, want)
	}
}
