package main

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spoolsync/replicator"
)

// syncDeliver delivers a message as an MTA that fsyncs both the file and
// the directory does, and checks the replica after each fsync returns,
// without waiting: in sync_mode sync the replica must hold the file's
// content when fsync(file) returns, and the rename when fsync(dir) does.
func syncDeliver(t *testing.T, p *pair, md, name, body string) {
	t.Helper()
	tmp := filepath.Join(md, "tmp", name)
	writeFsynced(t, tmp, body)
	rel, _ := filepath.Rel(p.m.mnt, md)
	onReplica := filepath.Join(p.r.root, rel)
	if got, err := os.ReadFile(filepath.Join(onReplica, "tmp", name)); err != nil || string(got) != body {
		t.Fatalf("fsync(%s) returned but the replica has %d bytes, err %v; want the %d bytes written", tmp, len(got), err, len(body))
	}
	must(t, os.Rename(tmp, filepath.Join(md, "new", name)))
	d, err := os.Open(filepath.Join(md, "new"))
	must(t, err)
	must(t, d.Sync())
	d.Close()
	if _, err := os.Stat(filepath.Join(onReplica, "new", name)); err != nil {
		t.Fatalf("fsync(%s/new) returned but the rename is not on the replica: %v", md, err)
	}
}

// TestSyncMode: with sync_mode sync, fsync returns only once the replica
// holds the change; a replica that stops answering costs one stall of
// sync_timeout (then the channel is degraded, loudly, and fsync goes on
// at local speed), and once it is back and caught up fsync waits for it
// again.
func TestSyncMode(t *testing.T) {
	const timeout = 2 * time.Second
	metrics := freeAddr(t)
	p := newPair(t, fmt.Sprintf("sync_mode: sync\nsync_timeout: %s\nmetrics_listen: %s\n", timeout, metrics))
	degradedMetric := func(want string) {
		t.Helper()
		resp, err := http.Get("http://" + metrics + "/metrics")
		must(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if line := `spoolsync_channel_sync_degraded{channel="default"} ` + want; !strings.Contains(string(body), line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	md := filepath.Join(p.m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	d, err := os.Open(md)
	must(t, err)
	must(t, d.Sync()) // the maildir itself reaches the replica before the first message
	d.Close()
	for i := 0; i < 20; i++ {
		syncDeliver(t, p, md, fmt.Sprintf("%d.sync", i), message(i))
	}
	waitStatus(t, p.m, 10*time.Second, "sync_mode sync", func(s replicator.ChannelStatus) bool { return s.SyncMode == "sync" })
	degradedMetric("0")

	// The replica goes away: one fsync waits sync_timeout, then none.
	p.server.cmd.Process.Kill()
	<-p.server.done
	start := time.Now()
	deliver(t, md, "down.0", message(100))
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("fsync with the replica down took %v; sync_timeout is %v", took, timeout)
	}
	waitStatus(t, p.m, 10*time.Second, "a degraded channel", func(s replicator.ChannelStatus) bool { return s.SyncMode == "degraded" })
	start = time.Now()
	for i := 1; i <= 5; i++ {
		deliver(t, md, fmt.Sprintf("down.%d", i), message(100+i))
	}
	// Waiting sync_timeout each would take 5×; local fsyncs take milliseconds.
	if took := time.Since(start); took >= 2*timeout {
		t.Fatalf("5 deliveries with the channel degraded took %v: fsync still waits for the replica", took)
	}
	if !strings.Contains(p.mount.stderr.String(), "sync_mode sync: the replica did not confirm a change within sync_timeout") {
		t.Fatalf("the mount did not say it stopped waiting for the replica:\n%s", p.mount.stderr)
	}
	out, err := exec.Command(binary, "status", "-c", p.m.conf).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "sync_mode sync DEGRADED") {
		t.Fatalf("spoolsync status does not say the channel is degraded:\n%s", out)
	}
	degradedMetric("1")

	// Back and caught up: fsync waits for it again.
	p.server = restartServer(t, p.r, p.addr)
	p.waitSynced(t)
	waitStatus(t, p.m, 10*time.Second, "sync_mode sync again", func(s replicator.ChannelStatus) bool { return s.SyncMode == "sync" })
	for i := 0; i < 5; i++ {
		syncDeliver(t, p, md, fmt.Sprintf("%d.back", i), message(200+i))
	}
	if !strings.Contains(p.mount.stderr.String(), "sync_mode sync: the replica caught up") {
		t.Fatalf("the mount did not say the replica is waited for again:\n%s", p.mount.stderr)
	}
	p.waitSynced(t)
}

// TestSyncModeMasterLoss is sync_mode's promise under a crash: the master
// mount is killed (SIGKILL) while a child delivers through it, and every
// delivery the child saw complete (fsync of the file and of new/
// returned) must already be on the replica, whole, with the master never
// coming back to ship anything.
func TestSyncModeMasterLoss(t *testing.T) {
	p := newPair(t, "sync_mode: sync\nsync_timeout: 30s\n")
	md := filepath.Join(p.m.mnt, "Maildir")
	mkMaildir(t, md)
	p.waitSynced(t)
	body := strings.Repeat("Received: from mx.example.org by spool\n", 100) // deliverMain's
	for round := 0; round < 3; round++ {
		if round > 0 {
			p.mount = startMount(t, p.m)
			p.waitSynced(t)
		}
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), "SPOOLSYNC_TEST_DELIVER="+md)
		out, err := child.StdoutPipe()
		must(t, err)
		must(t, child.Start())
		// The kill comes at a random moment after the first delivery
		// completed (a fixed delay after the start killed before any on a
		// loaded machine), or after a minute without one.
		kill := func() { p.mount.cmd.Process.Kill() }
		late := time.AfterFunc(time.Minute, kill)
		var done []string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			done = append(done, strings.TrimPrefix(sc.Text(), "done "))
			if len(done) == 1 && late.Stop() {
				time.AfterFunc(time.Duration(rand.IntN(400))*time.Millisecond, kill)
			}
		}
		child.Wait()
		<-p.mount.done
		detach(p.m.mnt)
		if len(done) == 0 {
			t.Fatalf("round %d: no delivery completed before the kill; mount log:\n%s", round, p.mount.stderr)
		}
		for _, name := range done {
			got, err := os.ReadFile(filepath.Join(p.r.root, "Maildir", "new", name))
			if err != nil || string(got) != body {
				t.Fatalf("round %d: delivery %s completed on the master, which then died, but the replica has %d bytes of it (%v)",
					round, name, len(got), err)
			}
		}
		t.Logf("round %d: %d deliveries confirmed before SIGKILL, all on the replica", round, len(done))
	}
}
