package replica

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
)

// TestConfinement runs ops that try to reach outside the root. Each must fail
// with an error naming the op and path, and leave the sentinel directory
// beside the root exactly as it was.
func TestConfinement(t *testing.T) {
	long := strings.Repeat("n", 256)
	deep := strings.Repeat("d/", 2049) + "x"
	m := meta(0o666, t0)
	tests := []struct {
		name string
		op   func(tc *testCase, tx *Txn) error
		want error // nil: any error
	}{
		{"put ../x", func(tc *testCase, tx *Txn) error { return tx.Put("../outside/x", m, str("pwned")) }, ErrOutsideRoot},
		{"put absolute", func(tc *testCase, tx *Txn) error { return tx.Put(tc.outside+"/x", m, str("pwned")) }, ErrOutsideRoot},
		{"put a/../../x", func(tc *testCase, tx *Txn) error { return tx.Put("a/../../outside/x", m, str("pwned")) }, ErrOutsideRoot},
		{"put evil/x", func(tc *testCase, tx *Txn) error { return tx.Put("evil/x", m, str("pwned")) }, ErrOutsideRoot},
		{"put evilabs/x", func(tc *testCase, tx *Txn) error { return tx.Put("evilabs/x", m, str("pwned")) }, ErrOutsideRoot},
		{"put inlink/x (in-root symlink)", func(tc *testCase, tx *Txn) error { return tx.Put("inlink/x", m, str("no")) }, ErrOutsideRoot},
		{"putguid evil/x", func(tc *testCase, tx *Txn) error {
			g, _, _ := guid.Sum(guid.SHA256, str("in"))
			_, err := tx.PutGUID("evil/x", m, g)
			return err
		}, ErrOutsideRoot},
		{"write evil/x", func(tc *testCase, tx *Txn) error {
			return tx.WriteRanges("evil/x", 5, []Range{{0, 5}}, str("pwned"))
		}, ErrOutsideRoot},
		{"write through final symlink", func(tc *testCase, tx *Txn) error {
			return tx.WriteRanges("lf", 5, []Range{{0, 5}}, str("pwned"))
		}, unix.ELOOP},
		{"truncate final symlink", func(tc *testCase, tx *Txn) error { return tx.Truncate("lf", 0) }, unix.ELOOP},
		{"mkdir evil/new", func(tc *testCase, tx *Txn) error { return tx.Mkdir("evil/new", m) }, ErrOutsideRoot},
		{"setxattr evil/x", func(tc *testCase, tx *Txn) error { return tx.SetXattr("evil/x", "user.p", []byte("1")) }, ErrOutsideRoot},
		{"setxattr final symlink", func(tc *testCase, tx *Txn) error { return tx.SetXattr("lf", "user.p", []byte("1")) }, nil},
		{"removexattr evil/x", func(tc *testCase, tx *Txn) error { return tx.RemoveXattr("evil/x", "user.keep") }, ErrOutsideRoot},
		{"chmod evil/x", func(tc *testCase, tx *Txn) error { return tx.SetAttr("evil/x", AttrMode, m) }, ErrOutsideRoot},
		{"chmod final symlink", func(tc *testCase, tx *Txn) error { return tx.SetAttr("lf", AttrMode, m) }, unix.EOPNOTSUPP},
		{"chmod final dir symlink", func(tc *testCase, tx *Txn) error { return tx.SetAttr("evil", AttrMode|AttrMtime, m) }, unix.EOPNOTSUPP},
		{"unlink evil/x", func(tc *testCase, tx *Txn) error { return tx.Unlink("evil/x") }, ErrOutsideRoot},
		{"rmdir evil/sub", func(tc *testCase, tx *Txn) error { return tx.Rmdir("evil/sub") }, ErrOutsideRoot},
		{"rename from evil/x", func(tc *testCase, tx *Txn) error { return tx.Rename("evil/x", "stolen", 0) }, ErrOutsideRoot},
		{"rename onto evil/x", func(tc *testCase, tx *Txn) error { return tx.Rename("d/f", "evil/x", 0) }, ErrOutsideRoot},
		{"rename into evil/", func(tc *testCase, tx *Txn) error { return tx.Rename("d/f", "evil/f", 0) }, ErrOutsideRoot},
		{"exchange with evil/x", func(tc *testCase, tx *Txn) error { return tx.Rename("d/f", "evil/x", Exchange) }, ErrOutsideRoot},
		{"link from evil/x", func(tc *testCase, tx *Txn) error { return tx.Link("evil/x", "hl") }, ErrOutsideRoot},
		{"link into evil/", func(tc *testCase, tx *Txn) error { return tx.Link("d/f", "evil/hl") }, ErrOutsideRoot},
		{"symlink in evil/", func(tc *testCase, tx *Txn) error { return tx.Symlink("evil/s", "x", m) }, ErrOutsideRoot},
		{"mknod in evil/", func(tc *testCase, tx *Txn) error { return tx.Mknod("evil/p", m) }, ErrOutsideRoot},
		{"NUL byte", func(tc *testCase, tx *Txn) error { return tx.Put("d/a\x00b", m, str("x")) }, ErrBadPath},
		{"256-byte name", func(tc *testCase, tx *Txn) error { return tx.Put("d/"+long, m, str("x")) }, ErrBadPath},
		{"path over 4096 bytes", func(tc *testCase, tx *Txn) error { return tx.Mkdir(deep, m) }, ErrBadPath},
		{"reserved dir", func(tc *testCase, tx *Txn) error { return tx.Put(".spoolsync/tmp/x", m, str("x")) }, ErrBadPath},
		{"reserved dir itself", func(tc *testCase, tx *Txn) error { return tx.Rmdir(".spoolsync") }, ErrBadPath},
		{"not clean", func(tc *testCase, tx *Txn) error { return tx.Put("d//f", m, str("x")) }, ErrBadPath},
		{"empty", func(tc *testCase, tx *Txn) error { return tx.Unlink("") }, ErrBadPath},
		{"manifest evil/sub", func(tc *testCase, tx *Txn) error {
			return tc.s.Manifest(context.Background(), "evil/sub", guid.SHA256, func(Entry) error { return nil })
		}, ErrOutsideRoot},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := newTestCase(t)
			must(t, os.Symlink("../outside", tc.path("evil")))
			must(t, os.Symlink(tc.outside, tc.path("evilabs")))
			must(t, os.Symlink("../outside/x", tc.path("lf")))
			must(t, os.Symlink("d", tc.path("inlink")))
			tc.write("d/f", "in")
			must(t, unix.Setxattr(filepath.Join(tc.outside, "x"), "user.keep", []byte("k"), 0))
			before := snapshot(t, tc.outside)
			err := tc.try(func(tx *Txn) error { return tt.op(tc, tx) })
			if err == nil {
				t.Fatal("succeeded; want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v; want one wrapping %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "replica: ") {
				t.Errorf("error %q does not name the op", err)
			}
			if after := snapshot(t, tc.outside); after != before {
				t.Errorf("outside changed:\n%s\nwas\n%s", after, before)
			}
			tc.wantNoTemp()
		})
	}
}

// TestSymlinkFinalNotFollowed: ops that act on a final symlink act on the
// link, and nothing outside changes.
func TestSymlinkFinalNotFollowed(t *testing.T) {
	tc := newTestCase(t)
	must(t, os.Symlink("../outside/x", tc.path("lf")))
	must(t, os.Mkdir(tc.path("d"), 0o755))
	before := snapshot(t, tc.outside)
	tc.batch(func(tx *Txn) error {
		if err := tx.SetAttr("lf", AttrMtime, meta(0, t0)); err != nil {
			return err
		}
		if err := tx.Rename("lf", "d/lf", 0); err != nil {
			return err
		}
		if err := tx.Link("d/lf", "hl"); err != nil {
			return err
		}
		if err := tx.Put("hl", meta(0o600, t0), str("replaced the link")); err != nil {
			return err
		}
		return tx.Unlink("d/lf")
	})
	if after := snapshot(t, tc.outside); after != before {
		t.Errorf("outside changed:\n%s\nwas\n%s", after, before)
	}
	tc.wantContent("hl", "replaced the link")
	tc.wantGone("d/lf")
}

func TestValidPath(t *testing.T) {
	good := []string{"a", "a/b", "user/bob/cur/1:2,S", ".spoolsyncx", "a/.spoolsync", strings.Repeat("n", 255), "...", ".x"}
	for _, p := range good {
		if err := ValidPath(p); err != nil {
			t.Errorf("ValidPath(%q) = %v", p, err)
		}
	}
	bad := []string{"", ".", "..", "/", "/a", "a/", "a//b", "./a", "a/./b", "a/..", "../a", "a\x00", ".spoolsync", ".spoolsync/tmp", strings.Repeat("n", 256), strings.Repeat("a/", 2048) + "ab"}
	for _, p := range bad {
		err := ValidPath(p)
		if !errors.Is(err, ErrBadPath) {
			t.Errorf("ValidPath(%q) = %v; want ErrBadPath", p, err)
		} else if !strings.Contains(err.Error(), "check path") {
			t.Errorf("ValidPath(%q) error %q does not say what failed", p, err)
		}
	}
}

// TestPrivilegedRefused: a master cannot plant privileges on the standby
// (issue 15: root-owned setuid files, file capabilities, ACLs) unless the
// replica allows them; a directory's setgid, which shared mail folders
// use, stays allowed.
func TestPrivilegedRefused(t *testing.T) {
	capability := []byte{0x01, 0x00, 0x00, 0x02, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // VFS_CAP_REVISION_2, all permitted
	withXattr := func(name string) Meta {
		m := meta(0o644, t0)
		m.Xattrs = []Xattr{{Name: name, Value: capability}}
		return m
	}
	refused := map[string]func(tx *Txn) error{
		"put setuid":        func(tx *Txn) error { return tx.Put("s", meta(0o4755, t0), str("x")) },
		"put setgid":        func(tx *Txn) error { return tx.Put("s", meta(0o2755, t0), str("x")) },
		"put capability":    func(tx *Txn) error { return tx.Put("s", withXattr("security.capability"), str("x")) },
		"put acl":           func(tx *Txn) error { return tx.Put("s", withXattr("system.posix_acl_access"), str("x")) },
		"chmod setuid":      func(tx *Txn) error { return tx.SetAttr("f", AttrMode, meta(0o4755, t0)) },
		"setxattr cap":      func(tx *Txn) error { return tx.SetXattr("f", "security.capability", capability) },
		"setxattr acl":      func(tx *Txn) error { return tx.SetXattr("d", "system.posix_acl_default", capability) },
		"setxattrs cap":     func(tx *Txn) error { return tx.SetAttr("f", AttrXattrs, withXattr("security.capability")) },
		"mknod setuid fifo": func(tx *Txn) error { return tx.Mknod("p", meta(unix.S_IFIFO|0o4600, t0)) },
	}
	for name, op := range refused {
		t.Run(name, func(t *testing.T) {
			tc := newTestCase(t)
			tc.write("f", "plain")
			must(t, os.Mkdir(tc.path("d"), 0o755))
			txn, err := tc.s.Begin("m1", 1)
			must(t, err)
			defer txn.Abort()
			if err := op(txn); !errors.Is(err, ErrPrivileged) {
				t.Fatalf("got %v, want ErrPrivileged", err)
			}
			for _, p := range []string{"s", "p"} {
				if _, err := os.Lstat(tc.path(p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after the refusal", p)
				}
			}
			var st unix.Stat_t
			must(t, unix.Lstat(tc.path("f"), &st))
			if st.Mode&07000 != 0 {
				t.Errorf("f: mode %#o after the refusal", st.Mode&07777)
			}
			if _, err := unix.Lgetxattr(tc.path("f"), "security.capability", nil); err != unix.ENODATA {
				t.Errorf("f: security.capability: %v, want ENODATA", err)
			}
		})
	}
	t.Run("staged setuid", func(t *testing.T) {
		tc := newTestCase(t)
		filled := false
		_, err := tc.s.Stage(meta(0o4755, t0), func(io.Writer) error { filled = true; return nil })
		if !errors.Is(err, ErrPrivileged) || filled {
			t.Errorf("Stage: %v (content read: %v), want ErrPrivileged before the content", err, filled)
		}
	})
	t.Run("setgid directory allowed", func(t *testing.T) {
		tc := newTestCase(t)
		tc.batch(func(tx *Txn) error { return tx.Mkdir("shared", meta(0o2775, t0)) })
		tc.wantMeta("shared", unix.S_IFDIR|0o2775, t0)
	})
	t.Run("allowed by the option", func(t *testing.T) {
		tc := newTestCase(t)
		tc.s.privOK = true
		tc.batch(func(tx *Txn) error { return tx.Put("s", meta(0o4755, t0), str("x")) })
		tc.wantFile("s", "x", 0o4755, t0)
	})
}
