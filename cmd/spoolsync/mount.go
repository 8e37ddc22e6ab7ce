package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"spoolsync/config"
	"spoolsync/fence"
	"spoolsync/fs"
	"spoolsync/fs/recovery"
	"spoolsync/replicator"
	"spoolsync/synclog"
)

const mountAbout = `
Mounts MOUNTPOINT (what the mail server uses) over BACKING_DIR (where the
bytes live), records every change in the sync log (sync_log_dir) and, when
sync_host is configured, replicates it. Runs in the foreground: start it
before the IMAP/LMTP services; it prints one line when the mount is ready
and unmounts on SIGINT or SIGTERM.

BACKING_DIR and MOUNTPOINT default to the keys spool_dir and mount_point.`

func runMount(args []string) error {
	fl := newFlags("mount", "mount [-c FILE] [BACKING_DIR MOUNTPOINT]", mountAbout)
	cfgPath := fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	grace := fl.Duration("grace", 30*time.Second, "at shutdown, how long to keep serving files a mail server still holds open")
	debug := fl.Bool("debug", false, "log every FUSE request")
	noPassthrough := fl.Bool("no-passthrough", false, "serve every read through this process (no kernel FUSE passthrough)")
	segSize := fl.String("log-segment-size", "64M", "size of each sync log segment file (preallocated; K, M or G suffix)")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	backing, mountpoint := cfg.SpoolDir, cfg.MountPoint
	switch fl.NArg() {
	case 0:
	case 2:
		backing, mountpoint = fl.Arg(0), fl.Arg(1)
	default:
		return usagef("mount takes BACKING_DIR and MOUNTPOINT, or neither (then spool_dir and mount_point from the configuration)")
	}
	if backing == "" || mountpoint == "" {
		return usagef("mount: no spool: give BACKING_DIR MOUNTPOINT, or set spool_dir and mount_point in %s", configName(cfg))
	}
	if cfg.SyncMode == "sync" && len(cfg.Channels) == 0 {
		return usagef("mount: sync_mode: sync makes fsync wait for a replica, and none is configured: set sync_host (and sync_authname, sync_password), or sync_mode: async, in %s", configName(cfg))
	}
	logger := newLogger(cfg.LogFormat, *debug)
	// The kernel has applied the mail process's umask to the mode of what
	// it creates through the mount; this process creates it on the backing
	// directory, where its own umask would mask it again (a umask of 022
	// from systemd or mount(8) turned a group-shared 0660 mailbox into
	// 0640). spoolsync's own files all have explicit modes.
	syscall.Umask(0)
	// Signals are caught from here on: one that arrives while mounting
	// must unmount, not kill the process with the mount left behind.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	if cleared, err := clearDeadMount(mountpoint); err != nil {
		return err
	} else if cleared {
		logger.Warn("detached the mount a spoolsync mount that died left behind (its files answered ENOTCONN or ECONNABORTED)", "mountpoint", mountpoint)
	}
	dirs, err := checkMountDirs(backing, mountpoint, cfg.SyncLogDir)
	if err != nil {
		return err
	}
	tree, err := fence.Read(dirs.backing, fence.Master)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	if tree.Role != fence.Master {
		return usagef("mount: %s is a replica tree (%s): mounting it as a spool would make two masters; promote it first: spoolsync promote --root %s", dirs.backing, tree, dirs.backing)
	}
	release, err := fence.Hold(dirs.backing, "spoolsync mount on "+dirs.mountpoint)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	defer release()

	var lg fs.Log = discardLog{}
	var syncLog *synclog.Log
	var rescanFrom *time.Time // the last run stopped uncleanly: rescan from here
	if cfg.SyncLog {
		seg, err := config.ParseSize(*segSize)
		if err != nil || seg < 64<<10 {
			return usagef("mount: --log-segment-size %q: want a size of at least 64K", *segSize)
		}
		syncLog, err = synclog.Open(synclog.Options{Dir: dirs.log, SegmentSize: seg, Logger: logger})
		if err != nil {
			return fmt.Errorf("mount: open the sync log: %w", err)
		}
		defer syncLog.Close()
		lg = syncLog
		since, unclean, err := recovery.StartRun(dirs.log)
		if err != nil {
			return fmt.Errorf("mount: %w", err)
		}
		if unclean {
			rescanFrom = &since
		}
	} else {
		logger.Warn("sync_log is off: changes are not recorded and will not be replicated")
	}

	opts := fs.DefaultOptions()
	opts.Logger = logger
	opts.Debug = *debug
	opts.Passthrough = !*noPassthrough
	opts.Uring = cfg.FuseURing
	if cfg.SyncLog {
		var why string
		if opts.SharedFlush, why = fs.SharedFlush(dirs.backing, dirs.log); !opts.SharedFlush {
			logger.Info("fsync on the mount syncs the sync log separately", "why", why)
		}
	}
	var repl *replicator.Replicator
	if len(cfg.Channels) > 0 {
		if !cfg.SyncLog {
			return usagef("mount: sync_host is set but sync_log is off: rolling replication needs the sync log")
		}
		if repl, err = newReplication(cfg, syncLog, dirs.backing, tree.Epoch, logger); err != nil {
			return err
		}
		if cfg.SyncMode == "sync" {
			opts.Replicas = repl
		}
	}
	m, err := fs.New(dirs.backing, dirs.mountpoint, lg, opts)
	if err != nil {
		if repl != nil {
			repl.Close()
		}
		return err
	}
	logger.Info("mounted", "backing", dirs.backing, "mountpoint", dirs.mountpoint, "sync_log", dirs.log, "sync_mode", cfg.SyncMode, "fuse_transport", m.Transport())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waitReplication := func() {}
	if repl != nil {
		if waitReplication, err = startReplication(ctx, cfg, repl, syncLog, logger); err != nil {
			repl.Close()
			m.Unmount(*grace)
			return err
		}
	}
	fmt.Printf("spoolsync: ready: %s mounted on %s\n", dirs.backing, dirs.mountpoint)
	// rescanned is set once nothing the last run may have left unlogged
	// is missing from the log: at once after a clean stop, after a
	// completed rescan after an unclean one.
	var rescanned atomic.Bool
	rescanned.Store(rescanFrom == nil)
	sdNotify(logger, "READY=1\nSTATUS="+mountStatus(dirs.mountpoint, repl))
	wdCtx, stopWatchdog := context.WithCancel(ctx)
	defer stopWatchdog()
	startWatchdog(wdCtx, dirs.mountpoint, syncLog, repl, logger)
	if syncLog != nil {
		var resync func([]string) error
		if repl != nil {
			resync = repl.ResyncDirs
		}
		go keepCheckpoint(ctx, m, syncLog, dirs.backing, rescanFrom, resync, &rescanned, logger)
	}

	select {
	case s := <-sig:
		stopWatchdog() // the unmount fails its probe: say stopping, not unhealthy
		logger.Info("unmounting", "signal", s.String())
		sdNotify(logger, "STOPPING=1\nSTATUS=unmounting "+dirs.mountpoint)
		if err := m.Unmount(*grace); err != nil {
			return err
		}
	case <-m.Done():
		stopWatchdog()
		logger.Warn("the mount was removed from outside (umount); stopping", "mountpoint", dirs.mountpoint)
		sdNotify(logger, "STOPPING=1\nSTATUS=the mount was removed from outside")
	}
	logger.Info("unmounted", "mountpoint", dirs.mountpoint)
	// What was logged before the unmount is shipped by the next start.
	cancel()
	waitReplication()
	switch {
	case syncLog == nil:
	case !rescanned.Load():
		// The changes the crash lost are still not in the log: stopping
		// cleanly now would make the next start skip the rescan, and
		// they would never be shipped.
		logger.Warn("the rescan after the last unclean stop did not complete; the next start rescans again",
			"log", dirs.log)
	default:
		if err := recovery.EndRun(dirs.log); err != nil {
			logger.Warn("cannot record the clean stop; the next start will rescan", "err", err)
		}
	}
	return nil
}

func configName(cfg *config.Config) string {
	if cfg.File == "" {
		return config.DefaultPath
	}
	return cfg.File
}

// checkpointEvery is how often the mount saves its checkpoint: the longest
// stretch of changes an unclean stop makes the next start rescan, on top of
// what was being written then.
const checkpointEvery = 5 * time.Second

// keepCheckpoint rescans after an unclean stop (when from is set), then
// saves the mount's checkpoint every few seconds until ctx is done. Only a
// rescan whose events are durable sets rescanned, which lets the stop be
// recorded as clean. After a failed rescan no checkpoint is saved either:
// the next start must rescan from the old one, which covers the crash.
func keepCheckpoint(ctx context.Context, m *fs.Mount, lg *synclog.Log, backing string, from *time.Time, resync func([]string) error, rescanned *atomic.Bool, logger *slog.Logger) {
	if from != nil {
		start := time.Now()
		n, dirs, err := recovery.Rescan(lg, backing, *from, logger)
		if err == nil {
			err = lg.Sync(lg.LastSeq())
		}
		if err == nil && resync != nil {
			err = resync(dirs)
		}
		if err != nil {
			logger.Error("rescan after an unclean stop failed; the next start rescans again, or run spoolsync resync", "err", err)
			return
		}
		rescanned.Store(true)
		logger.Warn("the last run did not stop cleanly: files changed since its last checkpoint will be shipped whole, and the directories changed since then resynced",
			"checkpoint", from.Format(time.RFC3339), "files", n, "directories", len(dirs), "took", time.Since(start).Round(time.Millisecond))
	}
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		cp := m.Checkpoint()
		// Durable log first: the checkpoint promises the log has
		// everything before it.
		if err := lg.Sync(lg.LastSeq()); err == nil {
			if err := recovery.SaveCheckpoint(lg.Dir(), cp); err != nil {
				logger.Warn("cannot save the checkpoint", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// discardLog is the log when sync_log is off.
type discardLog struct{}

func (discardLog) Append(evs ...*synclog.Event) (uint64, error) { return 0, nil }
func (discardLog) Sync(uint64) error                            { return nil }
func (discardLog) LastSeq() uint64                              { return 0 }

type mountDirs struct{ backing, mountpoint, log string }

// checkMountDirs refuses the setups that would lose mail or hang: each
// message names the directory and what to do.
func checkMountDirs(backing, mountpoint, logDir string) (mountDirs, error) {
	var d mountDirs
	var err error
	if d.backing, err = realDir(backing, "backing directory"); err != nil {
		return d, err
	}
	if d.mountpoint, err = realDir(mountpoint, "mount point"); err != nil {
		return d, err
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return d, fmt.Errorf("mount: /dev/fuse is missing: load the fuse module (modprobe fuse) or, in a container, pass the device in")
	}
	if d.backing == d.mountpoint || within(d.backing, d.mountpoint) || within(d.mountpoint, d.backing) {
		return d, usagef("mount: the backing directory %s and the mount point %s overlap: one may not be inside the other", d.backing, d.mountpoint)
	}
	d.log = filepath.Clean(logDir)
	if abs, err := filepath.Abs(d.log); err == nil {
		d.log = abs
	}
	if real, err := filepath.EvalSymlinks(d.log); err == nil {
		d.log = real
	}
	for _, dir := range []string{d.backing, d.mountpoint} {
		if d.log == dir || within(d.log, dir) {
			return d, usagef("mount: the sync log directory %s is inside %s: the log would record itself or be replicated; set sync_log_dir (or state_dir) elsewhere", d.log, dir)
		}
	}
	if mounted, err := isMountPoint(d.mountpoint); err != nil {
		return d, err
	} else if mounted {
		return d, fmt.Errorf("mount: %s is already a mount point: is spoolsync already running? (unmount it first: umount %s)", d.mountpoint, d.mountpoint)
	}
	ents, err := os.ReadDir(d.mountpoint)
	if err != nil {
		return d, fmt.Errorf("mount: %w", err)
	}
	if len(ents) > 0 {
		return d, fmt.Errorf("mount: the mount point %s is not empty (it holds %s): mail written there would be hidden by the mount; move it into the backing directory first", d.mountpoint, ents[0].Name())
	}
	return d, nil
}

// realDir resolves p to an absolute, symlink-free directory path.
func realDir(p, what string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("mount: %s %s: %w", what, p, err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("mount: the %s %s does not exist: create it (mkdir -p %s)", what, abs, abs)
		}
		return "", fmt.Errorf("mount: %s %s: %w", what, abs, err)
	}
	st, err := os.Stat(real)
	if err != nil {
		return "", fmt.Errorf("mount: %s %s: %w", what, real, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("mount: the %s %s is not a directory", what, real)
	}
	return real, nil
}

// within reports whether p is strictly below dir.
func within(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != "." && rel != ".." && !strings.HasPrefix(rel, "../")
}

// isMountPoint reports whether dir is the mount point of a mount, from
// /proc/self/mountinfo (field 5, with octal escapes for blanks).
func isMountPoint(dir string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("mount: read the mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dir {
			return true, nil
		}
	}
	return false, sc.Err()
}

func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%3o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// clearDeadMount detaches the mount a killed spoolsync mount left at
// mountpoint: the kernel keeps a FUSE mount whose daemon died, answering
// ENOTCONN (ECONNABORTED when it took requests over io_uring), and a restart (systemd's, after a crash or a watchdog kill)
// would refuse the mounted mount point. Only a fuse.spoolsync mount that
// no process serves is detached; a live one is left for checkMountDirs to
// refuse.
func clearDeadMount(mountpoint string) (bool, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return false, nil
	}
	// statfs, never answered from the kernel's caches as a stat can be.
	var st syscall.Statfs_t
	err = syscall.Statfs(abs, &st)
	// A connection being torn down answers ECANCELED for a moment (io_uring).
	for i := 0; i < 20 && errors.Is(err, syscall.ECANCELED); i++ {
		time.Sleep(50 * time.Millisecond)
		err = syscall.Statfs(abs, &st)
	}
	if !deadFUSE(err) {
		return false, nil
	}
	if ok, err := mountedAs(abs, "fuse.spoolsync"); err != nil || !ok {
		return false, err
	}
	if err := syscall.Unmount(abs, syscall.MNT_DETACH); err != nil {
		return false, fmt.Errorf("mount: %s is a dead spoolsync mount and detaching it failed: %w (umount -l %s)", abs, err, abs)
	}
	return true, nil
}

// deadFUSE reports whether err is what a FUSE mount whose daemon died
// answers: ENOTCONN, or ECONNABORTED when the connection served its
// requests over io_uring (the kernel aborts the rings).
func deadFUSE(err error) bool {
	return errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
}
