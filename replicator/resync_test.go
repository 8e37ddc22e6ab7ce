package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
	"spoolsync/internal/testenv"
	"spoolsync/internal/treecmp"
	"spoolsync/replica"
	"spoolsync/replica/server"
	"spoolsync/wire"
)

// TestResyncResendsWhenOfferedContentGoes: the replica answers an offer
// that it holds some content, and the only copy goes before the batch
// lands (rolling replication moves and deletes beside a resync). The
// replica refuses the batch; the resync sends it again with its content
// and ends with the file in place.
func TestResyncResendsWhenOfferedContentGoes(t *testing.T) {
	spool, root, opts := newResyncTest(t)
	for _, d := range []string{"b", "c"} {
		if err := os.Mkdir(filepath.Join(spool, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	msg := []byte("Subject: moved\n\nthe only copy on the replica goes before the batch lands\n")
	if err := os.WriteFile(filepath.Join(spool, "b", "m"), msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Resync(t.Context(), opts); err != nil {
		t.Fatalf("first resync: %v", err)
	}
	// The message moves to c/m on the master: the offer finds its content
	// at b/m on the replica, which goes (as a mount's batch could remove
	// it) between the answer and the batch.
	if err := os.Rename(filepath.Join(spool, "b", "m"), filepath.Join(spool, "c", "m")); err != nil {
		t.Fatal(err)
	}
	removed := false
	opts.beforeSend = func(seq uint64, _ int) {
		if !removed {
			removed = true
			if err := os.Remove(filepath.Join(root, "b", "m")); err != nil {
				t.Errorf("remove the replica's copy: %v", err)
			}
		}
	}
	rep, err := Resync(t.Context(), opts)
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	if !removed {
		t.Fatal("the hook never ran: no batch was sent")
	}
	got, err := os.ReadFile(filepath.Join(root, "c", "m"))
	if err != nil || string(got) != string(msg) {
		t.Fatalf("replica c/m = %q, %v; want the message", got, err)
	}
	if rep.ContentBytes < int64(len(msg)) {
		t.Errorf("%d content bytes sent: the message was not sent again with its content", rep.ContentBytes)
	}
}

// TestResyncReportsVanished: a message the walk saw is moved before its
// batch is read (a deliverer's rename from tmp/ to new/). The resync
// cannot ship it and reports it, so that a channel moving its cursor past
// the events the resync stands for keeps it pending; the rename's event
// then ships it at its new name (TestPlan: pending, then rename).
func TestResyncReportsVanished(t *testing.T) {
	spool, root, opts := newResyncTest(t)
	for _, d := range []string{"tmp", "new"} {
		if err := os.Mkdir(filepath.Join(spool, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(spool, "tmp", "m"), []byte("Subject: x\n\nbody\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts.beforeResolve = func() {
		os.Rename(filepath.Join(spool, "tmp", "m"), filepath.Join(spool, "new", "m"))
	}
	rep, err := Resync(t.Context(), opts)
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	if len(rep.vanished) != 1 || rep.vanished[0].Path != "tmp/m" || rep.vanished[0].ReplicaHas {
		t.Errorf("vanished = %+v, want tmp/m, not on the replica", rep.vanished)
	}
	if _, err := os.Lstat(filepath.Join(root, "tmp", "m")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("replica's tmp/m: %v, want none", err)
	}
	if got := plan(rep.vanished, "rename tmp/m new/m"); !slices.Contains(got, "put new/m") {
		t.Errorf("plan after the resync = %q, want it to put new/m", got)
	}
}

// TestResyncKeepsWhatArrivedMeanwhile: a message reaches the replica
// (rolling replication) after the walk passed its directory on the master,
// so the resync finds it only on the replica. It is on the master by the
// time the removals are read: --delete must leave it, or the replica would
// lack it until it changes again.
func TestResyncKeepsWhatArrivedMeanwhile(t *testing.T) {
	spool, root, opts := newResyncTest(t)
	msg := []byte("Subject: late\n\ndelivered during the resync\n")
	for _, tree := range []string{spool, root} {
		if err := os.Mkdir(filepath.Join(tree, "new"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "new", "late"), msg, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "new", "stale"), msg, 0o600); err != nil {
		t.Fatal(err)
	}
	opts.beforeResolve = func() {
		if _, err := os.Stat(filepath.Join(spool, "new", "late")); err != nil {
			if err := os.WriteFile(filepath.Join(spool, "new", "late"), msg, 0o600); err != nil {
				t.Error(err)
			}
		}
	}
	if _, err := Resync(t.Context(), opts); err != nil {
		t.Fatalf("resync: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "new", "late")); err != nil {
		t.Errorf("the message that arrived meanwhile was removed from the replica: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "new", "stale")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("replica's new/stale: %v; want it removed", err)
	}
}

// newResyncTest makes an empty spool and replica root, serves the replica
// on loopback until the test ends, and returns the options of a resync
// between them (with --delete).
func newResyncTest(t *testing.T, tweak ...func(*server.Options)) (spool, root string, opts ResyncOptions) {
	t.Helper()
	base := t.TempDir()
	spool, root, state := filepath.Join(base, "spool"), filepath.Join(base, "root"), filepath.Join(base, "state")
	for _, d := range []string{spool, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	store, err := replica.Open(replica.Options{Root: root, StateDir: state, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	so := server.Options{Store: store, SpoolDir: filepath.Join(state, "spool"), Logger: log,
		Wire: testenv.ReplicaAuth()}
	for _, f := range tweak {
		f(&so)
	}
	srv, err := server.New(so)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	cache, err := guid.OpenCache(filepath.Join(base, "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		store.Close()
		cache.Close()
	})
	return spool, root, ResyncOptions{Backing: spool, Cache: cache, Mode: guid.SHA256, Delete: true, Logger: log,
		Client: wire.ClientConfig{Addr: ln.Addr().String(), AuthName: "master", Password: "pw", Compress: 3}}
}

// fillSpool writes files u/<d>/<f> for dirs × files, with content(d, f).
func fillSpool(t *testing.T, spool string, dirs, files int, content func(d, f int) string) {
	t.Helper()
	for d := range dirs {
		dir := filepath.Join(spool, "u", fmt.Sprint(d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range files {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(f)), []byte(content(d, f)), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestResyncStopsCleanly: a resync that ends early (here cancelled) stops
// its walk and its manifest reader, and leaves no descriptor open.
func TestResyncStopsCleanly(t *testing.T) {
	spool, _, opts := newResyncTest(t)
	fillSpool(t, spool, 60, 100, func(d, f int) string { return "x" })
	before := testenv.OpenFDs(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	opts.DryRun, opts.Progress = true, func(ResyncReport) { cancel() }
	if _, err := Resync(ctx, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("resync: %v, want it cancelled", err)
	}
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if after = testenv.OpenFDs(t); after <= before {
			return
		}
	}
	t.Errorf("open descriptors: %d before the resync, %d after it ended", before, after)
}

// TestResyncPipelined: many small batches, each sent while the last one is
// still unacknowledged, land in order: the replica ends identical, moves
// included (a put by GUID may name content a batch before it put).
func TestResyncPipelined(t *testing.T) {
	spool, _, opts := newResyncTest(t)
	fillSpool(t, spool, 10, 30, func(d, f int) string { return fmt.Sprintf("message %d/%d", d%3, f) })
	most := 0
	opts.BatchOps = 7
	opts.beforeSend = func(_ uint64, unacked int) { most = max(most, unacked) }
	rep, err := Resync(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if most != 1 {
		t.Errorf("at most %d batches unacknowledged when the next was sent, want 1", most)
	}
	if rep.Dedup == 0 {
		t.Error("no put by GUID: the test does not cover content put by an earlier batch")
	}
	opts.DryRun, opts.beforeSend = true, nil
	rep, err = Resync(t.Context(), opts)
	if err != nil || rep.Different != 0 || rep.Extra != 0 {
		t.Fatalf("after the resync: %v, %d differences, %d extra: %v", err, rep.Different, rep.Extra, rep.Differences)
	}
}

// TestResyncGUIDModes: a master whose guid_mode differs from the replica's
// (which indexes in sha256) still finds an unchanged tree identical — the
// manifest comes in the master's mode — and with guid_mode none it
// compares by size and mtime, as rsync does.
func TestResyncGUIDModes(t *testing.T) {
	for _, mode := range []guid.Mode{guid.BLAKE3, guid.SHA1, guid.None} {
		t.Run(mode.String(), func(t *testing.T) {
			spool, root, opts := newResyncTest(t)
			opts.Mode = mode
			fillSpool(t, spool, 3, 5, func(d, f int) string { return fmt.Sprintf("message %d/%d", d, f) })
			if _, err := Resync(t.Context(), opts); err != nil {
				t.Fatal(err)
			}
			dry := opts
			dry.DryRun = true
			rep, err := Resync(t.Context(), dry)
			if err != nil || rep.Different != 0 || rep.Identical != 3*5+3+1 {
				t.Fatalf("unchanged tree: %v, %d identical, %d different: %v", err, rep.Identical, rep.Different, rep.Differences)
			}
			if rep.WireBytesIn < 19*10 {
				t.Errorf("%d bytes received on the wire for a manifest of 19 entries", rep.WireBytesIn)
			}
			// Same size, new bytes and mtime: a hash or the quick check sees it.
			p := filepath.Join(spool, "u", "1", "2")
			if err := os.WriteFile(p, []byte("MESSAGE 1/2"), 0o600); err != nil {
				t.Fatal(err)
			}
			later := time.Now().Add(time.Hour)
			if err := os.Chtimes(p, later, later); err != nil {
				t.Fatal(err)
			}
			if rep, err = Resync(t.Context(), opts); err != nil || rep.Different != 1 {
				t.Fatalf("after a change: %v, %d different: %v", err, rep.Different, rep.Differences)
			}
			if got, _ := os.ReadFile(filepath.Join(root, "u", "1", "2")); string(got) != "MESSAGE 1/2" {
				t.Errorf("replica holds %q after the resync", got)
			}
		})
	}
}

// TestResyncSymlinkLinksAndTimes: a symlink's hard links and its mtime are
// compared and repaired like a file's (found by TestRandomOps: the replica
// kept separate symlinks, and a stand-in's zero mtime, for good).
func TestResyncSymlinkLinksAndTimes(t *testing.T) {
	spool, root, opts := newResyncTest(t)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink("target", filepath.Join(spool, "s")))
	must(os.Link(filepath.Join(spool, "s"), filepath.Join(spool, "s2")))
	if _, err := Resync(t.Context(), opts); err != nil {
		t.Fatal(err)
	}
	// The replica drifts: the link broken, the mtime lost.
	must(os.Remove(filepath.Join(root, "s2")))
	must(os.Symlink("target", filepath.Join(root, "s2")))
	must(unix.Lutimes(filepath.Join(root, "s"), []unix.Timeval{{}, {}}))
	rep, err := Resync(t.Context(), opts)
	if err != nil || rep.Different == 0 {
		t.Fatalf("resync: %v, %d differences", err, rep.Different)
	}
	diffs, err := treecmp.Diff(spool, root, treecmp.Options{Skip: []string{".spoolsync"}})
	if err != nil || len(diffs) > 0 {
		t.Errorf("after the resync: %v %q", err, diffs)
	}
}

// TestResyncWithinReplicaLimits: a resync cuts its batches to the ops and
// content limits the replica announced (issue 15 item 8), so that none is
// refused; a file bigger than the byte limit goes first in its batch.
func TestResyncWithinReplicaLimits(t *testing.T) {
	spool, _, opts := newResyncTest(t, func(o *server.Options) { o.MaxBatchOps, o.MaxBatchBytes = 40, 100 })
	fillSpool(t, spool, 3, 12, func(d, f int) string { return fmt.Sprintf("%060d", d*100+f) })
	if err := os.WriteFile(filepath.Join(spool, "u", "big"), []byte(strings.Repeat("b", 250)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Resync(t.Context(), opts); err != nil {
		t.Fatalf("resync: %v", err)
	}
	opts.DryRun = true
	rep, err := Resync(t.Context(), opts)
	if err != nil || rep.Different != 0 || rep.Extra != 0 {
		t.Fatalf("after the resync: %v, %d differences, %d extra: %v", err, rep.Different, rep.Extra, rep.Differences)
	}
}
