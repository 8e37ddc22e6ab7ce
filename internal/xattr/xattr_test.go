package xattr

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// TestRead covers no attributes, a few, a list longer than the first
// buffer, a symlink (never followed), both ways of naming a file, and both
// the listxattrat and the /proc fallback path.
func TestRead(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	many := filepath.Join(dir, "many")
	for _, p := range []string{plain, many} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var want []Attr
	for i := range 40 { // 40 names of ~20 bytes: past the 256-byte first try
		name := fmt.Sprintf("user.attribute-%02d", i)
		val := []byte(fmt.Sprint("v", i))
		if err := unix.Lsetxattr(many, name, val, 0); err != nil {
			if err == unix.EOPNOTSUPP {
				t.Skipf("no user xattrs on %s", dir)
			}
			t.Fatal(err)
		}
		want = append(want, Attr{name, val})
	}
	if err := os.Symlink("many", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	dirfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dirfd)
	defer noListAt.Store(false)
	for _, fallback := range []bool{false, true} {
		noListAt.Store(fallback)
		for _, c := range []struct {
			fd   int
			name string
			want []Attr
		}{
			{dirfd, "plain", nil},
			{dirfd, "many", want},
			{unix.AT_FDCWD, many, want},
			{dirfd, "link", nil}, // the symlink's own (none), not its target's
		} {
			got, err := Read(c.fd, c.name)
			if err != nil {
				t.Fatalf("fallback %v, %s: %v", fallback, c.name, err)
			}
			if !slices.EqualFunc(got, c.want, func(a, b Attr) bool { return a.Name == b.Name && string(a.Value) == string(b.Value) }) {
				t.Errorf("fallback %v, %s: got %d attributes, want %d", fallback, c.name, len(got), len(c.want))
			}
		}
	}
	if _, err := Read(dirfd, "missing"); err != unix.ENOENT {
		t.Errorf("missing file: %v, want ENOENT", err)
	}
	for _, c := range []struct {
		path string
		want []Attr
	}{{plain, nil}, {many, want}} {
		fd, err := unix.Open(c.path, unix.O_RDONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadFD(fd)
		unix.Close(fd)
		if err != nil || !slices.EqualFunc(got, c.want, func(a, b Attr) bool { return a.Name == b.Name && string(a.Value) == string(b.Value) }) {
			t.Errorf("ReadFD(%s): %d attributes, %v; want %d", c.path, len(got), err, len(c.want))
		}
	}
}
