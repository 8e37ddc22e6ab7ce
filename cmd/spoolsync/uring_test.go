package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"spoolsync/fs/uring"
	"spoolsync/internal/testenv"
)

// TestMountFuseURing: the fuse_uring key chooses the transport, and the
// mounted line says which one is in use; on is refused, saying why, where
// the kernel does not offer io_uring.
func TestMountFuseURing(t *testing.T) {
	testenv.NeedFUSE(t)
	offered := uring.Unavailable() == nil
	for _, tc := range []struct{ value, want string }{
		{"auto", map[bool]string{true: "io_uring", false: "/dev/fuse"}[offered]},
		{"off", "/dev/fuse"},
		{"on", map[bool]string{true: "io_uring", false: ""}[offered]},
	} {
		t.Run(tc.value, func(t *testing.T) {
			e := newEnv(t, "fuse_uring: "+tc.value+"\n")
			p, _, err := startProc(t, []string{"mount", "-c", e.conf},
				func(l string) (string, bool) { return "", strings.Contains(l, "ready") },
				func() { detach(e.mnt) })
			if tc.want == "" {
				why := uring.Unavailable()
				if err == nil || why == nil || !strings.Contains(err.Error(), why.Error()) {
					t.Fatalf("fuse_uring: on without the kernel's io_uring: %v, want a refusal saying %v", err, why)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(e.mnt, "m"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			p.stop(t, syscall.SIGTERM)
			if !strings.Contains(p.stderr.String(), "fuse_transport="+tc.want) {
				t.Fatalf("mounted line does not say fuse_transport=%s:\n%s", tc.want, p.stderr)
			}
		})
	}
}
