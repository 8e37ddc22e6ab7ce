package replicator

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/guid"
	"spoolsync/internal/xattr"
	"spoolsync/synclog"
	"spoolsync/wire"
)

// sender is what a batch needs of a connection.
type sender interface {
	Send(wire.Message) error
	SendData(r io.Reader, n int64) error
	Flush() error
	Recv() (wire.Message, error)
}

// shipOp is one wire operation, resolved against the backing dir.
type shipOp struct {
	msg wire.Message
	// file is the object's content, opened when the batch was resolved
	// and held until it is sent: a rename before then must not leave the
	// replica without it.
	file   *os.File
	src    string // backing path file was opened at, for messages
	size   int64  // bytes of Data that follow the message
	ranges []wire.Range
	guid   guid.GUID // Put of a regular file
	vanish bool      // Put whose source was gone: keep it pending
	// linkID is the inode of a Put's file when it has other names, so
	// that a batch putting several of them links them (resolve).
	linkID uint64
}

// batchStats are what one batch cost, for status and metrics.
type batchStats struct {
	ops, puts, dedup int
	payload          int64 // content bytes the batch stands for
	sent             int64 // content bytes that crossed the wire
}

// resolver reads the backing dir to turn steps into wire operations.
type resolver struct {
	backing    string
	cache      *guid.Cache
	mode       guid.Mode
	quarantine uint64 // the epoch stepQuarantine files under
	maxFile    int64  // max_file_size; 0 = no limit
}

func (r *resolver) abs(p string) string { return filepath.Join(r.backing, p) }

// resolve turns the plan into wire operations, reading current state from
// the backing dir. Objects that vanished are skipped (their later events
// carry them) and reported as pending when their content never reached the
// replica.
func (r *resolver) resolve(steps []step) ([]shipOp, []pendingEntry, error) {
	t, err := openTree(r.backing)
	if err != nil {
		return nil, nil, err
	}
	defer t.close()
	var ops []shipOp
	var pending []pendingEntry
	// putAt is where this batch put each multiply-linked file so far: a
	// later put of the same inode under another name (the rescan after an
	// unclean stop puts every name of a file it finds changed, and a
	// maildir move leaves a file under two names for a moment) links that
	// name to it, or the replica would hold separate copies for good.
	putAt := map[uint64]string{}
	for _, s := range steps {
		switch s.kind {
		case stepRename, stepLink, stepUnlink, stepRmdir, stepQuarantine:
			// A name put before may hold another object from here on
			// (an exchange, a rename over it): link only to puts since.
			clear(putAt)
		}
		if s.path == "." {
			continue // the root's own attributes: the replica root is the administrator's
		}
		if reservedPath(s.path) || reservedPath(s.path2) {
			continue // spoolsync's own state in the tree: never replicated
		}
		if s.extra {
			if _, err := t.lstat(s.path); err == nil {
				continue // on the master now: not an extra any more
			}
		}
		switch s.kind {
		case stepPut:
			op, err := r.put(t, s)
			if err != nil {
				closeFiles(ops)
				return nil, nil, err
			}
			if op.vanish {
				switch {
				case s.inOrder:
					// Dovecot's dotlock (create, link to the lock name,
					// unlink, later unlink the lock) is such an object.
					standIn, fill := standInFor(s)
					ops = append(ops, shipOp{msg: standIn})
					if s.src != "" {
						// The stand-in ends the batch with the object's
						// names, hard links included: the next batch fills
						// it in place, so that every name gets the content
						// (a symlink's or a fifo's is exact already) and
						// the attributes.
						pending = append(pending, fill)
					}
				case s.src != "":
					pending = append(pending, pendingEntry{Path: s.src, Ino: s.ino, Made: s.made, Target: s.target})
				}
				continue
			}
			if op.linkID != 0 {
				if first, ok := putAt[op.linkID]; ok && first != s.path {
					closeFiles([]shipOp{op})
					ops = append(ops, shipOp{msg: &wire.Link{Existing: first, New: s.path}})
					continue
				}
				putAt[op.linkID] = s.path
			}
			ops = append(ops, op)
			ops = append(ops, setXattrs(s.path, t.xattrs(s.src), false)...)
		case stepWrite:
			if s.handle != "" {
				if f, st, ok := t.openHandle(s.handle); ok {
					ops = append(ops, r.writeFrom(f, st, s))
				}
				continue // else gone by now: its other names went too
			}
			op, ok := r.write(t, s)
			if !ok {
				pending = append(pending, pendingEntry{Path: s.path, ReplicaHas: true, Ranges: s.ranges, Ino: s.ino})
				continue
			}
			ops = append(ops, op)
		case stepMkdir:
			st, err := t.lstat(s.src)
			if s.src != "" && err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR && t.sameObject(st, s.ino) {
				m := &wire.Mkdir{Path: s.path, Mode: st.Mode & 07777, UID: st.Uid, GID: st.Gid, Mtime: mtime(st)}
				ops = append(ops, shipOp{msg: m})
				// Its xattrs too: set right after the mkdir and moved
				// at once, nothing else would carry them (issue 14).
				ops = append(ops, setXattrs(s.path, t.xattrs(s.src), false)...)
				continue
			}
			// Gone from its final name by the time the batch is read
			// (moved or removed by later events). Its children in the
			// batch need it; its attributes wait, pending, for the
			// batch of the event that moved it — not the epoch and
			// root's, which a Mkdir without them would leave for good.
			m := &wire.Mkdir{Path: s.path, Mode: 0o700}
			if cur, err := t.lstat(s.path); err == nil && cur.Mode&unix.S_IFMT == unix.S_IFDIR {
				m.Mode, m.UID, m.GID, m.Mtime = cur.Mode&07777, cur.Uid, cur.Gid, mtime(cur)
			}
			ops = append(ops, shipOp{msg: m})
			if s.src != "" {
				pending = append(pending, pendingEntry{Path: s.src, ReplicaHas: true, AttrsOnly: true, Ino: s.ino, Made: synclog.OpMkdir})
			}
		case stepRmdir:
			ops = append(ops, shipOp{msg: &wire.Rmdir{Path: s.path}})
		case stepUnlink:
			ops = append(ops, shipOp{msg: &wire.Unlink{Path: s.path}})
		case stepQuarantine:
			ops = append(ops, shipOp{msg: &wire.Quarantine{Path: s.path, Epoch: r.quarantine}})
		case stepRename:
			ops = append(ops, shipOp{msg: &wire.Rename{Src: s.path, Dst: s.path2, Flags: s.flags}})
		case stepLink:
			ops = append(ops, shipOp{msg: &wire.Link{Existing: s.path, New: s.path2}})
		case stepAttrs:
			if s.handle != "" {
				if f, st, ok := t.openHandle(s.handle); ok {
					attrs, _ := xattr.ReadFD(int(f.Fd()))
					f.Close()
					ops = append(ops, shipOp{msg: setAttrOf(s.path, st)})
					ops = append(ops, setXattrs(s.path, wireXattrs(attrs), true)...)
				} else if st, ok := t.statHandle(s.handle); ok && st.Mode&unix.S_IFMT == unix.S_IFLNK {
					ops = append(ops, shipOp{msg: setAttrOf(s.path, st)})
				}
				continue
			}
			st, err := t.lstat(s.path)
			gone := errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
			if gone && s.ino != 0 || err == nil && !t.sameObject(st, s.ino) {
				// An object the events followed is gone from its name,
				// or another took the name: a later event removed it or
				// moved it, maybe keeping it (a rename), and its
				// attributes go with the batch of that event. Dropping
				// them would leave the replica's copy with its old mode,
				// owner, times or xattrs for good.
				pending = append(pending, pendingEntry{Path: s.path, ReplicaHas: true, AttrsOnly: true, Ino: s.ino})
				continue
			}
			if err != nil {
				if gone && s.dirTimes {
					// Moved (or removed) by an event after the batch:
					// applying the batch moved its mtime on the replica,
					// and a rename does not carry a directory's times,
					// so they stay pending for the batch of that event
					// (fsstress left directories at their apply time).
					pending = append(pending, pendingEntry{Path: s.path, ReplicaHas: true, AttrsOnly: true})
				}
				continue
			}
			ops = append(ops, shipOp{msg: setAttrOf(s.path, st)})
			if st.Mode&unix.S_IFMT != unix.S_IFLNK {
				ops = append(ops, setXattrs(s.path, t.xattrs(s.path), true)...)
			}
		}
	}
	// A directory renamed in the batch gets its own attributes again at
	// its new name, last, when that name still holds it: its times may
	// have been set from another directory that held its old name when an
	// earlier batch was read (names move on while the replica catches up;
	// fsstress left directories with their apply time), and a rename
	// carries none.
	for _, s := range steps {
		if s.kind != stepRename || s.flags != 0 || s.ino == 0 || reservedPath(s.path2) {
			continue
		}
		if st, err := t.lstat(s.path2); err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR && t.sameObject(st, s.ino) {
			ops = append(ops, shipOp{msg: setAttrOf(s.path2, st)})
			ops = append(ops, setXattrs(s.path2, t.xattrs(s.path2), true)...)
		}
	}
	return ops, pending, nil
}

// reservedPath reports whether p lies in spoolsync's own top-level
// directories of a tree (fence.Reserved).
func reservedPath(p string) bool {
	top, _, _ := strings.Cut(p, "/")
	return fence.Reserved(top)
}

func mtime(st *unix.Stat_t) int64 { return st.Mtim.Nano() }

// setAttrOf is the SetAttr that gives path on the replica the mode, owner
// and times in st (not the mode of a symlink, which is fixed).
func setAttrOf(path string, st *unix.Stat_t) *wire.SetAttr {
	mask := uint32(wire.AttrMode | wire.AttrOwner | wire.AttrTimes)
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		mask &^= wire.AttrMode
	}
	return &wire.SetAttr{Path: path, Mask: mask, Mode: st.Mode & 07777,
		UID: st.Uid, GID: st.Gid, Mtime: mtime(st), Atime: st.Atim.Nano()}
}

// put resolves a whole-object step: a file (by GUID when the replica has
// the content), a symlink, a fifo or a socket.
func (r *resolver) put(t *tree, s step) (shipOp, error) {
	st, err := t.lstat(s.src)
	if err != nil || !t.sameObject(st, s.ino) {
		// Gone, or another object took the name since (a later rename
		// or exchange): this one is pending, and the events that moved
		// it say where it went.
		return shipOp{vanish: true}, nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f, st, ok := t.open(s.src)
		if !ok || !t.sameObject(st, s.ino) {
			if ok {
				f.Close()
			}
			return shipOp{vanish: true}, nil
		}
		p := &wire.Put{Path: s.path, Content: wire.ContentInline, Mode: st.Mode & 07777, UID: st.Uid, GID: st.Gid,
			Mtime: mtime(st), Size: uint64(st.Size)}
		op := shipOp{msg: p, file: f, src: s.src, size: st.Size}
		if st.Nlink > 1 {
			op.linkID = st.Ino
		}
		if r.mode != guid.None {
			g, err := r.cache.HashFDLimited(f, r.mode, guid.Limit{MaxSize: r.maxFile})
			if err != nil {
				f.Close()
				return shipOp{}, fmt.Errorf("hash %s: %w", s.src, err)
			}
			op.guid = g
			p.GUID = wireGUID(g)
		}
		return op, nil
	case unix.S_IFLNK:
		// A symlink's target never changes, and the event that made it
		// carries it: readlink(2) would move the symlink's atime on the
		// master (issue 14), so it is only the fallback.
		target := s.target
		if s.made != synclog.OpSymlink || target == "" {
			var err error
			if target, err = t.readlink(s.src); err != nil {
				return shipOp{vanish: true}, nil
			}
		}
		return shipOp{msg: &wire.Symlink{Path: s.path, Target: target, UID: st.Uid, GID: st.Gid, Mtime: mtime(st)}}, nil
	case unix.S_IFIFO, unix.S_IFSOCK:
		kind := wire.KindFIFO
		if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			kind = wire.KindSocket
		}
		return shipOp{msg: &wire.Mknod{Path: s.path, Kind: kind, Mode: st.Mode & 07777, UID: st.Uid, GID: st.Gid, Mtime: mtime(st)}}, nil
	case unix.S_IFDIR:
		// A put whose source is now a directory: the name was reused; the
		// directory's own events carry it.
		return shipOp{vanish: true}, nil
	}
	return shipOp{vanish: true}, nil // devices are not replicated
}

// standInFor is what an in-order put puts when its object cannot be read
// (see step.inOrder), of the object's type — a file stand-in where the
// master has a symlink would stay a file on the replica, since nothing
// later writes to a symlink — and what the next batch must then fill in
// at the object's final name.
func standInFor(s step) (wire.Message, pendingEntry) {
	attrs := pendingEntry{Path: s.src, ReplicaHas: true, AttrsOnly: true, Ino: s.ino}
	switch {
	case s.made == synclog.OpSymlink && s.target != "":
		return &wire.Symlink{Path: s.path, Target: s.target}, attrs
	case s.made == synclog.OpMknod:
		return &wire.Mknod{Path: s.path, Kind: wire.KindFIFO, Mode: 0o600}, attrs
	}
	return &wire.Put{Path: s.path, Content: wire.ContentInline, Mode: 0o600},
		pendingEntry{Path: s.src, ReplicaHas: true, Ranges: []synclog.Range{{Off: 0, Len: math.MaxUint64}}, Ino: s.ino}
}

// write resolves the changed ranges of a file the replica has; ok is false
// when the file is gone (its later events carry it).
func (r *resolver) write(t *tree, s step) (shipOp, bool) {
	f, st, ok := t.open(s.path)
	if !ok {
		return shipOp{}, false
	}
	if !t.sameObject(st, s.ino) {
		f.Close()
		return shipOp{}, false
	}
	return r.writeFrom(f, st, s), true
}

// writeFrom is write of the file open as f: the step's ranges cut at its
// size, or a Truncate when none is left.
func (r *resolver) writeFrom(f *os.File, st *unix.Stat_t, s step) shipOp {
	size := uint64(st.Size)
	var ranges []wire.Range
	var n int64
	for _, rg := range s.ranges {
		if rg.Off >= size {
			continue
		}
		l := min(rg.Len, size-rg.Off)
		ranges = append(ranges, wire.Range{Off: rg.Off, Len: l})
		n += int64(l)
	}
	if len(ranges) == 0 {
		// Only the size changed, or every written byte was truncated away
		// since (an mbox emptied): WriteRanges needs a range.
		f.Close()
		return shipOp{msg: &wire.Truncate{Path: s.path, Size: size}}
	}
	return shipOp{msg: &wire.WriteRanges{Path: s.path, Size: size, Ranges: ranges}, file: f, src: s.path, size: n, ranges: ranges}
}

// closeFiles releases the content files of ops.
func closeFiles(ops []shipOp) {
	for i := range ops {
		if ops[i].file != nil {
			ops[i].file.Close()
			ops[i].file = nil
		}
	}
}

// setXattrs gives path on the replica the extended attributes attrs.
// exact: the replica had the entry before, and attributes it has beyond
// these must go (one SetXattrs: an attribute removed on the master is
// removed there too; a removal's own event only marks the entry's
// attributes changed). A new entry has none to remove, so it gets no
// operation when attrs is empty. A list too large for one SetXattrs is
// set one by one, and what the replica has beyond it waits for a resync.
func setXattrs(path string, attrs []wire.Xattr, exact bool) []shipOp {
	size := 0
	for _, x := range attrs {
		size += len(x.Name) + len(x.Value)
	}
	switch {
	case exact && len(attrs) <= wire.MaxXattrs && size <= maxXattrsBytes:
		return []shipOp{{msg: &wire.SetXattrs{Path: path, Attrs: attrs}}}
	case len(attrs) == 0:
		return nil
	}
	ops := make([]shipOp, 0, len(attrs))
	for _, x := range attrs {
		ops = append(ops, shipOp{msg: &wire.SetXattr{Path: path, Name: x.Name, Value: x.Value}})
	}
	return ops
}

// maxXattrsBytes bounds one SetXattrs well below the smallest frame a
// replica may announce (wire.MinFrameSize).
const maxXattrsBytes = 32 << 10

func wireXattrs(attrs []xattr.Attr) []wire.Xattr {
	out := make([]wire.Xattr, len(attrs))
	for i, a := range attrs {
		out[i] = wire.Xattr{Name: a.Name, Value: a.Value}
	}
	return out
}

func wireGUID(g guid.GUID) wire.GUID { return wire.GUID{Mode: uint8(g.Mode), Sum: g.Sum} }

// offer asks the replica which GUIDs of the batch's puts it lacks and turns
// the puts of content it has into puts by GUID. The first put of content
// the replica lacks sends it; later puts of the same content in the batch
// copy it there (fan-out of one message to many mailboxes).
func offer(c sender, ops []shipOp, id uint64, st *batchStats, inline bool) error {
	o, err := sendOffer(c, ops, id, inline)
	if err != nil {
		return err
	}
	return o.answer(c.Recv, ops, st)
}

// pendingOffer is an offer sent whose answers are still to be read.
type pendingOffer struct {
	gs   []wire.GUID
	seen map[guid.GUID]int // index in gs
}

// sendOffer sends the Offers of a batch's GUIDs (one per maxOffer) without
// waiting for the answers, so that they cost one round trip, not one
// each, and a resync can send them before it waits for the previous
// batch's acknowledgement. nil when there is nothing to offer.
func sendOffer(c sender, ops []shipOp, id uint64, inline bool) (*pendingOffer, error) {
	if inline {
		return nil, nil // every put carries its content
	}
	o := &pendingOffer{seen: map[guid.GUID]int{}}
	for _, op := range ops {
		if byGUID(op) {
			if _, dup := o.seen[op.guid]; !dup {
				o.seen[op.guid] = len(o.gs)
				o.gs = append(o.gs, wireGUID(op.guid))
			}
		}
	}
	if len(o.gs) == 0 {
		return nil, nil
	}
	for start := 0; start < len(o.gs); start += maxOffer {
		if err := c.Send(&wire.Offer{ID: id, GUIDs: o.gs[start:min(start+maxOffer, len(o.gs))]}); err != nil {
			return nil, err
		}
	}
	return o, c.Flush()
}

// answer reads the replica's answers to o with recv and turns the puts of
// content it has into puts by GUID.
func (o *pendingOffer) answer(recv func() (wire.Message, error), ops []shipOp, st *batchStats) error {
	if o == nil {
		return nil
	}
	lacking := make([]bool, 0, len(o.gs))
	for start := 0; start < len(o.gs); start += maxOffer {
		part := o.gs[start:min(start+maxOffer, len(o.gs))]
		m, err := recv()
		if err != nil {
			return err
		}
		l, ok := m.(*wire.Lacks)
		if !ok || len(l.Lacking) != len(part) {
			return fmt.Errorf("replica answered an offer of %d GUIDs with %v", len(part), m.Type())
		}
		lacking = append(lacking, l.Lacking...)
	}
	// sent: content this batch puts inline, by where it lands, which a
	// later put of the same content copies. Only until an op that may
	// remove or change that copy on the replica (a rename or removal, a
	// write, a put over its name): the copy would be gone when the later
	// put applies, and the replica, having changed the tree already,
	// would abort the batch (lacking-guid; found by TestRandomOps).
	sent := map[guid.GUID]string{}
	for i := range ops {
		switch m := ops[i].msg.(type) {
		case *wire.Rename, *wire.Link, *wire.Unlink, *wire.Rmdir, *wire.Quarantine, *wire.WriteRanges, *wire.Truncate:
			clear(sent)
		case *wire.Put:
			for g, at := range sent {
				if at == m.Path {
					delete(sent, g)
				}
			}
		}
		p, ok := ops[i].msg.(*wire.Put)
		if !ok || !byGUID(ops[i]) {
			continue
		}
		st.puts++
		_, repeat := sent[ops[i].guid]
		if !lacking[o.seen[ops[i].guid]] || repeat {
			p.Content = wire.ContentByGUID
			ops[i].size = 0
			ops[i].file.Close()
			ops[i].file = nil
			st.dedup++
			continue
		}
		sent[ops[i].guid] = p.Path
	}
	return nil
}

// byGUID reports whether op is a put that may go by GUID: one of a
// file with content. Empty content never does: it costs nothing inline,
// while by GUID it depends on the replica holding a copy of the empty
// file when the batch applies (the GUID of "" is every empty stage
// file's, which the replica may have removed since it answered the
// offer), and a refusal (lacking-guid) cost a dropped connection and a
// resync.
func byGUID(op shipOp) bool {
	p, ok := op.msg.(*wire.Put)
	return ok && !op.guid.IsZero() && p.Size > 0
}

// maxOffer bounds the GUIDs in one Offer message (the protocol's limit).
const maxOffer = wire.MaxOfferGUIDs

// send writes the batch and waits for its acknowledgement; owed are the
// paths whose ops the replica skipped (wire.Owed).
func send(c sender, seq uint64, channel string, ops []shipOp, st *batchStats) (owed []string, err error) {
	if err := sendBatch(c, seq, channel, ops, st); err != nil {
		return nil, err
	}
	return waitAck(c, seq)
}

// sendBatch writes the batch without waiting for its acknowledgement.
func sendBatch(c sender, seq uint64, channel string, ops []shipOp, st *batchStats) error {
	if err := c.Send(&wire.BatchBegin{Seq: seq, Channel: channel}); err != nil {
		return err
	}
	for _, op := range ops {
		if err := c.Send(op.msg); err != nil {
			return fmt.Errorf("send %v: %w", op.msg.Type(), err)
		}
		if op.size > 0 {
			err := c.SendData(content(op), op.size)
			if err != nil {
				return fmt.Errorf("send content of %s: %w", op.src, err)
			}
			st.sent += op.size
		}
		if p, ok := op.msg.(*wire.Put); ok {
			st.payload += int64(p.Size)
		} else {
			st.payload += op.size
		}
	}
	st.ops = len(ops)
	if err := c.Send(&wire.BatchEnd{Seq: seq, OpCount: uint64(len(ops))}); err != nil {
		return err
	}
	return c.Flush()
}

// waitAck waits for the replica to acknowledge batch seq (it does once the
// batch is durable), collecting the paths it says are owed on the way.
func waitAck(c sender, seq uint64) (owed []string, err error) {
	for {
		m, err := c.Recv()
		if err != nil {
			return nil, err
		}
		switch m := m.(type) {
		case *wire.Owed:
			if m.Seq == seq {
				owed = append(owed, m.Paths...)
				continue
			}
		case *wire.Ack:
			if m.Seq == seq {
				return owed, nil
			}
		}
		return nil, fmt.Errorf("batch %d: replica answered %v", seq, m.Type())
	}
}

// content reads op's bytes from its open file, exactly op.size of them:
// a file that shrank since it was resolved is padded with zeros (the event
// of that change follows and corrects it; the replica indexes content by
// the hash of what it received, so no wrong GUID results).
func content(op shipOp) io.Reader {
	if op.ranges == nil {
		return io.LimitReader(io.MultiReader(io.NewSectionReader(op.file, 0, op.size), zeroReader{}), op.size)
	}
	parts := make([]io.Reader, len(op.ranges))
	for i, rg := range op.ranges {
		sr := io.NewSectionReader(op.file, int64(rg.Off), int64(rg.Len))
		parts[i] = io.LimitReader(io.MultiReader(sr, zeroReader{}), int64(rg.Len))
	}
	return io.MultiReader(parts...)
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
