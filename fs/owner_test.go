package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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
	// Mode 000: nobody but root may read, list or enter; go-fuse would
	// show these as 0644 and 0755 unless told to keep null permissions.
	must(t, os.Mkdir(tc.m_("open"), 0o777))
	must(t, os.Chmod(tc.m_("open"), 0o777))
	writeFile(t, tc.m_("open/nomode"), "mail with mode 000")
	must(t, os.Chmod(tc.m_("open/nomode"), 0))
	must(t, os.Mkdir(tc.m_("open/nomode-dir"), 0o777))
	writeFile(t, tc.m_("open/nomode-dir/inside"), "x")
	must(t, os.Chmod(tc.m_("open/nomode-dir"), 0))
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
	if out := asUserFails(t, uid, gid, "cat", tc.m_("open/nomode")); strings.Contains(out, "mail") {
		t.Errorf("another user read a mode-000 file: %q", out)
	}
	asUserFails(t, uid, gid, "sh", "-c", "echo overwritten > "+tc.m_("open/nomode"))
	if out := asUserFails(t, uid, gid, "ls", tc.m_("open/nomode-dir")); strings.Contains(out, "inside") {
		t.Errorf("another user listed a mode-000 directory: %q", out)
	}
	asUserFails(t, uid, gid, "cat", tc.m_("open/nomode-dir/inside"))
	asUserFails(t, uid, gid, "touch", tc.m_("open/nomode-dir/planted"))
	for _, p := range []string{"open/nomode", "open/nomode-dir"} {
		if _, _, mode := owner(t, tc.m_(p)); mode.Perm() != 0 {
			t.Errorf("%s shows mode %v through the mount, want ----------", p, mode)
		}
	}

	if got := readFile(t, tc.b("root-only/secret")); got != "mail of someone else" {
		t.Errorf("the secret on the backing dir is now %q", got)
	}
	if _, _, mode := owner(t, tc.b("root-only/secret")); mode.Perm() != 0o600 {
		t.Errorf("the secret's mode is now %v", mode)
	}
	if got := readFile(t, tc.b("open/nomode")); got != "mail with mode 000" {
		t.Errorf("the mode-000 file on the backing dir is now %q", got)
	}
	for _, p := range []string{"root-only/planted", "root-only/dir", "sticky/stolen", "sticky/link", "open/nomode-dir/planted"} {
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

// TestExactModes: a new entry gets exactly the mode its creator asked for,
// after the creator's own umask and not the daemon's: a mail process with
// umask 007 makes 0660 files and 0770 folders in a shared folder, and the
// set-id and sticky bits of create and mkdir are kept (/var/mail is often
// 1777 or 2775).
func TestExactModes(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	reachable(t, tc)
	// The daemon runs in this process: give it a umask stricter than the
	// creator's, as a daemon started with umask 022 or 077 has.
	old := syscall.Umask(0o022)
	t.Cleanup(func() { syscall.Umask(old) })
	const uid, gid, mailGID = 65534, 65534, 8
	must(t, os.Mkdir(tc.m_("shared"), 0o777))
	must(t, os.Chown(tc.m_("shared"), 0, mailGID))
	must(t, os.Chmod(tc.m_("shared"), 0o770|os.ModeSetgid))
	// The user is in the folder's group through supplementary groups.
	cmd := exec.Command("sh", "-c", "umask 007 && cd "+tc.m_("shared")+" && touch f && mkdir d && mkfifo p")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{mailGID}}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("create in the shared folder as %d: %v\n%s", uid, err, out)
	}
	// Created here, under umask 022: the kernel passes 04755 and 01755.
	fd, err := syscall.Open(tc.m_("setuid"), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_EXCL, 0o4755)
	must(t, err)
	syscall.Close(fd)
	must(t, syscall.Mkdir(tc.m_("sticky"), 0o1777))
	// mkdir(2) ignores S_ISGID: a directory is setgid by its parent.
	must(t, syscall.Mkdir(tc.m_("setgid"), 0o2775))
	must(t, syscall.Mknod(tc.m_("fifo"), syscall.S_IFIFO|0o666, 0))

	for _, c := range []struct {
		path string
		want uint32
	}{
		{"shared/f", 0o660}, {"shared/d", 0o2770}, {"shared/p", 0o660},
		{"setuid", 0o4755}, {"sticky", 0o1755}, {"setgid", 0o755}, {"fifo", 0o644},
	} {
		for _, p := range []string{tc.b(c.path), tc.m_(c.path)} {
			var st syscall.Stat_t
			must(t, syscall.Lstat(p, &st))
			if got := st.Mode & 0o7777; got != c.want {
				t.Errorf("%s: mode %04o, want %04o", p, got, c.want)
			}
		}
	}
}
