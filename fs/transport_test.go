package fs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"spoolsync/fs/uring"
)

// kernelOffersUring says whether enable_uring is Y now.
func kernelOffersUring(t *testing.T) bool {
	t.Helper()
	return uring.Unavailable() == nil
}

// needUring skips t unless the kernel serves FUSE over io_uring, or fails
// it where SPOOLSYNC_REQUIRE_URING=1 asks for the io_uring transport.
func needUring(t *testing.T) {
	t.Helper()
	if why := uring.Unavailable(); why != nil {
		if os.Getenv("SPOOLSYNC_REQUIRE_URING") == "1" {
			t.Fatalf("SPOOLSYNC_REQUIRE_URING=1 but %v", why)
		}
		t.Skipf("%v", why)
	}
}

// TestTransportFollowsKernel: with fuse_uring auto, the mount uses
// io_uring exactly when the kernel offers it, and works either way.
func TestTransportFollowsKernel(t *testing.T) {
	want := TransportDevFUSE
	if kernelOffersUring(t) {
		want = TransportURing
	}
	tc := newTestCase(t, DefaultOptions())
	if got := tc.m.Transport(); got != want {
		t.Fatalf("transport %q, want %q (%s)", got, want, uring.ParamPath)
	}
	writeAndReadBack(t, tc)
}

// TestTransportOff: fuse_uring off reads /dev/fuse even where the kernel
// offers io_uring.
func TestTransportOff(t *testing.T) {
	opts := DefaultOptions()
	opts.Uring = "off"
	tc := newTestCase(t, opts)
	if got := tc.m.Transport(); got != TransportDevFUSE {
		t.Fatalf("transport %q, want %q", got, TransportDevFUSE)
	}
	writeAndReadBack(t, tc)
}

// TestTransportOnRefusedWithoutKernel: fuse_uring on is an error, saying
// why (the kernel switch, or io_uring refused), where the kernel does not
// offer io_uring.
func TestTransportOnRefusedWithoutKernel(t *testing.T) {
	why := uring.Unavailable()
	if why == nil {
		t.Skipf("%s is Y; this checks the refusal when it is N (scripts/test runs both)", uring.ParamPath)
	}
	opts := DefaultOptions()
	opts.Uring = "on"
	_, err := refusedMount(t, opts, "without io_uring")
	if !strings.Contains(err.Error(), "fuse_uring is on: "+why.Error()) {
		t.Fatalf("error %q does not say why: %v", err, why)
	}
}

// TestUringLargeIO moves data larger than one ring buffer both ways, so
// WRITE and READ payloads fill the slot buffers, and names and xattr
// values travel in the payload.
func TestUringLargeIO(t *testing.T) {
	needUring(t)
	opts := DefaultOptions()
	opts.Uring = "on"
	opts.Passthrough = false // every READ through the ring
	tc := newTestCase(t, opts)
	if got := tc.m.Transport(); got != TransportURing {
		t.Fatalf("transport %q", got)
	}
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16+3) // 1 MiB + 48
	name := strings.Repeat("n", 255)
	if err := os.WriteFile(tc.m_(name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(tc.m_(name))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes (err %v), want %d equal bytes", len(got), err, len(data))
	}
	if got, _ := os.ReadFile(tc.b(name)); !bytes.Equal(got, data) {
		t.Fatal("backing file differs")
	}
	ents, err := os.ReadDir(tc.mnt)
	if err != nil || len(ents) != 1 || ents[0].Name() != name {
		t.Fatalf("readdir: %v %v", ents, err)
	}
}

// TestUringRegistrationFailureFallsBack: when the kernel refuses the
// rings' registration (here: queues it does not have), it goes back to
// /dev/fuse for the connection, and so does the mount with fuse_uring
// auto; with fuse_uring on, the mount fails and says why.
func TestUringRegistrationFailureFallsBack(t *testing.T) {
	needUring(t)
	opts := DefaultOptions()
	opts.uringBadQueues = true
	tc := newTestCase(t, opts)
	if got := tc.m.Transport(); got != TransportDevFUSE {
		t.Fatalf("transport %q after failed registration, want %q", got, TransportDevFUSE)
	}
	writeAndReadBack(t, tc)

	opts.Uring = "on"
	mnt, err := refusedMount(t, opts, "although no ring registered")
	if !strings.Contains(err.Error(), "register queue") {
		t.Fatalf("error %q does not say the registration failed", err)
	}
	if mounted(t, mnt) {
		t.Fatalf("%s still mounted after the failed mount", mnt)
	}
}

func mounted(t *testing.T, dir string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Contains(string(b), " "+dir+" ")
}

func writeAndReadBack(t *testing.T, tc *testCase) {
	t.Helper()
	if err := os.WriteFile(tc.m_("f"), []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(tc.m_("f")); err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v", got, err)
	}
}

// refusedMount tries to mount with opts on fresh directories, which must
// fail: the test fails (saying the mount came up "why") if it does not.
// It returns the mount point and the error.
func refusedMount(t *testing.T, opts Options, why string) (string, error) {
	t.Helper()
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "b"), filepath.Join(dir, "m")
	os.Mkdir(backing, 0o755)
	os.Mkdir(mnt, 0o755)
	m, err := New(backing, mnt, &memLog{}, opts)
	if err == nil {
		m.Unmount(0)
		t.Fatal("fuse_uring on mounted " + why)
	}
	return mnt, err
}
