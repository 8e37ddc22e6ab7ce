package main

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/internal/treecmp"
	"spoolsync/replicator"
)

// TestVerifyRepairsReplica: a replica changed behind spoolsync's back — a
// message removed, a byte flipped with size and mtime kept, a folder's
// xattr dropped, a directory's mtime changed — is found by the mount's
// continuous verifier within an interval, logged with the paths, counted
// in the status and the metrics, and repaired; then status says in sync.
func TestVerifyRepairsReplica(t *testing.T) {
	metrics := freeAddr(t)
	p := newPair(t, "sync_verify_interval: 1s\nmetrics_listen: "+metrics+"\n")
	md := filepath.Join(p.m.mnt, "bob", "Maildir")
	mkMaildir(t, md)
	mkMaildir(t, filepath.Join(md, ".Archive"))
	for i := range 20 {
		deliver(t, md, "m"+string(rune('a'+i)), message(i))
	}
	if err := unix.Setxattr(filepath.Join(md, ".Archive"), "user.dovecot-uidvalidity", []byte("1700000000"), 0); err != nil {
		t.Skipf("user xattrs not supported on the mount: %v", err)
	}
	p.waitSynced(t)
	st := waitStatus(t, p.m, 60*time.Second, "in sync", func(s replicator.ChannelStatus) bool { return s.InSync })
	if st.DivergedEntries != 0 || st.VerifiedAt.IsZero() {
		t.Fatalf("in sync with %d diverged entries, verified at %v", st.DivergedEntries, st.VerifiedAt)
	}

	out, err := exec.Command(binary, "verify", "-c", p.m.conf, "--passes", "2").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "verify pass 2: 0 different") {
		t.Fatalf("spoolsync verify of a replica in sync: %v\n%s", err, out)
	}

	rmd := filepath.Join(p.r.root, "bob", "Maildir")
	must(t, os.Remove(filepath.Join(rmd, "new", "mc")))
	flipped := filepath.Join(rmd, "new", "mf")
	var fst unix.Stat_t
	must(t, unix.Lstat(flipped, &fst))
	b, err := os.ReadFile(flipped)
	must(t, err)
	b[len(b)/2] ^= 1
	must(t, os.WriteFile(flipped, b, 0o600))
	must(t, unix.UtimesNano(flipped, []unix.Timespec{fst.Atim, fst.Mtim}))
	must(t, unix.Lremovexattr(filepath.Join(rmd, ".Archive"), "user.dovecot-uidvalidity"))
	must(t, unix.UtimesNano(filepath.Join(rmd, "cur"), []unix.Timespec{unix.NsecToTimespec(1e9), unix.NsecToTimespec(1e9)}))

	st = waitStatus(t, p.m, 60*time.Second, "the differences repaired and in sync", func(s replicator.ChannelStatus) bool {
		return s.Repaired > 0 && s.InSync
	})
	diffs, err := treecmp.Diff(p.m.backing, p.r.root, treecmp.Options{Skip: []string{fence.Dir, fence.QuarantineDir}, DirMtimes: true})
	must(t, err)
	if len(diffs) > 0 {
		t.Fatalf("in sync, but the trees differ:\n%s\nmount log:\n%s", strings.Join(diffs, "\n"), p.mount.stderr)
	}
	log := p.mount.stderr.String()
	for _, path := range []string{"bob/Maildir/new/mc", "bob/Maildir/new/mf", "bob/Maildir/.Archive", "bob/Maildir/cur"} {
		if !strings.Contains(log, path+" (") {
			t.Errorf("the mount's log does not name %s:\n%s", path, log)
		}
	}

	out, err = exec.Command(binary, "status", "-c", p.m.conf).Output()
	must(t, err)
	if !strings.Contains(string(out), ": in sync (verified ") {
		t.Errorf("status does not say in sync:\n%s", out)
	}
	resp, err := http.Get("http://" + metrics + "/metrics")
	must(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	for _, m := range []string{"spoolsync_channel_diverged_entries{", "spoolsync_channel_verified_timestamp_seconds{", "spoolsync_channel_in_sync{"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("metrics lack %s", m)
		}
	}

	// A replica that goes down: status stops saying in sync at the next
	// verify, or sooner, and says why.
	p.server.cmd.Process.Kill()
	<-p.server.done
	waitStatus(t, p.m, 30*time.Second, "not in sync", func(s replicator.ChannelStatus) bool { return !s.InSync })
	out, _ = exec.Command(binary, "status", "-c", p.m.conf).Output()
	if !strings.Contains(string(out), "NOT in sync; owes ") || !strings.Contains(string(out), "connection refused") {
		t.Errorf("status with the replica down:\n%s", out)
	}
}
