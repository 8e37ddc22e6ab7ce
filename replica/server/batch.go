package server

import (
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
	"spoolsync/replica"
	"spoolsync/wire"
)

// byGUID is a Put by GUID the pre-check must find in the index.
type byGUID struct {
	g    wire.GUID
	path string
}

// batch receives batch b — its inline content staged to temp files as it
// arrives, the rest into the spool — then applies it and acks it in the
// background: the next batch can arrive (and be staged) while this one is
// synced, landed and committed. Batches are still applied one at a time
// and in order: the next one's apply starts after this one's ends, and
// an apply that fails ends the connection (its error is reported, and the
// batch after it, unapplied, is dropped with it).
func (ss *session) batch(b *wire.BatchBegin) error {
	// A promotion since this master connected fences it: nothing more
	// from it lands in the tree.
	if cur := ss.treeEpoch(); ss.c.Session().PeerEpoch < cur {
		return &wire.ProtoError{Code: wire.CodeFenced, Seq: b.Seq, Epoch: cur,
			Msg: fmt.Sprintf("fenced: this replica was promoted to epoch %d; a master of epoch %d may no longer write to it", cur, ss.c.Session().PeerEpoch)}
	}
	src := ss.source(b.Channel)
	if b.Seq <= ss.store.AppliedSeq(src) {
		if err := ss.waitApplied(); err != nil {
			return err
		}
		return ss.drain(b)
	}
	start := time.Now()
	if err := ss.sp.reset(); err != nil {
		return ss.refuse(b, ss.applyError(b.Seq, err), 0)
	}
	var (
		ops, bytes uint64
		need       []byGUID               // Puts by GUID not provided earlier in the batch
		inline     = map[wire.GUID]bool{} // GUIDs of inline Puts so far (indexed in their own mode)
		staged     []*replica.Staged      // by op index: inline Puts' content, staged as it arrives
	)
	// What is not put in place (an error, a batch cut short) is dropped;
	// what was is gone from the temp dir already. Once the batch is
	// handed to the background apply, that is its job.
	defer func() { ss.store.DropStaged(staged) }()
	for {
		if err := ss.appliedFailed(); err != nil {
			return err
		}
		m, err := ss.c.Recv()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *wire.BatchEnd:
			if err := ss.waitApplied(); err != nil {
				return err
			}
			sp, st := ss.sp, staged
			staged = nil
			ss.sp, ss.spNext = ss.spNext, ss.sp
			ss.applied = make(chan error, 1)
			go func(done chan<- error) {
				err := ss.applyAndAck(b, src, need, sp, st, ops, bytes, start)
				ss.store.DropStaged(st) // before done: the session may end then
				if err != nil {
					// The reader may be waiting for the client, which
					// waits for this batch's answer: wake it to report.
					ss.interrupt()
				}
				done <- err
			}(ss.applied)
			return nil
		case *wire.Ping:
			if err := ss.reply(&wire.Pong{ID: m.ID}); err != nil {
				return err
			}
			continue
		case *wire.Pong:
			continue
		case *wire.Goodbye:
			ss.log.Info("server: client left in the middle of a batch; it was not applied", "seq", b.Seq, "channel", b.Channel)
			return nil
		}
		ops++
		if err := ss.admit(b.Seq, m, ops, bytes); err != nil {
			return ss.refuse(b, err, dataLen(m))
		}
		if err := ss.sp.op(m); err != nil {
			return ss.refuse(b, ss.applyError(b.Seq, err), dataLen(m))
		}
		var data uint64
		switch m := m.(type) {
		case *wire.Put:
			data = m.DataLen()
			switch {
			case m.Content == wire.ContentByGUID && !inline[m.GUID]:
				need = append(need, byGUID{m.GUID, m.Path})
			case m.Content == wire.ContentInline && m.GUID.Mode != 0:
				inline[m.GUID] = true
			}
			if m.Content == wire.ContentInline {
				// Written to a temp file now, while the master sends the
				// rest; the batch lock is taken only to put it in place.
				st, err := ss.stagePut(b, m)
				if err != nil {
					return err
				}
				staged = append(staged, make([]*replica.Staged, int(ops)-len(staged))...)
				staged[ops-1] = st
				bytes += data
				continue
			}
		case *wire.WriteRanges:
			data = m.DataLen()
		}
		if data > 0 {
			dst := sink{w: ss.sp}
			if err := ss.c.RecvData(&dst, data); err != nil {
				return err
			}
			if dst.err != nil {
				return ss.refuse(b, ss.applyError(b.Seq, dst.err), 0)
			}
			bytes += data
		}
	}
}

// applyAndAck is a received batch's background part: check, apply, ack.
func (ss *session) applyAndAck(b *wire.BatchBegin, src string, need []byGUID, sp *spool, staged []*replica.Staged, ops, bytes uint64, start time.Time) error {
	applyStart := time.Now()
	if err := ss.precheck(b.Seq, need); err != nil {
		return err
	}
	owed, err := ss.apply(b, src, need, sp, staged)
	if err != nil {
		return err
	}
	ss.srv.opts.Metrics.batchApplied(ops, bytes, time.Since(applyStart))
	ss.noteBatch(b, ops, bytes, time.Since(start))
	for len(owed) > 0 {
		part := owed[:min(len(owed), wire.MaxOwedPaths)]
		owed = owed[len(part):]
		if err := ss.c.Send(&wire.Owed{Seq: b.Seq, Paths: part}); err != nil {
			return err
		}
	}
	return ss.reply(&wire.Ack{Seq: b.Seq})
}

// precheck refuses, before anything is applied, a batch whose Puts by
// GUID name content the replica does not hold.
func (ss *session) precheck(seq uint64, need []byGUID) error {
	for len(need) > 0 {
		chunk := need[:min(len(need), wire.MaxOfferGUIDs)]
		need = need[len(chunk):]
		for i, lacking := range ss.store.Lacks(guidsOf(chunk)) {
			if lacking {
				return lackingGUID(seq, chunk[i].path, chunk[i].g)
			}
		}
	}
	return nil
}

// guidsOf lists the GUIDs of the puts by GUID in need.
func guidsOf(need []byGUID) []guid.GUID {
	gs := make([]guid.GUID, len(need))
	for i, n := range need {
		gs[i] = toGUID(n.g)
	}
	return gs
}

func lackingGUID(seq uint64, p string, g wire.GUID) error {
	return &wire.ProtoError{Code: wire.CodeLackingGUID, Seq: seq, Path: p,
		Msg: fmt.Sprintf("put %s by GUID %v: the replica does not hold that content; batch %d not applied, offer the GUID and send the content inline", p, g, seq)}
}

// apply syncs the staged content, runs the spooled batch in one Txn (the
// staged Puts by rename) and commits it. An op whose precondition does
// not hold on the tree (replica.Unmet) is skipped and its paths are
// returned as owed: the batch applies whatever state the replica is in,
// and the master brings those paths to its present state (wire.Owed). On
// any other error the Txn is aborted and the error is one to send to the
// client.
func (ss *session) apply(b *wire.BatchBegin, src string, need []byGUID, sp *spool, staged []*replica.Staged) ([]string, error) {
	turn := ss.srv.turnsOf(ss.store)
	turn.acquire(ss.identity)
	defer turn.release()
	txn, err := ss.store.Begin(src, b.Seq)
	if errors.Is(err, replica.ErrAlreadyApplied) {
		// Another connection of this source applied it while it arrived.
		return nil, nil
	}
	if err != nil {
		return nil, ss.applyError(b.Seq, err)
	}
	// The batch may remove a copy source before the put that copies it.
	txn.Pin(guidsOf(need))
	if len(staged) > 0 {
		if err := ss.store.SyncStaged(); err != nil {
			txn.Abort()
			return nil, ss.applyError(b.Seq, err)
		}
	}
	r, err := sp.reader()
	if err != nil {
		txn.Abort()
		return nil, ss.applyError(b.Seq, err)
	}
	for i := 0; ; i++ {
		if ss.srv.stopping() {
			txn.Abort()
			return nil, &wire.ProtoError{Code: wire.CodeShutdown, Seq: b.Seq, Msg: fmt.Sprintf("replica shutting down; batch %d aborted, resend it", b.Seq)}
		}
		m, err := r.next()
		if err == io.EOF {
			break
		}
		if err == nil {
			if i < len(staged) && staged[i] != nil {
				err = txn.PutStaged(m.(*wire.Put).Path, staged[i])
			} else {
				content := r.content(dataLen(m))
				err = applyOp(txn, m, content)
				if err != nil && replica.Unmet(err) {
					// What the op did not read of its content is
					// still in the spool, before the next op.
					if _, derr := io.Copy(io.Discard, content); derr != nil {
						err = derr
					}
				}
			}
		}
		if err != nil && replica.Unmet(err) {
			ss.log.Info("server: op skipped, its paths are owed the master's state", "seq", b.Seq, "channel", b.Channel, "err", err)
			txn.Owe(opPaths(m)...)
			continue
		}
		if err != nil {
			txn.Abort()
			var pe *wire.ProtoError
			if errors.As(err, &pe) {
				return nil, pe
			}
			return nil, ss.applyError(b.Seq, err)
		}
	}
	owed := txn.Owed()
	if err := txn.Commit(); err != nil {
		return nil, ss.applyError(b.Seq, err)
	}
	return owed, nil
}

// dataLen is how many content bytes follow op m in the spool.
func dataLen(m wire.Message) uint64 {
	switch m := m.(type) {
	case *wire.Put:
		return m.DataLen()
	case *wire.WriteRanges:
		return m.DataLen()
	}
	return 0
}

// opPaths lists the paths op m touches.
func opPaths(m wire.Message) []string {
	switch m := m.(type) {
	case *wire.Put:
		return []string{m.Path}
	case *wire.WriteRanges:
		return []string{m.Path}
	case *wire.Truncate:
		return []string{m.Path}
	case *wire.Mkdir:
		return []string{m.Path}
	case *wire.Rmdir:
		return []string{m.Path}
	case *wire.Unlink:
		return []string{m.Path}
	case *wire.Rename:
		return []string{m.Src, m.Dst}
	case *wire.Link:
		return []string{m.Existing, m.New}
	case *wire.Symlink:
		return []string{m.Path}
	case *wire.Mknod:
		return []string{m.Path}
	case *wire.SetAttr:
		return []string{m.Path}
	case *wire.SetXattr:
		return []string{m.Path}
	case *wire.SetXattrs:
		return []string{m.Path}
	case *wire.RemoveXattr:
		return []string{m.Path}
	case *wire.Quarantine:
		return []string{m.Path}
	}
	return nil
}

// stagePut stages the content of an inline Put straight from the
// connection. Failing to write it (a full disk) refuses the batch with an
// apply error the client is told of, once the rest of the batch is read.
func (ss *session) stagePut(b *wire.BatchBegin, m *wire.Put) (*replica.Staged, error) {
	md := meta(m.Mode, m.UID, m.GID, m.Mtime)
	md.GUIDMode = guid.Mode(m.GUID.Mode) // indexed in the sender's mode, for its puts by GUID
	var recvErr error
	filled := false
	st, err := ss.store.Stage(md, func(w io.Writer) error {
		filled = true
		dst := sink{w: w}
		if recvErr = ss.c.RecvData(&dst, m.DataLen()); recvErr != nil {
			return recvErr
		}
		return dst.err
	})
	switch {
	case err == nil:
		return st, nil
	case recvErr != nil:
		return nil, recvErr // the connection failed, not the disk
	case !filled: // refused before its content was read
		return nil, ss.refuse(b, ss.applyError(b.Seq, err), m.DataLen())
	default:
		return nil, ss.refuse(b, ss.applyError(b.Seq, err), 0)
	}
}

// applyOp applies one op; content is its bytes, from the spool records
// after it.
func applyOp(t *replica.Txn, m wire.Message, content io.Reader) error {
	switch m := m.(type) {
	case *wire.Put:
		md := meta(m.Mode, m.UID, m.GID, m.Mtime)
		if m.Content == wire.ContentInline {
			// Indexed in the sender's mode, so its later puts by GUID
			// (in this batch or another) find it.
			md.GUIDMode = guid.Mode(m.GUID.Mode)
			return t.Put(m.Path, md, content)
		}
		ok, err := t.PutGUID(m.Path, md, toGUID(m.GUID))
		if err == nil && !ok {
			err = lackingGUID(t.Seq(), m.Path, m.GUID)
		}
		return err
	case *wire.WriteRanges:
		return t.WriteRanges(m.Path, int64(m.Size), ranges(m.Ranges), content)
	case *wire.Truncate:
		return t.Truncate(m.Path, int64(m.Size))
	case *wire.Mkdir:
		return t.Mkdir(m.Path, meta(m.Mode, m.UID, m.GID, m.Mtime))
	case *wire.Rmdir:
		return t.Rmdir(m.Path)
	case *wire.Unlink:
		return t.Unlink(m.Path)
	case *wire.Rename:
		return t.Rename(m.Src, m.Dst, renameFlags(m.Flags))
	case *wire.Link:
		return t.Link(m.Existing, m.New)
	case *wire.Symlink:
		return t.Symlink(m.Path, m.Target, meta(0, m.UID, m.GID, m.Mtime))
	case *wire.Mknod:
		typ := uint32(unix.S_IFIFO)
		if m.Kind == wire.KindSocket {
			typ = unix.S_IFSOCK
		}
		return t.Mknod(m.Path, meta(typ|m.Mode, m.UID, m.GID, m.Mtime))
	case *wire.SetAttr:
		mask, md := setAttr(m)
		return t.SetAttr(m.Path, mask, md)
	case *wire.SetXattr:
		return t.SetXattr(m.Path, m.Name, m.Value)
	case *wire.SetXattrs:
		attrs := make([]replica.Xattr, len(m.Attrs)) // never nil: exactly these
		for i, x := range m.Attrs {
			attrs[i] = replica.Xattr{Name: x.Name, Value: x.Value}
		}
		return t.SetAttr(m.Path, replica.AttrXattrs, replica.Meta{Xattrs: attrs})
	case *wire.RemoveXattr:
		return t.RemoveXattr(m.Path, m.Name)
	case *wire.Quarantine:
		return t.Quarantine(m.Path, m.Epoch)
	}
	return fmt.Errorf("%w: %v is not an op", errSpool, m.Type())
}

// applyError is the Error a failed apply sends: code badpath for a path
// the replica refused as leaving its root, apply otherwise (an op whose
// precondition does not hold is no error: it is owed); with the seq and
// the replica's reason.
func (ss *session) applyError(seq uint64, err error) error {
	code := wire.CodeApply
	if errors.Is(err, replica.ErrBadPath) || errors.Is(err, replica.ErrOutsideRoot) {
		code = wire.CodeBadPath
	}
	var p string
	var re *replica.Error
	if errors.As(err, &re) {
		p = re.Path
	}
	return &wire.ProtoError{Code: code, Seq: seq, Path: p,
		Msg: fmt.Sprintf("batch %d not applied: %v", seq, err)}
}
