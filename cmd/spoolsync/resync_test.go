package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/internal/testenv"
	"spoolsync/internal/treecmp"
	"spoolsync/replicator"
)

// resyncEnv is a master spool (not mounted) and a replica server.
type resyncEnv struct {
	spool, conf string
	r           *replicaEnv
}

func newResyncEnv(t *testing.T) *resyncEnv {
	t.Helper()
	testenv.NeedRoot(t) // owners are part of what is compared
	r := newReplicaEnv(t, "")
	_, addr := startServer(t, r)
	dir := t.TempDir()
	e := &resyncEnv{spool: filepath.Join(dir, "spool"), conf: filepath.Join(dir, "m.conf"), r: r}
	must(t, os.Mkdir(e.spool, 0o755))
	must(t, os.WriteFile(e.conf, []byte(fmt.Sprintf("spool_dir: %s\nstate_dir: %s\nsync_host: %s\nsync_authname: master\nsync_password: pw\n",
		e.spool, filepath.Join(dir, "state"), addr)), 0o644))
	return e
}

// resync runs `spoolsync resync --json` and returns its report and exit code.
func (e *resyncEnv) resync(t *testing.T, args ...string) (replicator.ResyncReport, int) {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"resync", "-c", e.conf, "--json"}, args...)...).Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
		if code != 3 {
			t.Fatalf("resync %v: exit %d\n%s\n%s", args, code, out, ee.Stderr)
		}
	} else if err != nil {
		t.Fatal(err)
	}
	var rep replicator.ResyncReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("resync %v: %v\n%s", args, err, out)
	}
	return rep, code
}

func (e *resyncEnv) diff(t *testing.T) []string {
	t.Helper()
	d, err := treecmp.Diff(e.spool, e.r.root, treecmp.Options{Skip: []string{".spoolsync"}, DirMtimes: true})
	must(t, err)
	return d
}

func write(t *testing.T, p, content string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(p), 0o755))
	must(t, os.WriteFile(p, []byte(content), 0o644))
}

func TestResync(t *testing.T) {
	e := newResyncEnv(t)
	s, r := e.spool, e.r.root
	for _, u := range []string{"alice", "bob"} {
		for i := 0; i < 10; i++ {
			write(t, filepath.Join(s, "user", u, "cur", fmt.Sprintf("m%d", i)), message(i)+u)
		}
	}
	write(t, filepath.Join(s, "user/bob/big"), strings.Repeat("big message body\n", 20000))
	must(t, os.Link(filepath.Join(s, "user/bob/cur/m1"), filepath.Join(s, "user/bob/cur/m1-link")))
	must(t, os.Symlink("cur", filepath.Join(s, "user/bob/inbox")))
	must(t, os.Mkdir(filepath.Join(s, "user/bob/todir"), 0o755))
	write(t, filepath.Join(s, "user/bob/tofile"), "file")

	// Seeding an empty replica.
	rep, code := e.resync(t)
	if code != 0 || rep.Different == 0 {
		t.Fatalf("seeding: exit %d, %+v", code, rep)
	}
	if d := e.diff(t); len(d) > 0 {
		t.Fatalf("after seeding:\n%s", strings.Join(d, "\n"))
	}
	seeded := rep.ContentBytes
	t.Logf("seeding: %+v", rep)

	// Make the trees differ in every way, on both sides.
	must(t, os.Remove(filepath.Join(r, "user/alice/cur/m0")))   // missing on the replica
	write(t, filepath.Join(r, "user/alice/extra"), "only here") // extra on the replica
	mt := time.Unix(1.7e9, 0)                                   // content changed, same size and mtime
	p := filepath.Join(r, "user/alice/cur/m1")
	b, _ := os.ReadFile(p)
	b[0] ^= 1
	must(t, os.WriteFile(p, b, 0o644))
	must(t, os.Chtimes(p, mt, mt))
	must(t, os.Chtimes(filepath.Join(s, "user/alice/cur/m1"), mt, mt))
	must(t, os.Chmod(filepath.Join(r, "user/alice/cur/m2"), 0o600))       // mode
	must(t, os.Lchown(filepath.Join(r, "user/alice/cur/m3"), 4321, 4321)) // owner
	must(t, os.Chtimes(filepath.Join(r, "user/alice/cur/m4"), mt, mt))    // mtime
	must(t, os.Remove(filepath.Join(r, "user/bob/todir")))                // dir → file
	write(t, filepath.Join(r, "user/bob/todir"), "was a dir")
	must(t, os.Remove(filepath.Join(r, "user/bob/tofile"))) // file → dir
	write(t, filepath.Join(r, "user/bob/tofile/inside"), "x")
	must(t, os.Remove(filepath.Join(r, "user/bob/inbox"))) // symlink changed
	must(t, os.Symlink("new", filepath.Join(r, "user/bob/inbox")))
	must(t, os.Remove(filepath.Join(r, "user/bob/cur/m1-link"))) // hard link broken
	write(t, filepath.Join(r, "user/bob/cur/m1-link"), message(1)+"bob")
	must(t, os.Rename(filepath.Join(s, "user/bob/big"), filepath.Join(s, "user/bob/cur/big-moved"))) // moved on the master
	must(t, unix.Setxattr(filepath.Join(s, "user/bob/cur/m5"), "user.flags", []byte("S"), 0))        // xattr

	// --dry-run: changes nothing, lists every difference, exit 3.
	before := e.diff(t)
	rep, code = e.resync(t, "--dry-run")
	if code != 3 {
		t.Errorf("--dry-run exit %d, want 3", code)
	}
	for _, want := range []string{"user/alice/cur/m0: missing", "user/alice/extra: only on the replica", "user/alice/cur/m1: content differs",
		"user/alice/cur/m2: attributes", "user/alice/cur/m3: attributes", "user/alice/cur/m4: attributes", "user/bob/todir: type differs",
		"user/bob/tofile: type differs", "user/bob/inbox: symlink target differs", "user/bob/cur/m1-link: not a hard link",
		"user/bob/cur/big-moved: missing", "user/bob/big: only on the replica", "user/bob/cur/m5: attributes"} {
		if !strings.Contains(strings.Join(rep.Differences, "\n"), want) {
			t.Errorf("--dry-run does not list %q:\n%s", want, strings.Join(rep.Differences, "\n"))
		}
	}
	if after := e.diff(t); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("--dry-run changed the replica")
	}

	// A partial resync of user/alice touches nothing outside it (and a
	// flag may follow the path).
	rep, _ = e.resync(t, "user/alice", "--delete")
	for _, d := range e.diff(t) {
		if strings.HasPrefix(d, "user/alice") {
			t.Errorf("after resync of user/alice: %s", d)
		}
	}
	if len(e.diff(t)) == 0 {
		t.Error("a partial resync of user/alice repaired user/bob too")
	}

	// Everything: identical after, and the moved message was copied on
	// the replica, not sent.
	rep, code = e.resync(t, "--delete")
	if code != 0 {
		t.Errorf("resync --delete exit %d", code)
	}
	if d := e.diff(t); len(d) > 0 {
		t.Fatalf("after resync --delete:\n%s", strings.Join(d, "\n"))
	}
	if rep.ContentBytes > seeded/4 || rep.Dedup == 0 {
		t.Errorf("resync sent %d content bytes (%d deduplicated); the 340 KB message moved on the master should have been copied on the replica", rep.ContentBytes, rep.Dedup)
	}
	// Unchanged tree: nothing shipped.
	rep, code = e.resync(t)
	if code != 0 || rep.Shipped != 0 || rep.Different != 0 {
		t.Errorf("resync of an identical tree: exit %d, %+v", code, rep)
	}
}

// TestResyncInterrupted: a resync killed halfway, run again, finishes and
// does not send again what already arrived.
func TestResyncInterrupted(t *testing.T) {
	e := newResyncEnv(t)
	for i := 0; i < 3000; i++ {
		write(t, filepath.Join(e.spool, fmt.Sprintf("user/u%d/cur/m%d", i%10, i)), message(i)+strings.Repeat("x", 2000+i))
	}
	cmd := exec.Command(binary, "resync", "-c", e.conf)
	must(t, cmd.Start())
	// Kill it once part of the tree has arrived.
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		n := 0
		filepath.WalkDir(filepath.Join(e.r.root, "user"), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				n++
			}
			return nil
		})
		if n >= 1000 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Kill()
	cmd.Wait()
	rep, code := e.resync(t)
	if code != 0 {
		t.Fatalf("second resync exit %d", code)
	}
	if d := e.diff(t); len(d) > 0 {
		t.Fatalf("after the second resync:\n%s", strings.Join(d, "\n"))
	}
	if rep.Identical < 1000 {
		t.Errorf("second resync found only %d identical entries: it re-sent what had arrived", rep.Identical)
	}
}

// TestResyncWhileReplicating: a writer keeps delivering and changing mail
// through the mount with rolling replication on while resync runs; at the
// end (lag 0) the trees are identical.
func TestResyncWhileReplicating(t *testing.T) {
	p := newPair(t, "")
	md := filepath.Join(p.m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	for i := 0; i < 200; i++ {
		deliver(t, md, fmt.Sprintf("%d.pre", i), message(i))
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			name := fmt.Sprintf("%d.live", i)
			tmp := filepath.Join(md, "tmp", name)
			os.WriteFile(tmp, []byte(message(i)), 0o600)
			os.Rename(tmp, filepath.Join(md, "new", name))
			if i%3 == 0 {
				os.Rename(filepath.Join(md, "new", name), filepath.Join(md, "cur", name+":2,S"))
			}
			if i%5 == 0 {
				os.WriteFile(filepath.Join(md, "dovecot.index"), []byte(fmt.Sprintf("index %d", i)), 0o600)
			}
		}
	}()
	out, err := exec.Command(binary, "resync", "-c", p.m.conf, "--delete").CombinedOutput()
	close(done)
	<-stopped
	if err != nil {
		t.Fatalf("resync during replication: %v\n%s", err, out)
	}
	p.waitSynced(t)
}
