package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/internal/testenv"
	"spoolsync/internal/treecmp"
	"spoolsync/replica"
	"spoolsync/replicator"
)

// pair is a master mount replicating to a replica server, both real
// processes on loopback.
type pair struct {
	m      *env
	r      *replicaEnv
	mount  *proc
	server *proc
	addr   string
}

func newPair(t *testing.T, extraConf string) *pair {
	t.Helper()
	r := newReplicaEnv(t, "")
	server, addr := startServer(t, r)
	m := newEnv(t, fmt.Sprintf("sync_host: %s\nsync_authname: master\nsync_password: pw\n%s", addr, extraConf))
	return &pair{m: m, r: r, server: server, addr: addr, mount: startMount(t, m)}
}

// freeAddr is a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

// waitSynced waits until the mount reports no backlog on its channel and
// the trees are identical; it fails the test with every difference.
func (p *pair) waitSynced(t *testing.T) {
	t.Helper()
	p.waitSyncedSub(t, "")
}

// waitSyncedSub is waitSynced for one subtree ("" for the whole tree).
func (p *pair) waitSyncedSub(t *testing.T, sub string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var diffs []string
	for time.Now().Before(deadline) {
		st, err := readStatus(filepath.Join(p.m.state, "log"))
		if err == nil && len(st) == 1 && st[0].BacklogEvents == 0 {
			diffs, err = treecmp.Diff(filepath.Join(p.m.backing, sub), filepath.Join(p.r.root, sub),
				treecmp.Options{Skip: []string{fence.Dir, fence.QuarantineDir}, DirMtimes: true})
			if err == nil && len(diffs) == 0 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	st, _ := readStatus(filepath.Join(p.m.state, "log"))
	t.Fatalf("replica's %q not identical after 60s (status %+v):\n%s\nmount log:\n%s\nserver log:\n%s", sub, st, strings.Join(diffs, "\n"), p.mount.stderr, p.server.stderr)
}

// syncedWithin waits until deadline for the mount to report no backlog
// and nothing owed on its channel and the trees to be identical; the
// error says what still differs.
func (p *pair) syncedWithin(deadline time.Time) error {
	var last string
	for {
		st, err := readStatus(filepath.Join(p.m.state, "log"))
		switch {
		case err != nil:
			last = err.Error()
		case len(st) != 1 || st[0].BacklogEvents != 0 || st[0].ResyncOwed != "":
			last = fmt.Sprintf("status %+v", st)
		default:
			diffs, err := treecmp.Diff(p.m.backing, p.r.root, treecmp.Options{Skip: []string{fence.Dir, fence.QuarantineDir}, DirMtimes: true})
			if err == nil && len(diffs) == 0 {
				return nil
			}
			last = fmt.Sprintf("%d differences (%v):\n%s", len(diffs), err, strings.Join(diffs[:min(len(diffs), 50)], "\n"))
		}
		if time.Now().After(deadline) {
			return errors.New(last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitStatus polls the mount's status until its one channel satisfies ok,
// and returns it; after timeout the test fails saying what it waited for.
func waitStatus(t *testing.T, e *env, timeout time.Duration, what string, ok func(replicator.ChannelStatus) bool) replicator.ChannelStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := readStatus(filepath.Join(e.state, "log"))
		if err == nil && len(st) == 1 && ok(st[0]) {
			return st[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("status does not show %s after %v: %+v %v", what, timeout, st, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deliver puts a message into a maildir as an MTA does.
func deliver(t *testing.T, maildir, name, body string) string {
	t.Helper()
	tmp := filepath.Join(maildir, "tmp", name)
	writeFsynced(t, tmp, body)
	dst := filepath.Join(maildir, "new", name)
	must(t, os.Rename(tmp, dst))
	return dst
}

// writeFsynced creates a new file with body and fsyncs it, as an MTA
// writes a message into tmp/.
func writeFsynced(t *testing.T, path, body string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	must(t, err)
	_, err = f.WriteString(body)
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())
}

func mkMaildir(t *testing.T, dir string) {
	t.Helper()
	for _, d := range []string{"tmp", "new", "cur"} {
		must(t, os.MkdirAll(filepath.Join(dir, d), 0o700))
	}
}

func message(i int) string {
	return fmt.Sprintf("From: sender%d@example.org\r\nSubject: message %d\r\n\r\n%s\r\n", i, i, strings.Repeat("body line\r\n", 10+i%50))
}

// TestReplication: everything a mail server does, through the mount, ends
// identical on the replica (content, type, mode, owner, mtime, symlinks,
// hard links, xattrs, directory times).
func TestReplication(t *testing.T) {
	metrics := freeAddr(t)
	p := newPair(t, "metrics_listen: "+metrics+"\n")
	mnt := p.m.mnt
	users := []string{"alice", "bob", "carol"}
	for _, u := range users {
		mkMaildir(t, filepath.Join(mnt, u, "Maildir"))
		mkMaildir(t, filepath.Join(mnt, u, "Maildir", ".Archive"))
		for i := 0; i < 20; i++ {
			deliver(t, filepath.Join(mnt, u, "Maildir"), fmt.Sprintf("%d.M%d.host", i, i), message(i))
		}
	}
	p.waitSynced(t)

	bob := filepath.Join(mnt, "bob", "Maildir")
	// Read flags by renaming, folder moves, deletes.
	must(t, os.Rename(filepath.Join(bob, "new", "1.M1.host"), filepath.Join(bob, "cur", "1.M1.host:2,S")))
	must(t, os.Rename(filepath.Join(bob, "new", "2.M2.host"), filepath.Join(bob, ".Archive", "cur", "2.M2.host:2,RS")))
	must(t, os.Remove(filepath.Join(bob, "new", "3.M3.host")))
	// One message hard-linked into several folders.
	shared := filepath.Join(bob, "new", "4.M4.host")
	for _, u := range []string{"alice", "carol"} {
		must(t, os.Link(shared, filepath.Join(mnt, u, "Maildir", "cur", "shared:2,")))
	}
	// mbox: appends, a rewrite in the middle, a truncate.
	mbox := filepath.Join(mnt, "carol", "mbox")
	for i := 0; i < 5; i++ {
		f, err := os.OpenFile(mbox, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		must(t, err)
		_, err = f.WriteString("From x@y Thu Jan  1 00:00:00 2026\n" + message(i))
		must(t, err)
		must(t, f.Close())
	}
	f, err := os.OpenFile(mbox, os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteAt([]byte("Status: RO"), 100)
	must(t, err)
	must(t, f.Close())
	idx := filepath.Join(mnt, "carol", "dovecot.index")
	must(t, os.WriteFile(idx, []byte(strings.Repeat("i", 5000)), 0o600))
	must(t, os.Truncate(idx, 1234))
	// Attributes.
	must(t, os.Symlink("Maildir/cur", filepath.Join(mnt, "alice", "inbox-link")))
	must(t, os.Chmod(filepath.Join(mnt, "alice", "Maildir", "new", "5.M5.host"), 0o640))
	must(t, os.Lchown(filepath.Join(mnt, "alice", "Maildir", "new", "6.M6.host"), 1234, 5678))
	must(t, unix.Setxattr(filepath.Join(mnt, "alice", "Maildir", "new", "7.M7.host"), "user.flags", []byte("\\Flagged"), 0))
	must(t, unix.Setxattr(filepath.Join(mnt, "alice", "Maildir", "new", "9.M9.host"), "user.flags", []byte("\\Seen"), 0))
	must(t, os.Chtimes(filepath.Join(mnt, "alice", "Maildir", "new", "8.M8.host"), time.Unix(1e9, 0), time.Unix(1e9, 0)))
	// Cyrus binds its idle and LMTP sockets in the spool: replicated as
	// sockets (a name; nothing listens there on the replica).
	must(t, os.Mkdir(filepath.Join(mnt, "socket"), 0o755))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(mnt, "socket", "idle.123"), Net: "unix"})
	must(t, err)
	ln.SetUnlinkOnClose(false)
	ln.Close()
	p.waitSynced(t)
	if fi, err := os.Lstat(filepath.Join(p.r.root, "socket", "idle.123")); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("the replica's socket/idle.123: %v %v, want a socket", fi, err)
	}

	// Path traps: a file written and then its folder renamed before the
	// batch ships; a whole user renamed; a file renamed over another;
	// RENAME_EXCHANGE; a folder deleted and re-created with new content.
	deliver(t, filepath.Join(mnt, "alice", "Maildir", ".Archive"), "late.host", "late message\n")
	must(t, os.Rename(filepath.Join(mnt, "alice", "Maildir", ".Archive"), filepath.Join(mnt, "alice", "Maildir", ".Old")))
	must(t, os.Rename(filepath.Join(mnt, "carol"), filepath.Join(mnt, "caroline")))
	must(t, os.WriteFile(filepath.Join(mnt, "bob", "new.index"), []byte("new index"), 0o600))
	must(t, os.WriteFile(filepath.Join(mnt, "bob", "dovecot.index"), []byte("old index"), 0o600))
	must(t, os.Rename(filepath.Join(mnt, "bob", "new.index"), filepath.Join(mnt, "bob", "dovecot.index")))
	must(t, os.WriteFile(filepath.Join(mnt, "bob", "x1"), []byte("one"), 0o600))
	must(t, os.WriteFile(filepath.Join(mnt, "bob", "x2"), []byte("two"), 0o600))
	must(t, unix.Renameat2(unix.AT_FDCWD, filepath.Join(mnt, "bob", "x1"), unix.AT_FDCWD, filepath.Join(mnt, "bob", "x2"), unix.RENAME_EXCHANGE))
	must(t, os.RemoveAll(filepath.Join(bob, ".Archive")))
	mkMaildir(t, filepath.Join(bob, ".Archive"))
	must(t, unix.Removexattr(filepath.Join(mnt, "alice", "Maildir", "new", "9.M9.host"), "user.flags")) // a flag cleared
	deliver(t, filepath.Join(bob, ".Archive"), "reborn.host", "new content\n")
	p.waitSynced(t)

	// An mbox emptied: the replica had it, the master truncates it to 0.
	must(t, os.Truncate(filepath.Join(mnt, "caroline", "mbox"), 0)) // carol was renamed above
	p.waitSynced(t)

	// The control socket can hand paths to the log: root only.
	if st, err := os.Stat(statusSocket(filepath.Join(p.m.state, "log"))); err != nil {
		t.Errorf("control socket: %v", err)
	} else if st.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want 0600", st.Mode().Perm())
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`spoolsync_channel_connected{channel="default"`, `spoolsync_channel_backlog_events{channel="default"} 0`, "spoolsync_channel_dedup_hits_total"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
}

// TestReplicationFaults: the mount killed mid-delivery and restarted, the
// server killed and restarted, the server stopped for a while (backlog on
// disk) — the replica converges each time with no manual step, and the
// master keeps serving mail throughout.
func TestReplicationFaults(t *testing.T) {
	r := newReplicaEnv(t, "")
	server, addr := startServer(t, r)
	m := newEnv(t, fmt.Sprintf("sync_host: %s\nsync_authname: master\nsync_password: pw\n", addr))
	p := &pair{m: m, r: r, server: server, addr: addr, mount: startMount(t, m)}
	md := filepath.Join(m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	n := 0
	deliverSome := func(k int) {
		for i := 0; i < k; i++ {
			n++
			deliver(t, md, fmt.Sprintf("%d.fault", n), message(n))
		}
	}
	for round := 0; round < 3; round++ {
		// SIGKILL the mount while a child delivers through it.
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), "SPOOLSYNC_TEST_DELIVER="+md)
		must(t, child.Start())
		time.Sleep(time.Duration(100+rand.IntN(300)) * time.Millisecond)
		p.mount.cmd.Process.Kill()
		<-p.mount.done
		child.Wait()
		detach(m.mnt)
		p.mount = startMount(t, m)
		deliverSome(5)
		p.waitSynced(t)

		// SIGKILL the server mid-stream and restart it on the same address.
		deliverSome(20)
		p.server.cmd.Process.Kill()
		<-p.server.done
		deliverSome(10) // the master keeps serving; the backlog grows on disk
		p.server = restartServer(t, r, p.addr)
		p.waitSynced(t)
	}
}

// restartServer starts the replica server again on addr.
func restartServer(t *testing.T, r *replicaEnv, addr string) *proc {
	t.Helper()
	var lastErr error
	for i := 0; i < 50; i++ {
		pr, got, err := startServerAt(t, r, addr)
		if err == nil {
			if got != addr {
				t.Fatalf("server listens on %s, want %s", got, addr)
			}
			return pr
		}
		lastErr = err
		time.Sleep(100 * time.Millisecond) // the port may linger
	}
	t.Fatalf("restart server on %s: %v", addr, lastErr)
	return nil
}

// TestReplicationAuthErrors: a wrong password keeps the mount serving, the
// status shows the error, the log keeps everything; with the credential
// fixed (restart of the mount), it catches up.
func TestReplicationAuthErrors(t *testing.T) {
	r := newReplicaEnv(t, "")
	server, addr := startServer(t, r)
	for _, bad := range []string{"sync_authname: master\nsync_password: wrong\n", "sync_authname: bob\nsync_password: bobpw\n"} {
		m := newEnv(t, fmt.Sprintf("sync_host: %s\n%s", addr, bad))
		mount := startMount(t, m)
		md := filepath.Join(m.mnt, "Maildir")
		mkMaildir(t, md)
		deliver(t, md, "1.host", message(1))
		st := waitStatus(t, m, 10*time.Second, "an error", func(c replicator.ChannelStatus) bool { return c.LastError != "" }).LastError
		if !strings.Contains(st, "authentication failed") && !strings.Contains(st, "admins") {
			t.Fatalf("status last error = %q, want the authentication refusal", st)
		}
		mount.stop(t, syscall.SIGTERM)
		// Fix the credential; the backlog is shipped.
		os.WriteFile(m.conf, []byte(fmt.Sprintf("spool_dir: %s\nmount_point: %s\nstate_dir: %s\nsync_host: %s\nsync_authname: master\nsync_password: pw\n",
			m.backing, m.mnt, m.state, addr)), 0o644)
		p := &pair{m: m, r: r, server: server, addr: addr, mount: startMount(t, m)}
		// The replica root is shared by both rounds: compare this master's
		// user only.
		p.waitSyncedSub(t, "Maildir")
		os.RemoveAll(filepath.Join(m.backing, "Maildir"))
	}
}

// startServerAt starts `spoolsync server` listening on listen and waits for
// its ready line; it returns the process and the address it listens on. A
// server that exits before it is ready (a port still in use) is an error,
// not a test failure, so callers can retry.
func startServerAt(t *testing.T, e *replicaEnv, listen string) (*proc, string, error) {
	t.Helper()
	return startProc(t, []string{"server", "-c", e.conf, "--listen", listen, "--root", e.root},
		func(l string) (string, bool) { return strings.CutPrefix(l, "spoolsync: ready: serving "+e.root+" on ") }, nil)
}

// TestReplicaDiskFull: the replica's disk fills up (its root on a small
// tmpfs); the master keeps serving mail, the backlog waits in its log, and
// once the replica has room again the trees converge with no manual step.
func TestReplicaDiskFull(t *testing.T) {
	testenv.NeedRoot(t)
	r := newReplicaEnv(t, "")
	if err := syscall.Mount("tmpfs", r.root, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(r.root, syscall.MNT_DETACH) })
	filler := filepath.Join(r.root, "filler")
	f, err := os.Create(filler)
	must(t, err)
	io.Copy(f, io.LimitReader(zeroes{}, 7<<20))
	f.Close()
	server, addr := startServer(t, r)
	m := newEnv(t, fmt.Sprintf("sync_host: %s\nsync_authname: master\nsync_password: pw\n", addr))
	p := &pair{m: m, r: r, server: server, addr: addr, mount: startMount(t, m)}
	md := filepath.Join(m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	for i := 0; i < 40; i++ {
		deliver(t, md, fmt.Sprintf("%d.full", i), strings.Repeat(message(i), 200)) // ~3 MB in all
	}
	waitStatus(t, m, 30*time.Second, "the replica's full disk", func(c replicator.ChannelStatus) bool {
		return strings.Contains(c.LastError, "no space")
	})
	// A full disk is no reason to give up on a batch: after more refusals
	// than a batch that cannot apply gets (3), the batch still waits and
	// status shows what is missing on the replica, not "0 events".
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(p.mount.stderr.String(), "no space left on device") < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("the mount did not retry 5 times in 60 s:\n%s", p.mount.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st := waitStatus(t, m, time.Second, "the error", func(c replicator.ChannelStatus) bool { return true })
	if st.BacklogEvents == 0 || st.LagSeconds == 0 || !strings.Contains(st.LastError, "no space") {
		t.Errorf("the replica's disk is full and mail is missing there, but status shows backlog %d, lag %.3fs, error %q",
			st.BacklogEvents, st.LagSeconds, st.LastError)
	}
	deliver(t, md, "while-full", "the master still takes mail") // the master is unaffected
	must(t, os.Remove(filler))
	p.waitSyncedSub(t, "user")
}

// TestReplicaHealsLostFile: the replica loses a message (an administrator,
// a disk, a resync --delete that raced its delivery) and the master then
// renames and rewrites it. Those ops name a file the replica does not
// have: the replica skips them and says their paths are owed, the master
// brings those paths to its present state before its next batch, and
// replication goes on, rather than failing the same batch forever.
func TestReplicaHealsLostFile(t *testing.T) {
	p := newPair(t, "")
	md := filepath.Join(p.m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	for i, name := range []string{"moved", "flagged", "appended"} {
		deliver(t, md, name, message(i))
	}
	p.waitSynced(t)
	lose := func(name string) {
		must(t, os.Remove(filepath.Join(p.r.root, "user", "Maildir", "new", name)))
	}
	// One change at a time, each synced: a batch the replica applied in
	// part and then refused is replayed, and a replay skips ops on files
	// that are gone (an earlier apply of the batch may have moved them).
	lose("moved")
	must(t, os.Rename(filepath.Join(md, "new", "moved"), filepath.Join(md, "cur", "moved:2,S")))
	p.waitSynced(t)
	lose("flagged")
	must(t, os.Chmod(filepath.Join(md, "new", "flagged"), 0o640))
	p.waitSynced(t)
	lose("appended")
	f, err := os.OpenFile(filepath.Join(md, "new", "appended"), os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.WriteString("X-Appended: yes\r\n")
	must(t, err)
	must(t, f.Sync())
	must(t, f.Close())
	p.waitSynced(t)
	deliver(t, md, "after", "mail after the loss")
	p.waitSynced(t)
	if !strings.Contains(p.mount.stderr.String(), "bringing their paths to the master's state") {
		t.Errorf("the mount did not say it brought the skipped paths to its state:\n%s", p.mount.stderr)
	}
}

// TestReplicaRefusesForGood: something on the replica's tree is in the
// way of a batch — here a directory where the master delivers a file.
// Refused and sent again, replication would stop for good (before, it went
// past after a few refusals). The batch applies; the put it could not do
// is owed, and the master's state of that path replaces the directory.
func TestReplicaThingInTheWay(t *testing.T) {
	p := newPair(t, "")
	md := filepath.Join(p.m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	deliver(t, md, "first", message(1))
	p.waitSynced(t)
	must(t, os.MkdirAll(filepath.Join(p.r.root, "user", "Maildir", "new", "second", "in-the-way"), 0o755))
	deliver(t, md, "second", message(2))
	p.waitSynced(t)
	deliver(t, md, "third", message(3))
	p.waitSynced(t)
	if !strings.Contains(p.mount.stderr.String(), "bringing their paths to the master's state") {
		t.Errorf("the mount did not say it brought the skipped path to its state:\n%s", p.mount.stderr)
	}
	if strings.Contains(p.mount.stderr.String(), "refused the same batch again") {
		t.Errorf("the replica refused the batch:\n%s", p.mount.stderr)
	}
}

// TestReplayResyncsItsDirs: the replica dies while it applies a batch; the
// master sends the batch again and the replica replays it. A replay skips
// ops on files that are gone (an earlier apply may have moved them), and a
// few op sequences do not replay exactly, so what the cut-short apply did
// can stay wrong: here it had removed a message that the replayed batch
// does not bring back. The master resyncs the directories the batch
// touched, and the replica has the message again.
func TestReplayResyncsItsDirs(t *testing.T) {
	p := newPair(t, "")
	md := filepath.Join(p.m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	p.waitSynced(t) // the first contact's resync; then rolling batches
	must(t, os.WriteFile(filepath.Join(md, "tmp", "keep"), []byte(message(1)), 0o600))
	p.waitSynced(t)
	p.server.cmd.Process.Kill()
	<-p.server.done

	// The cut-short apply of the next batch, as the replica left it.
	id, err := os.ReadFile(filepath.Join(p.m.state, "log", "log-id"))
	must(t, err)
	source := "master/default@" + strings.TrimSpace(string(id)) // login/channel@log-id
	store, err := replica.Open(replica.Options{Root: p.r.root, StateDir: filepath.Join(p.r.state, "replica")})
	must(t, err)
	applied := store.AppliedSeq(source)
	if applied == 0 {
		t.Fatalf("no batch of %s applied: not the master's channel", source)
	}
	txn, err := store.Begin(source, applied+1)
	must(t, err)
	must(t, txn.Unlink("user/Maildir/tmp/keep"))
	txn.Abort()
	must(t, store.Close())

	// The batch sent again: the master's next event, in the same folder.
	must(t, os.WriteFile(filepath.Join(md, "tmp", "next"), []byte(message(2)), 0o600))
	p.server = restartServer(t, p.r, p.addr)
	p.waitSynced(t)
}

type zeroes struct{}

func (zeroes) Read(b []byte) (int, error) {
	clear(b)
	return len(b), nil
}

// TestSeedOnFirstContact: mail that was in the spool before the first
// mount (it has no events) reaches a new replica with no manual step.
func TestSeedOnFirstContact(t *testing.T) {
	r := newReplicaEnv(t, "")
	server, addr := startServer(t, r)
	m := newEnv(t, fmt.Sprintf("sync_host: %s\nsync_authname: master\nsync_password: pw\n", addr))
	for i := 0; i < 50; i++ {
		write(t, filepath.Join(m.backing, "old", "Maildir", "cur", fmt.Sprintf("%d.old:2,S", i)), message(i))
	}
	p := &pair{m: m, r: r, server: server, addr: addr, mount: startMount(t, m)}
	mkMaildir(t, filepath.Join(m.mnt, "old", "Maildir"))
	deliver(t, filepath.Join(m.mnt, "old", "Maildir"), "new.host", "after the mount")
	p.waitSynced(t)
}

// TestUncleanStopLostEvents: the mount is killed between a backing
// operation and its event (simulated: the changes are made on the backing
// dir while the mount is down). The next start resyncs the directories
// changed since the last checkpoint, and the replica converges.
func TestUncleanStopLostEvents(t *testing.T) {
	p := newPair(t, "")
	md := filepath.Join(p.m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	for i := 0; i < 10; i++ {
		deliver(t, md, fmt.Sprintf("%d.lost", i), message(i))
	}
	p.waitSynced(t)
	p.mount.cmd.Process.Kill()
	<-p.mount.done
	detach(p.m.mnt)
	// What the lost events did: an unlink and a rename.
	bmd := filepath.Join(p.m.backing, "user", "Maildir")
	must(t, os.Remove(filepath.Join(bmd, "new", "1.lost")))
	must(t, os.Rename(filepath.Join(bmd, "new", "2.lost"), filepath.Join(bmd, "cur", "2.lost:2,S")))
	p.mount = startMount(t, p.m)
	p.waitSynced(t)
}

// TestLinkDelivery: the maildir specification's delivery, which qmail and
// Postfix's local agent use: write tmp/NAME, fsync, link it to new/NAME,
// unlink tmp/NAME; also without the fsync, where create, link and unlink
// can share one batch, and a lock file taken the same way and dropped.
func TestLinkDelivery(t *testing.T) {
	p := newPair(t, "")
	md := filepath.Join(p.m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	for i := 0; i < 40; i++ {
		name := fmt.Sprintf("%d.link.host", i)
		tmp := filepath.Join(md, "tmp", name)
		if i%2 == 0 {
			writeFsynced(t, tmp, message(i))
		} else {
			must(t, os.WriteFile(tmp, []byte(message(i)), 0o600))
		}
		must(t, os.Link(tmp, filepath.Join(md, "new", name)))
		must(t, os.Remove(tmp))
		lock := filepath.Join(md, "lock")
		must(t, os.WriteFile(lock+".tmp", []byte("pid\n"), 0o600))
		must(t, os.Link(lock+".tmp", lock))
		must(t, os.Remove(lock+".tmp"))
		must(t, os.Remove(lock))
	}
	p.waitSynced(t)
	if got := len(messages(t, p.r.root)); got != 40 {
		t.Fatalf("%d messages on the replica, want 40", got)
	}
}
