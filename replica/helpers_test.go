package replica

import (
	"bytes"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"spoolsync/internal/xattr"
)

// testCase is a store on a fresh root, with a sentinel directory "outside"
// beside the root that no op may change.
type testCase struct {
	t       *testing.T
	s       *Store
	root    string
	state   string
	outside string
	seq     uint64
}

func newTestCase(t *testing.T) *testCase {
	t.Helper()
	base := t.TempDir()
	tc := &testCase{t: t, root: filepath.Join(base, "root"), state: filepath.Join(base, "state"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{tc.root, tc.outside, filepath.Join(tc.outside, "sub")} {
		must(t, os.Mkdir(d, 0o755))
	}
	must(t, os.WriteFile(filepath.Join(tc.outside, "x"), []byte("outside"), 0o644))
	must(t, os.WriteFile(filepath.Join(tc.outside, "sub", "y"), []byte("y"), 0o644))
	tc.open()
	t.Cleanup(func() {
		if tc.s != nil {
			tc.s.Close()
		}
	})
	return tc
}

func (tc *testCase) open() {
	tc.t.Helper()
	s, err := Open(Options{Root: tc.root, StateDir: tc.state, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.s = s
}

func (tc *testCase) reopen() {
	tc.t.Helper()
	must(tc.t, tc.s.Close())
	tc.open()
}

// batch runs fn in a new batch and commits it; fn's error fails the test.
func (tc *testCase) batch(fn func(*Txn) error) {
	tc.t.Helper()
	tc.seq++
	txn, err := tc.s.Begin("m1", tc.seq)
	if err != nil {
		tc.t.Fatal(err)
	}
	if err := fn(txn); err != nil {
		txn.Abort()
		tc.t.Fatal(err)
	}
	must(tc.t, txn.Commit())
}

// try runs fn in a new batch and returns its error, committing either way.
func (tc *testCase) try(fn func(*Txn) error) error {
	tc.t.Helper()
	tc.seq++
	txn, err := tc.s.Begin("m1", tc.seq)
	if err != nil {
		tc.t.Fatal(err)
	}
	err = fn(txn)
	must(tc.t, txn.Commit())
	return err
}

func (tc *testCase) path(p string) string { return filepath.Join(tc.root, p) }

func (tc *testCase) write(p, content string) {
	tc.t.Helper()
	must(tc.t, os.MkdirAll(filepath.Dir(tc.path(p)), 0o755))
	must(tc.t, os.WriteFile(tc.path(p), []byte(content), 0o644))
}

func (tc *testCase) read(p string) string {
	tc.t.Helper()
	b, err := os.ReadFile(tc.path(p))
	if err != nil {
		tc.t.Fatal(err)
	}
	return string(b)
}

func (tc *testCase) lstat(p string) unix.Stat_t {
	tc.t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(tc.path(p), &st); err != nil {
		tc.t.Fatal(err)
	}
	return st
}

func (tc *testCase) exists(p string) bool {
	_, err := os.Lstat(tc.path(p))
	return err == nil
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot describes a tree (names, types, modes, owners, mtimes, sizes,
// contents, link targets, xattrs) as text, to compare before and after.
// skip names top-level entries to leave out.
func snapshot(t *testing.T, dir string, skip ...string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if slices.Contains(skip, rel) {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s mode=%o uid=%d gid=%d nlink=%d mtime=%d size=%d", rel, st.Mode, st.Uid, st.Gid, st.Nlink, st.Mtim.Nano(), st.Size)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " content=%q", c)
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " target=%q", l)
		}
		xs, _ := xattr.Read(unix.AT_FDCWD, p)
		for _, x := range xs {
			fmt.Fprintf(&b, " %s=%q", x.Name, x.Value)
		}
		b.WriteByte('\n')
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// tree is snapshot without inode-dependent or time-dependent noise: the
// logical content of a replica, for comparing two applies.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(dir, p)
		if rel == reserved {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		unix.Lstat(p, &st)
		fmt.Fprintf(&b, "%s %o nlink=%d", rel, st.Mode, st.Nlink)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			c, _ := os.ReadFile(p)
			fmt.Fprintf(&b, " %q mtime=%d", c, st.Mtim.Nano())
		}
		if st.Mode&unix.S_IFMT == unix.S_IFLNK {
			l, _ := os.Readlink(p)
			fmt.Fprintf(&b, " -> %q", l)
		}
		b.WriteByte('\n')
		return nil
	})
	return b.String()
}

func meta(mode uint32, mtime int64) Meta {
	return Meta{Mode: mode, Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Mtime: mtime}
}

func str(s string) *bytes.Reader { return bytes.NewReader([]byte(s)) }

func closeFD(fd int) { unix.Close(fd) }
