package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/testenv"
)

func TestParseHelperArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want helperArgs
		err  string
	}{
		{[]string{"/srv/spool", "/var/mail", "-o", "rw,config=/etc/s.conf,nofail,x-systemd.requires=network-online.target"},
			helperArgs{spool: "/srv/spool", mountpoint: "/var/mail", config: "/etc/s.conf"}, ""},
		{[]string{"/a", "/b", "-n", "-v", "-oconfig=/c,grace=5s"}, helperArgs{spool: "/a", mountpoint: "/b", config: "/c", grace: "5s", verbose: true}, ""},
		{[]string{"/a", "/b", "-f"}, helperArgs{spool: "/a", mountpoint: "/b", fake: true}, ""},
		{[]string{"/a"}, helperArgs{}, "want SPOOL_DIR MOUNTPOINT"},
		{[]string{"/a", "/b", "-o", "ro"}, helperArgs{}, "read-write"},
		{[]string{"/a", "/b", "-o", "config=/c,users"}, helperArgs{}, "only root mounts"},
		{[]string{"/a", "/b", "-o", "allow_root"}, helperArgs{}, `unknown mount option "allow_root"`},
		{[]string{"/a", "/b", "-o", "grace=soon"}, helperArgs{}, "grace=soon"},
		{[]string{"/a", "/b", "-x"}, helperArgs{}, "unknown option -x"},
	} {
		got, err := parseHelperArgs(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

// runLogged runs cmd with its output in a file, not a pipe: the daemon
// the helper starts inherits it and keeps a pipe open, so a pipe would
// not reach EOF while the mount lives.
func runLogged(t *testing.T, cmd *exec.Cmd) (string, error) {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "out")
	must(t, err)
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	err = cmd.Run()
	b, _ := os.ReadFile(f.Name())
	return string(b), err
}

var helperPID = regexp.MustCompile(`spoolsync mount started, pid (\d+)`)

// stopHelperDaemon unmounts mnt (the daemon then exits) and, should it
// not, kills the daemon the helper reported in out.
func stopHelperDaemon(t *testing.T, mnt, out string) {
	m := helperPID.FindStringSubmatch(out)
	syscall.Unmount(mnt, 0)
	if m == nil {
		detach(mnt)
		return
	}
	pid, _ := strconv.Atoi(m[1])
	for i := 0; i < 200; i++ {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("spoolsync mount (pid %d) still runs 10s after its unmount; killing it", pid)
	syscall.Kill(pid, syscall.SIGKILL)
	detach(mnt)
}

// TestMountHelper runs the binary as mount(8) runs a helper: it returns
// once the spool is mounted, and the mount it leaves behind records
// changes like `spoolsync mount`.
func TestMountHelper(t *testing.T) {
	testenv.NeedFUSE(t)
	e := newEnv(t, "")
	helper := filepath.Join(t.TempDir(), "mount.fuse.spoolsync")
	must(t, os.Symlink(binary, helper))
	out, err := runLogged(t, exec.Command(helper, e.backing, e.mnt, "-v", "-o", "rw,config="+e.conf+",nofail"))
	t.Cleanup(func() { stopHelperDaemon(t, e.mnt, out) })
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	if ok, err := mountedAs(e.mnt, "fuse.spoolsync"); !ok || err != nil {
		t.Fatalf("helper returned but %s is not mounted (%v)\n%s", e.mnt, err, out)
	}
	must(t, os.WriteFile(filepath.Join(e.mnt, "msg"), []byte("hello\n"), 0o600))
	if b, err := os.ReadFile(filepath.Join(e.backing, "msg")); err != nil || string(b) != "hello\n" {
		t.Fatalf("backing file: %q, %v", b, err)
	}
	// A second mount of the same entry fails with mount(8)'s code and the
	// daemon's reason.
	out2, err := runLogged(t, exec.Command(helper, e.backing, e.mnt, "-o", "config="+e.conf))
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != mountFailed || !strings.Contains(out2, "already mounted") {
		t.Errorf("second mount: %v, want exit %d saying it is mounted already:\n%s", err, mountFailed, out2)
	}
}

// TestFstab: `mount -a` with an fstab entry of type fuse.spoolsync (in a
// temporary fstab, mount -T) mounts the spool through the helper that
// mount(8) finds in /sbin.
func TestFstab(t *testing.T) {
	testenv.NeedFUSE(t)
	testenv.NeedProgram(t, "mount", "mount")
	// mount(8) looks for helpers in /sbin only (libmount's search path).
	link := "/sbin/mount.fuse.spoolsync"
	if target, err := os.Readlink(link); err == nil && strings.HasPrefix(target, os.TempDir()) {
		if _, err := os.Stat(target); errors.Is(err, os.ErrNotExist) {
			os.Remove(link) // left by a run of this test that was killed
		}
	}
	if _, err := os.Lstat(link); err == nil {
		t.Skipf("%s exists already (an installed package?): this test would run it, not the binary under test", link)
	}
	must(t, os.Symlink(binary, link))
	t.Cleanup(func() { os.Remove(link) })

	e := newEnv(t, "")
	fstab := filepath.Join(e.dir, "fstab")
	must(t, os.WriteFile(fstab, []byte(fmt.Sprintf("# a test fstab\n%s %s fuse.spoolsync config=%s,nofail 0 0\n", e.backing, e.mnt, e.conf)), 0o644))
	out, err := runLogged(t, exec.Command("mount", "-v", "-a", "-T", fstab))
	t.Cleanup(func() { stopHelperDaemon(t, e.mnt, out) })
	if err != nil {
		t.Fatalf("mount -a -T %s: %v\n%s", fstab, err, out)
	}
	if ok, err := mountedAs(e.mnt, "fuse.spoolsync"); !ok || err != nil {
		t.Fatalf("mount -a returned but %s is not mounted (%v)\n%s", e.mnt, err, out)
	}
	must(t, os.Mkdir(filepath.Join(e.mnt, "Maildir"), 0o700))
	// mount -a again: the entry is mounted already, nothing to do.
	if out, err := runLogged(t, exec.Command("mount", "-a", "-T", fstab)); err != nil {
		t.Errorf("second mount -a: %v\n%s", err, out)
	}
	// umount by mount point, as an admin would; the daemon then exits.
	if out, err := exec.Command("umount", e.mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(e.backing, "Maildir")); err != nil {
		t.Errorf("the mkdir through the fstab mount did not reach the backing dir: %v", err)
	}
	evs := readLog(t, filepath.Join(e.state, "log"))
	if len(evs) == 0 || evs[len(evs)-1].Path != "Maildir" {
		t.Errorf("the sync log lacks the mkdir: %+v", evs)
	}
}

// FuzzParseHelperArgs: the helper's options come from /etc/fstab and run
// as root; whatever they hold, parsing never panics, and accepting them
// means two operands and only the options spoolsync takes.
func FuzzParseHelperArgs(f *testing.F) {
	f.Add("/srv/spool /var/mail -o rw,config=/etc/spoolsync.conf,nofail")
	f.Add("/a /b -oconfig=/c,grace=5s -n -v")
	f.Add("/a /b -o ro")
	f.Fuzz(func(t *testing.T, line string) {
		h, err := parseHelperArgs(strings.Fields(line))
		if err != nil {
			return
		}
		if h.spool == "" || h.mountpoint == "" {
			t.Fatalf("%q: accepted without SPOOL_DIR and MOUNTPOINT: %+v", line, h)
		}
		if strings.Contains(h.config, ",") {
			t.Fatalf("%q: config %q holds another option", line, h.config)
		}
	})
}
