package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/testenv"
	"spoolsync/replicator"
	"spoolsync/synclog"
)

// notifications collects what a process sends to its NOTIFY_SOCKET.
type notifications struct {
	mu   sync.Mutex
	msgs []string
	more chan struct{} // signalled on every message
}

func (n *notifications) add(m string) {
	n.mu.Lock()
	n.msgs = append(n.msgs, m)
	n.mu.Unlock()
	select {
	case n.more <- struct{}{}:
	default:
	}
}

func (n *notifications) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// count is how many lines (systemd reads each line of a message as one
// assignment) start with want.
func (n *notifications) count(want string) int {
	c := 0
	for _, m := range n.all() {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, want) {
				c++
			}
		}
	}
	return c
}

// waitFor waits until count(want) >= k.
func (n *notifications) waitFor(t *testing.T, want string, k int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for n.count(want) < k {
		select {
		case <-n.more:
		case <-deadline:
			all := n.all()
			t.Fatalf("got %d %q notifications, want %d; the last ones: %q", n.count(want), want, k, all[max(0, len(all)-10):])
		}
	}
}

// fakeNotifySocket is a unixgram socket standing in for systemd's.
func fakeNotifySocket(t *testing.T) (string, *notifications) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n := &notifications{more: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.add(string(buf[:k]))
		}
	}()
	return path, n
}

// TestMountNotifiesSystemd runs the mount as systemd would run the
// Type=notify unit with WatchdogSec=: READY=1 once mounted, a STATUS= with
// each replica's lag and backlog, watchdog pings, STOPPING=1 at SIGTERM.
func TestMountNotifiesSystemd(t *testing.T) {
	// A replica nobody serves: the channel is disconnected with a backlog.
	e := newEnv(t, "sync_host: 127.0.0.1:1\nsync_authname: master\nsync_password: pw\n")
	sock, n := fakeNotifySocket(t)
	p := startNotifyMount(t, e, "NOTIFY_SOCKET="+sock, "WATCHDOG_USEC=300000")
	n.waitFor(t, "READY=1", 1)
	if err := os.WriteFile(filepath.Join(e.mnt, "msg"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "WATCHDOG=1", 3)
	n.waitFor(t, "STATUS=", 1)
	var status string
	for _, m := range n.all() {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "STATUS=") && strings.Contains(l, "backlog") {
				status = l
			}
		}
	}
	if !strings.Contains(status, "default (127.0.0.1:1) disconnected") || !strings.Contains(status, "lag ") {
		t.Errorf("no STATUS= line with the replica's state, lag and backlog: %q", n.all())
	}
	if n.count("STOPPING=1") != 0 {
		t.Fatalf("STOPPING=1 before any signal: %q", n.all())
	}
	p.stop(t, syscall.SIGTERM)
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", p.err, p.stderr)
	}
	if n.count("STOPPING=1") != 1 {
		t.Errorf("want one STOPPING=1 at SIGTERM; got %q", n.all())
	}
	if strings.Contains(p.stderr.String(), "unhealthy") {
		t.Errorf("the mount called itself unhealthy:\n%s", p.stderr)
	}
}

// startNotifyMount starts the mount with systemd's variables set (a
// WATCHDOG_USEC of 300 ms is a ping every 150 ms).
func startNotifyMount(t *testing.T, e *env, vars ...string) *proc {
	t.Helper()
	testenv.NeedFUSE(t)
	cmd := exec.Command(binary, "mount", "-c", e.conf)
	cmd.Env = append(os.Environ(), vars...)
	p, _, err := startCmd(t, cmd, "mount", func(l string) (string, bool) { return "", strings.Contains(l, "ready") },
		func() { detach(e.mnt) })
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestServerNotifiesSystemd: the standby's unit is Type=notify too.
func TestServerNotifiesSystemd(t *testing.T) {
	r := newReplicaEnv(t, "")
	sock, n := fakeNotifySocket(t)
	cmd := exec.Command(binary, "server", "-c", r.conf, "--listen", "127.0.0.1:0", "--root", r.root)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	p, _, err := startCmd(t, cmd, "server", func(l string) (string, bool) { return "", strings.Contains(l, "ready") }, nil)
	if err != nil {
		t.Fatal(err)
	}
	n.waitFor(t, "READY=1", 1)
	p.stop(t, syscall.SIGTERM)
	if p.err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", p.err, p.stderr)
	}
	if n.count("STOPPING=1") != 1 {
		t.Errorf("want one STOPPING=1 at SIGTERM; got %q", n.all())
	}
}

// TestWatchdogFedOnlyWhileHealthy: pings stop while a probe fails or
// hangs, resume when it recovers, and a hung probe is not called again
// while it hangs.
func TestWatchdogFedOnlyWhileHealthy(t *testing.T) {
	var mode atomic.Int32 // 0 healthy, 1 failing, 2 hanging
	release := make(chan struct{})
	var calls atomic.Int32
	check := func() error {
		calls.Add(1)
		switch mode.Load() {
		case 1:
			return errors.New("log failed")
		case 2:
			<-release
		}
		return nil
	}
	n := &notifications{more: make(chan struct{}, 1)}
	w := &watchdog{
		interval: 5 * time.Millisecond,
		probes:   []*probe{{name: "fuse", check: func() error { return nil }}, {name: "log", check: check}},
		status:   func() string { return "fine" },
		notify:   n.add,
		logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	n.waitFor(t, "WATCHDOG=1", 3)
	for _, phase := range []struct {
		mode int32
		why  string
	}{{1, "log: log failed"}, {2, "log: no answer within"}} {
		mode.Store(phase.mode)
		// Wait for the first unhealthy tick, then for three more: no ping
		// may come in between.
		n.waitFor(t, "STATUS=unhealthy: "+phase.why, 1)
		pings := n.count("WATCHDOG=1")
		before := n.count("STATUS=unhealthy: ")
		n.waitFor(t, "STATUS=unhealthy: ", before+3)
		if got := n.count("WATCHDOG=1"); got != pings {
			t.Fatalf("mode %d: %d watchdog pings while unhealthy", phase.mode, got-pings)
		}
		if phase.mode == 2 {
			hung := calls.Load()
			n.waitFor(t, "STATUS=unhealthy: ", n.count("STATUS=unhealthy: ")+3)
			if calls.Load() != hung {
				t.Fatalf("a hanging probe was called again while it hung (%d calls, then %d)", hung, calls.Load())
			}
		}
	}
	mode.Store(0)
	close(release)
	pings := n.count("WATCHDOG=1")
	n.waitFor(t, "WATCHDOG=1", pings+3)
	last := n.all()[len(n.all())-1]
	if last != "WATCHDOG=1\nSTATUS=fine" {
		t.Errorf("healthy notification %q, want the ping and the status", last)
	}
}

// TestProbes: the FUSE probe fails on a directory that is not a FUSE
// mount (the mount removed from under the process), the log probe on a
// log that no longer accepts events.
func TestProbes(t *testing.T) {
	if err := fuseProbe(t.TempDir())(); err == nil || !strings.Contains(err.Error(), "not a FUSE mount") {
		t.Errorf("FUSE probe on a plain directory: %v, want not a FUSE mount", err)
	}
	lg, err := synclog.Open(synclog.Options{Dir: t.TempDir(), SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lg.Append(&synclog.Event{Op: synclog.OpCreate, Path: "a"}); err != nil {
		t.Fatal(err)
	}
	if err := logProbe(lg)(); err != nil {
		t.Errorf("log probe on a working log: %v", err)
	}
	lg.Close()
	if err := logProbe(lg)(); !errors.Is(err, synclog.ErrClosed) {
		t.Errorf("log probe on a closed log: %v, want ErrClosed", err)
	}
}

// TestRestartAfterKill: systemd restarts a mount that crashed or that
// its watchdog killed; the kernel still holds the dead FUSE mount
// (ENOTCONN; ECONNABORTED over io_uring), and the new process detaches it and mounts again instead
// of refusing a mounted mount point.
func TestRestartAfterKill(t *testing.T) {
	e := newEnv(t, "")
	p := startMount(t, e)
	must(t, p.cmd.Process.Kill())
	<-p.done
	// The kernel tears the connection down after the process is gone
	// (over io_uring statfs answers ECANCELED meanwhile).
	var err error
	testenv.Eventually(t, 10*time.Second, "statfs of the killed mount to answer ENOTCONN or ECONNABORTED (a dead FUSE mount)", func() bool {
		var st syscall.Statfs_t
		err = syscall.Statfs(e.mnt, &st)
		return deadFUSE(err)
	})
	p = startMount(t, e)
	if !strings.Contains(p.stderr.String(), "detached the mount") {
		t.Errorf("the restart did not say it detached the dead mount:\n%s", p.stderr)
	}
	must(t, os.WriteFile(filepath.Join(e.mnt, "after"), []byte("x"), 0o600))
	if _, err := os.Stat(filepath.Join(e.backing, "after")); err != nil {
		t.Errorf("write through the new mount: %v", err)
	}
}

// TestStatusLine: what `systemctl status` shows of each replica.
func TestStatusLine(t *testing.T) {
	got := statusLine("/var/mail", []replicator.ChannelStatus{
		{Name: "a", Replica: "b:2005", Connected: true, LagSeconds: 0.04, BacklogEvents: 3},
		{Name: "c", Replica: "d:2005", Connected: true, SyncMode: "degraded", LagSeconds: 7.25, BacklogEvents: 900},
		{Name: "e", Replica: "f:2005", Fenced: true, BacklogEvents: 12},
		{Name: "g", Replica: "h:2005", LagSeconds: 61, BacklogEvents: 4000},
	})
	want := "mounted on /var/mail; a (b:2005) connected, lag 0.0s, backlog 3 events; c (d:2005) DEGRADED, lag 7.2s, backlog 900 events; " +
		"e (f:2005) FENCED, lag 0.0s, backlog 12 events; g (h:2005) disconnected, lag 61.0s, backlog 4000 events"
	if got != want {
		t.Errorf("status line\n got %s\nwant %s", got, want)
	}
}
