// Package recovery is the mount's crash recovery: a run marker that tells
// an unclean stop from a clean one, a checkpoint before which every write
// is in the sync log, and the rescan that turns what an unclean stop may
// have left unlogged into events.
//
// Invariant: the run marker is removed (EndRun) only after a stop that
// left nothing unlogged; a mount that finds it at start rescans every file
// changed since the checkpoint before it may call the run clean again.
package recovery

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"spoolsync/internal/durable"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/synclog"
)

// An unclean stop (the mount process killed, the machine crashed) can
// leave writes on the backing dir that never became events: bytes written
// to a file that was not yet flushed or fsynced. The mount saves a
// checkpoint every few seconds — a time before which every write is in the
// log (fs.Mount.Checkpoint) — and a marker while it runs. Finding the
// marker at start means the last run did not stop cleanly: every file
// changed since the checkpoint is then recorded as OpRescan, which the
// replicator ships whole (by GUID, so content the replica has does not
// cross the wire again).
const (
	runningMarker  = "running"
	checkpointFile = "checkpoint"
	// checkpointSlack covers clock granularity between the saved
	// checkpoint and the filesystem's ctime stamps.
	checkpointSlack = 2 * time.Second
)

// StartRun records that a mount is running; it returns the checkpoint to
// rescan from when the last run did not stop cleanly.
func StartRun(logDir string) (since time.Time, unclean bool, err error) {
	marker := filepath.Join(logDir, runningMarker)
	if _, err := os.Stat(marker); err == nil {
		unclean = true
		b, err := os.ReadFile(filepath.Join(logDir, checkpointFile))
		if err == nil {
			if ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
				since = time.Unix(0, ns).Add(-checkpointSlack)
			}
		}
	}
	if err := durable.WriteFile(marker, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return since, unclean, fmt.Errorf("run marker %s: %w", marker, err)
	}
	return since, unclean, nil
}

// SaveCheckpoint records t durably.
func SaveCheckpoint(logDir string, t time.Time) error {
	return durable.WriteFile(filepath.Join(logDir, checkpointFile), []byte(strconv.FormatInt(t.UnixNano(), 10)+"\n"), 0o600)
}

// EndRun records a clean stop: nothing is left unlogged.
func EndRun(logDir string) error {
	err := os.Remove(filepath.Join(logDir, runningMarker))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Rescan appends an OpRescan event for every regular file and symlink
// under backing whose ctime is at or after since (the zero time: all of
// them). It reads only metadata; the replicator reads content when it
// ships. It also returns the directories changed since then: a rename or
// unlink whose event was lost (the process killed between the backing
// operation and its append) left a difference only a resync of those
// directories finds (Replicator.ResyncDirs).
func Rescan(lg *synclog.Log, backing string, since time.Time, logger *slog.Logger) (files int, dirs []string, err error) {
	n := 0
	var batch []*synclog.Event
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		_, err := lg.Append(batch...)
		batch = batch[:0]
		return err
	}
	err = filepath.WalkDir(backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil // removed while we walked: its event is in the log
			}
			return err
		}
		if d.IsDir() && fence.Reserved(filepath.Base(p)) && filepath.Dir(p) == filepath.Clean(backing) {
			return filepath.SkipDir // spoolsync's own, never replicated
		}
		if !d.IsDir() && !(d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0) {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil {
			return nil
		}
		if time.Unix(st.Ctim.Unix()).Before(since) {
			return nil
		}
		rel, _ := filepath.Rel(backing, p)
		if d.IsDir() {
			dirs = append(dirs, filepath.ToSlash(rel))
			return nil
		}
		batch = append(batch, &synclog.Event{Op: synclog.OpRescan, Path: filepath.ToSlash(rel), Ino: st.Ino})
		n++
		if len(batch) == 256 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return n, nil, fmt.Errorf("rescan %s: %w", backing, err)
	}
	return n, dirs, nil
}
