package server

import (
	"fmt"
	"io"
	"sync"

	"golang.org/x/sys/unix"

	"spoolsync/wire"
)

// Defaults of the limits a batch is held to (Options). A batch's content
// is staged or spooled on disk before it is applied, and the batch is
// applied under the replica's one apply lock: without bounds, one
// authenticated master could fill the disk (a zstd stream of zeros expands
// a thousandfold) or hold every other master's delivery behind a million
// ops.
const (
	DefaultMaxBatchOps   = 50000
	DefaultMaxBatchBytes = 2 << 30
	DefaultMaxFileSize   = 4 << 30
	DefaultMinFreeSpace  = 256 << 20
)

// admit checks op m, the batch's ops-th, against the batch limits, the
// file size limit and the free disk space, before any of its content is
// read. bytes is the content the batch carried before m.
func (ss *session) admit(seq uint64, m wire.Message, ops, bytes uint64) error {
	o := &ss.srv.opts
	if ops > uint64(o.MaxBatchOps) {
		return &wire.ProtoError{Code: wire.CodeTooLarge, Seq: seq,
			Msg: fmt.Sprintf("batch %d has more than %d ops, this replica's limit (replica_batch_limit): send smaller batches", seq, o.MaxBatchOps)}
	}
	var p string
	var size, data uint64
	switch m := m.(type) {
	case *wire.Put:
		p, size, data = m.Path, m.Size, m.DataLen()
	case *wire.WriteRanges:
		p, size, data = m.Path, m.Size, m.DataLen()
	case *wire.Truncate:
		p, size = m.Path, m.Size // a sparse file is hashed in full by a manifest
	}
	if size > uint64(o.MaxFileSize) {
		return &wire.ProtoError{Code: wire.CodeTooLarge, Seq: seq, Path: p,
			Msg: fmt.Sprintf("%s: a file of %d bytes is over this replica's max_file_size %d; batch %d not applied", p, size, o.MaxFileSize, seq)}
	}
	if data == 0 {
		return nil
	}
	// The first op with content may exceed the limit alone: a file
	// bigger than it still travels, in a batch that starts with it.
	if bytes > 0 && bytes+data > uint64(o.MaxBatchBytes) {
		return &wire.ProtoError{Code: wire.CodeTooLarge, Seq: seq, Path: p,
			Msg: fmt.Sprintf("batch %d carries more than %d bytes of content, this replica's limit (replica_batch_limit): send smaller batches", seq, o.MaxBatchBytes)}
	}
	// Inline puts are staged in the replica's tree, the rest spooled in
	// the state dir.
	dir := o.SpoolDir
	if put, ok := m.(*wire.Put); ok && put.Content == wire.ContentInline {
		dir = ss.store.Root()
	}
	return ss.srv.roomFor(seq, p, dir, data)
}

// freeSpace is the space available to this process on dir's filesystem,
// and the filesystem's size; a test replaces it.
var freeSpace = statfsFree

func statfsFree(dir string) (free, size uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// roomFor refuses n more bytes in dir unless a reserve stays free after
// them (MinFreeSpace, or a twentieth of a smaller filesystem), so that a
// batch fails with a reason before it fills the disk the replica (and, in
// the state dir, its index) lives on.
func (s *Server) roomFor(seq uint64, p, dir string, n uint64) error {
	if s.opts.MinFreeSpace < 0 {
		return nil
	}
	free, size, err := freeSpace(dir)
	if err != nil {
		return &wire.ProtoError{Code: wire.CodeApply, Seq: seq, Path: p, Msg: fmt.Sprintf("batch %d not applied: free space of %s: %v", seq, dir, err)}
	}
	reserve := min(uint64(s.opts.MinFreeSpace), size/20)
	if free < n+reserve {
		return &wire.ProtoError{Code: wire.CodeApply, Seq: seq, Path: p,
			Msg: fmt.Sprintf("batch %d not applied: %s: no space left on device for %d more bytes (%d free, %d kept free); free some space on the replica, the batch is retried", seq, dir, n, free, reserve)}
	}
	return nil
}

// refuse ends batch b with err: it reads and discards the rest of the
// batch first (at most the batch limits' worth), so that the master, still
// sending, finishes and then reads the Error frame, instead of having its
// connection reset under it. pending is the content of the current op not
// read yet.
func (ss *session) refuse(b *wire.BatchBegin, err error, pending uint64) error {
	o := &ss.srv.opts
	budget := uint64(o.MaxBatchBytes) + uint64(o.MaxFileSize)
	if pending > budget || ss.c.RecvData(io.Discard, pending) != nil {
		return err
	}
	budget -= pending
	for ops := 0; ops <= o.MaxBatchOps; ops++ {
		m, rerr := ss.c.Recv()
		if rerr != nil {
			return err
		}
		var data uint64
		switch m := m.(type) {
		case *wire.BatchEnd, *wire.Goodbye:
			return err
		case *wire.Put:
			data = m.DataLen()
		case *wire.WriteRanges:
			data = m.DataLen()
		}
		if data > budget || ss.c.RecvData(io.Discard, data) != nil {
			return err
		}
		budget -= data
	}
	return err
}

// sink passes writes on to w until one fails; then it remembers the
// error and swallows the rest, so that Conn.RecvData still reads the
// whole content off the connection and the batch can be refused with an
// Error frame (a full disk) instead of a connection cut mid-stream.
type sink struct {
	w   io.Writer
	err error
}

func (s *sink) Write(p []byte) (int, error) {
	if s.err == nil {
		_, s.err = s.w.Write(p)
	}
	return len(p), nil
}

// turns lets the batches of one Store apply one at a time, taking the
// masters (identities) waiting in turn: a master with many batches queued,
// or many connections, gets one turn in each round, so it delays another
// master's delivery by one batch at most (issue 15: one 1,000,000-op
// batch held a delivery for 9.7 s; the ops limit bounds a batch, turns
// bound the number of batches ahead). Connections of one identity are
// served first come, first served.
type turns struct {
	mu     sync.Mutex
	busy   bool
	queues map[string][]chan struct{}
	order  []string // identities with waiters, next first
}

// acquire waits for id's turn.
func (t *turns) acquire(id string) {
	t.mu.Lock()
	if !t.busy {
		t.busy = true
		t.mu.Unlock()
		return
	}
	if t.queues == nil {
		t.queues = map[string][]chan struct{}{}
	}
	ch := make(chan struct{})
	if len(t.queues[id]) == 0 {
		t.order = append(t.order, id)
	}
	t.queues[id] = append(t.queues[id], ch)
	t.mu.Unlock()
	<-ch
}

// release hands the turn to the next identity waiting.
func (t *turns) release() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.order) == 0 {
		t.busy = false
		return
	}
	id := t.order[0]
	t.order = t.order[1:]
	q := t.queues[id]
	next := q[0]
	if q = q[1:]; len(q) > 0 {
		t.queues[id] = q
		t.order = append(t.order, id) // behind everyone else waiting
	} else {
		delete(t.queues, id)
	}
	close(next)
}

// waiting is the number of batches waiting for a turn.
func (t *turns) waiting() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, q := range t.queues {
		n += len(q)
	}
	return n
}
