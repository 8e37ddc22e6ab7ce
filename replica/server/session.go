package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/fence"
	"spoolsync/guid"
	"spoolsync/replica"
	"spoolsync/wire"
)

// summaryEvery is how often a busy connection logs what it applied.
const summaryEvery = time.Minute

// session is one authenticated connection.
type session struct {
	srv      *Server
	c        *wire.Conn
	store    *replica.Store
	root     string
	epoch    uint64 // the tree's epoch when this master connected (Position)
	log      *slog.Logger
	identity string
	// Two spools: the next batch arrives in sp while the last one is
	// applied from the other (pipelining, see batch.go).
	sp, spNext *spool
	// applied delivers the result of the batch being applied in the
	// background (nil: none). Only the reading goroutine uses it.
	applied chan error

	// Totals since the last summary line, and since the start.
	batches, ops, bytes uint64
	allBatches, allOps  uint64
	allBytes            uint64
	since, lastSummary  time.Time
}

// newSession finds the master's tree and settles epochs: a master of an
// older epoch than the tree's is fenced; one of a newer epoch is adopted
// (failback: this tree becomes its replica; its resync quarantines what
// only this tree holds).
func newSession(s *Server, c *wire.Conn) (*session, error) {
	sess := c.Session()
	tree, err := s.opts.TreeFor(sess.Identity)
	if err != nil {
		return nil, &wire.ProtoError{Code: wire.CodeApply, Msg: fmt.Sprintf("no replica tree for %q: %v", sess.Identity, err)}
	}
	log := s.log.With("peer", sess.Peer, "identity", sess.Identity)
	st, err := fence.Read(tree.Root, fence.Replica)
	if err != nil {
		return nil, &wire.ProtoError{Code: wire.CodeApply, Msg: err.Error()}
	}
	switch {
	case sess.PeerEpoch < st.Epoch:
		return nil, &wire.ProtoError{Code: wire.CodeFenced, Epoch: st.Epoch,
			Msg: fmt.Sprintf("fenced: %s is at epoch %d (%s); a master of epoch %d may no longer write to it", tree.Root, st.Epoch, st, sess.PeerEpoch)}
	case sess.PeerEpoch > st.Epoch:
		before, after, err := fence.Adopt(tree.Root, sess.PeerEpoch)
		if err != nil {
			return nil, &wire.ProtoError{Code: wire.CodeApply, Msg: err.Error()}
		}
		log.Warn("a master of a newer epoch connected: this tree follows it now (failback); what only this tree holds is quarantined by its resync, never deleted",
			"root", tree.Root, "before", before.String(), "after", after.String())
	}
	now := time.Now()
	return &session{srv: s, c: c, store: tree.Store, root: tree.Root, epoch: st.Epoch, identity: sess.Identity,
		log:    log,
		sp:     newSpool(s.opts.SpoolDir, s.opts.SpoolMemory/2),
		spNext: newSpool(s.opts.SpoolDir, s.opts.SpoolMemory/2),
		since:  now, lastSummary: now}, nil
}

// treeEpoch is the tree's epoch now (a promote may have raised it);
// unreadable means refuse everyone until it is repaired.
func (ss *session) treeEpoch() uint64 {
	st, err := fence.Read(ss.root, fence.Replica)
	if err != nil {
		ss.log.Error("cannot read the tree's epoch: refusing batches until it is repaired", "err", err)
		return math.MaxUint64
	}
	return st.Epoch
}

// source is the Store's progress key for a channel of this identity.
func (ss *session) source(channel string) string { return ss.identity + "/" + channel }

// interrupt makes a Recv in progress (or the next one) fail at once, so the
// session notices the shutdown between batches.
func (ss *session) interrupt() { ss.c.SetReadDeadline(time.Unix(1, 0)) }

func (ss *session) serve() {
	defer ss.spNext.close()
	defer ss.sp.close()
	err := ss.loop()
	// A batch still being applied finishes (or fails) first; its error,
	// about an earlier batch than anything the loop read, is the one to
	// report.
	if aerr := ss.waitApplied(); aerr != nil {
		err = aerr
	}
	switch {
	case err == nil:
		ss.c.Close()
	case ss.srv.closing() && errors.Is(err, os.ErrDeadlineExceeded):
		// Interrupted between batches (or while a batch arrived, which is
		// dropped unacked): a clean close the master will retry.
		ss.c.Send(&wire.Goodbye{Reason: "replica shutting down"})
		ss.c.Flush()
		ss.c.Close()
		err = nil
	default:
		ss.fail(err)
	}
	ss.log.Info("server: connection closed", "batches", ss.allBatches, "ops", ss.allOps, "bytes", ss.allBytes,
		"duration", time.Since(ss.since).Round(time.Millisecond), "err", err)
}

// fail logs err and reports it to the client in an Error frame (unless
// the error came from the client or the connection is gone).
func (ss *session) fail(err error) {
	var pe *wire.ProtoError
	if errors.As(err, &pe) {
		if !pe.Remote {
			ss.log.Warn("server: closing the connection", "code", pe.Code.String(), "seq", pe.Seq, "path", pe.Path, "err", pe.Msg)
			ss.c.SendError(pe)
			ss.srv.opts.Metrics.refused(pe.Code)
		}
		ss.c.Close()
		return
	}
	ss.c.Close()
}

func (ss *session) loop() error {
	for {
		m, err := ss.c.Recv()
		if errors.Is(err, wire.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		// Only a batch may arrive while the last one is applied, and an
		// offer be answered then; everything else waits for it, so that
		// replies keep their order and see the batch's effects.
		switch m.(type) {
		case *wire.BatchBegin, *wire.Offer, *wire.Ping, *wire.Pong:
		default:
			if err := ss.waitApplied(); err != nil {
				return err
			}
		}
		switch m := m.(type) {
		case *wire.BatchBegin:
			err = ss.batch(m)
		case *wire.PositionRequest:
			src := ss.source(m.Channel)
			p := &wire.Position{Channel: m.Channel, Applied: ss.store.AppliedSeq(src), Epoch: ss.epoch}
			if seq, ok := ss.store.Interrupted(src); ok {
				p.Interrupted = seq
			}
			err = ss.reply(p)
		case *wire.Offer:
			gs := make([]guid.GUID, len(m.GUIDs))
			for i, g := range m.GUIDs {
				gs[i] = toGUID(g)
			}
			err = ss.reply(&wire.Lacks{ID: m.ID, Lacking: ss.store.Lacks(gs)})
		case *wire.ManifestRequest:
			err = ss.manifest(m)
		case *wire.Ping:
			err = ss.reply(&wire.Pong{ID: m.ID})
		case *wire.Pong:
		case *wire.Goodbye:
			ss.log.Debug("server: client said goodbye", "reason", m.Reason)
			return nil
		default:
			// wire's state machine lets only the above through here.
			err = &wire.ProtoError{Code: wire.CodeProtocol, Msg: fmt.Sprintf("unexpected %v between batches", m.Type())}
		}
		if err != nil {
			return err
		}
	}
}

// waitApplied waits for the batch being applied in the background, if
// any, and returns its error.
func (ss *session) waitApplied() error {
	if ss.applied == nil {
		return nil
	}
	err := <-ss.applied
	ss.applied = nil
	return err
}

// appliedFailed reports, without waiting, the error of a background apply
// that has already failed.
func (ss *session) appliedFailed() error {
	select {
	case err := <-ss.applied: // a nil channel never receives
		ss.applied = nil
		return err
	default:
		return nil
	}
}

func (ss *session) reply(m wire.Message) error {
	if err := ss.c.Send(m); err != nil {
		return err
	}
	return ss.c.Flush()
}

// manifest streams the entries of the requested subtrees (the whole tree
// when none), in order, then ManifestEnd. A requested path that does not
// exist is simply absent.
func (ss *session) manifest(m *wire.ManifestRequest) error {
	paths := m.Paths
	if len(paths) == 0 {
		paths = []string{""}
	}
	var n uint64
	var sendErr error
	for _, p := range paths {
		err := ss.store.Manifest(p, guid.Mode(m.GUIDMode), func(e replica.Entry) error {
			if e.Path == "." {
				return nil
			}
			me, ok := manifestEntry(e)
			if !ok {
				return nil
			}
			if sendErr = ss.c.Send(me); sendErr != nil {
				return sendErr
			}
			n++
			return nil
		})
		if sendErr != nil {
			return sendErr
		}
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return &wire.ProtoError{Code: wire.CodeApply, Path: p, Msg: "manifest: " + err.Error()}
		}
	}
	return ss.reply(&wire.ManifestEnd{Count: n})
}

// drain consumes batch b's ops and content without applying them: the
// batch is already applied (a resend after a lost Ack).
func (ss *session) drain(b *wire.BatchBegin) error {
	for {
		m, err := ss.c.Recv()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *wire.BatchEnd:
			ss.log.Debug("server: batch already applied; acknowledged again", "seq", b.Seq, "channel", b.Channel)
			return ss.reply(&wire.Ack{Seq: b.Seq})
		case *wire.Put:
			err = ss.c.RecvData(io.Discard, m.DataLen())
		case *wire.WriteRanges:
			err = ss.c.RecvData(io.Discard, m.DataLen())
		case *wire.Ping:
			err = ss.reply(&wire.Pong{ID: m.ID})
		case *wire.Goodbye:
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// noteBatch counts an applied batch and logs it (Debug), with an Info
// summary at most every summaryEvery.
func (ss *session) noteBatch(b *wire.BatchBegin, ops, bytes uint64, took time.Duration) {
	ss.batches++
	ss.ops += ops
	ss.bytes += bytes
	ss.allBatches++
	ss.allOps += ops
	ss.allBytes += bytes
	ss.log.Debug("server: batch applied", "seq", b.Seq, "channel", b.Channel, "ops", ops, "bytes", bytes, "duration", took)
	if time.Since(ss.lastSummary) >= summaryEvery {
		ss.log.Info("server: applied", "batches", ss.batches, "ops", ss.ops, "bytes", ss.bytes,
			"last_seq", b.Seq, "interval", time.Since(ss.lastSummary).Round(time.Second))
		ss.batches, ss.ops, ss.bytes, ss.lastSummary = 0, 0, 0, time.Now()
	}
}
