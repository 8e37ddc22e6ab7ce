package fs

import (
	"os"
	"testing"
	"time"
)

// A file open read-only (kernel passthrough) while another handle writes it
// must work and show the new bytes: the kernel refuses to mix passthrough
// and cached opens of one inode (ETXTBSY) unless both agree.
func TestPassthroughMixedOpens(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	writeFile(t, tc.m_("f"), "aaaa")
	ro, err := os.Open(tc.m_("f"))
	must(t, err)
	defer ro.Close()
	buf := make([]byte, 4)
	_, err = ro.ReadAt(buf, 0)
	must(t, err)
	rw, err := os.OpenFile(tc.m_("f"), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open for writing while a read-only handle is open: %v", err)
	}
	_, err = rw.WriteAt([]byte("bb"), 1)
	must(t, err)
	must(t, rw.Close())
	_, err = ro.ReadAt(buf, 0)
	must(t, err)
	if string(buf) != "abba" {
		t.Errorf("read-only handle sees %q after the write, want %q", buf, "abba")
	}
	tc.log.take()
	// And the reverse order: a writer first, then a reader.
	rw, err = os.OpenFile(tc.m_("f"), os.O_RDWR, 0)
	must(t, err)
	defer rw.Close()
	ro2, err := os.Open(tc.m_("f"))
	if err != nil {
		t.Fatalf("open read-only while a writer is open: %v", err)
	}
	defer ro2.Close()
	_, err = rw.WriteAt([]byte("c"), 0)
	must(t, err)
	_, err = ro2.ReadAt(buf, 0)
	must(t, err)
	if string(buf) != "cbba" {
		t.Errorf("reader sees %q, want %q", buf, "cbba")
	}
}

// Writable handles must never offer a passthrough fd to go-fuse.
func TestWritableHandleHasNoPassthrough(t *testing.T) {
	type passthroughFder interface{ PassthroughFd() (int, bool) }
	if _, ok := any(&file{}).(passthroughFder); ok {
		t.Fatal("*file offers PassthroughFd: its writes would bypass the capture")
	}
}

// A file rewritten through a writable passthrough handle (a writer that
// joined a reader's passthrough mode) must read back new through a later
// cached handle. The mount asks the kernel not to drop cached pages when a
// file's mtime or size moves (ExplicitDataCacheControl), so this holds only
// because the kernel drops an inode's pages when it enters passthrough
// mode (measured on 6.18, even for opens with FOPEN_KEEP_CACHE): were it
// to keep them, pages an earlier cached handle left would be served here.
func TestPassthroughWriteDropsCachedPages(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	writeFile(t, tc.m_("f"), "old!")
	// Cached mode (a writable handle): its read fills the page cache,
	// kept across opens (FOPEN_KEEP_CACHE).
	rw, err := os.OpenFile(tc.m_("f"), os.O_RDWR, 0)
	must(t, err)
	buf := make([]byte, 4)
	_, err = rw.ReadAt(buf, 0)
	must(t, err)
	must(t, rw.Close())
	time.Sleep(cachedLinger + 100*time.Millisecond)

	ro, err := os.Open(tc.m_("f")) // passthrough
	must(t, err)
	w, err := os.OpenFile(tc.m_("f"), os.O_WRONLY, 0) // joins passthrough
	must(t, err)
	_, err = w.WriteAt([]byte("new!"), 0)
	must(t, err)
	must(t, w.Close())
	must(t, ro.Close())
	time.Sleep(cachedLinger + 100*time.Millisecond)

	rw, err = os.OpenFile(tc.m_("f"), os.O_RDWR, 0) // cached again
	must(t, err)
	defer rw.Close()
	_, err = rw.ReadAt(buf, 0)
	must(t, err)
	if string(buf) != "new!" {
		t.Errorf("a cached handle after a passthrough write reads %q, want %q", buf, "new!")
	}
}
