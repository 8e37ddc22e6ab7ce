package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"spoolsync/replicator"
	"spoolsync/synclog"
)

// systemd integration (Type=notify units, contrib/systemd): the
// notification protocol is go-systemd's sd_notify. Without NOTIFY_SOCKET
// (not started by systemd) every notification is a no-op.
//
//	READY=1     once the mount is mounted (or the server listens)
//	STATUS=...  every few seconds: lag and backlog per replica
//	WATCHDOG=1  every WatchdogSec/2, and only while every health probe
//	            answers: the FUSE loop serves a STATFS, the sync log has
//	            not failed and can sync what it holds
//	STOPPING=1  when shutdown starts (before the unmount)
//
// A probe that does not answer within its time counts as failed; it is
// not started again while the first call still hangs, so a wedged FUSE
// loop or disk costs one goroutine, not one a tick. systemd then kills and
// restarts the unit when WatchdogSec passes without a ping.

// statusEvery is how often STATUS= is refreshed when systemd has no
// watchdog for the unit.
const statusEvery = 5 * time.Second

// sdNotify sends state to systemd, logging (not failing on) a socket that
// cannot be written: the service keeps working, systemd will time out.
func sdNotify(logger *slog.Logger, state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		logger.Warn("cannot notify systemd (NOTIFY_SOCKET)", "state", strings.SplitN(state, "\n", 2)[0], "err", err)
	}
}

// probe is one health check the watchdog needs to pass.
type probe struct {
	name     string
	check    func() error
	inflight chan error // a call still running from an earlier tick
}

// run calls check, or keeps waiting for a call that hung on an earlier
// tick, for at most timeout.
func (p *probe) run(timeout time.Duration) error {
	if p.inflight == nil {
		ch := make(chan error, 1)
		go func() { ch <- p.check() }()
		p.inflight = ch
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-p.inflight:
		p.inflight = nil
		return err
	case <-t.C:
		return fmt.Errorf("no answer within %v", timeout)
	}
}

// watchdog feeds systemd's watchdog (when interval > 0, the ping period)
// while every probe passes, and refreshes STATUS= from status each tick.
type watchdog struct {
	interval time.Duration // 0: no watchdog, STATUS= only
	probes   []*probe
	status   func() string
	notify   func(state string)
	logger   *slog.Logger
}

// run ticks until ctx is done.
func (w *watchdog) run(ctx context.Context) {
	every := w.interval
	if every <= 0 {
		every = statusEvery
	}
	// A probe may take most of a tick, not more: a late answer must not
	// delay the next ping of a healthy process past WatchdogSec.
	timeout := every * 3 / 4
	t := time.NewTicker(every)
	defer t.Stop()
	failing := ""
	for {
		var bad []string
		if w.interval > 0 {
			for _, p := range w.probes {
				if err := p.run(timeout); err != nil {
					bad = append(bad, p.name+": "+err.Error())
				}
			}
		}
		if ctx.Err() != nil {
			return
		}
		switch {
		case len(bad) > 0:
			why := strings.Join(bad, "; ")
			if why != failing {
				w.logger.Error("unhealthy: not feeding the systemd watchdog; systemd restarts the unit after WatchdogSec", "err", why)
			}
			failing = why
			w.notify("STATUS=unhealthy: " + why)
		case w.interval > 0:
			if failing != "" {
				w.logger.Info("healthy again: feeding the systemd watchdog")
			}
			failing = ""
			w.notify("WATCHDOG=1\nSTATUS=" + w.status())
		default:
			w.notify("STATUS=" + w.status())
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// fuseMagic is FUSE_SUPER_MAGIC, statfs's f_type of a FUSE mount.
const fuseMagic = 0x65735546

// fuseProbe checks that the FUSE loop of the mount at mountpoint serves
// requests: the kernel never caches STATFS, so it is a round trip to this
// process. A mountpoint that is no longer a FUSE mount fails too.
func fuseProbe(mountpoint string) func() error {
	return func() error {
		var st unix.Statfs_t
		if err := unix.Statfs(mountpoint, &st); err != nil {
			return fmt.Errorf("statfs %s: %w", mountpoint, err)
		}
		if st.Type != fuseMagic {
			return fmt.Errorf("%s is not a FUSE mount any more", mountpoint)
		}
		return nil
	}
}

// logProbe checks that the sync log accepts events: it has not failed,
// and what it holds can be made durable (a hung disk hangs this).
func logProbe(lg *synclog.Log) func() error {
	return func() error {
		if err := lg.Err(); err != nil {
			return err
		}
		return lg.Sync(lg.LastSeq())
	}
}

// mountStatus is the STATUS= line of a mount: per replica, its state, lag
// and backlog.
func mountStatus(mountpoint string, repl *replicator.Replicator) string {
	if repl == nil {
		return "mounted on " + mountpoint + "; no replication (sync_host unset)"
	}
	return statusLine(mountpoint, repl.Status())
}

func statusLine(mountpoint string, chans []replicator.ChannelStatus) string {
	var b strings.Builder
	b.WriteString("mounted on " + mountpoint)
	for _, s := range chans {
		state := "connected"
		switch {
		case s.Fenced:
			state = "FENCED"
		case !s.Connected:
			state = "disconnected"
		case s.SyncMode == "degraded":
			state = "DEGRADED"
		}
		fmt.Fprintf(&b, "; %s (%s) %s, lag %.1fs, backlog %d events", s.Name, s.Replica, state, s.LagSeconds, s.BacklogEvents)
	}
	return b.String()
}

// startWatchdog starts the mount's watchdog (and STATUS= updates) when
// systemd started this process with a notify socket.
func startWatchdog(ctx context.Context, mountpoint string, lg *synclog.Log, repl *replicator.Replicator, logger *slog.Logger) {
	if !notifySocketSet() {
		return
	}
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		logger.Warn("systemd watchdog settings unusable; not feeding it", "err", err)
	}
	w := &watchdog{
		interval: interval / 2, // systemd's advice: ping at half WatchdogSec
		probes:   []*probe{{name: "FUSE loop", check: fuseProbe(mountpoint)}},
		status:   func() string { return mountStatus(mountpoint, repl) },
		notify:   func(s string) { sdNotify(logger, s) },
		logger:   logger,
	}
	if lg != nil {
		w.probes = append(w.probes, &probe{name: "sync log", check: logProbe(lg)})
	}
	go w.run(ctx)
}

// notifySocketSet: systemd started this process as a Type=notify unit.
func notifySocketSet() bool { return os.Getenv("NOTIFY_SOCKET") != "" }
