package guid

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sparse makes a sparse file of size bytes (issue 15: one truncated to
// 2^50 bytes was hashed for ever; tmpfs takes 2^40).
func sparse(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sparse")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLimitMaxSize(t *testing.T) {
	p := sparse(t, 1<<40)
	c, _ := openTestCache(t)
	lim := Limit{MaxSize: 1 << 20}
	if _, err := c.HashAtLimited(unix.AT_FDCWD, p, SHA256, lim); !errors.Is(err, ErrTooLarge) {
		t.Errorf("HashAtLimited: %v, want ErrTooLarge", err)
	}
	if _, err := FileAtLimited(SHA256, unix.AT_FDCWD, p, lim); !errors.Is(err, ErrTooLarge) {
		t.Errorf("FileAtLimited: %v, want ErrTooLarge", err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := c.HashFDLimited(f, SHA256, lim); !errors.Is(err, ErrTooLarge) {
		t.Errorf("HashFDLimited: %v, want ErrTooLarge", err)
	}
	small := sparse(t, 1<<20)
	if _, err := c.HashAtLimited(unix.AT_FDCWD, small, SHA256, lim); err != nil {
		t.Errorf("a file of exactly the limit: %v", err)
	}
}

// TestLimitCanceled: a hash in progress stops when its context ends.
func TestLimitCanceled(t *testing.T) {
	p := sparse(t, 1<<40)
	c, _ := openTestCache(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := c.HashAtLimited(unix.AT_FDCWD, p, SHA256, Limit{Ctx: ctx}); !errors.Is(err, context.Canceled) {
		t.Errorf("HashAtLimited: %v, want context.Canceled", err)
	}
	if _, err := FileAtLimited(SHA256, unix.AT_FDCWD, p, Limit{Ctx: ctx}); !errors.Is(err, context.Canceled) {
		t.Errorf("FileAtLimited after cancel: %v, want context.Canceled", err)
	}
}
