package treecmp

import (
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var time0 = time.Unix(0, 0)

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// twin builds the same small tree under a and b.
func twin(t *testing.T) (a, b string) {
	a, b = t.TempDir(), t.TempDir()
	for _, root := range []string{a, b} {
		write(t, filepath.Join(root, "d/f"), "hello")
		write(t, filepath.Join(root, "d/e/g"), "world")
		if err := os.Link(filepath.Join(root, "d/f"), filepath.Join(root, "d/h")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("f", filepath.Join(root, "d/s")); err != nil {
			t.Fatal(err)
		}
		write(t, filepath.Join(root, ".spoolsync/x"), root) // skipped
	}
	settle(t, a, b)
	return a, b
}

// settle gives every entry of b the times of a's at the same path
// (creating the trees set them apart).
func settle(t *testing.T, a, b string) {
	t.Helper()
	filepath.WalkDir(b, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(b, p)
		var st unix.Stat_t
		if unix.Lstat(filepath.Join(a, rel), &st) != nil {
			return nil
		}
		ts := []unix.Timespec{st.Atim, st.Mtim}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
		return nil
	})
}

func TestDiffFindsEachDifference(t *testing.T) {
	opts := Options{Skip: []string{".spoolsync"}, DirMtimes: true}
	a, b := twin(t)
	if d, err := Diff(a, b, opts); err != nil || len(d) != 0 {
		t.Fatalf("identical trees: got %q, %v; want none", d, err)
	}
	for _, tc := range []struct {
		name, want string
		change     func(b string) error
	}{
		{"content", "d/e/g: content differs", func(b string) error { return os.WriteFile(filepath.Join(b, "d/e/g"), []byte("World"), 0o644) }},
		{"mode", "d/e/g: mode 644 vs 600", func(b string) error { return os.Chmod(filepath.Join(b, "d/e/g"), 0o600) }},
		{"owner", "d/e: owner 0:0 vs 7:8", func(b string) error { return os.Lchown(filepath.Join(b, "d/e"), 7, 8) }},
		{"xattr on a directory", "d/e: xattrs [] vs [user.t=\"N\"]", func(b string) error {
			return unix.Lsetxattr(filepath.Join(b, "d/e"), "user.t", []byte("N"), 0)
		}},
		{"directory mtime", "d/e: mtime", func(b string) error {
			return os.Chtimes(filepath.Join(b, "d/e"), time0, time0)
		}},
		{"symlink target", "d/s: symlink target \"f\" vs \"h\"", func(b string) error {
			os.Remove(filepath.Join(b, "d/s"))
			return os.Symlink("h", filepath.Join(b, "d/s"))
		}},
		{"hard link", "d/f: hard links [d/f d/h] vs []", func(b string) error {
			os.Remove(filepath.Join(b, "d/h"))
			return os.WriteFile(filepath.Join(b, "d/h"), []byte("hello"), 0o644)
		}},
		{"extra", "d/x: only in ", func(b string) error { return os.WriteFile(filepath.Join(b, "d/x"), nil, 0o644) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := twin(t)
			if err := tc.change(b); err != nil {
				t.Fatal(err)
			}
			settle(t, a, b)
			if tc.name == "directory mtime" {
				os.Chtimes(filepath.Join(b, "d/e"), time0, time0)
			}
			d, err := Diff(a, b, opts)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, l := range d {
				found = found || strings.HasPrefix(l, tc.want)
			}
			if !found {
				t.Errorf("got %q, want a line starting %q", d, tc.want)
			}
		})
	}
}

// TestCompareStreamsContent compares two 256 MiB files (sparse, so the
// test is cheap on disk) and checks that memory did not grow with them:
// content is hashed as it is read, not held.
func TestCompareStreamsContent(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, root := range []string{a, b} {
		f, err := os.Create(filepath.Join(root, "big"))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(256 << 20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		// The same mtime on both: created a moment apart, they differ in
		// the last digits (1 run in a few on a loaded machine).
		when := time.Unix(1_700_000_000, 0)
		if err := os.Chtimes(filepath.Join(root, "big"), when, when); err != nil {
			t.Fatal(err)
		}
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	d, err := Diff(a, b, Options{})
	runtime.ReadMemStats(&after)
	if err != nil || len(d) != 0 {
		t.Fatalf("got %q, %v; want identical", d, err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("comparing two 256 MiB files allocated %d MiB; want well under their size", grew>>20)
	}
}
