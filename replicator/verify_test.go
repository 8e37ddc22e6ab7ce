package replicator

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"spoolsync/internal/testenv"

	"golang.org/x/sys/unix"

	"spoolsync/internal/treecmp"
)

// newVerifyTest is a spool, a replica of it (made equal by a resync) and
// a verifier of a caught-up channel between them.
func newVerifyTest(t *testing.T) (spool, root string, v *verifier, logs *testenv.Buffer) {
	t.Helper()
	spool, root, opts := newResyncTest(t)
	fillSpool(t, spool, 3, 4, func(d, f int) string { return strings.Repeat("message ", d*10+f+1) })
	if err := os.MkdirAll(spool+"/u/1/cur", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(spool+"/u/1/cur", "user.dovecot", []byte("uidvalidity=7"), 0); err != nil {
		t.Skipf("user xattrs not supported: %v", err)
	}
	if _, err := Resync(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if diffs, err := treecmp.Diff(spool, root, treecmp.Options{Skip: []string{".spoolsync"}, DirMtimes: true}); err != nil || len(diffs) > 0 {
		t.Fatalf("replica not equal after the resync: %v %q", err, diffs)
	}
	c := newTestChannel(t)
	ps, err := openPending(c.log.Dir(), "default")
	if err != nil {
		t.Fatal(err)
	}
	logs = &testenv.Buffer{}
	c.pending, c.res = ps, &resolver{backing: spool, cache: opts.Cache, mode: opts.Mode}
	c.logger = slog.New(slog.NewTextHandler(logs, nil))
	c.cfg.Client = opts.Client
	c.st.Connected = true
	tree, closeTree, err := newVerifyTree(c.res, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeTree)
	return spool, root, &verifier{c: c, interval: time.Second, repair: true,
		cmp: comparer{tree: tree, mode: c.res.mode, client: c.cfg.Client}}, logs
}

func diffPaths(diffs []difference) []string {
	var out []string
	for _, d := range diffs {
		out = append(out, d.path)
	}
	return out
}

// TestVerifyFindsWhatChangedBehindItsBack: a clean replica passes; a file
// removed, a byte flipped (size and mtime kept), an xattr dropped, a
// directory's mtime changed and a file added on the replica are each
// found, at their paths, and a repair makes the trees equal again.
func TestVerifyFindsWhatChangedBehindItsBack(t *testing.T) {
	spool, root, v, _ := newVerifyTest(t)
	ctx := context.Background()
	if diffs, err := v.pass(ctx); err != nil || len(diffs) != 0 {
		t.Fatalf("clean replica: differences %v, err %v", diffs, err)
	}
	// A clean tree is one digest exchange, about the root alone.
	if v.cmp.requests != 1 || v.cmp.dirs != 1 {
		t.Errorf("clean replica: %d digest requests about %d directories, want 1 about the root", v.cmp.requests, v.cmp.dirs)
	}
	// One change deep down: only the directories above it are asked
	// about, one level a round trip, then its directory again (the
	// second look).
	os.Truncate(root+"/u/1/2", 0)
	if diffs, err := v.pass(ctx); err != nil || len(diffs) != 1 || diffs[0].path != "u/1/2" {
		t.Fatalf("one file truncated: differences %v, err %v", diffs, err)
	}
	if v.cmp.requests != 4 || v.cmp.dirs != 4 {
		t.Errorf("one file truncated: %d requests about %d directories, want 4 about \"\", u, u/1 and u/1 again", v.cmp.requests, v.cmp.dirs)
	}
	if _, err := Resync(ctx, ResyncOptions{Backing: spool, Paths: []string{"u/1"}, Delete: true, Client: v.cmp.client, Cache: v.c.res.cache, Mode: v.cmp.mode}); err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Remove(root + "/u/0/1"))
	var st unix.Stat_t
	must(unix.Lstat(root+"/u/2/3", &st))
	b, err := os.ReadFile(root + "/u/2/3")
	must(err)
	b[3] ^= 0x20
	must(os.WriteFile(root+"/u/2/3", b, 0o600))
	must(unix.UtimesNano(root+"/u/2/3", []unix.Timespec{st.Atim, st.Mtim}))
	must(unix.Lremovexattr(root+"/u/1/cur", "user.dovecot"))
	must(unix.UtimesNano(root+"/u/1", []unix.Timespec{unix.NsecToTimespec(1e9), unix.NsecToTimespec(1e9)}))
	must(os.WriteFile(root+"/u/2/extra", []byte("x"), 0o600))

	ps, err := Verify(ctx, VerifyOptions{Backing: spool, Client: v.cmp.client, Cache: v.c.res.cache, Mode: v.cmp.mode, Passes: 2})
	if err != nil || len(ps) != 2 || ps[1].Different != 7 || ps[0].Requests < 2 {
		t.Fatalf("one-shot Verify: %+v, %v; want 2 passes finding 7 differences", ps, err)
	}
	diffs, err := v.pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A name added or removed changes its directory's mtime too.
	got, want := diffPaths(diffs), []string{"u/0", "u/0/1", "u/1", "u/1/cur", "u/2", "u/2/3", "u/2/extra"}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("differences %v, want the paths %q", diffs, want)
	}
	if err := v.repairDiffs(ctx, diffs); err != nil {
		t.Fatal(err)
	}
	if diffs, err := v.pass(ctx); err != nil || len(diffs) != 0 {
		t.Fatalf("after the repair: differences %v, err %v", diffs, err)
	}
	if diffs, err := treecmp.Diff(spool, root, treecmp.Options{Skip: []string{".spoolsync"}, DirMtimes: true}); err != nil || len(diffs) > 0 {
		t.Fatalf("after the repair, treecmp: %v %q", err, diffs)
	}
}

// TestVerifyRechecks: a difference that is gone at the second look (a
// change in flight that landed) or whose master side changed in between
// (in flight still) is not reported; one still there, unchanged on the
// master, is.
func TestVerifyRechecks(t *testing.T) {
	spool, root, v, _ := newVerifyTest(t)
	ctx := context.Background()
	os.WriteFile(spool+"/u/0/new", []byte("landing"), 0o600) // replicated between the looks
	os.WriteFile(spool+"/u/1/0", []byte("v1"), 0o600)        // changes again on the master
	os.Remove(root + "/u/2/0")                               // lost on the replica for good (and u/2's mtime changed)
	v.beforeRecheck = func() {
		if err := os.WriteFile(root+"/u/0/new", []byte("landing"), 0o600); err != nil {
			t.Error(err)
		}
		var st unix.Stat_t
		unix.Lstat(spool+"/u/0/new", &st)
		unix.UtimesNano(root+"/u/0/new", []unix.Timespec{st.Atim, st.Mtim})
		unix.UtimesNano(root+"/u/0", []unix.Timespec{unix.NsecToTimespec(0), unix.NsecToTimespec(0)})
		unix.Lstat(spool+"/u/0", &st)
		unix.UtimesNano(root+"/u/0", []unix.Timespec{st.Atim, st.Mtim})
		os.WriteFile(spool+"/u/1/0", []byte("v2"), 0o600)
	}
	diffs, err := v.pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := diffPaths(diffs); !slices.Equal(got, []string{"u/2", "u/2/0"}) {
		t.Fatalf("reported %v; want only u/2 and u/2/0 (u/0/new landed, u/1/0 still in flight)", diffs)
	}
}

// TestVerifyWaitsForCatchUp: with a backlog, nothing is compared (an
// event in flight is not a divergence); the pass says why.
func TestVerifyWaitsForCatchUp(t *testing.T) {
	_, root, v, _ := newVerifyTest(t)
	os.Remove(root + "/u/0/0")
	v.interval = 100 * time.Millisecond
	v.c.st.Connected = false
	if diffs, err := v.pass(context.Background()); err == nil || len(diffs) != 0 {
		t.Fatalf("a channel that is down was verified: %v, %v", diffs, err)
	}
}

// TestVerifierRunLogsRepairsAndReports runs the verifier as the mount
// does: the differences are logged with their paths, repaired, and the
// status goes from owing a check to in sync.
func TestVerifierRunLogsRepairsAndReports(t *testing.T) {
	spool, root, v, logs := newVerifyTest(t)
	os.Remove(root + "/u/0/2")
	r := &Replicator{log: v.c.log, channels: []*Channel{v.c}, verifiers: map[*Channel]*verifier{v.c: v}}
	status := func() ChannelStatus { return r.Status()[0] }
	if st := status(); st.InSync || len(st.Owes) == 0 {
		t.Fatalf("before any verify: in sync %v, owes %q; want a first verify owed", st.InSync, st.Owes)
	}
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); v.run(ctx) }()
		return func() { cancel(); <-done }
	}
	stop := start()
	t.Cleanup(func() { stop() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := status()
		if st.Repaired > 0 && st.InSync {
			if st.DivergedEntries != 0 || st.VerifiedAt.IsZero() {
				t.Errorf("in sync with %d diverged entries, verified at %v", st.DivergedEntries, st.VerifiedAt)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not repaired and in sync within 20s: %+v\nlog:\n%s", st, logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "u/0/2 (missing on the replica)") {
		t.Errorf("the log does not name the path:\n%s", logs)
	}
	if diffs, err := treecmp.Diff(spool, root, treecmp.Options{Skip: []string{".spoolsync"}, DirMtimes: true}); err != nil || len(diffs) > 0 {
		t.Fatalf("after the repair, treecmp: %v %q", err, diffs)
	}
	// sync_verify report: counted and owed, not repaired.
	stop()
	os.Remove(root + "/u/1/1")
	v.repair = false
	stop = start()
	deadline = time.Now().Add(20 * time.Second)
	for {
		st := status()
		if st.DivergedEntries > 0 {
			want := []string{"u/1 (directory attributes differ)", "u/1/1 (missing on the replica)"}
			if st.InSync || !strings.Contains(strings.Join(st.Owes, ";"), "2 differences") || !slices.Equal(st.DivergedPaths, want) {
				t.Errorf("report mode: in sync %v, owes %q, paths %q", st.InSync, st.Owes, st.DivergedPaths)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("report mode: difference not counted: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := os.Stat(root + "/u/1/1"); err == nil {
		t.Error("report mode repaired the replica")
	}
}
