package replica

import (
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/internal/xattr"
)

const t0 = int64(1_700_000_000_123_456_789)

func TestOps(t *testing.T) {
	tests := []struct {
		name  string
		setup func(tc *testCase)
		op    func(tx *Txn) error
		check func(tc *testCase)
	}{
		{"put new", func(tc *testCase) { os.Mkdir(tc.path("a"), 0o755) },
			func(tx *Txn) error { return tx.Put("a/b", meta(0o640, t0), str("hello")) },
			func(tc *testCase) {
				tc.wantFile("a/b", "hello", 0o640, t0)
			}},
		{"put replaces file and symlink", func(tc *testCase) {
			tc.write("a/f", "old")
			os.Symlink("f", tc.path("a/l"))
		}, func(tx *Txn) error {
			if err := tx.Put("a/f", meta(0o600, t0), str("new")); err != nil {
				return err
			}
			return tx.Put("a/l", meta(0o600, t0), str("not a link"))
		}, func(tc *testCase) {
			tc.wantFile("a/f", "new", 0o600, t0)
			tc.wantFile("a/l", "not a link", 0o600, t0)
		}},
		{"put setuid kept after chown (allowed)", func(tc *testCase) { tc.s.privOK = true },
			func(tx *Txn) error { return tx.Put("s", meta(0o4755, t0), str("x")) },
			func(tc *testCase) { tc.wantFile("s", "x", 0o4755, t0) }},
		{"mkdir and existing mkdir", func(tc *testCase) { os.Mkdir(tc.path("d"), 0o700) },
			func(tx *Txn) error {
				if err := tx.Mkdir("d", meta(0o751, t0)); err != nil {
					return err
				}
				return tx.Mkdir("e", meta(0o705, t0+1))
			}, func(tc *testCase) {
				tc.wantMeta("d", unix.S_IFDIR|0o751, t0)
				tc.wantMeta("e", unix.S_IFDIR|0o705, t0+1)
			}},
		{"rmdir and missing rmdir", func(tc *testCase) { os.Mkdir(tc.path("d"), 0o700) },
			func(tx *Txn) error {
				if err := tx.Rmdir("d"); err != nil {
					return err
				}
				if err := tx.Rmdir("d"); err != nil {
					return err
				}
				return tx.Rmdir("no/such")
			}, func(tc *testCase) { tc.wantGone("d") }},
		{"unlink file, symlink itself, missing", func(tc *testCase) {
			tc.write("f", "x")
			tc.write("target", "t")
			os.Symlink("target", tc.path("l"))
		}, func(tx *Txn) error {
			for _, p := range []string{"f", "l", "f", "nope/x"} {
				if err := tx.Unlink(p); err != nil {
					return err
				}
			}
			return nil
		}, func(tc *testCase) {
			tc.wantGone("f")
			tc.wantGone("l")
			if tc.read("target") != "t" {
				tc.t.Error("unlink of a symlink touched its target")
			}
		}},
		{"rename replaces", func(tc *testCase) { tc.write("a", "A"); tc.write("b", "B") },
			func(tx *Txn) error { return tx.Rename("a", "b", 0) },
			func(tc *testCase) { tc.wantGone("a"); tc.wantContent("b", "A") }},
		{"rename done before (src missing, dst present)", func(tc *testCase) { tc.write("b", "A") },
			func(tx *Txn) error { return tx.Rename("a", "b", 0) },
			func(tc *testCase) { tc.wantContent("b", "A") }},
		{"rename noreplace", func(tc *testCase) { tc.write("a", "A"); tc.write("b", "B") },
			func(tx *Txn) error {
				if err := tx.Rename("a", "b", NoReplace); !errors.Is(err, unix.EEXIST) {
					return errors.New("noreplace onto an existing file: got " + errString(err))
				}
				return tx.Rename("a", "c", NoReplace)
			}, func(tc *testCase) { tc.wantContent("b", "B"); tc.wantContent("c", "A"); tc.wantGone("a") }},
		{"rename exchange", func(tc *testCase) { tc.write("a", "A"); os.Mkdir(tc.path("b"), 0o755) },
			func(tx *Txn) error { return tx.Rename("a", "b", Exchange) },
			func(tc *testCase) {
				tc.wantContent("b", "A")
				tc.wantMeta("a", unix.S_IFDIR|0o755, -1)
			}},
		{"rename a symlink moves the link", func(tc *testCase) { os.Symlink("../outside", tc.path("l")) },
			func(tx *Txn) error { return tx.Rename("l", "m", 0) },
			func(tc *testCase) { tc.wantLink("m", "../outside") }},
		{"hard links", func(tc *testCase) { tc.write("a", "A") },
			func(tx *Txn) error {
				if err := tx.Link("a", "b"); err != nil {
					return err
				}
				return tx.Link("a", "b") // re-sent
			}, func(tc *testCase) {
				a, b := tc.lstat("a"), tc.lstat("b")
				if a.Ino != b.Ino || a.Nlink != 2 {
					tc.t.Errorf("a ino %d nlink %d, b ino %d: want one inode, 2 links", a.Ino, a.Nlink, b.Ino)
				}
			}},
		{"symlink", nil,
			func(tx *Txn) error {
				if err := tx.Symlink("l", "../../etc/passwd", meta(0, t0)); err != nil {
					return err
				}
				return tx.Symlink("l", "../../etc/passwd", meta(0, t0)) // re-sent
			}, func(tc *testCase) {
				tc.wantLink("l", "../../etc/passwd")
				tc.wantMeta("l", unix.S_IFLNK|0o777, t0)
			}},
		{"fifo", nil,
			func(tx *Txn) error {
				if err := tx.Mknod("p", meta(0o620, t0)); err != nil {
					return err
				}
				if err := tx.Mknod("s", Meta{Mode: unix.S_IFSOCK | 0o640, Mtime: t0}); err != nil {
					return err
				}
				if err := tx.Mknod("c", Meta{Mode: unix.S_IFCHR | 0o600}); !errors.Is(err, unix.EPERM) {
					return errors.New("device node: got " + errString(err))
				}
				if err := tx.Mknod("b", Meta{Mode: unix.S_IFBLK | 0o600}); !errors.Is(err, unix.EPERM) {
					return errors.New("block device node: got " + errString(err))
				}
				return nil
			}, func(tc *testCase) {
				tc.wantMeta("p", unix.S_IFIFO|0o620, t0)
				tc.wantMeta("s", unix.S_IFSOCK|0o640, t0)
				tc.wantGone("c")
				tc.wantGone("b")
			}},
		{"write ranges", func(tc *testCase) { tc.write("mbox", "0123456789") },
			func(tx *Txn) error {
				return tx.WriteRanges("mbox", 14, []Range{{2, 2}, {10, 4}}, str("abWXYZ"))
			}, func(tc *testCase) { tc.wantContent("mbox", "01ab456789WXYZ") }},
		{"write ranges shrinks", func(tc *testCase) { tc.write("f", "0123456789") },
			func(tx *Txn) error { return tx.WriteRanges("f", 3, []Range{{0, 1}}, str("X")) },
			func(tc *testCase) { tc.wantContent("f", "X12") }},
		{"truncate", func(tc *testCase) { tc.write("f", "0123456789") },
			func(tx *Txn) error { return tx.Truncate("f", 4) },
			func(tc *testCase) { tc.wantContent("f", "0123") }},
		{"setattr mode and mtime", func(tc *testCase) { tc.write("f", "x") },
			func(tx *Txn) error { return tx.SetAttr("f", AttrMode|AttrMtime, meta(0o604, t0)) },
			func(tc *testCase) { tc.wantMeta("f", unix.S_IFREG|0o604, t0) }},
		{"setattr mtime of a symlink", func(tc *testCase) { tc.write("f", "x"); os.Symlink("f", tc.path("l")) },
			func(tx *Txn) error { return tx.SetAttr("l", AttrMtime, meta(0, t0)) },
			func(tc *testCase) {
				tc.wantMeta("l", unix.S_IFLNK|0o777, t0)
				if st := tc.lstat("f"); st.Mtim.Nano() == t0 {
					tc.t.Error("mtime of a symlink set on its target")
				}
			}},
		{"xattrs", func(tc *testCase) { tc.write("f", "x") },
			func(tx *Txn) error {
				if err := tx.SetXattr("f", "user.a", []byte("1")); err != nil {
					return err
				}
				if err := tx.SetXattr("f", "user.b", []byte("2")); err != nil {
					return err
				}
				if err := tx.RemoveXattr("f", "user.a"); err != nil {
					return err
				}
				return tx.RemoveXattr("f", "user.a") // missing: success
			}, func(tc *testCase) { tc.wantXattrs("f", "user.b=2") }},
		{"meta xattrs are exact", func(tc *testCase) {
			tc.write("f", "x")
			unix.Setxattr(tc.path("f"), "user.old", []byte("o"), 0)
		}, func(tx *Txn) error {
			m := meta(0o644, t0)
			m.Xattrs = []Xattr{{Name: "user.k", Value: []byte("v")}}
			if err := tx.Put("g", m, str("y")); err != nil {
				return err
			}
			return tx.SetAttr("f", AttrXattrs, m)
		}, func(tc *testCase) {
			tc.wantXattrs("f", "user.k=v")
			tc.wantXattrs("g", "user.k=v")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCase(t)
			if tt.setup != nil {
				tt.setup(tc)
			}
			tc.batch(tt.op)
			tt.check(tc)
			tc.wantNoTemp()
		})
	}
}

func TestOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away (chown)")
	}
	tc := newTestCase(t)
	tc.s.privOK = true // set-id bits kept through chown (TestPrivilegedRefused: refused by default)
	m := Meta{Mode: 0o6750, Uid: 1234, Gid: 5678, Mtime: t0}
	tc.batch(func(tx *Txn) error {
		if err := tx.Put("f", m, str("x")); err != nil {
			return err
		}
		if err := tx.Mkdir("d", m); err != nil {
			return err
		}
		if err := tx.Symlink("l", "f", m); err != nil {
			return err
		}
		if err := tx.SetXattr("f", "trusted.t", []byte("root only")); err != nil {
			return err
		}
		return tx.Mknod("p", m)
	})
	for _, p := range []string{"f", "d", "l", "p"} {
		st := tc.lstat(p)
		if st.Uid != 1234 || st.Gid != 5678 || st.Mtim.Nano() != t0 {
			t.Errorf("%s: uid %d gid %d mtime %d; want 1234 5678 %d", p, st.Uid, st.Gid, st.Mtim.Nano(), t0)
		}
	}
	tc.wantMeta("f", unix.S_IFREG|0o6750, t0) // setuid survives the chown
	tc.wantXattrs("f", "trusted.t=root only")
	tc.batch(func(tx *Txn) error { return tx.SetAttr("f", AttrOwner, Meta{Uid: 42, Gid: 43}) })
	if st := tc.lstat("f"); st.Uid != 42 || st.Gid != 43 {
		t.Errorf("after SetAttr owner: %d:%d, want 42:43", st.Uid, st.Gid)
	}
}

func TestSeqAndAlreadyApplied(t *testing.T) {
	tc := newTestCase(t)
	tc.batch(func(tx *Txn) error { return tx.Put("f", meta(0o644, t0), str("1")) })
	if got := tc.s.AppliedSeq("m1"); got != 1 {
		t.Fatalf("AppliedSeq = %d, want 1", got)
	}
	tc.reopen()
	if got := tc.s.AppliedSeq("m1"); got != 1 {
		t.Fatalf("after reopen AppliedSeq = %d, want 1", got)
	}
	before := tree(t, tc.root)
	if _, err := tc.s.Begin("m1", 1); !errors.Is(err, ErrAlreadyApplied) {
		t.Fatalf("Begin(1) again: %v, want ErrAlreadyApplied", err)
	}
	if got := tree(t, tc.root); got != before {
		t.Fatalf("tree changed:\n%s\nwant\n%s", got, before)
	}
	if got := tc.s.AppliedSeq("other"); got != 0 {
		t.Fatalf("AppliedSeq(other) = %d", got)
	}
	// Abort without changes leaves nothing interrupted.
	tx, err := tc.s.Begin("m1", 2)
	must(t, err)
	tx.Abort()
	if seq, ok := tc.s.Interrupted("m1"); ok {
		t.Fatalf("Interrupted after a clean abort: %d", seq)
	}
	if err := tx.Put("g", Meta{}, str("")); !errors.Is(err, ErrTxnDone) {
		t.Fatalf("op after Abort: %v", err)
	}
}

func TestErrorMessage(t *testing.T) {
	tc := newTestCase(t)
	err := tc.try(func(tx *Txn) error { return tx.Rename("user/bob/cur/1", "user/bob/cur/1:2,S", 0) })
	want := "replica: rename user/bob/cur/1 -> user/bob/cur/1:2,S: no such file or directory"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func errString(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func (tc *testCase) wantContent(p, content string) {
	tc.t.Helper()
	if got := tc.read(p); got != content {
		tc.t.Errorf("%s content = %q, want %q", p, got, content)
	}
}

func (tc *testCase) wantFile(p, content string, mode uint32, mtime int64) {
	tc.t.Helper()
	tc.wantContent(p, content)
	tc.wantMeta(p, unix.S_IFREG|mode, mtime)
}

// wantMeta checks type+mode and, unless mtime is -1, mtime.
func (tc *testCase) wantMeta(p string, mode uint32, mtime int64) {
	tc.t.Helper()
	st := tc.lstat(p)
	if st.Mode != mode {
		tc.t.Errorf("%s mode = %o, want %o", p, st.Mode, mode)
	}
	if mtime != -1 && st.Mtim.Nano() != mtime {
		tc.t.Errorf("%s mtime = %v, want %v", p, time.Unix(0, st.Mtim.Nano()), time.Unix(0, mtime))
	}
}

func (tc *testCase) wantLink(p, target string) {
	tc.t.Helper()
	if got, err := os.Readlink(tc.path(p)); err != nil || got != target {
		tc.t.Errorf("readlink %s = %q, %v; want %q", p, got, err, target)
	}
}

func (tc *testCase) wantGone(p string) {
	tc.t.Helper()
	if tc.exists(p) {
		tc.t.Errorf("%s exists, want it gone", p)
	}
}

func (tc *testCase) wantXattrs(p, want string) {
	tc.t.Helper()
	xs, err := xattr.Read(unix.AT_FDCWD, tc.path(p))
	must(tc.t, err)
	var got string
	for i, x := range xs {
		if i > 0 {
			got += " "
		}
		got += x.Name + "=" + string(x.Value)
	}
	if got != want {
		tc.t.Errorf("%s xattrs = %q, want %q", p, got, want)
	}
}

func (tc *testCase) wantNoTemp() {
	tc.t.Helper()
	names, err := os.ReadDir(tc.path(reserved + "/tmp"))
	must(tc.t, err)
	if len(names) != 0 {
		tc.t.Errorf("temp dir not empty: %v", names)
	}
}
