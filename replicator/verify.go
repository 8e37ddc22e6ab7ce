package replicator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/digest"
	"spoolsync/guid"
	"spoolsync/replicator/synclog"
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

// comparer compares the backing tree with one replica's.
type comparer struct {
	tree   *digest.Tree // the backing tree's digests, shared by the channels
	mode   guid.Mode
	client wire.ClientConfig

	walk     time.Duration // the last pass's master digest walk (Verify's report)
	requests int           // DigestRequests sent since the last pass began
	dirs     int           // directories they asked about
}

// difference is one entry that differs between the trees.
type difference struct {
	path   string
	what   string
	master digest.Sum // the master's attribute hash of the entry; zero if it has none
}

func (d difference) String() string { return d.path + " (" + d.what + ")" }

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

// pass compares the trees once caughtUp returns (nil: at once) and returns
// the differences seen at two looks (see the top of this file).
func (cm *comparer) pass(ctx context.Context, caughtUp func(context.Context) error, beforeRecheck func()) ([]difference, error) {
	cm.requests, cm.dirs = 0, 0
	if caughtUp == nil {
		caughtUp = func(context.Context) error { return nil }
	}
	if err := caughtUp(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := cm.tree.Refresh(ctx, ""); err != nil {
		return nil, err
	}
	cm.walk = time.Since(start)
	conn, err := wire.Dial(ctx, cm.client)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	first, err := cm.compare(conn, []string{""}, true)
	if err != nil || len(first) == 0 {
		return nil, err
	}
	// Seen once. Look again once what was in flight has landed.
	if beforeRecheck != nil {
		beforeRecheck()
	}
	if err := caughtUp(ctx); err != nil {
		return nil, err
	}
	var dirs []string
	for _, d := range first {
		dirs = append(dirs, parentDir(d.path))
	}
	slices.SortFunc(dirs, wire.ComparePaths)
	dirs = slices.Compact(dirs)
	refresh := dirs
	if dirs[0] == "" {
		refresh = dirs[:1] // the root's refresh covers the others
	}
	for _, d := range refresh {
		if _, err := cm.tree.Refresh(ctx, d); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, digest.ErrNotDir) {
			return nil, err
		}
	}
	second, err := cm.compare(conn, dirs, false)
	if err != nil {
		return nil, err
	}
	again := map[difference]bool{}
	for _, d := range second {
		again[d] = true
	}
	var confirmed []difference
	for _, d := range first {
		if again[d] {
			confirmed = append(confirmed, d)
		}
	}
	return confirmed, nil
}

// parentDir is the directory holding p, "" for the root.
func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// compare asks the replica about dirs (in ComparePaths order) and compares
// their entries with the master's listings (as the last Refresh left
// them). With descend, it goes on into the subdirectories whose digests
// differ; without, a subdirectory's own entry is all it compares.
func (cm *comparer) compare(conn *wire.Conn, dirs []string, descend bool) ([]difference, error) {
	var diffs []difference
	for len(dirs) > 0 {
		var next []string
		for len(dirs) > 0 {
			n := min(len(dirs), wire.MaxDigestDirs)
			chunk := dirs[:n]
			dirs = dirs[n:]
			req := &wire.DigestRequest{GUIDMode: uint8(cm.mode)}
			listings := make([]*digest.Dir, 0, n)
			for _, d := range chunk {
				l := cm.tree.Listing(d)
				if l == nil {
					continue // gone from the master since: in flight
				}
				listings = append(listings, l)
				req.Dirs = append(req.Dirs, wire.DigestDirReq{Path: d, Digest: wire.Digest(l.Digest)})
			}
			if len(req.Dirs) == 0 {
				continue
			}
			cm.requests++
			cm.dirs += len(req.Dirs)
			if err := conn.Send(req); err != nil {
				return nil, err
			}
			if err := conn.Flush(); err != nil {
				return nil, err
			}
			for i, d := range req.Dirs {
				rep, entries, err := recvDigest(conn)
				if err != nil {
					return nil, err
				}
				if rep.Path != d.Path {
					return nil, fmt.Errorf("verify: the replica answered about %q when asked about %q", rep.Path, d.Path)
				}
				switch rep.Tag {
				case wire.DigestSame:
				case wire.DigestAbsent:
					diffs = append(diffs, difference{path: d.Path, what: "missing on the replica"})
				case wire.DigestNotDir:
					diffs = append(diffs, difference{path: d.Path, what: "not a directory on the replica"})
				case wire.DigestDiffer:
					dd, sub := diffEntries(d.Path, listings[i].Entries, entries)
					diffs = append(diffs, dd...)
					if descend {
						next = append(next, sub...)
					}
				}
			}
		}
		slices.SortFunc(next, wire.ComparePaths)
		dirs = next
	}
	return diffs, nil
}

// recvDigest reads one DigestReply and the entries it announces.
func recvDigest(conn *wire.Conn) (*wire.DigestReply, []*wire.DigestEntry, error) {
	for {
		m, err := conn.Recv()
		if err != nil {
			return nil, nil, err
		}
		switch m := m.(type) {
		case *wire.Ping:
			if err := conn.Send(&wire.Pong{ID: m.ID}); err != nil {
				return nil, nil, err
			}
			continue
		case *wire.Pong:
			continue
		case *wire.DigestReply:
			entries := make([]*wire.DigestEntry, 0, m.Count)
			for range m.Count {
				e, err := conn.Recv()
				if err != nil {
					return nil, nil, err
				}
				de, ok := e.(*wire.DigestEntry)
				if !ok {
					return nil, nil, fmt.Errorf("verify: the replica sent %v among digest entries", e.Type())
				}
				entries = append(entries, de)
			}
			return m, entries, nil
		default:
			return nil, nil, fmt.Errorf("verify: the replica answered a digest request with %v", m.Type())
		}
	}
}

// diffEntries merges the master's and the replica's entries of dir, both
// sorted by name: the entries that differ, and the subdirectories whose
// attributes match but whose digests do not, to descend into.
func diffEntries(dir string, master []digest.Entry, replica []*wire.DigestEntry) (diffs []difference, sub []string) {
	i, j := 0, 0
	for i < len(master) || j < len(replica) {
		var c int
		switch {
		case i == len(master):
			c = 1
		case j == len(replica):
			c = -1
		default:
			c = strings.Compare(master[i].Name, replica[j].Name)
		}
		switch {
		case c < 0:
			m := master[i]
			diffs = append(diffs, difference{path: joinPath(dir, m.Name), what: "missing on the replica", master: m.Attr})
			i++
		case c > 0:
			diffs = append(diffs, difference{path: joinPath(dir, replica[j].Name), what: "only on the replica"})
			j++
		default:
			m, r := master[i], replica[j]
			p := joinPath(dir, m.Name)
			switch {
			case m.Kind != r.Kind:
				diffs = append(diffs, difference{path: p, what: "type differs", master: m.Attr})
			case wire.Digest(m.Attr) != r.Attr:
				what := "content or attributes differ"
				if m.Kind == digest.KindDir {
					what = "directory attributes differ"
				}
				diffs = append(diffs, difference{path: p, what: what, master: m.Attr})
			}
			if m.Kind == digest.KindDir && r.Kind == digest.KindDir && wire.Digest(m.Sub) != r.Sub {
				sub = append(sub, p)
			}
			i++
			j++
		}
	}
	return diffs, sub
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
// nothing. Otherwise Owes says what the channel owes and how old it is.
func (r *Replicator) verifyStatus(c *Channel, st *ChannelStatus) {
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
	if fi, err := os.Stat(c.failbackMarker()); err == nil {
		owes = append(owes, "a whole-tree resync (first contact or failback), asked "+age(fi.ModTime())+" ago")
	}
	if fi, err := os.Stat(c.resyncMarker()); err == nil {
		what := "a resync of the whole tree"
		if b, err := os.ReadFile(c.resyncMarker()); err == nil {
			if dirs, whole := decodeResyncMarker(b); !whole {
				what = fmt.Sprintf("a resync of %d subtrees", len(dirs))
			}
		}
		owes = append(owes, what+", asked "+age(fi.ModTime())+" ago")
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

// VerifyOptions configure a one-shot Verify (`spoolsync verify`).
type VerifyOptions struct {
	Backing string
	Client  wire.ClientConfig
	Cache   *guid.Cache
	Mode    guid.Mode
	// Passes is how many passes to make (at least 1). The second and
	// later find the digest caches of both sides warm, as the mount's
	// verifier always does: what a pass of continuous verification costs.
	Passes int
}

// VerifyPass is what one pass of Verify found and cost.
type VerifyPass struct {
	Seconds       float64  `json:"seconds"`               // the whole pass, connection included
	DigestSeconds float64  `json:"master_digest_seconds"` // the master's digest walk
	Requests      int      `json:"digest_requests"`       // round trips of digests
	Dirs          int      `json:"digest_dirs"`           // directories they asked about
	WireBytes     int64    `json:"wire_bytes"`            // sent, handshake included
	WireBytesIn   int64    `json:"wire_bytes_received"`   // received, handshake included
	Differences   []string `json:"differences,omitempty"` // path (what), seen at both looks
	Different     int      `json:"different"`
}

// Verify compares the backing tree with the replica's, unpaced, Passes
// times, with a second look at once at each difference. Run it while the
// mount's channel is caught up (status: backlog 0), or what is in flight
// shows up as differences.
func Verify(ctx context.Context, o VerifyOptions) ([]VerifyPass, error) {
	tree, closeTree, err := newVerifyTree(&resolver{backing: o.Backing, cache: o.Cache, mode: o.Mode}, false)
	if err != nil {
		return nil, err
	}
	defer closeTree()
	var out []VerifyPass
	for range max(o.Passes, 1) {
		var sent, recvd atomic.Int64
		cc := o.Client
		cc.Wrap = func(nc net.Conn) net.Conn { return &countingConn{Conn: nc, n: &sent, in: &recvd} }
		cm := &comparer{tree: tree, mode: o.Mode, client: cc}
		start := time.Now()
		diffs, err := cm.pass(ctx, nil, nil)
		if err != nil {
			return out, err
		}
		p := VerifyPass{Seconds: time.Since(start).Seconds(), DigestSeconds: cm.walk.Seconds(), Requests: cm.requests, Dirs: cm.dirs,
			WireBytes: sent.Load(), WireBytesIn: recvd.Load(), Different: len(diffs)}
		for _, d := range diffs {
			p.Differences = append(p.Differences, d.String())
		}
		out = append(out, p)
	}
	return out, nil
}
