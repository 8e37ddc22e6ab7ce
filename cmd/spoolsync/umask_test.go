package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"spoolsync/internal/testenv"
)

// TestMountUmask: whatever umask the mount was started with (systemd's
// 022, a stricter one), a file or directory a mail process creates gets
// the mode that process asked for under its own umask: the kernel masks
// it once; the daemon must not mask it again.
func TestMountUmask(t *testing.T) {
	testenv.NeedFUSE(t)
	e := newEnv(t, "")
	cmd := exec.Command("/bin/sh", "-c", `umask 077; exec "$0" mount -c "$1"`, binary, e.conf)
	if _, _, err := startCmd(t, cmd, "mount", func(l string) (string, bool) { return "", strings.Contains(l, "ready") },
		func() { detach(e.mnt) }); err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0o007) // a group-shared mail spool's
	defer syscall.Umask(old)
	f, err := os.OpenFile(filepath.Join(e.mnt, "mbox"), os.O_CREATE|os.O_WRONLY, 0o666)
	must(t, err)
	f.Close()
	must(t, os.Mkdir(filepath.Join(e.mnt, "Maildir"), 0o777))
	for name, want := range map[string]os.FileMode{"mbox": 0o660, "Maildir": 0o770} {
		st, err := os.Stat(filepath.Join(e.backing, name))
		must(t, err)
		if got := st.Mode().Perm(); got != want {
			t.Errorf("%s created through the mount under umask 007: mode %04o, want %04o", name, got, want)
		}
	}
}
