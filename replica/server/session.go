package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

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
	log      *slog.Logger
	identity string
	sp       *spool

	// Totals since the last summary line, and since the start.
	batches, ops, bytes uint64
	allBatches, allOps  uint64
	allBytes            uint64
	since, lastSummary  time.Time
}

func newSession(s *Server, c *wire.Conn) *session {
	sess := c.Session()
	now := time.Now()
	return &session{srv: s, c: c, store: s.opts.Store, identity: sess.Identity,
		log:   s.log.With("peer", sess.Peer, "identity", sess.Identity),
		sp:    newSpool(s.opts.SpoolDir, s.opts.SpoolMemory),
		since: now, lastSummary: now}
}

// source is the Store's progress key for a channel of this identity.
func (ss *session) source(channel string) string { return ss.identity + "/" + channel }

// interrupt makes a Recv in progress (or the next one) fail at once, so the
// session notices the shutdown between batches.
func (ss *session) interrupt() { ss.c.SetReadDeadline(time.Unix(1, 0)) }

func (ss *session) serve() {
	defer ss.sp.close()
	err := ss.loop()
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
		switch m := m.(type) {
		case *wire.BatchBegin:
			err = ss.batch(m)
		case *wire.PositionRequest:
			src := ss.source(m.Channel)
			p := &wire.Position{Channel: m.Channel, Applied: ss.store.AppliedSeq(src)}
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
		err := ss.store.Manifest(p, ss.srv.opts.GUIDMode, func(e replica.Entry) error {
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
