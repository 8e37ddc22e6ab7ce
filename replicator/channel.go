package replicator

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"spoolsync/internal/durable"
	"spoolsync/synclog"
	"spoolsync/wire"
)

// ChannelConfig is one replica the master ships to (Cyrus's
// sync_log_channels).
type ChannelConfig struct {
	Name        string // cursor name in the sync log; "default" for the unnamed channel
	Client      wire.ClientConfig
	BatchEvents int   // most events in one batch
	BatchBytes  int64 // most bytes of changed ranges in one batch (created files count by event)
	// HeartbeatInterval and HeartbeatTimeout: ping an idle or busy
	// replica this often, and give it up as down after this long without
	// a word (heartbeat.go); 0 = the defaults.
	HeartbeatInterval, HeartbeatTimeout time.Duration
}

// Channel ships the sync log to one replica.
type Channel struct {
	cfg ChannelConfig
	// wireName is the channel as the replica knows it: the name and the
	// log's identity. Sequence numbers are only meaningful within one log:
	// a master whose log was re-created starts again at 1, and must not
	// be taken for one the replica already holds up to 5000.
	wireName string
	log      *synclog.Log
	res      *resolver
	logger   *slog.Logger
	pending  *pendingStore
	lag      prometheus.Observer // each acknowledged event's lag; nil in tests
	ahead    *aheadStore         // subtrees a resync brought ahead of the cursor

	mu sync.Mutex
	st ChannelStatus
	// noAnswer (under mu): the last session ended with errNoAnswer, and
	// none has got through since.
	noAnswer bool

	wireBytes  atomic.Int64 // bytes sent on the wire, after compression and TLS
	heard      atomic.Int64 // unix ns: when a frame last came from the replica (heartbeat.go)
	inlineNext bool         // the last batch failed on a put by GUID: no dedup for the next
	refused    refusals     // the same batch refused again and again (passRefused)
	// markerMu orders the resync requests (askResync: the mount's rescan
	// after an unclean stop, a replayed batch) with their removal.
	markerMu sync.Mutex
	// owesSince is when the resync request on disk was first made by
	// this process (zero: none, or made before it started).
	owesSince time.Time

	acks     *ackState // what WaitReplicated waits on (syncmode.go)
	syncMode bool      // sync_mode sync

	// peer is the replica's session, for its batch limits (set by
	// connected, read by gather: both on the channel's goroutine).
	peer wire.Session
}

// opsWithin bounds n, a count of events or resync steps per batch, so
// that the batch stays within the replica's announced ops limit. An event
// or step becomes a few ops (a put, its attributes and xattrs, a
// stand-in): a quarter of the limit keeps a margin.
func opsWithin(n int, s wire.Session) int {
	if s.MaxBatchOps == 0 {
		return n
	}
	return max(1, min(n, int(min(s.MaxBatchOps/4, math.MaxInt32))))
}

// countingConn counts the bytes written to a connection (n) and, when in
// is set, the bytes read from it.
type countingConn struct {
	net.Conn
	n, in *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.in != nil {
		c.in.Add(int64(n))
	}
	return n, err
}

// minBackoff and maxBackoff bound the wait between reconnects.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// run ships until ctx is done, reconnecting with capped exponential
// backoff after any failure; every unacknowledged event is re-sent from
// the cursor.
func (c *Channel) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		shipped, err := c.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if shipped {
			backoff = minBackoff
		}
		if errors.Is(err, wire.ErrFenced) {
			if c.syncMode {
				c.degrade("the replica was promoted (fenced)", c.log.LastSeq())
			}
			// Promoted elsewhere: nothing this host receives is protected
			// any more. Keep serving mail and keep the log, say so loudly,
			// and look again now and then (a failback may be under way).
			c.logger.Error("FENCED: the replica was promoted; this master's new mail is NOT replicated. Fail over the mail service, or bring this host back as a replica (spoolsync server) of the new master",
				"channel", c.cfg.Name, "replica", c.cfg.Client.Addr, "err", err)
			backoff = maxBackoff
		} else {
			level := slog.LevelWarn
			if errors.Is(err, wire.ErrAuth) || errors.Is(err, wire.ErrNotAdmin) {
				level = slog.LevelError
			}
			c.logger.Log(ctx, level, "replication channel down; retrying", "channel", c.cfg.Name,
				"replica", c.cfg.Client.Addr, "err", err, "retry_in", backoff)
		}
		// After the log line, so that what reads the status (FENCED, the
		// last error) finds the line written.
		c.setError(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// session is one connection: handshake, position, then batches until an
// error. shipped says whether any batch was acknowledged.
func (c *Channel) session(ctx context.Context) (shipped bool, err error) {
	cc := c.cfg.Client
	_, timeout := c.heartbeatTiming()
	cc.Wrap = func(nc net.Conn) net.Conn {
		return &heardConn{Conn: &countingConn{Conn: nc, n: &c.wireBytes}, heard: &c.heard, timeout: timeout}
	}
	raw, err := wire.Dial(ctx, cc)
	if err != nil {
		return false, err
	}
	defer raw.Close()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	defer stop()
	conn := c.watch(raw) // heartbeat.go

	if err := conn.Send(&wire.PositionRequest{Channel: c.wireName}); err != nil {
		return false, err
	}
	if err := conn.Flush(); err != nil {
		return false, err
	}
	m, err := conn.Recv()
	if err != nil {
		return false, err
	}
	pos, ok := m.(*wire.Position)
	if !ok {
		return false, fmt.Errorf("replica answered the position request with %v", m.Type())
	}
	cursor, err := c.log.Cursor(c.cfg.Name)
	if err != nil {
		return false, err
	}
	// An acknowledgement lost with the last connection: the replica has
	// it, do not send it again. The paths it owed went with it (the
	// replica does not keep them): resync what those batches touched.
	if pos.Applied > cursor && pos.Applied <= c.log.DurableSeq() {
		dirs, err := c.dirsOf(cursor+1, pos.Applied)
		if err != nil {
			return false, err
		}
		if len(dirs) > 0 {
			if err := c.askResync(dirs); err != nil {
				return false, err
			}
		}
		if err := c.log.CommitCursor(c.cfg.Name, pos.Applied); err != nil {
			return false, err
		}
		c.committed(pos.Applied, false)
		cursor = pos.Applied
	}
	// A batch the replica was applying when it died is re-sent with the
	// same events, so that the replica replays it as such.
	limit := uint64(0)
	if pos.Interrupted > cursor {
		limit = pos.Interrupted
	}
	c.connected(conn.Session())
	// A replica of an older epoch is the old master coming back (or a
	// new tree): bring it to this tree by a resync that keeps, in its
	// quarantine, everything only it holds. So is a replica this log has
	// never shipped to: mail that was in the spool before the first mount
	// has no events, and would otherwise never reach it.
	first := pos.Applied == 0 && cursor == 0
	if pos.Epoch < c.cfg.Client.Epoch || first || c.failbackPending() {
		why := "a replica of an older epoch connected (failback)"
		if pos.Epoch >= c.cfg.Client.Epoch {
			why = "first connection of this log to the replica"
		}
		if err := c.failback(ctx, pos.Epoch, why); err != nil {
			return false, fmt.Errorf("resync of the replica (%s): %w", why, err)
		}
		if cursor, err = c.log.Cursor(c.cfg.Name); err != nil {
			return false, err
		}
	}
	c.logger.Info("replication channel connected", "channel", c.cfg.Name, "replica", c.cfg.Client.Addr,
		"tls", conn.Session().TLS, "compressed", conn.Session().Compressed, "from_seq", cursor+1)

	r, err := c.log.NewReader(cursor + 1)
	if err != nil {
		return false, err
	}
	defer r.Close()
	for {
		if err := c.resyncDirsIfAsked(ctx); err != nil {
			return shipped, err
		}
		evs, drained, err := c.gather(ctx, conn, r, limit)
		if err != nil {
			return shipped, err
		}
		replayed := limit != 0
		limit = 0
		if err := c.ship(conn, evs); err != nil {
			return shipped, err
		}
		c.committed(evs[len(evs)-1].Seq, drained)
		if replayed {
			// The replica replayed an apply that was cut short. A replay
			// skips ops on files that are gone (an earlier apply may have
			// moved them), and a few op sequences do not replay exactly
			// (replica.Store.Interrupted): resync the directories the
			// batch touched before the next batch.
			if err := c.askResync(batchDirs(evs)); err != nil {
				return shipped, err
			}
		}
		shipped = true
	}
}

// askResync has the channel resync these subtrees (nil: the whole tree)
// before its next batch (resyncDirsIfAsked), on top of what was asked
// before and not yet done; the request is kept on disk until done.
func (c *Channel) askResync(dirs []string) error {
	c.markerMu.Lock()
	defer c.markerMu.Unlock()
	if dirs != nil {
		b, err := os.ReadFile(c.resyncMarker())
		if err == nil {
			had, whole := decodeResyncMarker(b)
			if whole {
				return nil // the whole tree is asked for already
			}
			dirs = append(had, dirs...)
			slices.SortFunc(dirs, wire.ComparePaths)
			dirs = slices.Compact(dirs)
		} else if !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replicator: %w", err)
		}
	}
	b, err := json.Marshal(topmost(dirs))
	if err != nil {
		return err
	}
	if _, err := os.Stat(c.resyncMarker()); errors.Is(err, os.ErrNotExist) {
		c.owesSince = time.Now()
	}
	if err := durable.WriteFile(c.resyncMarker(), b, 0o600); err != nil {
		return fmt.Errorf("replicator: %w", err)
	}
	return nil
}

// decodeResyncMarker reads a resync request: the subtrees, or whole when
// it asks for the whole tree (null, or damaged: the whole tree is always
// right).
func decodeResyncMarker(b []byte) (dirs []string, whole bool) {
	if err := json.Unmarshal(b, &dirs); err != nil || len(dirs) == 0 || len(dirs) > wire.MaxManifestPaths {
		return nil, true
	}
	for _, d := range dirs {
		if wire.ValidPath(d) != nil {
			return nil, true
		}
	}
	return dirs, false
}

// batchDirs lists the directories holding the paths of evs, in walk
// order (topmost needs it).
func batchDirs(evs []*synclog.Event) []string {
	var dirs []string
	for _, ev := range evs {
		dirs = append(dirs, parent(ev.Path))
		if ev.Op == synclog.OpRename || ev.Op == synclog.OpLink {
			// Path2 is a destination only here: elsewhere it is a
			// symlink's target or a file handle, not a path.
			dirs = append(dirs, parent(ev.Path2))
		}
	}
	slices.SortFunc(dirs, wire.ComparePaths)
	return slices.Compact(dirs)
}

// dirsOf lists the directories of the events from through to (batchDirs).
func (c *Channel) dirsOf(from, to uint64) ([]string, error) {
	r, err := c.log.NewReader(from)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var evs []*synclog.Event
	for {
		ev, err := r.TryNext()
		if err != nil {
			return nil, err
		}
		if ev == nil || ev.Seq > to {
			return batchDirs(evs), nil
		}
		evs = append(evs, ev)
	}
}

func (c *Channel) resyncMarker() string {
	return filepath.Join(c.log.Dir(), c.cfg.Name+".resync")
}

// resyncDirsIfAsked runs the subtree resync ResyncDirs asked for, if any,
// and forgets the request once it succeeded.
func (c *Channel) resyncDirsIfAsked(ctx context.Context) error {
	c.markerMu.Lock()
	b, err := os.ReadFile(c.resyncMarker())
	c.markerMu.Unlock()
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	dirs, _ := decodeResyncMarker(b)
	rep, err := Resync(ctx, ResyncOptions{Backing: c.res.backing, Paths: dirs, Delete: true, Client: c.cfg.Client,
		Cache: c.res.cache, Mode: c.res.mode, Logger: c.logger, MaxFileSize: c.res.maxFile})
	if err != nil {
		return fmt.Errorf("resync of the directories asked for: %w", err)
	}
	// Those subtrees now stand for every event logged by the end of the
	// resync: older tree ops on them are not replayed (aheadStore).
	if err := c.ahead.add(dirs, c.log.DurableSeq()); err != nil {
		return err
	}
	if err := c.keepVanished(rep); err != nil {
		return err
	}
	c.logger.Info("resync of the directories asked for done", "channel", c.cfg.Name, "subtrees", len(dirs),
		"different", rep.Different, "deleted", rep.Deleted, "seconds", rep.Seconds)
	// The cursor may have moved past a refused batch whose changes this
	// resync carried (passRefused): what waits for them may go now.
	if cursor, err := c.log.Cursor(c.cfg.Name); err == nil {
		c.committed(cursor, false)
	}
	return c.resyncDone(b)
}

// resyncDone removes the resync request b, which has been carried out,
// unless more was asked for meanwhile: that stays for the next round.
func (c *Channel) resyncDone(b []byte) error {
	c.markerMu.Lock()
	defer c.markerMu.Unlock()
	if now, err := os.ReadFile(c.resyncMarker()); err == nil && !bytes.Equal(now, b) {
		return nil
	}
	if err := os.Remove(c.resyncMarker()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	c.owesSince = time.Time{}
	return nil
}

// keepVanished makes the objects a resync could not ship, because they
// were moved or removed after its walk saw them, pending: the event that
// moved one comes after the resync started, and would otherwise rename on
// the replica a name it never got ("rename ...: no such file").
func (c *Channel) keepVanished(rep *ResyncReport) error {
	if len(rep.vanished) == 0 {
		return nil
	}
	return c.pending.replace(unionPending(c.pending.entries(), rep.vanished))
}

func (c *Channel) failbackMarker() string {
	return filepath.Join(c.log.Dir(), c.cfg.Name+".failback")
}

func (c *Channel) failbackPending() bool {
	_, err := os.Stat(c.failbackMarker())
	return err == nil
}

// beginFailback records that a failback resync to a replica of epoch peer
// starts (the marker: "peer start") and returns the log position it
// stands for: everything logged up to it is in the tree the resync reads,
// and what follows is replayed after it. That is the log's end now —
// unless an earlier attempt was cut short. Its batches may have put on
// the replica what the tree held after that attempt's start, and this
// walk, which sees the tree later, would leave such an object there (at
// the first contact nothing the replica alone holds is removed) while the
// events that removed or moved it on the master, logged in between,
// would never be replayed. So the earliest start stands.
func (c *Channel) beginFailback(peer uint64) (uint64, error) {
	start := c.log.DurableSeq()
	if b, err := os.ReadFile(c.failbackMarker()); err == nil {
		var p, s uint64
		if n, _ := fmt.Sscanf(string(b), "%d %d", &p, &s); n == 2 && s < start {
			start = s
		}
	}
	return start, durable.WriteFile(c.failbackMarker(), []byte(fmt.Sprintf("%d %d\n", peer, start)), 0o600)
}

// failback resyncs the whole tree to a replica (one that came back from
// an older epoch, or that this log never shipped to), quarantining what
// only it holds (kept in place at epoch 0, where there is no older master
// to quarantine from), then moves the cursor to where the resync started
// (beginFailback): everything logged before is in the tree the resync
// read. A marker keeps a resync that was cut short pending.
func (c *Channel) failback(ctx context.Context, peer uint64, why string) error {
	start, err := c.beginFailback(peer)
	if err != nil {
		return err
	}
	c.logger.Warn(why+": resyncing the whole tree to it; what only it holds is kept (quarantined after a failover)",
		"channel", c.cfg.Name, "replica_epoch", peer, "epoch", c.cfg.Client.Epoch)
	rep, err := Resync(ctx, ResyncOptions{Backing: c.res.backing, Client: c.cfg.Client, Cache: c.res.cache, Mode: c.res.mode,
		Quarantine: c.cfg.Client.Epoch, Logger: c.logger, MaxFileSize: c.res.maxFile})
	if err != nil {
		return err
	}
	// The events from start on are replayed after it, on a tree the walk
	// read later: their tree ops up to its end must not act on what it
	// already moved (a replayed exchange swaps back), so their paths are
	// owed instead (aheadStore).
	if err := c.ahead.add(nil, c.log.DurableSeq()); err != nil {
		return err
	}
	// Before the cursor moves past the events that created them.
	if err := c.keepVanished(rep); err != nil {
		return err
	}
	if cursor, err := c.log.Cursor(c.cfg.Name); err == nil && start > cursor {
		if err := c.log.CommitCursor(c.cfg.Name, start); err != nil {
			return err
		}
		c.committed(start, false)
	}
	c.mu.Lock()
	c.st.Quarantined += rep.Quarantined
	c.mu.Unlock()
	if rep.Quarantined > 0 {
		c.logger.Error("failback: files that only the old master held were moved to the replica's quarantine; re-deliver them with spoolsync quarantine restore",
			"channel", c.cfg.Name, "quarantined", rep.Quarantined, "replica", c.cfg.Client.Addr)
	}
	c.logger.Info("failback resync done", "channel", c.cfg.Name, "shipped_ops", rep.Shipped, "quarantined", rep.Quarantined, "seconds", rep.Seconds)
	return os.Remove(c.failbackMarker())
}

// gather reads the next batch: it waits for the first event, then takes
// whatever else is durable now, up to the batch limits (and up to limit,
// when not 0). Shipping at once when the link is idle keeps lag to the
// round trip; while a batch is in flight, the log gathers the next.
// drained says the batch holds every event that was durable.
// While it waits for the first event, it pings the replica (heartbeat.go).
func (c *Channel) gather(ctx context.Context, conn *watched, r *synclog.Reader, limit uint64) (evs []*synclog.Event, drained bool, err error) {
	first, err := conn.next(ctx, r)
	if err != nil {
		return nil, false, err
	}
	evs = []*synclog.Event{first}
	var bytes int64
	maxEvents, maxBytes := opsWithin(c.cfg.BatchEvents, c.peer), c.cfg.BatchBytes
	if b := c.peer.MaxBatchBytes; b > 0 && uint64(maxBytes) > b {
		maxBytes = int64(min(b, math.MaxInt64))
	}
	for len(evs) < maxEvents && bytes < maxBytes && (limit == 0 || evs[len(evs)-1].Seq < limit) {
		ev, err := r.TryNext()
		if err != nil {
			return nil, false, err
		}
		if ev == nil {
			return evs, true, nil
		}
		evs = append(evs, ev)
		for _, rg := range ev.Ranges {
			bytes += int64(rg.Len)
		}
	}
	return evs, false, nil
}

// ship plans, resolves, offers and sends one batch, then advances the
// cursor once the replica has acknowledged it.
func (c *Channel) ship(conn sender, evs []*synclog.Event) error {
	start := time.Now()
	seq := evs[len(evs)-1].Seq
	p := newPlanner(c.pending.entries())
	for _, ev := range evs {
		p.add(ev)
	}
	steps, staleOwed := c.ahead.stale(p.finish())
	ops, vanished, err := c.res.resolve(steps)
	if err != nil {
		return fmt.Errorf("batch %d: %w", seq, err)
	}
	// What could not be read now must survive a crash before the cursor
	// moves past the events that named it; the old entries stay until the
	// batch that resolves them is acknowledged.
	if err := c.pending.replace(unionPending(c.pending.entries(), vanished)); err != nil {
		return err
	}
	defer closeFiles(ops)
	var st batchStats
	owed := staleOwed
	if len(ops) > 0 {
		if err := offer(conn, ops, seq, &st, c.inlineNext); err != nil {
			return fmt.Errorf("batch %d: offer: %w", seq, err)
		}
		skipped, err := send(conn, seq, c.wireName, ops, &st)
		owed = append(owed, skipped...)
		if err != nil {
			// A copy source the replica offered was gone when it applied
			// the batch (removed earlier in the same batch): send it all
			// inline next time rather than fail the same way forever.
			c.inlineNext = errors.Is(err, wire.ErrLackingGUID)
			if perr := c.passRefused(seq, evs, err); perr != nil {
				return perr
			}
			return fmt.Errorf("batch %d: %w", seq, err)
		}
		c.inlineNext = false
	}
	if len(owed) > 0 {
		// Ops the replica's tree did not allow were skipped, or ops older
		// than a resync of their paths were not sent: their paths get
		// the master's present state before the next batch
		// (resyncDirsIfAsked), asked for durably before the cursor
		// passes the batch.
		c.logger.Info("the replica skipped ops its tree did not allow; bringing their paths to the master's state",
			"channel", c.cfg.Name, "batch", seq, "paths", len(owed), "first", owed[0], "older_than_a_resync", len(staleOwed))
		if err := c.askResync(sortedPaths(owed)); err != nil {
			return err
		}
	}
	c.refused = refusals{}
	if err := c.log.CommitCursor(c.cfg.Name, seq); err != nil {
		return err
	}
	if err := c.ahead.passed(seq); err != nil {
		return err
	}
	if err := c.pending.replace(vanished); err != nil {
		return err
	}
	c.acked(seq, len(evs), st, time.Since(start))
	observeLag(c.lag, evs)
	return nil
}

// maxRefusals is how many times the replica may refuse the same batch
// (code apply) before passRefused goes past it.
const maxRefusals = 3

// refusals counts the replica's refusals of batch seq in a row.
type refusals struct {
	seq uint64
	n   int
}

// passRefused goes past a batch the replica keeps refusing with code
// apply (an op it cannot carry out on its tree: a directory where the
// master made a file, a rename or rmdir that a resync which brought the
// replica ahead of the log has made moot). Sent again, it fails the same
// way for ever, and replication stops. On the maxRefusals-th refusal in a
// row the directories the batch touched, and those of what is pending,
// are asked for a resync (durably, before the next batch: it brings them
// to the master's current tree, which holds everything the batch did),
// and only then does the cursor move past the batch. fsync waiters in
// sync mode are released by that resync, not here.
//
// A refusal for a passing reason (transient: the replica's disk full) is
// never gone past: the cursor stays, status shows the error and the true
// lag, and the batch is sent again with backoff until it applies.
func (c *Channel) passRefused(seq uint64, evs []*synclog.Event, err error) error {
	var pe *wire.ProtoError
	if !errors.As(err, &pe) || !pe.Remote || pe.Code != wire.CodeApply {
		c.refused = refusals{}
		return nil
	}
	if transient(pe) {
		return nil
	}
	if c.refused.seq != seq {
		c.refused = refusals{seq: seq}
	}
	if c.refused.n++; c.refused.n < maxRefusals {
		return nil
	}
	dirs := batchDirs(evs)
	for _, e := range c.pending.entries() {
		dirs = append(dirs, parent(e.Path))
	}
	c.logger.Error("the replica refused the same batch again; resyncing the directories it touches instead of sending it once more",
		"channel", c.cfg.Name, "replica", c.cfg.Client.Addr, "batch", seq, "refusals", c.refused.n, "err", err)
	if err := c.askResync(dirs); err != nil {
		return err
	}
	c.refused = refusals{}
	return c.log.CommitCursor(c.cfg.Name, seq)
}

// transient reports whether a replica's refusal is for a reason that
// passes once an administrator acts (disk full, quota exceeded, an I/O
// error) rather than one inherent in the batch. The replica sends code
// apply with its error's text, so the errno is known by its message, as
// Go writes it on Linux.
func transient(pe *wire.ProtoError) bool {
	for _, errno := range []unix.Errno{unix.ENOSPC, unix.EDQUOT, unix.EIO} {
		if strings.Contains(pe.Msg, errno.Error()) {
			return true
		}
	}
	return false
}

// pendingStore keeps the pending entries of a channel in a small file
// beside its cursor: objects whose content could not be shipped yet.
type pendingStore struct {
	path string
	mu   sync.Mutex
	list []pendingEntry
}

func openPending(dir, channel string) (*pendingStore, error) {
	ps := &pendingStore{path: filepath.Join(dir, channel+".pending")}
	b, err := os.ReadFile(ps.path)
	if errors.Is(err, os.ErrNotExist) {
		return ps, nil
	}
	if err != nil {
		return nil, err
	}
	if ps.list, err = decodePending(b); err != nil {
		return nil, fmt.Errorf("pending entries %s: %w (remove the file and run spoolsync resync)", ps.path, err)
	}
	return ps, nil
}

// decodePending reads a pending file: a JSON list of entries whose paths
// are ones the replica would accept.
func decodePending(b []byte) ([]pendingEntry, error) {
	var list []pendingEntry
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, err
	}
	for _, e := range list {
		if err := wire.ValidPath(e.Path); err != nil {
			return nil, err
		}
		if len(e.Ranges) > wire.MaxRanges {
			return nil, fmt.Errorf("%s: %d ranges", e.Path, len(e.Ranges))
		}
	}
	return list, nil
}

func (ps *pendingStore) entries() []pendingEntry {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.list
}

// replace makes list the pending entries, durably.
func (ps *pendingStore) replace(list []pendingEntry) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(list) == len(ps.list) && (len(list) == 0 || reflect.DeepEqual(list, ps.list)) {
		// Unchanged: every batch would otherwise cost a file write and
		// an fsync while anything is pending.
		return nil
	}
	if len(list) == 0 {
		if err := os.Remove(ps.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		ps.list = nil
		return nil
	}
	b, err := json.Marshal(list)
	if err != nil {
		return err
	}
	if err := durable.WriteFile(ps.path, b, 0o600); err != nil {
		return fmt.Errorf("save pending entries: %w", err)
	}
	ps.list = list
	return nil
}

func unionPending(a, b []pendingEntry) []pendingEntry {
	out := append([]pendingEntry(nil), a...)
	for _, e := range b {
		dup := false
		for _, x := range a {
			dup = dup || x.Path == e.Path && x.ReplicaHas == e.ReplicaHas
		}
		if !dup {
			out = append(out, e)
		}
	}
	return out
}

// topmost reduces dirs (as WalkDir lists them) to those not below another
// one of them, in ComparePaths order; "." (the root) stands for all.
func topmost(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if d == "." {
			return nil // the whole tree
		}
		if n := len(out); n > 0 && under(d, out[n-1]) {
			continue
		}
		out = append(out, d)
	}
	return out
}
