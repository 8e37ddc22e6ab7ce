package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/testenv"
	"spoolsync/synclog"
)

// binary is the spoolsync command built once for the end-to-end tests.
var binary string

func TestMain(m *testing.M) {
	if os.Getenv("SPOOLSYNC_TEST_DELIVER") != "" {
		deliverMain()
		return
	}
	dir, err := os.MkdirTemp("", "spoolsync-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "spoolsync")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a master's directories and configuration for one test.
type env struct {
	dir, backing, mnt, state, conf string
}

func newEnv(t *testing.T, extraConf string) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{dir: dir, backing: filepath.Join(dir, "backing"), mnt: filepath.Join(dir, "mnt"),
		state: filepath.Join(dir, "state"), conf: filepath.Join(dir, "spoolsync.conf")}
	for _, d := range []string{e.backing, e.mnt, e.state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := fmt.Sprintf("spool_dir: %s\nmount_point: %s\nstate_dir: %s\n%s", e.backing, e.mnt, e.state, extraConf)
	if err := os.WriteFile(e.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// proc is a spoolsync process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stderr *testenv.Buffer
	done   chan struct{}
	err    error
}

// startProc starts the spoolsync binary with args and waits for a line of
// its standard output that ready accepts; it returns what ready extracted.
// The process is killed when the test ends (and cleanup runs after). A
// process that exits first is an error, so callers can retry or fail.
func startProc(t *testing.T, args []string, ready func(line string) (string, bool), cleanup func()) (*proc, string, error) {
	t.Helper()
	return startCmd(t, exec.Command(binary, args...), args[0], ready, cleanup)
}

// startCmd is startProc for a prepared command (another namespace, say)
// whose process is spoolsync's own; what names it in errors.
func startCmd(t *testing.T, cmd *exec.Cmd, what string, ready func(line string) (string, bool), cleanup func()) (*proc, string, error) {
	t.Helper()
	p := &proc{cmd: cmd, stderr: &testenv.Buffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, "", err
	}
	got := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if v, ok := ready(sc.Text()); ok {
				got <- v
			}
		}
		io.Copy(io.Discard, stdout)
	}()
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if cleanup != nil {
			cleanup()
		}
	})
	select {
	case v := <-got:
		return p, v, nil
	case <-p.done:
		return nil, "", fmt.Errorf("spoolsync %s exited before it was ready: %v\n%s", what, p.err, p.stderr)
	case <-time.After(20 * time.Second):
		return nil, "", fmt.Errorf("spoolsync %s not ready after 20s\n%s", what, p.stderr)
	}
}

// startMount starts `spoolsync mount -c conf` and waits for its ready line.
// The process is killed and the mount point detached when the test ends.
func startMount(t *testing.T, e *env, flags ...string) *proc {
	t.Helper()
	testenv.NeedFUSE(t)
	p, _, err := startProc(t, append([]string{"mount", "-c", e.conf}, flags...),
		func(l string) (string, bool) { return "", strings.Contains(l, "ready") },
		func() { detach(e.mnt) })
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// detach removes a mount left by a killed process (the kernel keeps it,
// answering ENOTCONN, until it is unmounted).
func detach(mnt string) {
	for i := 0; i < 50; i++ {
		err := syscall.Unmount(mnt, syscall.MNT_DETACH)
		if err == nil || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOENT) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *proc) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("spoolsync did not exit after %v\n%s", sig, p.stderr)
	}
}

// readLog returns every event in the sync log at dir.
func readLog(t *testing.T, dir string) []synclog.Event {
	t.Helper()
	r, err := synclog.OpenReader(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var evs []synclog.Event
	for {
		ev, err := r.TryNext()
		if err != nil {
			t.Fatalf("reading the sync log: %v", err)
		}
		if ev == nil {
			return evs
		}
		evs = append(evs, *ev)
	}
}

func TestMountAndLogDump(t *testing.T) {
	e := newEnv(t, "")
	p := startMount(t, e)
	msg := filepath.Join(e.mnt, "msg")
	if err := os.WriteFile(msg, []byte("Subject: hi\n\nbody\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(msg, msg+":2,S"); err != nil {
		t.Fatal(err)
	}
	p.stop(t, syscall.SIGTERM)
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", p.err, p.stderr)
	}
	if mounted, _ := isMountPoint(e.mnt); mounted {
		t.Error("still mounted after SIGTERM")
	}
	out, err := exec.Command(binary, "log", "dump", "-c", e.conf).Output()
	if err != nil {
		t.Fatalf("log dump: %v", err)
	}
	want := []string{`"op":"create","path":"msg"`, `"op":"write","path":"msg"`, `"ranges":[{"off":0,"len":18}]`,
		`"op":"rename","path":"msg","path2":"msg:2,S"`}
	for _, w := range want {
		if !strings.Contains(string(out), w) {
			t.Errorf("log dump lacks %s:\n%s", w, out)
		}
	}
}

// TestMountRefuses: each unsafe setup is refused with a message naming the
// directory, and exit code 2 (usage) or 1.
func TestMountRefuses(t *testing.T) {
	testenv.NeedFUSE(t)
	cases := []struct {
		name  string
		setup func(e *env) []string // returns the arguments after "mount -c conf"
		want  string
	}{
		{"missing backing", func(e *env) []string { return []string{filepath.Join(e.dir, "nope"), e.mnt} }, "does not exist"},
		{"backing inside mount point", func(e *env) []string {
			os.Mkdir(filepath.Join(e.mnt, "b"), 0o755)
			return []string{filepath.Join(e.mnt, "b"), e.mnt}
		}, "overlap"},
		{"mount point inside backing", func(e *env) []string {
			os.Mkdir(filepath.Join(e.backing, "m"), 0o755)
			return []string{e.backing, filepath.Join(e.backing, "m")}
		}, "overlap"},
		{"mount point not empty", func(e *env) []string {
			os.WriteFile(filepath.Join(e.mnt, "stray"), nil, 0o644)
			return nil
		}, "not empty"},
		{"log inside the spool", func(e *env) []string {
			os.WriteFile(e.conf, []byte(fmt.Sprintf("spool_dir: %s\nmount_point: %s\nsync_log_dir: %s/log\n", e.backing, e.mnt, e.backing)), 0o644)
			return nil
		}, "sync log directory"},
		{"sync mode without a replica", func(e *env) []string {
			f, _ := os.OpenFile(e.conf, os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString("sync_mode: sync\n")
			f.Close()
			return nil
		}, "set sync_host"},
		{"already mounted", func(e *env) []string {
			syscall.Mount("tmpfs", e.mnt, "tmpfs", 0, "size=1m")
			return nil
		}, "already a mount point"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, "")
			args := append([]string{"mount", "-c", e.conf}, c.setup(e)...)
			t.Cleanup(func() { syscall.Unmount(e.mnt, syscall.MNT_DETACH) })
			cmd := exec.Command(binary, args...)
			out, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("mount succeeded (%v), want a refusal:\n%s", err, out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Errorf("message %q does not say %q", out, c.want)
			}
		})
	}
}

// TestLazyUnmount: a mail process holding a file open at shutdown does not
// hang spoolsync; the mount is detached with a message and its writes are
// still recorded until it closes the file.
func TestLazyUnmount(t *testing.T) {
	e := newEnv(t, "")
	p := startMount(t, e)
	f, err := os.Create(filepath.Join(e.mnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	testenv.Eventually(t, 10*time.Second, "the mount to log that it is unmounting", func() bool {
		return strings.Contains(p.stderr.String(), "unmounting")
	})
	if _, err := f.WriteString("late"); err != nil {
		t.Errorf("write to a held file after SIGTERM: %v", err)
	}
	f.Close()
	p.stop(t, syscall.SIGTERM)
	if !strings.Contains(p.stderr.String(), "lazy unmount") {
		t.Errorf("no lazy-unmount message:\n%s", p.stderr)
	}
	var sawWrite bool
	for _, ev := range readLog(t, filepath.Join(e.state, "log")) {
		sawWrite = sawWrite || ev.Op == synclog.OpWrite && ev.Path == "held"
	}
	if !sawWrite {
		t.Error("the write made after the detach is not in the log")
	}
}

// deliverMain is the child of TestCrashDurability: maildir deliveries
// through the mount (write, fsync, rename, fsync dir), printing each one
// it finished. It stops at the first error (the mount was killed).
func deliverMain() {
	root := os.Getenv("SPOOLSYNC_TEST_DELIVER")
	body := strings.Repeat("Received: from mx.example.org by spool\n", 100)
	for i := 0; ; i++ {
		name := fmt.Sprintf("%d.M%dP%d.host", i, i, os.Getpid())
		tmp := filepath.Join(root, "tmp", name)
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			os.Exit(0)
		}
		if _, err := f.WriteString(body); err != nil {
			os.Exit(0)
		}
		if err := f.Sync(); err != nil {
			os.Exit(0)
		}
		if err := f.Close(); err != nil {
			os.Exit(0)
		}
		if err := os.Rename(tmp, filepath.Join(root, "new", name)); err != nil {
			os.Exit(0)
		}
		d, err := os.Open(filepath.Join(root, "new"))
		if err != nil {
			os.Exit(0)
		}
		if err := d.Sync(); err != nil {
			os.Exit(0)
		}
		d.Close()
		fmt.Println("done", name)
	}
}

// TestCrashDurability kills the mount with SIGKILL while a child delivers
// mail through it, then checks that every delivery the child saw complete
// (fsync of the file and of new/ returned) has its events in the log.
func TestCrashDurability(t *testing.T) {
	e := newEnv(t, "")
	for _, d := range []string{"tmp", "new", "cur"} {
		os.Mkdir(filepath.Join(e.backing, d), 0o700)
	}
	for round := 0; round < 5; round++ {
		p := startMount(t, e)
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), "SPOOLSYNC_TEST_DELIVER="+e.mnt)
		out, err := child.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		var done []string
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		kill := time.After(time.Duration(50+rand.IntN(400)) * time.Millisecond)
	read:
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					break read
				}
				done = append(done, strings.TrimPrefix(l, "done "))
			case <-kill:
				p.cmd.Process.Kill()
				kill = nil
			}
		}
		child.Wait()
		<-p.done
		detach(e.mnt)

		renamed := map[string]bool{}
		for _, ev := range readLog(t, filepath.Join(e.state, "log")) {
			if ev.Op == synclog.OpRename && strings.HasPrefix(ev.Path2, "new/") {
				renamed[strings.TrimPrefix(ev.Path2, "new/")] = true
			}
		}
		for _, name := range done {
			if !renamed[name] {
				t.Fatalf("round %d: delivery %s completed (fsync returned) but its rename is not in the log", round, name)
			}
		}
		t.Logf("round %d: %d deliveries completed before SIGKILL, all in the log", round, len(done))
	}
}

// TestLogDiskFull: a sync log on a tiny tmpfs that fills up makes writes
// through the mount fail with EIO; with room again they succeed.
func TestLogDiskFull(t *testing.T) {
	testenv.NeedRoot(t)
	e := newEnv(t, "")
	logDir := filepath.Join(e.dir, "smalllog")
	os.Mkdir(logDir, 0o755)
	if err := syscall.Mount("tmpfs", logDir, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(logDir, syscall.MNT_DETACH) })
	os.WriteFile(e.conf, []byte(fmt.Sprintf("spool_dir: %s\nmount_point: %s\nsync_log_dir: %s\n", e.backing, e.mnt, logDir)), 0o644)
	// Small segments: a preallocated segment never runs out of space, the
	// next one's preallocation does.
	startMount(t, e, "--log-segment-size", "64K")
	// Fill what the log left of the tmpfs.
	filler := filepath.Join(logDir, "filler")
	fill, _ := os.Create(filler)
	io.Copy(fill, io.LimitReader(zeros{}, 8<<20))
	fill.Close()

	var failed error
	for i := 0; i < 100000 && failed == nil; i++ {
		failed = os.WriteFile(filepath.Join(e.mnt, fmt.Sprintf("m%d", i)), []byte(strings.Repeat("x", 100)), 0o644)
	}
	if !errors.Is(failed, syscall.EIO) {
		t.Fatalf("deliveries with a full log disk: %v, want EIO", failed)
	}
	os.Remove(filler)
	testenv.Eventually(t, 10*time.Second, "a delivery to succeed once the log disk has room again", func() bool {
		return os.WriteFile(filepath.Join(e.mnt, "after"), []byte("ok"), 0o644) == nil
	})
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
