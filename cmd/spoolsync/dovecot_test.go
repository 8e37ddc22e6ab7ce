package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/testenv"
)

// The mail user Dovecot runs as in TestDovecot: nobody, as a virtual
// mail user would be (vmail); no supplementary groups.
const dovecotUID, dovecotGID = 65534, 65534

const dovecotLDA = "/usr/lib/dovecot/dovecot-lda"

// dovecotUser is one mail user's home on a tree, with a mail format.
type dovecotUser struct {
	t        *testing.T
	conf     string // dovecot.conf
	home     string
	location string // mail_location
}

// run runs a Dovecot program as the mail user with stdin; it returns the
// output and fails the test on an error.
func (u dovecotUser) run(stdin string, name string, args ...string) string {
	u.t.Helper()
	out, err := u.try(stdin, name, args...)
	if err != nil {
		u.t.Fatal(err)
	}
	return out
}

// try is run for other goroutines than the test's: it returns the error.
func (u dovecotUser) try(stdin string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, append([]string{"-c", u.conf, "-o", "mail_location=" + u.location}, args...)...)
	cmd.Env = []string{"HOME=" + u.home, "USER=" + filepath.Base(u.home), "PATH=/usr/bin:/bin"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: dovecotUID, Gid: dovecotGID, Groups: []uint32{}}}
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s (%s): %v\n%s", filepath.Base(name), strings.Join(args, " "), u.location, err, out)
	}
	return string(out), nil
}

// messages lists what Dovecot shows of the user's mail: per message its
// folder, UID, flags (but \Recent, which belongs to a session) and subject.
func (u dovecotUser) messages() string {
	u.t.Helper()
	out := u.run("", "doveadm", "fetch", "mailbox uid flags hdr.subject", "all")
	return regexp.MustCompile(`\\Recent ?`).ReplaceAllString(out, "")
}

// location is Dovecot's mail_location for format f in the user's home.
func location(f string) string {
	if f == "mbox" {
		return "mbox:~/mail:INBOX=~/mail/inbox"
	}
	return f + ":~/mail"
}

// dovecotConf lets the mail user reach the pair's mount and replica (the
// test's temporary directories are 0700) and writes a dovecot.conf for
// it; it returns the file's path.
func dovecotConf(t *testing.T, p *pair) string {
	t.Helper()
	for _, d := range []string{p.m.mnt, p.r.root} {
		for d = filepath.Dir(d); d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
			must(t, os.Chmod(d, 0o755))
		}
	}
	etc := t.TempDir()
	must(t, os.Chmod(etc, 0o755))
	conf := filepath.Join(etc, "dovecot.conf")
	must(t, os.WriteFile(conf, []byte(fmt.Sprintf(
		"log_path = /dev/stderr\nssl = no\nprotocols =\nbase_dir = %s/run\nmail_fsync = always\n", etc)), 0o644))
	return conf
}

// TestDovecot: Dovecot itself, unmodified, as an unprivileged mail user,
// in each of its mail formats (maildir, sdbox, mdbox, and mbox, which
// appends to one file and rewrites it on expunge): its LDA (what Postfix
// or Exim run to deliver) delivers through the mount, doveadm makes a
// folder, moves, flags and expunges, and for mdbox purges (which rewrites
// its storage files). The replica ends identical, and Dovecot reading a copy of it
// shows the same messages with the same folders, UIDs and flags.
func TestDovecot(t *testing.T) {
	testenv.NeedProgram(t, "doveadm", "dovecot-core")
	testenv.NeedProgram(t, dovecotLDA, "dovecot-core")
	p := newPair(t, "")
	conf := dovecotConf(t, p)

	formats := []string{"maildir", "sdbox", "mdbox", "mbox"}
	must(t, os.Mkdir(filepath.Join(p.m.mnt, "vhosts"), 0o755))
	for _, f := range formats {
		home := filepath.Join(p.m.mnt, "vhosts", f+"-user")
		must(t, os.Mkdir(home, 0o700))
		must(t, os.Chown(home, dovecotUID, dovecotGID))
		u := dovecotUser{t, conf, home, location(f)}
		// Four deliveries at a time, as an MTA runs them: Dovecot's own
		// locks (dotlocks, fcntl) keep them apart, through the mount. The
		// first goes alone: Dovecot creating a new user's INBOX from
		// several processes at once can take two fcntl locks in opposite
		// orders and abort one delivery with EDEADLK (a temporary failure
		// the MTA retries). The wider timing of any FUSE mount exposes it:
		// about 3 in 1,000 such deliveries here, through go-fuse's stock
		// loopback as through spoolsync, none in 1,200 on the local disk.
		errs := make(chan error, 30)
		sem := make(chan struct{}, 4)
		for i := 1; i <= 30; i++ {
			if i == 2 {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			msg := fmt.Sprintf("From: sender%d@example.org\nTo: %s@example.org\nSubject: %s message %d\nMessage-ID: <%d.%s@example.org>\n\n%s",
				i, f, f, i, i, f, strings.Repeat(fmt.Sprintf("line %d of a message body\n", i), 20+i))
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				_, err := u.try(msg, dovecotLDA, "-f", fmt.Sprintf("sender%d@example.org", i))
				errs <- err
			}()
		}
		for range 29 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		u.run("", "doveadm", "mailbox", "create", "Archive")
		u.run("", "doveadm", "move", "Archive", "mailbox", "INBOX", "uid", "1:10")
		u.run("", "doveadm", "flags", "add", `\Seen \Flagged`, "mailbox", "INBOX", "uid", "11:15")
		u.run("", "doveadm", "expunge", "mailbox", "INBOX", "uid", "16:20")
		if f == "mdbox" {
			u.run("", "doveadm", "purge")
		}
	}
	p.waitSynced(t)

	// Reading the master through doveadm updates Dovecot's index and cache
	// files there: read every master first, let that replicate too, and
	// only then copy the replica, so the copy is not caught half way
	// through an index update ("corrupted cache").
	want := map[string]string{}
	for _, f := range formats {
		master := dovecotUser{t, conf, filepath.Join(p.m.mnt, "vhosts", f+"-user"), location(f)}
		want[f] = master.messages()
		if n := strings.Count(want[f], "hdr.subject:"); n != 25 {
			t.Fatalf("%s: Dovecot shows %d messages on the master, want 25 (30 delivered, 5 expunged):\n%s", f, n, want[f])
		}
	}
	p.waitSynced(t)

	copyRoot := t.TempDir()
	must(t, os.Chmod(copyRoot, 0o755))
	for _, f := range formats {
		// A copy, so that Dovecot's own index updates do not touch the
		// replica while the master is still replicating to it.
		cp := exec.Command("cp", "-a", filepath.Join(p.r.root, "vhosts", f+"-user"), copyRoot)
		if out, err := cp.CombinedOutput(); err != nil {
			t.Fatalf("copy the replica: %v\n%s", err, out)
		}
		replica := dovecotUser{t, conf, filepath.Join(copyRoot, f+"-user"), location(f)}
		if got := replica.messages(); got != want[f] {
			t.Errorf("%s: Dovecot on the replica shows\n%s\nand on the master\n%s", f, got, want[f])
		}
	}
}

// TestDovecotCrashes: Dovecot delivers (LDA, four at a time) and moves,
// flags and expunges (doveadm) maildir mail through the mount while the
// replica server or the mount itself is killed with SIGKILL at a random
// moment and started again (issue 14: one kill of the server mid-batch
// stalled replication for hours, queued batches naming maildir names that
// no longer existed on either side). After each restart the replica must
// be identical to the master within 30 s — content, owners, modes, times
// of files and directories, links, xattrs — with no manual step.
// SPOOLSYNC_CRASH_KILLS sets the number of kills (default 2).
func TestDovecotCrashes(t *testing.T) {
	testenv.NeedProgram(t, "doveadm", "dovecot-core")
	testenv.NeedProgram(t, dovecotLDA, "dovecot-core")
	kills := 2
	if v := os.Getenv("SPOOLSYNC_CRASH_KILLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SPOOLSYNC_CRASH_KILLS=%q: want a number of kills, 1 or more", v)
		}
		kills = n
	}
	// Convergence is rolling replication and continuous verification
	// together: verification runs every 2 s here (5 minutes by default)
	// so that anything the rolling path leaves is found and repaired
	// within the 30 s too. The test reports which of the two made the
	// replica identical after each kill.
	p := newPair(t, "sync_verify_interval: 2s\n")
	conf := dovecotConf(t, p)
	home := filepath.Join(p.m.mnt, "vmail")
	must(t, os.Mkdir(home, 0o700))
	must(t, os.Chown(home, dovecotUID, dovecotGID))
	u := dovecotUser{t, conf, home, location("maildir")}
	u.run(dovecotMessage(0), dovecotLDA, "-f", "sender0@example.org") // creates INBOX alone (see TestDovecot)
	u.run("", "doveadm", "mailbox", "create", "Archive")
	p.waitSynced(t)

	seed := time.Now().UnixNano()
	t.Logf("seed %d (kills at random moments)", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	next := 1
	for k := 1; k <= kills; k++ {
		stop := make(chan struct{})
		done := make(chan int)
		go func(first int) { done <- dovecotWorkload(u, first, stop) }(next)
		time.Sleep(time.Duration(300+rng.IntN(1500)) * time.Millisecond)
		what := "server"
		if rng.IntN(2) == 0 {
			what = "mount"
			p.mount.cmd.Process.Kill()
			<-p.mount.done
			detach(p.m.mnt)
			time.Sleep(time.Duration(rng.IntN(500)) * time.Millisecond)
			p.mount = startMount(t, p.m)
		} else {
			p.server.cmd.Process.Kill()
			<-p.server.done
			// Down for a while, as a server restarted by hand or by its
			// supervisor is: mail goes on and batches queue up, naming
			// maildir names the restart's resync will find gone.
			time.Sleep(time.Duration(500+rng.IntN(2500)) * time.Millisecond)
			p.server = restartServer(t, p.r, p.addr)
		}
		restarted := time.Now()
		// Mail goes on a moment after the restart, then stops so that
		// the trees can be compared. Stopping can take Dovecot a while
		// (a dotlock the killed mount's clients left waits for its stale
		// timeout): the 30 s count from the restart, or from the moment
		// the mail stopped if that is later.
		time.Sleep(time.Duration(rng.IntN(2000)) * time.Millisecond)
		close(stop)
		next = <-done
		from := restarted
		if quiet := time.Now(); quiet.After(from) {
			from = quiet
		}
		if err := p.syncedWithin(from.Add(30 * time.Second)); err != nil {
			t.Fatalf("kill %d of %d (the %s): the replica did not converge within 30 s of the restart: %v\nmount log:\n%s\nserver log:\n%s",
				k, kills, what, err, p.mount.stderr, p.server.stderr)
		}
		how := "by rolling replication"
		if strings.Contains(p.mount.stderr.String(), "verify: the replica differs from the master") {
			how = "with a repair by continuous verification (see the mount log)"
		}
		t.Logf("kill %d (the %s): identical %.1fs after the restart (%.1fs after the mail stopped), %s; %d messages delivered so far",
			k, what, time.Since(restarted).Seconds(), time.Since(from).Seconds(), how, next-1)
	}
}

// dovecotMessage is message i of TestDovecotCrashes.
func dovecotMessage(i int) string {
	return fmt.Sprintf("From: sender%d@example.org\nTo: vmail@example.org\nSubject: message %d\nMessage-ID: <%d.crash@example.org>\n\n%s",
		i, i, i, strings.Repeat(fmt.Sprintf("line %d of a message body\n", i), 10+i%50))
}

// dovecotWorkload delivers messages first, first+1, ... four at a time
// and moves, flags and expunges between the deliveries, until stop is
// closed; it returns the number of the next message. Its errors are
// expected while the mount is down (ENOTCONN, EIO) and are ignored: what
// Dovecot did before that is what must be replicated.
func dovecotWorkload(u dovecotUser, first int, stop <-chan struct{}) int {
	i := first
	for round := 0; ; round++ {
		select {
		case <-stop:
			return i
		default:
		}
		var wg sync.WaitGroup
		for range 4 {
			msg := dovecotMessage(i)
			from := fmt.Sprintf("sender%d@example.org", i)
			i++
			wg.Add(1)
			go func() {
				defer wg.Done()
				u.try(msg, dovecotLDA, "-f", from)
			}()
		}
		wg.Wait()
		u.try("", "doveadm", "flags", "add", `\Seen`, "mailbox", "INBOX", "1:2")
		u.try("", "doveadm", "move", "Archive", "mailbox", "INBOX", "1")
		u.try("", "doveadm", "flags", "add", `\Flagged`, "mailbox", "INBOX", "2")
		if round%2 == 1 {
			u.try("", "doveadm", "expunge", "mailbox", "Archive", "1")
			u.try("", "doveadm", "flags", "remove", `\Flagged`, "mailbox", "INBOX", "1:*")
		}
	}
}
