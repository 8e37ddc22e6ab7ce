package replicator

import (
	"math"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"spoolsync/synclog"
	"spoolsync/wire"
)

// stepKind is what one step of a plan does on the replica.
type stepKind uint8

const (
	stepPut        stepKind = iota + 1 // the whole current object (file, symlink, fifo) at path
	stepWrite                          // the changed ranges of an existing file, and its size
	stepMkdir                          // a directory at path (meta from the backing dir)
	stepRmdir                          //
	stepUnlink                         //
	stepRename                         // path → path2 (flags: RENAME_EXCHANGE or 0)
	stepLink                           // path2 becomes a hard link to path
	stepAttrs                          // mode, owner, times and xattrs of path
	stepQuarantine                     // move path into the replica's quarantine (failback; resync only)
)

func (k stepKind) String() string {
	return [...]string{"?", "put", "write", "mkdir", "rmdir", "unlink", "rename", "link", "attrs", "quarantine"}[k]
}

// step is one operation of a plan. Content and attributes are not in the
// plan: they are read from the backing dir when the batch is sent, at
// step.path (the name the object has at the end of the batch).
type step struct {
	kind   stepKind
	path   string
	path2  string
	flags  uint32
	src    string          // stepPut: where to read the object when sending (its final name)
	ranges []synclog.Range // stepWrite
	// ino: stepPut, stepWrite, stepAttrs: the object's inode number, as
	// its events gave it (0: unknown). A later rename or exchange can put
	// another object at the name before the batch is read; the resolver
	// then must not ship that one's content or attributes as this one's.
	ino uint64
	// handle: stepWrite, stepAttrs of a file whose name path goes next in
	// the batch while other hard links keep it: read it through this file
	// handle (synclog.FileHandle), the name being gone on the master.
	handle string
	// inOrder: a stepPut that later steps of the batch act on in place (a
	// link, an exchange, a rename of the object). If the object cannot be
	// read when the batch is sent (gone by the end of the batch, or by
	// events after it), a stand-in of its type is put instead (made,
	// target): those steps need an object there, and the batch's own
	// removals, or the next batch's put of what became pending, replace
	// it.
	inOrder bool
	// made: stepPut: the event that created the object (OpCreate,
	// OpSymlink, OpMknod; OpRescan for a file), and for a symlink its
	// target, which never changes: what its stand-in is.
	made   synclog.Op
	target string
	// extra: a resync --delete's removal of what only the replica had
	// when it compared. It is dropped if the master has the path by the
	// time the batch is read: the object arrived meanwhile (rolling
	// replication may have shipped it already), and removing it would
	// leave the replica without it until it changes again. (A failback's
	// quarantine is never dropped: what the old master alone held must
	// leave the live tree.)
	extra bool
	// dirTimes: a stepAttrs for a directory whose entries the batch
	// changed. If the directory is gone from its name when the batch is
	// read (moved by a later event), its times stay pending.
	dirTimes bool
	// seq is the log position of the event that emitted the step (0 in
	// a resync's plan): a tree op older than a resync of its paths is not
	// replayed on them (aheadStore).
	seq uint64
}

// pendingEntry is an object whose content a batch could not ship because it
// had vanished from the backing dir when the batch was read (renamed or
// removed by events not yet in the batch). The next plan starts from it.
type pendingEntry struct {
	Path       string          `json:"path"`
	ReplicaHas bool            `json:"replica_has"` // the replica holds an older copy at Path
	Ranges     []synclog.Range `json:"ranges,omitempty"`
	// AttrsOnly: the replica has it whole; only its attributes are due
	// (they could not be read at Path, which later events moved).
	AttrsOnly bool `json:"attrs_only,omitempty"`
	// Ino is the object's inode number when known (0: not), so that the
	// next batch, if the object is still not at Path, keeps it pending
	// rather than take another object there for it.
	Ino uint64 `json:"ino,omitempty"`
	// Made and Target: what the object is, when known (see step.made), for
	// a stand-in of its type should the next batch need one.
	Made   synclog.Op `json:"made,omitempty"`
	Target string     `json:"target,omitempty"`
}

// madeOf is the event that makes an object of mode's type (see
// step.made): what a stand-in for it, or its put from pending, is.
func madeOf(mode uint32) synclog.Op {
	switch mode & unix.S_IFMT {
	case unix.S_IFLNK:
		return synclog.OpSymlink
	case unix.S_IFIFO, unix.S_IFSOCK:
		return synclog.OpMknod
	}
	return synclog.OpCreate
}

// lineage is one object followed through the renames of a batch.
type lineage struct {
	ino     uint64 // inode number from its events; 0 if none said
	created bool   // the replica has no copy: ship it whole
	inOrder bool   // created, but linked or exchanged: already put in place
	isDir   bool
	made    synclog.Op // the event that created it (see step.made)
	target  string     // a symlink's, from that event
	names   int        // names it has at this point of the batch
	ranges  []synclog.Range
	sized   bool // truncated or written: send the size
	attrs   bool
	puts    []int // placeholders: each place it got a name (created, not yet in order)
}

// leftover: a name an object created in the batch leaves (renamed away or
// removed) is unlinked on the replica although the replica should not
// have it: it may, from a resync that ran while these events were logged
// (it ships the tree as it finds it, so an object can reach the replica
// before the events that create it are replayed) or from the first,
// interrupted apply of a re-sent batch. Unlinking a name the replica does
// not have costs a few bytes and an ENOENT; keeping a stray message in
// tmp/ forever costs a tree that differs from the master's.

// planner turns the events of one batch into steps. The rules:
//
//   - An object created in the batch (or pending from the last one) is sent
//     once, whole, at the name it has at the end, at the point of the log
//     where it got that name: create → write → rename becomes one put. If it
//     is removed before the end, no content is sent. Names it passed
//     through are unlinked on the replica (the master's rename replaced
//     what was there, and see leftover).
//   - Anything the replica already has is renamed, linked and removed in
//     log order, so no content crosses the wire for a rename.
//   - Changed byte ranges of files the replica has are sent at the end of
//     the batch, merged per file, at the file's final name; likewise
//     attributes, and the times of every directory whose entries changed.
//
// Content is read when the batch is sent, so every step carries the
// newest state; the events after the batch only ever make it newer.
type planner struct {
	steps  []step
	byPath map[string]*lineage
	all    []*lineage
	dirs   map[string]bool // directories whose entries changed
	seq    uint64          // the event being added, for the steps it emits
}

func newPlanner(pending []pendingEntry) *planner {
	p := &planner{byPath: map[string]*lineage{}, dirs: map[string]bool{}}
	for _, e := range pending {
		if l := p.byPath[e.Path]; l != nil {
			// The same path pending twice (its bytes and its attributes
			// were both deferred): one object, whose changes add up.
			// A new lineage would hide the first, and its bytes with it.
			l.learnIno(e.Ino)
			switch {
			case l.created:
			case !e.ReplicaHas:
				l.created = true
				p.placePut(l, e.Path)
				p.dirs[parent(e.Path)] = true
			case e.AttrsOnly:
				l.attrs = true
			default:
				for _, r := range e.Ranges {
					l.ranges = synclog.AddRange(l.ranges, r, wire.MaxRanges)
				}
			}
			continue
		}
		l := p.newLineage(e.Path, !e.ReplicaHas, false)
		l.ino, l.made, l.target = e.Ino, e.Made, e.Target
		l.ranges = slices.Clone(e.Ranges)
		l.sized = e.ReplicaHas && !e.AttrsOnly
		l.attrs = e.AttrsOnly
		if l.created {
			p.placePut(l, e.Path)
			// Putting it changes its directory on the replica (after a
			// heal, nothing else in the batch may): set its times again.
			p.dirs[parent(e.Path)] = true
		}
	}
	return p
}

func (p *planner) newLineage(path string, created, isDir bool) *lineage {
	l := &lineage{created: created, isDir: isDir, names: 1}
	p.byPath[path] = l
	p.all = append(p.all, l)
	return l
}

func (p *planner) emit(s step) int {
	s.seq = p.seq
	p.steps = append(p.steps, s)
	return len(p.steps) - 1
}

// placePut records where a created object got its latest name; only the
// last such place survives (finish).
func (p *planner) placePut(l *lineage, path string) {
	l.puts = append(l.puts, p.emit(step{kind: stepPut, path: path}))
}

func parent(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i]
	}
	return "."
}

// add applies one event.
func (p *planner) add(ev *synclog.Event) {
	p.seq = ev.Seq
	switch ev.Op {
	case synclog.OpCreate, synclog.OpSymlink, synclog.OpMknod, synclog.OpRescan:
		p.dirs[parent(ev.Path)] = true
		p.forget(ev.Path)
		l := p.newLineage(ev.Path, true, false)
		l.ino, l.made = ev.Ino, ev.Op
		if ev.Op == synclog.OpSymlink {
			l.target = ev.Path2
		}
		p.placePut(l, ev.Path)
	case synclog.OpMkdir:
		// Directories go in order (their children need them); the mkdir
		// is the directory's "put", its attributes read at the end.
		p.dirs[parent(ev.Path)] = true
		l := p.newLineage(ev.Path, true, true)
		l.inOrder = true
		l.learnIno(ev.Ino)
		l.made = synclog.OpMkdir
		l.puts = append(l.puts, p.emit(step{kind: stepMkdir, path: ev.Path}))
	case synclog.OpWrite, synclog.OpTruncate:
		l := p.track(ev.Path)
		l.learnIno(ev.Ino)
		if !l.created {
			for _, r := range ev.Ranges {
				l.ranges = synclog.AddRange(l.ranges, r, wire.MaxRanges)
			}
			if ev.Op == synclog.OpTruncate {
				// Past the new size the replica's bytes are void: whatever
				// the file holds there when the batch is read (zeros of a
				// hole, or bytes later events wrote) must be sent, not
				// only the ranges this batch saw written (the resolver
				// cuts the range at the file's size then).
				l.ranges = synclog.AddRange(l.ranges, synclog.Range{Off: ev.Size, Len: math.MaxUint64 - ev.Size}, wire.MaxRanges)
			}
			l.sized = true
		}
	case synclog.OpSetattr, synclog.OpSetxattr, synclog.OpRemovexattr:
		if ev.Path == "." {
			p.dirs["."] = true
			return
		}
		l := p.track(ev.Path)
		l.learnIno(ev.Ino)
		l.attrs = true
	case synclog.OpUnlink:
		// Also for an object created in the batch: see leftover.
		p.dirs[parent(ev.Path)] = true
		p.sendBeforeLosing(ev.Path, ev.Path2)
		p.forget(ev.Path)
		p.emit(step{kind: stepUnlink, path: ev.Path})
	case synclog.OpRmdir:
		p.dirs[parent(ev.Path)] = true
		p.forgetTree(ev.Path)
		// Its times (and those of directories below it) cannot be set
		// once the replica has removed it: a directory made again at the
		// same path later, when the batch is read, is another one, whose
		// own events carry it.
		for d := range p.dirs {
			if under(d, ev.Path) {
				delete(p.dirs, d)
			}
		}
		p.emit(step{kind: stepRmdir, path: ev.Path})
	case synclog.OpRename:
		p.rename(ev)
	case synclog.OpLink:
		p.dirs[parent(ev.Path2)] = true
		l := p.byPath[ev.Path]
		if l != nil && l.created && !l.inOrder {
			p.materialize(l, ev.Path)
		}
		p.forget(ev.Path2)
		p.emit(step{kind: stepLink, path: ev.Path, path2: ev.Path2})
		if l != nil {
			p.byPath[ev.Path2] = l
			l.names++
		}
	}
}

// sendBeforeLosing is called when the name path is about to go (unlinked,
// or replaced by a rename) while other hard links keep its file, whose
// handle is given (synclog.FileHandle; "" when no other link keeps it).
// If the batch changed the file and knows it by no other name, the
// changes are sent now, to this name, which shares the file on the replica
// too, read through the handle; at the end of the batch no name would be
// left to send them to.
func (p *planner) sendBeforeLosing(path, handle string) {
	l := p.byPath[path]
	if handle == "" || l == nil || l.created || l.names != 1 || !(l.sized || l.attrs) {
		return
	}
	if l.sized {
		p.emit(step{kind: stepWrite, path: path, ranges: l.ranges, handle: handle})
	}
	p.emit(step{kind: stepAttrs, path: path, handle: handle})
	l.sized, l.ranges, l.attrs = false, nil, false
}

// learnIno records the inode number an event gave, if none was known.
func (l *lineage) learnIno(ino uint64) {
	if l.ino == 0 {
		l.ino = ino
	}
}

// track returns the lineage at path, starting one for an object the
// replica already has.
func (p *planner) track(path string) *lineage {
	if l := p.byPath[path]; l != nil {
		return l
	}
	return p.newLineage(path, false, false)
}

// forget drops the name path from its lineage.
func (p *planner) forget(path string) {
	if l := p.byPath[path]; l != nil {
		l.names--
		delete(p.byPath, path)
	}
}

func (p *planner) forgetTree(dir string) {
	p.forget(dir)
	prefix := dir + "/"
	for path := range p.byPath {
		if strings.HasPrefix(path, prefix) {
			p.forget(path)
		}
	}
}

// materialize puts a created object in place at path now, so that in-order
// steps (link, exchange) can act on it; from here on it is followed in
// order like anything the replica has.
func (p *planner) materialize(l *lineage, path string) {
	p.placePut(l, path)
	l.inOrder = true
}

func (p *planner) rename(ev *synclog.Event) {
	from, to := ev.Path, ev.Path2
	p.dirs[parent(from)] = true
	p.dirs[parent(to)] = true
	lf := p.byPath[from]
	if lf != nil {
		lf.learnIno(ev.Ino)
	}
	if ev.Flags&unix.RENAME_EXCHANGE != 0 {
		// Both objects must be in place on the replica to be swapped.
		for _, path := range []string{from, to} {
			if l := p.byPath[path]; l != nil && l.created && !l.inOrder && !l.isDir {
				p.materialize(l, path)
			}
		}
		p.emit(step{kind: stepRename, path: from, path2: to, flags: unix.RENAME_EXCHANGE})
		p.swapTrees(from, to)
		return
	}
	if lf != nil && lf.created && !lf.inOrder && !lf.isDir {
		// Not on the replica yet: no rename there, but its old name goes
		// (see leftover). What the master replaced at `to` goes when the
		// object leaves `to` in turn, or is replaced by its put there.
		p.emit(step{kind: stepUnlink, path: from})
		p.sendBeforeLosing(to, ev.Name)
		p.forget(to)
		delete(p.byPath, from)
		p.byPath[to] = lf
		p.placePut(lf, to)
		return
	}
	p.sendBeforeLosing(to, ev.Name)
	p.forget(to)
	// The replica does the same rename; NOREPLACE is dropped because the
	// master's succeeded, and a replayed batch must not fail on it.
	p.emit(step{kind: stepRename, path: from, path2: to, ino: ev.Ino})
	p.moveTree(from, to)
}

// moveTree renames the tracked paths at and below from.
func (p *planner) moveTree(from, to string) {
	moved := map[string]*lineage{}
	prefix := from + "/"
	for path, l := range p.byPath {
		if path == from {
			moved[to] = l
			delete(p.byPath, path)
		} else if strings.HasPrefix(path, prefix) {
			moved[to+"/"+path[len(prefix):]] = l
			delete(p.byPath, path)
		}
	}
	for path, l := range moved {
		p.byPath[path] = l
	}
	var dirs []string
	for d := range p.dirs {
		if d == from || strings.HasPrefix(d, prefix) {
			dirs = append(dirs, d)
		}
	}
	for _, d := range dirs {
		delete(p.dirs, d)
		p.dirs[to+d[len(from):]] = true
	}
}

func (p *planner) swapTrees(a, b string) {
	tmp := "\x00swap"
	p.moveTree(a, tmp)
	p.moveTree(b, a)
	p.moveTree(tmp, b)
}

// finish resolves the placeholders and appends the end-of-batch steps:
// writes of files the replica has, attributes, directory times.
func (p *planner) finish() []step {
	final := map[*lineage]string{}
	for path, l := range p.byPath {
		// A lineage with several names keeps the first in byte order, so
		// that plans are deterministic.
		if cur, ok := final[l]; !ok || path < cur {
			final[l] = path
		}
	}
	for _, l := range p.all {
		name, alive := final[l]
		if l.created {
			// Only the put where it got its last name stays (for an object
			// put in place early: where it was materialized; for a
			// directory: its mkdir). Its path is the name at that point of
			// the log, which later in-order steps (a folder rename) carry
			// to the final name; its content is read from the final name.
			last := l.puts[len(l.puts)-1]
			for _, at := range l.puts[:len(l.puts)-1] {
				p.steps[at].kind = 0
			}
			switch {
			case l.inOrder || alive:
				p.steps[last].src = name // "" if gone by the end: later steps remove it
				p.steps[last].inOrder = l.inOrder && !l.isDir
				p.steps[last].ino = l.ino
				p.steps[last].made, p.steps[last].target = l.made, l.target
			default:
				p.steps[last].kind = 0
			}
			if l.inOrder && alive && !l.isDir {
				p.steps = append(p.steps, step{kind: stepAttrs, path: name})
			}
			continue
		}
		if !alive || l.isDir && !l.attrs {
			continue
		}
		if l.sized {
			p.steps = append(p.steps, step{kind: stepWrite, path: name, ranges: l.ranges, ino: l.ino})
		}
		if l.attrs || l.sized {
			p.steps = append(p.steps, step{kind: stepAttrs, path: name, ino: l.ino})
		}
	}
	dirs := make([]string, 0, len(p.dirs))
	for d := range p.dirs {
		dirs = append(dirs, d)
	}
	// A directory's times do not change its parent's, so any order would
	// do; a fixed one makes plans comparable.
	slices.Sort(dirs)
	for _, d := range dirs {
		p.steps = append(p.steps, step{kind: stepAttrs, path: d, dirTimes: true})
	}
	out := p.steps[:0]
	for _, s := range p.steps {
		if s.kind != 0 {
			out = append(out, s)
		}
	}
	return out
}
