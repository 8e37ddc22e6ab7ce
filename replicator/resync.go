package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/guid"
	"spoolsync/internal/walk"
	"spoolsync/internal/xattr"
	"spoolsync/wire"
)

// Resync is the fsck-style manual resync (`spoolsync resync`): it walks
// the master's backing directory and the replica's manifest of the same
// subtrees side by side — both in wire.ComparePaths order, so neither is
// held in memory — and ships every difference through the same
// plan/offer/batch/ack path as rolling replication. Content the replica
// holds under another name is copied there, not sent.
//
// It is safe while rolling replication runs: a file that changes while the
// resync holds it (its inode, size, mtime or ctime differ after the batch
// is acknowledged) is handed back to the mount (Rescan) to be shipped
// again, so the replica never keeps an older version than the master's.
type ResyncOptions struct {
	Backing string
	Paths   []string // relative, clean; none = the whole tree
	DryRun  bool     // change nothing, list the differences
	Delete  bool     // remove what exists only on the replica
	Verify  bool     // re-hash every master file, ignoring the GUID cache
	// Quarantine, when not 0, is failback: what only the replica holds
	// is moved to its quarantine under this epoch, never deleted.
	Quarantine uint64
	Client     wire.ClientConfig
	Cache      *guid.Cache
	Mode       guid.Mode
	BatchOps   int // most operations in one batch
	// Rescan, when set, asks the running mount to ship these paths again.
	Rescan   func(paths []string) error
	Progress func(ResyncReport) // called now and then with the counts so far
	Logger   *slog.Logger
	// MaxFileSize, when above 0, is the largest file hashed
	// (max_file_size): a bigger one is an error naming it.
	MaxFileSize int64

	// beforeSend, in tests, runs between a batch's offer and its sending,
	// with the number of batches then unacknowledged.
	beforeSend func(seq uint64, unacked int)
	// beforeResolve, in tests, runs before a batch is read from the spool.
	beforeResolve func()
	// owedPass counts the passes over paths the replica skipped ops on.
	owedPass int
}

// ResyncReport is the summary `spoolsync resync` prints.
type ResyncReport struct {
	Scanned      int      `json:"scanned"`
	Identical    int      `json:"identical"`
	Different    int      `json:"different"`
	Shipped      int      `json:"shipped_ops"`
	ContentBytes int64    `json:"content_bytes_sent"`
	WireBytes    int64    `json:"wire_bytes"`          // sent, after compression and TLS
	WireBytesIn  int64    `json:"wire_bytes_received"` // the manifest and the answers
	Dedup        int      `json:"deduplicated"`
	Extra        int      `json:"extra_on_replica"`
	Deleted      int      `json:"deleted"`
	Quarantined  int      `json:"quarantined"`
	Rescanned    int      `json:"handed_back_to_rolling"`
	Differences  []string `json:"differences,omitempty"` // dry run: every difference; else the first 1000
	Errors       []string `json:"errors,omitempty"`
	Seconds      float64  `json:"seconds"`

	// vanished are the puts whose object was gone when their batch was
	// read (moved or removed after the walk saw it). A channel that moves
	// its cursor past the events the resync stands for keeps them
	// pending, so that the later event that moved the object ships it
	// (failback).
	vanished []pendingEntry
}

// Remaining reports whether differences are left on the replica.
func (r *ResyncReport) Remaining(opts ResyncOptions) bool {
	return opts.DryRun && r.Different > 0 || r.Extra > r.Deleted
}

// local is one entry of the master's walk, with what compare needs of it,
// read by the walk's parallel readers.
type local struct {
	path   string
	st     unix.Stat_t
	xattrs []wire.Xattr
	guid   guid.GUID // regular files
	err    error     // hashing failed: the file is gone
	target string    // symlinks
}

func kindOf(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return wire.KindFile
	case unix.S_IFDIR:
		return wire.KindDir
	case unix.S_IFLNK:
		return wire.KindSymlink
	case unix.S_IFIFO:
		return wire.KindFIFO
	case unix.S_IFSOCK:
		return wire.KindSocket
	}
	return 0
}

// Resync runs one resync and returns its report.
func Resync(ctx context.Context, o ResyncOptions) (*ResyncReport, error) {
	start := time.Now()
	if o.BatchOps == 0 {
		// Each batch ends with one sync on the replica: fewer, larger
		// batches seed faster. Every put holds its file open until sent.
		o.BatchOps = 2000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var wireBytes, wireBytesIn atomic.Int64
	cc := o.Client
	cc.Wrap = func(nc net.Conn) net.Conn { return &countingConn{Conn: nc, n: &wireBytes, in: &wireBytesIn} }
	paths := slices.Clone(o.Paths)
	slices.SortFunc(paths, wire.ComparePaths)
	rs := &resyncer{o: o, ctx: ctx, report: &ResyncReport{},
		dial:    func() (*wire.Conn, error) { return wire.Dial(ctx, cc) },
		res:     &resolver{backing: o.Backing, cache: o.Cache, mode: o.Mode, quarantine: o.Quarantine, maxFile: o.MaxFileSize},
		channel: fmt.Sprintf("resync-%d", time.Now().UnixNano()), links: map[[2]uint64]linkInfo{}}
	defer func() {
		for _, b := range rs.inflight { // left by an error
			closeFiles(b.ops)
		}
		if rs.bconn != nil {
			rs.bconn.Close() // it may have been replaced (resendInline)
		}
	}()
	// stop tells the walk and the manifest reader that the merge is over
	// (an error ended it early): they stop instead of blocking on a full
	// channel with directories open. Resync returns only once the walk
	// has, so it leaves no directory open behind it.
	stop := make(chan struct{})
	localCh := make(chan []local, 16)
	localErr := make(chan error, 1)
	walkDone := make(chan struct{})
	defer func() { close(stop); <-walkDone }()
	// The walk starts before the connections: it reads and hashes the
	// first directories while TLS and the login (a bcrypt on the replica)
	// take their round trips.
	go func() {
		defer close(walkDone)
		defer close(localCh)
		out := batcher[local]{ch: localCh, stop: stop}
		defer out.flush()
		localErr <- rs.walkLocal(o.Backing, paths, &out)
	}()
	// Two connections: the manifest streams on one while batches go on
	// the other, so that neither side holds a whole manifest.
	mconn, err := wire.Dial(ctx, cc)
	if err != nil {
		return nil, err
	}
	defer mconn.Close()
	// The manifest reader waits on the replica, which may be hashing a
	// big file: closing the connection is what ends that wait when ctx
	// ends (SIGTERM).
	defer context.AfterFunc(ctx, func() { mconn.Close() })()
	if !o.DryRun {
		if rs.bconn, err = rs.dial(); err != nil {
			return nil, err
		}
		rs.o.BatchOps = opsWithin(rs.o.BatchOps, rs.bconn.Session())
		rs.maxBytes = int64(min(rs.bconn.Session().MaxBatchBytes, math.MaxInt64))
	}
	if err := mconn.Send(&wire.ManifestRequest{Paths: paths, GUIDMode: uint8(o.Mode)}); err != nil {
		return nil, err
	}
	if err := mconn.Flush(); err != nil {
		return nil, err
	}
	remoteCh := make(chan []*wire.ManifestEntry, 16)
	remoteErr := make(chan error, 1)
	go func() {
		defer close(remoteCh)
		out := batcher[*wire.ManifestEntry]{ch: remoteCh, stop: stop}
		defer out.flush()
		for {
			m, err := mconn.Recv()
			if err != nil {
				remoteErr <- err
				return
			}
			switch m := m.(type) {
			case *wire.ManifestEntry:
				if !out.send(m) {
					remoteErr <- errMergeEnded
					return
				}
			case *wire.ManifestEnd:
				remoteErr <- nil
				return
			default:
				remoteErr <- fmt.Errorf("replica sent %v inside a manifest", m.Type())
				return
			}
		}
	}()
	locals, remote := &unbatcher[local]{ch: localCh}, &unbatcher[*wire.ManifestEntry]{ch: remoteCh}
	err = rs.merge(ctx, locals, remote)
	if err == nil {
		err = <-localErr
	}
	if err == nil {
		err = <-remoteErr
	}
	if err == nil {
		// The puts first (their copy sources may be extras), then the
		// removals, then the times of the directories they changed.
		err = rs.flush(true)
		rs.removeExtras()
		rs.outerTimes()
		if err == nil {
			err = rs.flush(true)
		}
	}
	rs.report.WireBytes, rs.report.WireBytesIn = wireBytes.Load(), wireBytesIn.Load()
	if err == nil && len(rs.owed) > 0 {
		err = rs.settleOwed(ctx)
	}
	rs.report.Seconds = time.Since(start).Seconds()
	return rs.report, err
}

// maxOwedPasses bounds how many times Resync goes over paths the replica
// skipped ops on (something changed them there between its manifest and
// the batch: rolling replication runs beside a resync).
const maxOwedPasses = 3

// settleOwed resyncs the paths the replica skipped ops on, from a fresh
// manifest, and adds that to the report; paths still owed after
// maxOwedPasses are an error (the caller tries again later).
func (rs *resyncer) settleOwed(ctx context.Context) error {
	if rs.o.owedPass >= maxOwedPasses {
		return fmt.Errorf("the replica still skipped ops on %d paths after %d passes (first %s); resync them again", len(rs.owed), maxOwedPasses, rs.owed[0])
	}
	o := rs.o
	o.Paths, o.owedPass = topmost(sortedPaths(rs.owed)), o.owedPass+1
	if len(o.Paths) > wire.MaxManifestPaths {
		o.Paths = nil // more than one manifest request names: the whole tree
	}
	rep, err := Resync(ctx, o)
	if rep != nil {
		r := rs.report
		r.Different += rep.Different
		r.Shipped += rep.Shipped
		r.ContentBytes += rep.ContentBytes
		r.WireBytes += rep.WireBytes
		r.WireBytesIn += rep.WireBytesIn
		r.Dedup += rep.Dedup
		r.Extra += rep.Extra
		r.Deleted += rep.Deleted
		r.Quarantined += rep.Quarantined
		r.Rescanned += rep.Rescanned
		r.Errors = append(r.Errors, rep.Errors...)
		r.vanished = append(r.vanished, rep.vanished...)
	}
	return err
}

// sortedPaths is ps sorted in walk order (topmost needs it), without
// repeats.
func sortedPaths(ps []string) []string {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, wire.ComparePaths)
	return slices.Compact(ps)
}

// walkLocal sends the entries of the backing dir's subtrees in
// ComparePaths order, reading directories ahead in parallel (internal/walk):
// on a cold cache of a large spool the walk is most of an unchanged
// resync's time.
func (rs *resyncer) walkLocal(backing string, paths []string, out *batcher[local]) error {
	rootfd, err := unix.Open(backing, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("walk %s: %w", backing, err)
	}
	defer unix.Close(rootfd)
	opts := walk.Options[local]{
		Open: func(dir string) (int, error) { return openBeneath(rootfd, dir) },
		Skip: fence.Reserved, // spoolsync's own, never replicated
		Prepare: func(e *walk.Entry[local]) {
			e.Detail = local{path: e.Path, st: e.Stat}
			if rs.mustHash(&e.Detail) {
				guid.Readahead(e.Dir, e.Name)
			}
		},
		Detail: func(e *walk.Entry[local]) (local, error) {
			return rs.detail(e.Detail, e.Dir, e.Name), nil
		},
	}
	roots := paths
	if len(roots) == 0 {
		roots = []string{"."}
	}
	for _, r := range roots {
		var e local
		e.path = r
		if err := unix.Fstatat(rootfd, r, &e.st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // gone while we walked; its event is in the log
			}
			return fmt.Errorf("walk %s: %w", filepath.Join(backing, r), err)
		}
		if r != "." {
			rs.mustHash(&e)
			if !out.send(rs.detail(e, unix.AT_FDCWD, filepath.Join(backing, r))) {
				return errMergeEnded
			}
		}
		if kindOf(e.st.Mode) != wire.KindDir {
			continue
		}
		err := walk.Tree(r, opts, func(e *walk.Entry[local]) error {
			if !out.send(e.Detail) {
				return errMergeEnded
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("walk %s: %w", filepath.Join(backing, r), err)
		}
	}
	return nil
}

// mustHash reports whether l is a file detail must hash: not with
// guid_mode none, always with --verify, else when the cache has no GUID
// for the walk's stat of it (no open); a cached GUID is put in l.guid.
func (rs *resyncer) mustHash(l *local) bool {
	if kindOf(l.st.Mode) != wire.KindFile || rs.o.Mode == guid.None {
		return false
	}
	if !rs.o.Verify {
		if g, ok := rs.o.Cache.Lookup(&l.st, rs.o.Mode); ok {
			l.guid = g
			return false
		}
	}
	return true
}

// detail reads what compare needs of l beyond its stat, after mustHash;
// l is name in the directory open as dirfd (unix.AT_FDCWD: name is its
// path).
func (rs *resyncer) detail(l local, dirfd int, name string) local {
	switch kindOf(l.st.Mode) {
	case wire.KindFile:
		if l.guid.Mode != guid.None || rs.o.Mode == guid.None {
			break // cached, or nothing to hash
		}
		// A file being hashed ends the walk's wait for it when ctx
		// ends (a sparse file of 2^50 bytes kept a --dry-run deaf to
		// SIGTERM for 11 minutes).
		lim := guid.Limit{Ctx: rs.ctx, MaxSize: rs.o.MaxFileSize}
		if rs.o.Verify {
			l.guid, l.err = guid.FileAtLimited(rs.o.Mode, dirfd, name, lim)
		} else {
			l.guid, l.err = rs.o.Cache.HashAtLimited(dirfd, name, rs.o.Mode, lim)
		}
	case wire.KindSymlink:
		l.target, l.err = walk.Readlink(dirfd, name)
		return l // a symlink's own xattrs are not replicated
	}
	attrs, _ := xattr.Read(dirfd, name)
	l.xattrs = wireXattrs(attrs)
	return l
}

// batchSize is how many entries travel together from the walk and from
// the manifest to the merge: a channel operation per entry (a goroutine
// handoff each) cost more than comparing the entry.
const batchSize = 256

// batcher sends values on ch in batches, until stop is closed.
type batcher[T any] struct {
	ch   chan<- []T
	stop <-chan struct{}
	buf  []T
}

// send reports false once stop is closed: nobody reads any more.
func (b *batcher[T]) send(v T) bool {
	b.buf = append(b.buf, v)
	if len(b.buf) == batchSize {
		return b.flush()
	}
	return true
}

func (b *batcher[T]) flush() bool {
	if len(b.buf) == 0 {
		return true
	}
	select {
	case b.ch <- b.buf:
		b.buf = make([]T, 0, batchSize)
		return true
	case <-b.stop:
		return false
	}
}

// errMergeEnded stops a producer whose merge has ended.
var errMergeEnded = errors.New("resync: the merge ended")

// unbatcher receives what a batcher sent, one value at a time.
type unbatcher[T any] struct {
	ch  <-chan []T
	buf []T
}

func (u *unbatcher[T]) next() (T, bool) {
	for len(u.buf) == 0 {
		b, ok := <-u.ch
		if !ok {
			var zero T
			return zero, false
		}
		u.buf = b
	}
	v := u.buf[0]
	u.buf = u.buf[1:]
	return v, true
}

type linkInfo struct {
	first       string
	replicaIno  uint64 // the replica's inode at first, when it was already right
	replicaKnow bool
}

// resyncer holds the state of one merge.
type resyncer struct {
	o   ResyncOptions
	ctx context.Context // Resync's: hashes end with it
	// maxBytes is the replica's content limit per batch (0: none
	// announced); putBytes the content of the puts gathered since the
	// last flush, and flushErr the error of a flush that put started.
	maxBytes, putBytes int64
	flushErr           error
	report             *ResyncReport
	bconn              *wire.Conn
	dial               func() (*wire.Conn, error) // a new batch connection
	res                *resolver
	channel            string
	seq                uint64
	steps              []step
	extra              []shipOp // RemoveXattr ops for the next batch
	watch              map[string]unix.Stat_t
	links              map[[2]uint64]linkInfo
	dirs               []dirFrame      // the master directories the walk is in
	gone               []string        // replica directories to remove once their subtree is done
	extras             []step          // removals of what only the replica has, done last
	inflight           []*inflight     // batches sent and not yet acknowledged, oldest first (at most 2)
	owed               []string        // paths whose ops the replica skipped (wire.Owed)
	outer              map[string]bool // directories outside the walk whose entries changed
}

type dirFrame struct {
	path  string
	dirty bool // something in it changed: its times must be set again
	attrs bool // its own attributes differ
}

func (rs *resyncer) differ(format string, args ...any) {
	rs.report.Different++
	if rs.o.DryRun || len(rs.report.Differences) < 1000 {
		rs.report.Differences = append(rs.report.Differences, fmt.Sprintf(format, args...))
	}
}

// under reports whether p is d or below it.
func under(p, d string) bool { return p == d || strings.HasPrefix(p, d+"/") }

func (rs *resyncer) merge(ctx context.Context, locals *unbatcher[local], remote *unbatcher[*wire.ManifestEntry]) error {
	l, lok := locals.next()
	r, rok := remote.next()
	for lok || rok {
		if err := ctx.Err(); err != nil {
			return err
		}
		var c int
		switch {
		case !lok:
			c = 1
		case !rok:
			c = -1
		default:
			c = wire.ComparePaths(l.path, r.Path)
		}
		next := r
		if c <= 0 {
			next = &wire.ManifestEntry{Path: l.path}
		}
		rs.leaveDirs(next.Path)
		switch {
		case c < 0: // only on the master
			rs.report.Scanned++
			rs.missing(l)
			l, lok = locals.next()
		case c > 0: // only on the replica
			rs.extraEntry(r)
			r, rok = remote.next()
		default:
			rs.report.Scanned++
			if kindOf(l.st.Mode) != r.Kind {
				rs.differ("%s: type differs", l.path)
				if rs.o.Quarantine != 0 {
					// Failback: what the old master held there is kept.
					rs.report.Quarantined++
					rs.changed(r.Path)
					rs.add(step{kind: stepQuarantine, path: r.Path})
					for r, rok = remote.next(); rok && under(r.Path, l.path); r, rok = remote.next() {
					}
					rs.missing(l)
					l, lok = locals.next()
					continue
				}
				rs.removeRemote(r)
				// The replica's subtree follows its directory: consume it.
				for r, rok = remote.next(); rok && under(r.Path, l.path); r, rok = remote.next() {
					rs.removeRemote(r)
				}
				rs.flushGone(l.path)
				rs.missing(l)
				l, lok = locals.next()
				continue
			}
			rs.compare(l, r)
			l, lok = locals.next()
			r, rok = remote.next()
		}
		if rs.flushErr != nil {
			return rs.flushErr
		}
		if len(rs.steps) >= rs.o.BatchOps {
			if err := rs.flush(false); err != nil {
				return err
			}
		}
		if rs.o.Progress != nil && rs.report.Scanned%1000 == 0 {
			rs.o.Progress(*rs.report)
		}
	}
	rs.leaveDirs("")
	rs.flushGone("")
	return nil
}

// leaveDirs closes the master directories the walk has left before next:
// their times are set after their contents changed.
func (rs *resyncer) leaveDirs(next string) {
	for len(rs.dirs) > 0 {
		top := rs.dirs[len(rs.dirs)-1]
		if next != "" && under(next, top.path) && next != top.path {
			return
		}
		rs.dirs = rs.dirs[:len(rs.dirs)-1]
		if top.dirty || top.attrs {
			rs.add(step{kind: stepAttrs, path: top.path})
		}
	}
	rs.flushGone(next)
}

// changed marks the directory holding p as changed. A directory outside
// the walk (that of a path asked for) is remembered in outer.
func (rs *resyncer) changed(p string) {
	for i := len(rs.dirs) - 1; i >= 0; i-- {
		if under(p, rs.dirs[i].path) && p != rs.dirs[i].path {
			rs.dirs[i].dirty = true
			return
		}
	}
	if d := parent(p); d != "." {
		if rs.outer == nil {
			rs.outer = map[string]bool{}
		}
		rs.outer[d] = true
	}
}

// outerTimes sets again the times of the directories outside the walk
// whose entries it changed: those holding the paths asked for (a path the
// replica skipped ops on is resynced alone, and putting it there moved
// its directory's mtime).
func (rs *resyncer) outerTimes() {
	dirs := make([]string, 0, len(rs.outer))
	for d := range rs.outer {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		rs.add(step{kind: stepAttrs, path: d})
	}
	rs.outer = nil
}

func (rs *resyncer) add(s step) {
	if !rs.o.DryRun {
		rs.steps = append(rs.steps, s)
	}
}

func (rs *resyncer) enterDir(p string, attrsDiffer bool) {
	rs.dirs = append(rs.dirs, dirFrame{path: p, attrs: attrsDiffer})
}

// missing ships an entry the replica lacks (or had to lose).
func (rs *resyncer) missing(l local) {
	rs.differ("%s: missing on the replica", l.path)
	rs.changed(l.path)
	switch kindOf(l.st.Mode) {
	case wire.KindDir:
		rs.add(step{kind: stepMkdir, path: l.path, src: l.path})
		rs.enterDir(l.path, true)
	case 0:
		rs.report.Errors = append(rs.report.Errors, l.path+": a device node; not replicated")
	default:
		if rs.linked(l, nil) {
			return
		}
		rs.put(l)
	}
}

func (rs *resyncer) put(l local) {
	if rs.maxBytes > 0 && rs.putBytes > 0 && rs.putBytes+l.st.Size > rs.maxBytes && rs.flushErr == nil {
		// The replica takes content beyond its limit only as a batch's
		// first: this put starts the next batch.
		rs.flushErr = rs.flush(false)
	}
	rs.putBytes += l.st.Size
	rs.add(step{kind: stepPut, path: l.path, src: l.path, made: madeOf(l.st.Mode), target: l.target})
	if key := [2]uint64{l.st.Dev, l.st.Ino}; l.st.Nlink > 1 {
		// A new file on the replica: its other names must be linked anew.
		if li, ok := rs.links[key]; ok && li.first == l.path {
			li.replicaKnow = false
			rs.links[key] = li
		}
	}
	if rs.o.Rescan == nil {
		return // nothing to hand changes back to (acked)
	}
	if rs.watch == nil {
		rs.watch = map[string]unix.Stat_t{}
	}
	rs.watch[l.path] = l.st
}

// linked handles the second and later names of a multiply-linked master
// file or symlink: they must be links to the first name on the replica
// too. It reports whether l was such a name.
func (rs *resyncer) linked(l local, r *wire.ManifestEntry) bool {
	if k := kindOf(l.st.Mode); l.st.Nlink < 2 || k != wire.KindFile && k != wire.KindSymlink {
		return false
	}
	key := [2]uint64{l.st.Dev, l.st.Ino}
	li, seen := rs.links[key]
	if !seen {
		li = linkInfo{first: l.path}
		if r != nil {
			li.replicaIno, li.replicaKnow = r.Inode, true
		}
		rs.links[key] = li
		return false
	}
	if r != nil && li.replicaKnow && r.Inode == li.replicaIno {
		rs.report.Identical++ // already the same file there
		return true
	}
	if r != nil {
		rs.differ("%s: not a hard link to %s on the replica", l.path, li.first)
	}
	rs.changed(l.path)
	rs.add(step{kind: stepLink, path: li.first, path2: l.path})
	return true
}

// compare handles an entry both sides have, of the same type.
func (rs *resyncer) compare(l local, r *wire.ManifestEntry) {
	st := &l.st
	// A symlink has no mode of its own and its xattrs are not replicated,
	// but its owner and mtime are.
	attrs := st.Uid != r.UID || st.Gid != r.GID || st.Mtim.Nano() != r.Mtime
	if r.Kind != wire.KindSymlink {
		attrs = attrs || st.Mode&07777 != r.Mode&07777 || !sameXattrs(l.xattrs, r.Xattrs)
	}
	switch r.Kind {
	case wire.KindDir:
		if attrs {
			rs.differ("%s: directory attributes differ", l.path)
		} else {
			rs.report.Identical++
		}
		rs.enterDir(l.path, attrs)
		rs.removeXattrs(l, r.Xattrs)
		return
	case wire.KindFile:
		if rs.linked(l, r) {
			return
		}
		content := st.Size != int64(r.Size)
		switch {
		case content:
		case l.err != nil:
			return // gone: rolling replication carries it
		case rs.o.Mode == guid.None:
			// No hashes to compare (guid_mode none): rsync's quick check,
			// a file of the same size and mtime is taken as the same.
			content = st.Mtim.Nano() != r.Mtime
		default:
			content = wireGUID(l.guid) != r.GUID
		}
		// A file the master holds once but the replica shares between
		// names must be split, or a write to one would change the others.
		if content || st.Nlink == 1 && r.Nlink > 1 {
			rs.differ("%s: content differs", l.path)
			rs.changed(l.path)
			rs.put(l)
			return
		}
	case wire.KindSymlink:
		if rs.linked(l, r) {
			return
		}
		if l.err == nil && l.target != r.Target {
			rs.differ("%s: symlink target differs", l.path)
			rs.changed(l.path)
			rs.put(l)
			return
		}
	}
	if attrs {
		rs.differ("%s: attributes differ", l.path)
		rs.add(step{kind: stepAttrs, path: l.path})
		rs.removeXattrs(l, r.Xattrs)
		return
	}
	rs.report.Identical++
}

func sameXattrs(local, remote []wire.Xattr) bool {
	have := map[string]string{}
	for _, x := range remote {
		have[x.Name] = string(x.Value)
	}
	if len(local) != len(have) {
		return false
	}
	for _, x := range local {
		if v, ok := have[x.Name]; !ok || v != string(x.Value) {
			return false
		}
	}
	return true
}

// removeXattrs removes on the replica the attributes the master lacks.
func (rs *resyncer) removeXattrs(l local, remote []wire.Xattr) {
	for _, x := range remote {
		has := slices.ContainsFunc(l.xattrs, func(y wire.Xattr) bool { return y.Name == x.Name })
		if !has && !rs.o.DryRun {
			rs.extra = append(rs.extra, shipOp{msg: &wire.RemoveXattr{Path: l.path, Name: x.Name}})
		}
	}
}

// extraEntry is an entry only the replica has.
func (rs *resyncer) extraEntry(r *wire.ManifestEntry) {
	rs.report.Extra++
	if rs.o.Quarantine != 0 {
		rs.differ("%s: only on the replica (quarantined)", r.Path)
		rs.report.Deleted++ // out of the live tree, kept in the quarantine
		rs.changed(r.Path)
		// A directory goes whole; what is below it follows in the
		// manifest and goes with it.
		if n := len(rs.extras); n > 0 && rs.extras[n-1].kind == stepQuarantine && under(r.Path, rs.extras[n-1].path) {
			return
		}
		rs.report.Quarantined++
		rs.extras = append(rs.extras, step{kind: stepQuarantine, path: r.Path})
		return
	}
	if !rs.o.Delete {
		if rs.o.DryRun || len(rs.report.Differences) < 1000 {
			rs.report.Differences = append(rs.report.Differences, r.Path+": only on the replica (kept; --delete removes it)")
		}
		return
	}
	rs.differ("%s: only on the replica", r.Path)
	rs.report.Deleted++
	rs.changed(r.Path)
	// Removed at the very end: a file only the replica has at this name
	// may be the copy source of a put by GUID later in the walk (a
	// message moved to another folder is copied there, not sent).
	rs.extras = append(rs.extras, step{kind: stepUnlink, path: r.Path, extra: true})
	if r.Kind == wire.KindDir {
		rs.extras[len(rs.extras)-1].kind = stepRmdir
	}
}

// removeExtras removes what only the replica has, in reverse walk order:
// children before their directories.
func (rs *resyncer) removeExtras() {
	parents := map[string]bool{}
	for i := len(rs.extras) - 1; i >= 0; i-- {
		rs.add(rs.extras[i])
		parents[parent(rs.extras[i].path)] = true
	}
	rs.extras = nil
	// The removals changed their directories' times: set them again (a
	// directory that is itself gone is skipped when resolved).
	dirs := make([]string, 0, len(parents))
	for d := range parents {
		dirs = append(dirs, d)
	}
	slices.Sort(dirs)
	for _, d := range dirs {
		rs.add(step{kind: stepAttrs, path: d})
	}
}

// removeRemote removes a replica entry: files at once, directories once
// their subtree has been removed (flushGone).
func (rs *resyncer) removeRemote(r *wire.ManifestEntry) {
	rs.changed(r.Path)
	if r.Kind == wire.KindDir {
		rs.gone = append(rs.gone, r.Path)
		return
	}
	rs.add(step{kind: stepUnlink, path: r.Path})
}

// flushGone removes the replica directories whose subtrees the merge has
// passed, deepest first.
func (rs *resyncer) flushGone(next string) {
	for len(rs.gone) > 0 {
		top := rs.gone[len(rs.gone)-1]
		if next != "" && under(next, top) && next != top {
			return
		}
		rs.gone = rs.gone[:len(rs.gone)-1]
		rs.add(step{kind: stepRmdir, path: top})
	}
}

// flush ships the steps gathered so far as one batch; with final, it also
// waits until every batch is acknowledged.
//
// Batches are pipelined: this one is read (files opened and hashed),
// offered and sent while the replica still applies the last one, which
// may be unacknowledged; never more than that one. The replica applies
// them in order, so removals land after the puts they may copy from. It
// answers an offer at once, so while the last batch lands the answer can
// be stale: that batch may remove the only copy of content this one names
// by GUID. The replica then refuses this batch (lacking-guid), and flush
// sends what was unacknowledged again with all its content, on a new
// connection (the replica closed the old one), and then this batch. The
// same happens when rolling replication, running beside the resync,
// moves a copy away.
func (rs *resyncer) flush(final bool) error {
	if rs.o.DryRun {
		return nil
	}
	steps, extra := rs.steps, rs.extra
	rs.steps, rs.extra, rs.putBytes = nil, nil, 0
	for attempt := 1; ; attempt++ {
		err := rs.ship(steps, extra, final)
		if !errors.Is(err, wire.ErrLackingGUID) || attempt == maxResends {
			return err
		}
		rs.o.Logger.Info("resync: the replica no longer holds content it offered; sending again with the content", "err", err)
		if err := rs.resendInline(); err != nil {
			return err
		}
	}
}

// maxResends bounds how often one batch is tried after lacking-guid.
const maxResends = 3

// ship resolves, offers and sends one batch (steps and extra), leaving at
// most one other batch unacknowledged; with final it waits for all.
func (rs *resyncer) ship(steps []step, extra []shipOp, final bool) error {
	if len(steps) > 0 || len(extra) > 0 {
		if rs.o.beforeResolve != nil {
			rs.o.beforeResolve()
		}
		ops, vanished, err := rs.res.resolve(steps)
		if err != nil {
			return err
		}
		rs.report.vanished = append(rs.report.vanished, vanished...)
		ops = append(ops, extra...)
		b := &inflight{seq: rs.seq + 1, steps: steps, extra: extra, ops: ops, watch: rs.watch}
		pending, err := sendOffer(rs.bconn, ops, b.seq, false)
		if err == nil {
			err = pending.answer(rs.recvAnswer, ops, &b.st)
		}
		for err == nil && len(rs.inflight) > 1 {
			err = rs.settleOldest()
		}
		if err == nil && rs.o.beforeSend != nil {
			rs.o.beforeSend(b.seq, len(rs.inflight))
		}
		if err == nil {
			err = sendBatch(rs.bconn, b.seq, rs.channel, ops, &b.st)
		}
		if err != nil {
			closeFiles(ops)
			return fmt.Errorf("resync batch %d: %w", b.seq, err)
		}
		rs.seq, rs.watch = b.seq, nil
		rs.inflight = append(rs.inflight, b)
	}
	for final && len(rs.inflight) > 0 {
		if err := rs.settleOldest(); err != nil {
			return err
		}
	}
	return nil
}

// inflight is a batch sent and not yet acknowledged.
type inflight struct {
	seq   uint64
	steps []step   // what it was resolved from
	extra []shipOp // and the ops added to them (xattr removals)
	ops   []shipOp
	watch map[string]unix.Stat_t // the files it put, as they were read
	st    batchStats
}

// recvAnswer reads the next reply that is not an acknowledgement; the
// acknowledgements read on the way are settled.
func (rs *resyncer) recvAnswer() (wire.Message, error) {
	for {
		m, err := rs.bconn.Recv()
		if err != nil {
			return nil, err
		}
		if o, ok := m.(*wire.Owed); ok {
			rs.owed = append(rs.owed, o.Paths...)
			continue
		}
		a, ok := m.(*wire.Ack)
		if !ok {
			return m, nil
		}
		if err := rs.acked(a); err != nil {
			return nil, err
		}
	}
}

// settleOldest waits for the oldest unacknowledged batch's acknowledgement.
func (rs *resyncer) settleOldest() error {
	seq := rs.inflight[0].seq
	m, err := rs.bconn.Recv()
	for err == nil {
		o, ok := m.(*wire.Owed)
		if !ok {
			break
		}
		rs.owed = append(rs.owed, o.Paths...)
		m, err = rs.bconn.Recv()
	}
	if err != nil {
		return fmt.Errorf("resync batch %d: %w", seq, err)
	}
	a, ok := m.(*wire.Ack)
	if !ok {
		return fmt.Errorf("resync batch %d: replica answered %v", seq, m.Type())
	}
	return rs.acked(a)
}

// acked settles the oldest batch, which a must acknowledge, and hands
// what changed since it was read back to rolling replication: that change
// may have been shipped by the mount before this batch landed.
func (rs *resyncer) acked(a *wire.Ack) error {
	if len(rs.inflight) == 0 || a.Seq != rs.inflight[0].seq {
		return fmt.Errorf("replica acknowledged batch %d, which is not the oldest unacknowledged one", a.Seq)
	}
	b := rs.inflight[0]
	rs.inflight = rs.inflight[1:]
	closeFiles(b.ops)
	rs.report.Shipped += b.st.ops
	rs.report.ContentBytes += b.st.sent
	rs.report.Dedup += b.st.dedup
	if rs.o.Rescan == nil {
		return nil // no mount runs: nothing ships changes beside us
	}
	var again []string
	for p, was := range b.watch {
		var now unix.Stat_t
		if unix.Lstat(rs.res.abs(p), &now) == nil && (now.Ino != was.Ino || now.Size != was.Size || now.Mtim != was.Mtim || now.Ctim != was.Ctim) {
			again = append(again, p)
		}
	}
	if len(again) > 0 {
		if err := rs.o.Rescan(again); err != nil {
			rs.report.Errors = append(rs.report.Errors, fmt.Sprintf("%d files changed during the resync and could not be handed to the mount: %v; run resync again", len(again), err))
		}
		rs.report.Rescanned += len(again)
	}
	return nil
}

// resendInline sends the unacknowledged batches again, in order, on a new
// connection, each resolved afresh with all its content, and waits for
// their acknowledgements. None of them was applied: the replica applies
// in order and closes the connection at the first batch it refuses.
func (rs *resyncer) resendInline() error {
	rs.bconn.Close()
	c, err := rs.dial()
	if err != nil {
		rs.bconn = nil
		return err
	}
	rs.bconn = c
	unacked := rs.inflight
	rs.inflight = nil
	for i, b := range unacked {
		closeFiles(b.ops)
		ops, vanished, err := rs.res.resolve(b.steps)
		if err != nil {
			for _, rest := range unacked[i+1:] {
				closeFiles(rest.ops)
			}
			return err
		}
		rs.report.vanished = append(rs.report.vanished, vanished...)
		b.ops, b.st = append(ops, b.extra...), batchStats{}
		rs.inflight = append(rs.inflight, b)
		if err := sendBatch(c, b.seq, rs.channel, b.ops, &b.st); err != nil {
			return fmt.Errorf("resync batch %d: %w", b.seq, err)
		}
		if err := rs.settleOldest(); err != nil {
			return err
		}
	}
	return nil
}
