package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// TestUncleanUntilRescanned: after an unclean stop, only a completed
// rescan ends the unclean state. A mount stopped (SIGTERM) while its
// post-crash rescan still runs, or whose rescan failed, must leave the
// state unclean, so that the next start rescans again: otherwise the
// changes the crash lost are never shipped.
func TestUncleanUntilRescanned(t *testing.T) {
	running := func(e *env) bool {
		_, err := os.Stat(filepath.Join(e.state, "log", "running"))
		return err == nil
	}
	crash := func(t *testing.T, e *env) {
		t.Helper()
		p := startMount(t, e)
		p.cmd.Process.Kill()
		<-p.done
		detach(e.mnt)
		if !running(e) {
			t.Fatal("no run marker after SIGKILL: the test cannot tell a clean stop")
		}
	}

	t.Run("stopped during the rescan", func(t *testing.T) {
		e := newEnv(t, "")
		// A directory whose listing hangs until released: the rescan is
		// then certainly under way when the mount is stopped.
		hang := filepath.Join(e.backing, "a-hang")
		must(t, os.Mkdir(hang, 0o755))
		entered, release := make(chan struct{}, 1), make(chan struct{})
		srv, err := gofs.Mount(hang, &hangingDir{entered: entered, release: release},
			&gofs.Options{MountOptions: fuse.MountOptions{DirectMount: true, Name: "hangtest"}})
		if err != nil {
			t.Fatalf("mount the hanging directory: %v", err)
		}
		released := false
		t.Cleanup(func() {
			if !released {
				close(release)
			}
			if err := srv.Unmount(); err != nil {
				t.Logf("unmount %s: %v; detaching it", hang, err)
				syscall.Unmount(hang, syscall.MNT_DETACH)
			}
		})
		crash(t, e)
		p := startMount(t, e)
		select {
		case <-entered:
		case <-time.After(60 * time.Second):
			t.Fatalf("the rescan did not start within 60 s:\n%s", p.stderr)
		}
		// The rescan's thread waits in the kernel for the listing, which
		// no signal interrupts once the request reached the FUSE server:
		// the process can finish only after release. Wait until its
		// main thread has exited (the stop is recorded or not by then).
		p.cmd.Process.Signal(syscall.SIGTERM)
		stat := fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid)
		deadline := time.Now().Add(60 * time.Second)
		for {
			b, err := os.ReadFile(stat)
			if err != nil || strings.Contains(string(b), ") Z ") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("spoolsync did not stop within 60 s of SIGTERM:\n%s", p.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		close(release)
		released = true
		<-p.done
		if !running(e) {
			t.Fatalf("stopped during the post-crash rescan, and recorded as a clean stop:\n%s", p.stderr)
		}
		// The next start rescans, and this time completes.
		p = startMount(t, e)
		waitLog(t, p, "did not stop cleanly")
		p.stop(t, syscall.SIGTERM)
		if running(e) {
			t.Errorf("a completed rescan and a clean stop left the state unclean:\n%s", p.stderr)
		}
	})

	t.Run("failed rescan", func(t *testing.T) {
		e := newEnv(t, "")
		deepTree(t, e.backing) // its walk fails with ENAMETOOLONG
		crash(t, e)
		p := startMount(t, e)
		waitLog(t, p, "rescan after an unclean stop failed")
		p.stop(t, syscall.SIGTERM)
		if !running(e) {
			t.Fatalf("the post-crash rescan failed, and the stop was recorded as clean:\n%s", p.stderr)
		}
		if strings.Contains(p.stderr.String(), "did not stop cleanly") {
			t.Errorf("a failed rescan reported as done:\n%s", p.stderr)
		}
	})
}

// waitLog waits until the process has logged want.
func waitLog(t *testing.T, p *proc, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(p.stderr.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after 60 s:\n%s", want, p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deepTree makes nested directories under dir whose full path is longer
// than PATH_MAX, so that a walk by path cannot list the deepest one.
func deepTree(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	must(t, err)
	name := strings.Repeat("d", 250)
	for i := 0; i < 20; i++ {
		must(t, unix.Mkdirat(fd, name, 0o755))
		next, err := unix.Openat(fd, name, unix.O_DIRECTORY|unix.O_RDONLY, 0)
		unix.Close(fd)
		must(t, err)
		fd = next
	}
	unix.Close(fd)
}

// hangingDir is an empty FUSE directory whose listing blocks until
// release is closed; entered is signalled when a listing starts.
type hangingDir struct {
	gofs.Inode
	entered chan struct{}
	release chan struct{}
}

var _ = (gofs.NodeReaddirer)((*hangingDir)(nil))

func (h *hangingDir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	select {
	case h.entered <- struct{}{}:
	default:
	}
	<-h.release
	return gofs.NewListDirStream(nil), 0
}
