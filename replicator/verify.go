package replicator

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/digest"
	"spoolsync/synclog"
	"spoolsync/wire"
)

// Continuous verification (sync_verify_interval, sync_verify): a
// DRBD-style online verify of each channel's replica, in the mount.
//
// A pass: once the channel is caught up (connected, backlog 0, no resync
// owed), the verifier computes the digests of the backing tree (package
// digest: a Merkle tree per directory, cached by stat, so an unchanged
// tree costs an fstatat per entry and no read) and asks the replica for
// its digest of the root. Equal: the pass is over, one round trip. Not
// equal: the replica answers with the root's entries, and the verifier
// asks again for the subdirectories whose digests differ, a level at a
// time, so it reads only the subtrees that differ.
//
// A difference is reported only if it is seen twice: after the first
// pass, the verifier waits until the channel has acknowledged everything
// logged meanwhile, and looks again at the directories holding the
// differences; what changed on the master between the looks was in
// flight, not a divergence, and is left to the next pass. What remains is
// counted in the channel's status and metrics, logged with its paths,
// and, with sync_verify repair, resynced (the same Resync as
// `spoolsync resync --delete` of the directories holding the
// differences), after which the verifier passes again at once.
//
// Its cost is bounded by time: after each directory the master's digest
// walk sleeps for verifyShare⁻¹-1 times what the directory took, so the
// walk uses at most verifyShare of one CPU and of the disk's time, and
// mail delivery on the mount does not notice it. The replica's side costs
// the standby host a stat walk per pass; it is not paced (no mail is
// delivered there) but it runs on its own connection, beside the
// channel's batches.

// verifyShare is the most of the machine a verify walk takes (see above).
const verifyShare = 0.03

// verifyPoll is how often a verifier looks whether its channel caught up.
const verifyPoll = 50 * time.Millisecond

// maxLoggedPaths bounds the paths one log line (and the status) names.
const maxLoggedPaths = 100

// verifier runs continuous verification for one channel.
type verifier struct {
	c        *Channel
	cmp      comparer
	interval time.Duration
	repair   bool

	mu sync.Mutex
	st verifyState

	beforeRecheck func() // tests: runs between the two looks of a pass
}

// verifyState is what a verifier tells Status.
type verifyState struct {
	verifiedAt time.Time // end of the last pass that completed
	took       time.Duration
	diverged   []difference // found by the last completed pass (confirmed)
	repaired   uint64       // entries resynced since the start
	lastErr    string
	lastErrAt  time.Time
	repairing  bool // the last pass found differences and repairs them (sync_verify repair)
}

// newVerifyTree is the digest tree of the backing directory, paced for
// the mount's verifier or not for a one-shot Verify, and what closes it.
func newVerifyTree(r *resolver, paced bool) (*digest.Tree, func(), error) {
	rootfd, err := unix.Open(r.backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("verify: open %s: %w", r.backing, err)
	}
	o := digest.Options{Cache: r.cache, Mode: r.mode,
		OpenDir: func(dir string) (int, error) { return openBeneath(rootfd, dir) }}
	if paced {
		o.Pace = pace
	}
	t := digest.New(o)
	return t, func() { unix.Close(rootfd) }, nil
}

// pace sleeps so that the work of spent takes at most verifyShare of the
// time; ctx ends the sleep, and the walk with it.
func pace(ctx context.Context, spent time.Duration) error {
	d := time.Duration(float64(spent) * (1/verifyShare - 1))
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// run verifies every interval until ctx is done. The first pass comes one
// interval after the start, like every other: a mount that has just
// started has its own catching up to do first (its rescan, a first
// resync), and verifying then would only find those in flight. A pass
// that repaired something is followed at once by one that checks the
// repair; if that one repairs again, the next waits the interval.
func (v *verifier) run(ctx context.Context) {
	wait, checking := v.interval, false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = v.interval
		start := time.Now()
		diffs, err := v.pass(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			v.c.logger.Warn("verify: pass failed; trying again at the next interval", "channel", v.c.cfg.Name,
				"replica", v.c.cfg.Client.Addr, "err", err, "retry_in", v.interval)
			v.failed(err)
			continue
		}
		v.mu.Lock()
		v.st.verifiedAt, v.st.took, v.st.diverged = time.Now(), time.Since(start), diffs
		v.st.lastErr, v.st.repairing = "", v.repair && len(diffs) > 0
		v.mu.Unlock()
		if len(diffs) == 0 {
			v.c.logger.Debug("verify: the replica is the master's copy", "channel", v.c.cfg.Name, "seconds", time.Since(start).Seconds())
			checking = false
			continue
		}
		paths := make([]string, 0, min(len(diffs), maxLoggedPaths))
		for _, d := range diffs[:min(len(diffs), maxLoggedPaths)] {
			paths = append(paths, d.String())
		}
		action := "repairing (resync of their directories)"
		if !v.repair {
			action = "not repaired (sync_verify: report); spoolsync resync --delete repairs them"
		}
		v.c.logger.Error("verify: the replica differs from the master", "channel", v.c.cfg.Name, "replica", v.c.cfg.Client.Addr,
			"differences", len(diffs), "action", action, "paths", paths)
		if !v.repair {
			continue
		}
		if err := v.repairDiffs(ctx, diffs); err != nil {
			if ctx.Err() != nil {
				return
			}
			v.c.logger.Warn("verify: repair failed; the next pass tries again", "channel", v.c.cfg.Name, "err", err)
			v.failed(fmt.Errorf("repair: %w", err))
			continue
		}
		v.mu.Lock()
		v.st.repaired += uint64(len(diffs))
		v.mu.Unlock()
		if !checking {
			wait = 0
		}
		checking = !checking
	}
}

// failed records a pass or a repair that failed, for Status.
func (v *verifier) failed(err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.st.lastErr, v.st.lastErrAt = err.Error(), time.Now()
}

// caughtUp reports whether the channel is connected, has shipped every
// event logged, and owes no resync: then the trees should be equal.
func (c *Channel) caughtUp() bool {
	c.mu.Lock()
	connected := c.st.Connected
	c.mu.Unlock()
	if !connected || c.failbackPending() {
		return false
	}
	if _, err := os.Stat(c.resyncMarker()); err == nil {
		return false
	}
	cursor, err := c.log.Cursor(c.cfg.Name)
	return err == nil && cursor >= c.log.LastSeq()
}

// waitCaughtUp waits until the channel has caught up (see caughtUp), for
// at most the interval.
func (v *verifier) waitCaughtUp(ctx context.Context) error {
	deadline := time.Now().Add(max(v.interval, time.Second))
	for !v.c.caughtUp() {
		if time.Now().After(deadline) {
			return fmt.Errorf("the channel did not catch up with the log within %v (backlog, resync owed, or down): nothing verified", max(v.interval, time.Second))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(verifyPoll):
		}
	}
	return nil
}

// pass compares the trees and returns the confirmed differences.
func (v *verifier) pass(ctx context.Context) ([]difference, error) {
	return v.cmp.pass(ctx, v.waitCaughtUp, v.beforeRecheck)
}

// repairDiffs resyncs the directories holding the differences (deleting
// what only the replica has there): the directory's own times are set
// after its entries change. A difference at the top of the tree is
// resynced alone, not as the whole tree.
func (v *verifier) repairDiffs(ctx context.Context, diffs []difference) error {
	var paths []string
	for _, d := range diffs {
		p := parentDir(d.path)
		if p == "" {
			p = d.path
		}
		paths = append(paths, p)
	}
	slices.SortFunc(paths, wire.ComparePaths)
	paths = topmost(slices.Compact(paths))
	if len(paths) > wire.MaxManifestPaths {
		paths = nil // the whole tree
	}
	c := v.c
	// A file that changes while the resync holds it is handed back to
	// rolling replication, as `spoolsync resync` does through the mount:
	// the resync's older copy must not land after the newer one.
	rescan := func(paths []string) error {
		evs := make([]*synclog.Event, len(paths))
		for i, p := range paths {
			evs[i] = &synclog.Event{Op: synclog.OpRescan, Path: p}
		}
		_, err := c.log.Append(evs...)
		return err
	}
	rep, err := Resync(ctx, ResyncOptions{Backing: c.res.backing, Paths: paths, Delete: true, Client: c.cfg.Client,
		Cache: c.res.cache, Mode: c.res.mode, Logger: c.logger, Rescan: rescan})
	if err != nil {
		return err
	}
	if err := c.keepVanished(rep); err != nil {
		return err
	}
	c.logger.Info("verify: repaired", "channel", c.cfg.Name, "subtrees", len(paths), "different", rep.Different,
		"deleted", rep.Deleted, "shipped_ops", rep.Shipped, "seconds", rep.Seconds)
	return nil
}

// status fills in what the verifier knows, and whether the channel is in
// sync: caught up (backlog 0), no resync owed, and the last verify found
// nothing. Otherwise Owes says what the channel owes and how old it is;
// st.ResyncOwed, asked for at owedSince, is among it.
func (r *Replicator) verifyStatus(c *Channel, st *ChannelStatus, owedSince time.Time) {
	now := time.Now()
	age := func(t time.Time) string { return now.Sub(t).Round(time.Second).String() }
	var owes []string
	if !st.Connected {
		what := "a connection to the replica"
		if !st.LastErrorTime.IsZero() {
			what += " (down since " + age(st.LastErrorTime) + " ago)"
		}
		owes = append(owes, what)
	}
	if st.BacklogEvents > 0 {
		owes = append(owes, fmt.Sprintf("%d events, the oldest %.1fs old", st.BacklogEvents, st.LagSeconds))
	}
	if st.ResyncOwed != "" {
		owes = append(owes, st.ResyncOwed+", asked "+age(owedSince)+" ago")
	}
	if n := len(c.pending.entries()); n > 0 {
		owes = append(owes, fmt.Sprintf("%d objects held for its next batch", n))
	}
	v := r.verifiers[c]
	switch {
	case v == nil:
		owes = append(owes, "a verify: sync_verify_interval is 0, so the replica is never compared with the master")
	default:
		v.mu.Lock()
		vs := v.st
		v.mu.Unlock()
		st.VerifiedAt, st.VerifySeconds, st.Repaired = vs.verifiedAt, vs.took.Seconds(), vs.repaired
		st.DivergedEntries = len(vs.diverged)
		for _, d := range vs.diverged[:min(len(vs.diverged), maxLoggedPaths)] {
			st.DivergedPaths = append(st.DivergedPaths, d.String())
		}
		if vs.lastErr != "" {
			st.VerifyError = vs.lastErr
		}
		switch {
		case vs.verifiedAt.IsZero():
			what := "a first verify (none completed since the mount started)"
			if vs.lastErr != "" {
				what += "; the last attempt, " + age(vs.lastErrAt) + " ago: " + vs.lastErr
			}
			owes = append(owes, what)
		case len(vs.diverged) > 0 && vs.repairing && strings.HasPrefix(vs.lastErr, "repair: "):
			owes = append(owes, fmt.Sprintf("%d differences the verify %s ago found, whose %s", len(vs.diverged), age(vs.verifiedAt), vs.lastErr))
		case len(vs.diverged) > 0 && vs.repairing:
			owes = append(owes, fmt.Sprintf("a check of its repair: the verify %s ago found %d differences and repairs them", age(vs.verifiedAt), len(vs.diverged)))
		case len(vs.diverged) > 0:
			owes = append(owes, fmt.Sprintf("%d differences the verify %s ago found (sync_verify report: spoolsync resync --delete repairs them)", len(vs.diverged), age(vs.verifiedAt)))
		case vs.lastErr != "" && vs.lastErrAt.After(vs.verifiedAt):
			owes = append(owes, "a verify: the last attempt, "+age(vs.lastErrAt)+" ago, failed: "+vs.lastErr)
		case now.Sub(vs.verifiedAt) > 3*v.interval+time.Minute:
			owes = append(owes, "a verify: the last one completed "+age(vs.verifiedAt)+" ago, more than 3 intervals")
		}
	}
	st.Owes = owes
	st.InSync = len(owes) == 0
}

// startVerifiers starts a verifier for each channel (none when
// sync_verify_interval is 0) and returns what to call once they have
// stopped.
func (r *Replicator) startVerifiers(ctx context.Context, wg *sync.WaitGroup) (closeAll func()) {
	if len(r.verifiers) == 0 {
		return func() {}
	}
	tree, closeTree, err := newVerifyTree(r.channels[0].res, true)
	if err != nil {
		r.logger.Error("verify: continuous verification is off", "err", err)
		return func() {}
	}
	for _, c := range r.channels {
		v := r.verifiers[c]
		v.cmp.tree = tree
		wg.Add(1)
		go func() {
			defer wg.Done()
			v.run(ctx)
		}()
	}
	return closeTree
}

// newVerifiers makes the channels' verifiers (none when interval is 0),
// so that Status reports them before their first pass.
func (r *Replicator) newVerifiers(interval time.Duration, report bool) {
	r.verifiers = map[*Channel]*verifier{}
	if interval <= 0 {
		return
	}
	for _, c := range r.channels {
		r.verifiers[c] = &verifier{c: c, interval: interval, repair: !report,
			cmp: comparer{mode: c.res.mode, client: c.cfg.Client}}
	}
}
