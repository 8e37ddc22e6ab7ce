package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// asUser runs a command as uid/gid (no supplementary groups), as a mail
// server's delivery or IMAP process for one user would.
func asUser(t *testing.T, uid, gid uint32, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v as %d:%d: %v\n%s", name, args, uid, gid, err, out)
	}
}

// asUserFails runs a command as uid/gid and returns its output; the
// command must fail.
func asUserFails(t *testing.T, uid, gid uint32, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Errorf("%s %v as %d:%d succeeded; it must be refused", name, args, uid, gid)
	}
	return string(out)
}

// reachable makes the test's 0700 temporary directories traversable, so
// that another user can reach the mount.
func reachable(t *testing.T, tc *testCase) {
	t.Helper()
	for d := filepath.Dir(tc.mnt); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		must(t, os.Chmod(d, 0o755))
	}
}

func owner(t *testing.T, p string) (uid, gid uint32, mode os.FileMode) {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(p, &st))
	fi, err := os.Lstat(p)
	must(t, err)
	return st.Uid, st.Gid, fi.Mode()
}

// TestNewEntriesOwnership: what a mail process creates through the mount
// belongs to it on the backing dir, as on a local filesystem, and in a
// setgid directory (a shared folder) takes the directory's group, a new
// directory there staying setgid.
func TestNewEntriesOwnership(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	const uid, gid, mailGID = 65534, 65534, 8
	reachable(t, tc)
	must(t, os.Mkdir(tc.m_("private"), 0o777))
	must(t, os.Chmod(tc.m_("private"), 0o777)) // past the umask
	must(t, os.Mkdir(tc.m_("shared"), 0o777))
	must(t, os.Chown(tc.m_("shared"), 0, mailGID))
	must(t, os.Chmod(tc.m_("shared"), 0o777|os.ModeSetgid))

	asUser(t, uid, gid, "touch", tc.m_("private/f"))
	asUser(t, uid, gid, "mkdir", tc.m_("private/d"))
	asUser(t, uid, gid, "touch", tc.m_("shared/f"))
	asUser(t, uid, gid, "mkdir", tc.m_("shared/d"))
	asUser(t, uid, gid, "ln", "-s", "f", tc.m_("shared/l"))
	for _, c := range []struct {
		path      string
		gid       uint32
		setgidDir bool
	}{
		{"private/f", gid, false}, {"private/d", gid, false},
		{"shared/f", mailGID, false}, {"shared/d", mailGID, true}, {"shared/l", mailGID, false},
	} {
		for _, side := range []struct{ name, path string }{{"backing dir", tc.b(c.path)}, {"mount", tc.m_(c.path)}} {
			u, g, mode := owner(t, side.path)
			if u != uid || g != c.gid {
				t.Errorf("%s on the %s is owned by %d:%d, want %d:%d", c.path, side.name, u, g, uid, c.gid)
			}
			if mode.IsDir() && (mode&os.ModeSetgid != 0) != c.setgidDir {
				t.Errorf("%s on the %s: mode %v, setgid should be %v", c.path, side.name, mode, c.setgidDir)
			}
		}
	}
}

// TestOtherUsersCannotCross: the daemon runs as root for every mail user;
// through the mount, one user must get no further than on a local
// filesystem: not read, change, remove or create where the permissions say
// no, and a refused operation leaves nothing on the backing dir and no
// event in the log.
func TestOtherUsersCannotCross(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	reachable(t, tc)
	const uid, gid = 65534, 65534
	must(t, os.Mkdir(tc.m_("root-only"), 0o755))
	writeFile(t, tc.m_("root-only/secret"), "mail of someone else")
	must(t, os.Chmod(tc.m_("root-only/secret"), 0o600))
	must(t, os.Mkdir(tc.m_("sticky"), 0o777))
	must(t, os.Chmod(tc.m_("sticky"), 0o777|os.ModeSticky))
	writeFile(t, tc.m_("sticky/theirs"), "x")
	tc.log.take()

	secret := tc.m_("root-only/secret")
	asUserFails(t, uid, gid, "cat", secret)
	asUserFails(t, uid, gid, "sh", "-c", "echo overwritten > "+secret)
	asUserFails(t, uid, gid, "chmod", "666", secret)
	asUserFails(t, uid, gid, "chown", "65534", secret)
	asUserFails(t, uid, gid, "truncate", "-s", "0", secret)
	asUserFails(t, uid, gid, "touch", "-d", "2001-01-01", secret)
	asUserFails(t, uid, gid, "setfattr", "-n", "user.x", "-v", "1", secret)
	asUserFails(t, uid, gid, "rm", "-f", secret)
	asUserFails(t, uid, gid, "mv", secret, tc.m_("sticky/stolen"))
	asUserFails(t, uid, gid, "ln", secret, tc.m_("sticky/link"))
	asUserFails(t, uid, gid, "touch", tc.m_("root-only/planted"))
	asUserFails(t, uid, gid, "mkdir", tc.m_("root-only/dir"))
	asUserFails(t, uid, gid, "rm", "-f", tc.m_("sticky/theirs"))

	if got := readFile(t, tc.b("root-only/secret")); got != "mail of someone else" {
		t.Errorf("the secret on the backing dir is now %q", got)
	}
	if _, _, mode := owner(t, tc.b("root-only/secret")); mode.Perm() != 0o600 {
		t.Errorf("the secret's mode is now %v", mode)
	}
	for _, p := range []string{"root-only/planted", "root-only/dir", "sticky/stolen", "sticky/link"} {
		if _, err := os.Lstat(tc.b(p)); err == nil {
			t.Errorf("%s exists on the backing dir", p)
		}
	}
	if _, err := os.Lstat(tc.b("sticky/theirs")); err != nil {
		t.Errorf("another user removed sticky/theirs: %v", err)
	}
	if evs := tc.log.take(); len(evs) != 0 {
		t.Errorf("refused operations left events: %v", describe(evs))
	}
}
