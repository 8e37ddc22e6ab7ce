package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The fstab helper. mount(8) runs /sbin/mount.fuse.spoolsync (a link to
// this binary) for an fstab entry such as
//
//	/srv/spool  /var/mail  fuse.spoolsync  config=/etc/spoolsync.conf,nofail  0 0
//
// as `mount.fuse.spoolsync /srv/spool /var/mail [-n] [-s] [-f] [-v] -o
// OPTIONS`. It starts `spoolsync mount -c CONFIG SPOOL MOUNTPOINT` in a
// session of its own (it outlives mount(8), as every FUSE daemon does),
// and returns once the mount point is mounted, or with the daemon's
// error if it exits first. The daemon logs to the helper's stderr (under
// systemd, the mount unit's journal).

// helperNames are the names mount(8) may run this binary under.
var helperNames = []string{"mount.fuse.spoolsync", "mount.spoolsync"}

// mount(8)'s exit codes that a helper returns.
const (
	mountUsage  = 1
	mountFailed = 32
)

// helperReady is how long the helper waits for the mount to appear.
const helperReady = 2 * time.Minute

// ignoredMountOptions are generic options mount(8), the kernel or systemd
// act on (or that mean nothing for this filesystem); the helper lets them
// pass.
var ignoredMountOptions = map[string]bool{
	"rw": true, "defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"nouser": true, "exec": true, "noexec": true,
	"suid": true, "nosuid": true, "dev": true, "nodev": true, "atime": true, "noatime": true,
	"relatime": true, "nodiratime": true, "async": true, "sync": true, "loud": true, "silent": true,
}

// helperUsage is the helper's --help, and its man page (scripts/genman).
const helperUsage = `Usage: mount.fuse.spoolsync SPOOL_DIR MOUNTPOINT [-n] [-s] [-f] [-v] [-o OPTIONS]

The fstab helper of spoolsync: mount(8) runs it for entries of type
fuse.spoolsync, such as

  /srv/spool  /var/mail  fuse.spoolsync  config=/etc/spoolsync.conf,nofail  0 0

It starts spoolsync mount -c CONFIG SPOOL_DIR MOUNTPOINT in a session of its
own and returns once MOUNTPOINT is mounted (exit 0), or with exit 32 and the
daemon's error. The daemon logs to the helper's standard error (under
systemd, the mount unit's journal); umount MOUNTPOINT stops it. The rest of
the settings (replicas, sync_mode...) are in the configuration file.

Options:
  -o options
    	config=FILE (default /etc/spoolsync.conf) and grace=DURATION (as spoolsync mount --grace); rw, nofail, _netdev, x-systemd.* and the other generic options are left to mount(8)
  -f
    	fake: check the arguments, mount nothing
  -v
    	say the process id of the spoolsync mount started
  -n
    	ignored (no /etc/mtab to write)
  -s
    	ignored (sloppy)
`

var errHelperHelp = errors.New("help")

type helperArgs struct {
	spool, mountpoint string
	config            string
	grace             string
	fake, verbose     bool
}

// parseHelperArgs reads mount(8)'s helper command line.
func parseHelperArgs(args []string) (helperArgs, error) {
	var h helperArgs
	var pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" && i+1 < len(args):
			i++
			if err := h.options(args[i]); err != nil {
				return h, err
			}
		case strings.HasPrefix(a, "-o") && len(a) > 2:
			if err := h.options(a[2:]); err != nil {
				return h, err
			}
		case a == "-h" || a == "--help":
			return h, errHelperHelp
		case a == "-n" || a == "-s": // no mtab; sloppy: nothing to do
		case a == "-f":
			h.fake = true
		case a == "-v":
			h.verbose = true
		case strings.HasPrefix(a, "-"):
			return h, fmt.Errorf("unknown option %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return h, errors.New("want SPOOL_DIR MOUNTPOINT [-o config=FILE,...]")
	}
	h.spool, h.mountpoint = pos[0], pos[1]
	return h, nil
}

func (h *helperArgs) options(s string) error {
	for _, o := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case o == "" || ignoredMountOptions[o] || strings.HasPrefix(o, "x-") || k == "comment":
		case k == "config" && v != "":
			h.config = v
		case k == "grace" && v != "":
			if _, err := time.ParseDuration(v); err != nil {
				return fmt.Errorf("option grace=%s: %v", v, err)
			}
			h.grace = v
		case o == "user" || o == "users" || o == "owner" || o == "group":
			return fmt.Errorf("option %s: spoolsync serves every mail user as root; only root mounts and unmounts it", o)
		case o == "ro":
			return errors.New("option ro: spoolsync mounts a spool read-write (the mail server writes to it)")
		default:
			return fmt.Errorf("unknown mount option %q (spoolsync takes config=FILE and grace=DURATION; the rest of its settings are in the configuration file)", o)
		}
	}
	return nil
}

// mountHelper is main for the fstab helper; it returns the exit code.
func mountHelper(name string, args []string, stderr io.Writer) int {
	h, err := parseHelperArgs(args)
	if errors.Is(err, errHelperHelp) {
		fmt.Print(helperUsage)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return mountUsage
	}
	if h.fake {
		return 0
	}
	mnt, err := filepath.Abs(h.mountpoint)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return mountUsage
	}
	// The daemon refuses a mounted mount point too, but the helper would
	// see that mount appear and take it for its own.
	if ok, err := mountedAs(mnt, "fuse.spoolsync"); err != nil || ok {
		if err == nil {
			err = errors.New("already mounted (umount it first)")
		}
		fmt.Fprintf(stderr, "%s: %s: %v\n", name, mnt, err)
		return mountFailed
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(stderr, "%s: cannot find the spoolsync binary: %v\n", name, err)
		return mountFailed
	}
	cmdArgs := []string{"mount"}
	if h.config != "" {
		cmdArgs = append(cmdArgs, "-c", h.config)
	}
	if h.grace != "" {
		cmdArgs = append(cmdArgs, "--grace", h.grace)
	}
	cmd := exec.Command(self, append(cmdArgs, h.spool, mnt)...)
	cmd.Stderr = stderr
	// Its own session: mount(8)'s terminal or the mount unit's stop must
	// not signal it as part of the helper's process group.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Stdout stays /dev/null: the ready line is not read (a pipe closed
	// when the helper exits would kill the daemon at its next line).
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "%s: start spoolsync mount: %v\n", name, err)
		return mountFailed
	}
	if h.verbose {
		fmt.Fprintf(stderr, "%s: spoolsync mount started, pid %d\n", name, cmd.Process.Pid)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(helperReady)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-exited:
			fmt.Fprintf(stderr, "%s: spoolsync mount of %s on %s exited before mounting: %v\n", name, h.spool, mnt, err)
			return mountFailed
		case <-deadline:
			cmd.Process.Signal(syscall.SIGTERM)
			fmt.Fprintf(stderr, "%s: %s not mounted after %v; stopped spoolsync mount\n", name, mnt, helperReady)
			return mountFailed
		case <-tick.C:
			if ok, err := mountedAs(mnt, "fuse.spoolsync"); err != nil {
				fmt.Fprintf(stderr, "%s: %v\n", name, err)
				return mountFailed
			} else if ok {
				return 0
			}
		}
	}
}

// mountedAs reports whether dir is the mount point of a mount of type
// fstype, from /proc/self/mountinfo (the type follows the " - ").
func mountedAs(dir, fstype string) (bool, error) {
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		dir = real
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("read the mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		fields := strings.Fields(l)
		_, after, ok := strings.Cut(l, " - ")
		if ok && len(fields) > 4 && unescapeMountinfo(fields[4]) == dir && strings.HasPrefix(after, fstype+" ") {
			return true, nil
		}
	}
	return false, sc.Err()
}
