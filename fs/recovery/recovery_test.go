package recovery

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/synclog"
)

func TestRunMarker(t *testing.T) {
	dir := t.TempDir()
	if _, unclean, err := StartRun(dir); err != nil || unclean {
		t.Fatalf("first start: unclean=%v err=%v; want a clean first run", unclean, err)
	}
	cp := time.Unix(1_700_000_000, 0)
	if err := SaveCheckpoint(dir, cp); err != nil {
		t.Fatal(err)
	}
	// No EndRun: the process "died". The next start must say so and
	// rescan from the checkpoint, less the slack for ctime granularity.
	since, unclean, err := StartRun(dir)
	if err != nil || !unclean {
		t.Fatalf("start after a crash: unclean=%v err=%v; want unclean", unclean, err)
	}
	if want := cp.Add(-checkpointSlack); !since.Equal(want) {
		t.Errorf("since = %v, want %v", since, want)
	}
	if err := EndRun(dir); err != nil {
		t.Fatal(err)
	}
	if err := EndRun(dir); err != nil {
		t.Errorf("a second EndRun: %v; want nil (nothing left to remove)", err)
	}
	if _, unclean, err := StartRun(dir); err != nil || unclean {
		t.Errorf("start after a clean stop: unclean=%v err=%v", unclean, err)
	}
}

func TestRunMarkerWithoutCheckpoint(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := StartRun(dir); err != nil {
		t.Fatal(err)
	}
	// A crash before the first checkpoint: rescan everything (zero time).
	since, unclean, err := StartRun(dir)
	if err != nil || !unclean || !since.IsZero() {
		t.Errorf("since=%v unclean=%v err=%v; want the zero time, unclean", since, unclean, err)
	}
}

func TestRescan(t *testing.T) {
	backing := t.TempDir()
	mk := func(p string) {
		t.Helper()
		full := filepath.Join(backing, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("old/a")
	mk(fence.Dir + "/epoch") // spoolsync's own: never an event
	if err := os.Symlink("a", filepath.Join(backing, "old/l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(backing, "old/fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	// Everything so far is older than the checkpoint.
	past := time.Now().Add(-time.Hour)
	for _, p := range []string{"old/a", "old", "."} {
		if err := os.Chtimes(filepath.Join(backing, p), past, past); err != nil {
			t.Fatal(err)
		}
	}

	lg, err := synclog.Open(synclog.Options{Dir: t.TempDir(), FlushInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer lg.Close()

	// The zero time: every file and symlink, no fifo, nothing under .spoolsync.
	n, dirs, err := Rescan(lg, backing, time.Time{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := events(t, lg, 0); n != 2 || !slices.Equal(got, []string{"old/a", "old/l"}) {
		t.Errorf("full rescan: n=%d events=%q; want old/a and old/l", n, got)
	}
	if !slices.Contains(dirs, ".") || !slices.Contains(dirs, "old") || slices.Contains(dirs, fence.Dir) {
		t.Errorf("full rescan dirs = %q; want . and old, not %s", dirs, fence.Dir)
	}

	// ctime cannot be set back, so a checkpoint in the future stands for
	// "nothing changed since": only a file written after it counts.
	since := time.Now().Add(time.Hour)
	before := lg.LastSeq()
	n, _, err = Rescan(lg, backing, since, nil)
	if err != nil || n != 0 || lg.LastSeq() != before {
		t.Errorf("rescan since the future: n=%d err=%v; want nothing", n, err)
	}
}

// events lists the paths of the OpRescan events after seq.
func events(t *testing.T, lg *synclog.Log, seq uint64) []string {
	t.Helper()
	if err := lg.Sync(lg.LastSeq()); err != nil { // readers see durable events only
		t.Fatal(err)
	}
	r, err := lg.NewReader(seq + 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []string
	for {
		ev, err := r.TryNext()
		if err != nil {
			t.Fatal(err)
		}
		if ev == nil {
			return out
		}
		if ev.Op != synclog.OpRescan {
			t.Errorf("event %v: want OpRescan", ev)
		}
		out = append(out, ev.Path)
	}
}
