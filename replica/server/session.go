package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"syscall"
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
	nc       net.Conn // the accepted socket under c, to see the client hang up
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
func newSession(s *Server, c *wire.Conn, nc net.Conn) (*session, error) {
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
		if err := s.plausibleEpoch(st, sess.PeerEpoch); err != nil {
			log.Error("server: refusing a master's epoch", "root", tree.Root, "tree", st.String(), "epoch", sess.PeerEpoch, "err", err.Msg)
			return nil, err
		}
		before, after, err := fence.Adopt(tree.Root, sess.PeerEpoch)
		if err != nil {
			return nil, &wire.ProtoError{Code: wire.CodeApply, Msg: err.Error()}
		}
		log.Warn("a master of a newer epoch connected: this tree follows it now (failback); what only this tree holds is quarantined by its resync, never deleted",
			"root", tree.Root, "before", before.String(), "after", after.String())
	}
	now := time.Now()
	return &session{srv: s, c: c, nc: nc, store: tree.Store, root: tree.Root, epoch: st.Epoch, identity: sess.Identity,
		log:    log,
		sp:     newSpool(s.opts.SpoolDir, s.opts.SpoolMemory/2),
		spNext: newSpool(s.opts.SpoolDir, s.opts.SpoolMemory/2),
		since:  now, lastSummary: now}, nil
}

// plausibleEpoch refuses an epoch a failback cannot explain: a promote
// raises an epoch by one, so a master more than one epoch ahead of the
// tree is an authenticated peer trying to fence the real master for good
// (an adopted 2^64-2 leaves no epoch to promote to), unless the operator
// said to expect it (Options.AcceptEpoch, `spoolsync server
// --accept-epoch N`: a tree that missed several failovers).
func (s *Server) plausibleEpoch(st fence.State, e uint64) *wire.ProtoError {
	if e <= st.Epoch+1 || e == s.opts.AcceptEpoch {
		return nil
	}
	return &wire.ProtoError{Code: wire.CodeApply, Epoch: st.Epoch,
		Msg: fmt.Sprintf("epoch %d is more than one above the replica tree's %s: refused; if a failover really took the masters that far (several promotes this tree missed), restart its server with --accept-epoch %d", e, st, e)}
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
		case *wire.DigestRequest:
			err = ss.digest(m)
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
	// Ends when the server shuts down or the client hangs up, even in
	// the middle of a file's hash (issue 15: a sparse file kept a CPU busy
	// long after its client had gone).
	ctx, stop := ss.watchGone()
	defer stop()
	for _, p := range paths {
		err := ss.store.Manifest(ctx, p, guid.Mode(m.GUIDMode), func(e replica.Entry) error {
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
		switch {
		case err == nil:
		case ss.srv.ctx.Err() != nil:
			return &wire.ProtoError{Code: wire.CodeShutdown, Path: p, Msg: "replica shutting down; manifest aborted, ask again"}
		case ctx.Err() != nil:
			return fmt.Errorf("manifest of %q: the client hung up", p)
		case errors.Is(err, guid.ErrTooLarge):
			return &wire.ProtoError{Code: wire.CodeTooLarge, Path: p, Msg: "manifest: " + err.Error()}
		default:
			return &wire.ProtoError{Code: wire.CodeApply, Path: p, Msg: "manifest: " + err.Error()}
		}
	}
	return ss.reply(&wire.ManifestEnd{Count: n})
}

// watchGone returns a context that ends when the server shuts down or
// the client hangs up (an EOF or a reset on its socket), and the func
// that ends the watch. A long job between two reads of the connection (a
// manifest) runs under it; nothing else may read the connection until
// stop returns. The socket is peeked at (MSG_PEEK), never read: bytes the
// client sent meanwhile stay for the session, and end the watch. Without a
// socket (net.Pipe) only the shutdown ends the context.
func (ss *session) watchGone() (context.Context, func()) {
	ctx, cancel := context.WithCancel(ss.srv.ctx)
	sc, ok := ss.nc.(syscall.Conn)
	if !ok {
		return ctx, cancel
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ctx, cancel
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b [1]byte
		rc.Read(func(fd uintptr) bool {
			n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case err == unix.EAGAIN || err == unix.EINTR:
				return false // nothing yet: wait until the socket is readable
			case err != nil || n == 0:
				cancel() // reset, or the client closed its end
			}
			return true
		})
	}()
	return ctx, func() {
		// A deadline in the past wakes the watch; then the session's own
		// (a shutdown's, interrupt) is put back.
		ss.nc.SetReadDeadline(time.Unix(1, 0))
		<-done
		ss.nc.SetReadDeadline(time.Time{})
		if ss.srv.closing() {
			ss.interrupt()
		}
		cancel()
	}
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
