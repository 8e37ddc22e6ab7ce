package synclog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// pollInterval is how often a Reader from OpenReader looks for new records.
var pollInterval = 100 * time.Millisecond

// errWait: an OpenReader found nothing (complete) to read yet.
var errWait = errors.New("synclog: nothing to read yet")

// Reader streams events in Seq order. It holds one segment file and a
// bounded buffer, whatever the length of the log. A Reader is not safe for
// concurrent use; use one per goroutine.
type Reader struct {
	log     *Log // nil: OpenReader, another process writes
	dir     string
	from    uint64
	next    uint64 // Seq of the record at off
	seg     segment
	f       *os.File
	rr      recReader
	off     int64
	torn    int64 // OpenReader: offset already judged a torn tail, or -1
	suspect int64 // OpenReader: offset of a bad record with valid data after it, seen once, or -1
	closed  bool
}

// NewReader returns a reader whose first event has Seq >= from. It only
// returns durable events (Seq <= DurableSeq), so a replica never holds an
// event the log could lose in a crash; the background flush bounds how
// long that takes. Next returns ErrPurged if from is older than the oldest
// segment, and ErrClosed once the log is closed and the durable events are
// read.
func (l *Log) NewReader(from uint64) (*Reader, error) {
	l.mu.Lock()
	segs, closed := slices.Clone(l.segs), l.closed
	l.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	r := &Reader{log: l, dir: l.dir}
	if err := r.start(segs, from); err != nil {
		return nil, err
	}
	return r, nil
}

// OpenReader reads the log in dir without locking or repairing it, for
// `spoolsync log dump [--follow]` next to a running writer. It sees events
// as soon as they are written, durable or not. When it reaches the end,
// Next polls for new records and segments until ctx is done; a torn or
// half-written record at the end counts as not written yet.
func OpenReader(dir string, from uint64) (*Reader, error) {
	segs, err := listSegments(dir)
	if err != nil {
		return nil, err
	}
	if len(segs) == 0 {
		return nil, fmt.Errorf("synclog: no sync log in %s: %w", dir, os.ErrNotExist)
	}
	r := &Reader{dir: dir}
	if err := r.start(segs, from); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reader) start(segs []segment, from uint64) error {
	r.from = max(from, 1)
	r.torn, r.suspect = -1, -1
	i := len(segs) - 1
	for i >= 0 && segs[i].firstSeq > r.from {
		i--
	}
	if i < 0 {
		return fmt.Errorf("synclog: read from seq %d: %w (the oldest kept is %d; the channel needs a full resync)",
			r.from, ErrPurged, segs[0].firstSeq)
	}
	return r.open(segs[i])
}

func (r *Reader) path() string { return filepath.Join(r.dir, r.seg.name()) }

// open switches to segment s.
func (r *Reader) open(s segment) error {
	path := filepath.Join(r.dir, s.name())
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("synclog: read seq %d: %w (segment %s was deleted; the channel needs a full resync)", s.firstSeq, ErrPurged, path)
	}
	if err != nil {
		return fmt.Errorf("synclog: open segment: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = s.checkHeader(f)
	}
	if err != nil {
		f.Close()
		return err
	}
	if r.f != nil {
		r.f.Close()
	}
	r.f, r.seg, r.off, r.next = f, s, segmentHeaderSize, s.firstSeq
	r.rr = recReader{f: f, end: fi.Size(), buf: r.rr.buf[:0]}
	r.torn, r.suspect = -1, -1
	return nil
}

// Next returns the next event, blocking until there is one or ctx is done.
// Corruption is reported as a *CorruptError (errors.Is ErrCorrupt).
func (r *Reader) Next(ctx context.Context) (*Event, error) {
	for {
		if r.closed {
			return nil, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if r.log != nil {
			if err := r.log.waitDurable(ctx, r.next); err != nil {
				return nil, err
			}
		}
		ev, err := r.read()
		switch {
		case errors.Is(err, errWait):
			if err := r.sleep(ctx); err != nil {
				return nil, err
			}
		case err != nil:
			return nil, err
		case ev != nil && ev.Seq >= r.from:
			return ev, nil
		}
	}
}

// read returns the next record, or nil after switching segments.
func (r *Reader) read() (*Event, error) {
	ev, _, err := r.try()
	if ev != nil || err != nil {
		return ev, err
	}
	// The buffer may predate the writer's latest write: look again, and
	// judge by what the second look found.
	r.rr.reset()
	ev, reason, err := r.try()
	if ev != nil || err != nil {
		return ev, err
	}
	if errors.Is(reason, errNoRecord) {
		return r.endOfSegment()
	}
	return r.bad(reason)
}

// try reads the record at r.off; reason says why there is none.
func (r *Reader) try() (ev *Event, reason, err error) {
	ev, n, reason, err := readEvent(&r.rr, r.off, r.next)
	if err != nil {
		return nil, nil, fmt.Errorf("synclog: read %s: %w", r.path(), err)
	}
	if ev != nil {
		r.off += int64(n)
		r.next++
		r.torn, r.suspect = -1, -1
	}
	return ev, reason, nil
}

// readEvent reads the record at off and checks that it is event want.
// reason says why there is no such event (errNoRecord: clean end); err is
// an I/O failure.
func readEvent(rr *recReader, off int64, want uint64) (ev *Event, size int, reason, err error) {
	p, n, err := rr.record(off)
	switch {
	case errors.Is(err, errNoRecord) || isFramingError(err):
		return nil, 0, err, nil
	case err != nil:
		return nil, 0, nil, fmt.Errorf("offset %d: %w", off, err)
	}
	if ev, err = decodeEvent(p); err != nil {
		return nil, 0, err, nil
	}
	if ev.Seq != want {
		return nil, 0, fmt.Errorf("seq %d where %d was expected", ev.Seq, want), nil
	}
	return ev, n, nil, nil
}

// endOfSegment: no record at r.off, so seq r.next must start the next
// segment.
func (r *Reader) endOfSegment() (*Event, error) {
	s, found, err := r.following()
	if err != nil || !found {
		return nil, err
	}
	if r.log == nil {
		// The writer synced this segment before creating the next, so
		// what is here now is final: a record may have landed since we
		// looked.
		r.rr.reset()
		ev, reason, err := r.try()
		if ev != nil || err != nil {
			return ev, err
		}
		if !errors.Is(reason, errNoRecord) {
			return nil, r.corrupt(reason)
		}
	}
	if s.firstSeq != r.next {
		return nil, &CorruptError{Path: r.path(), Offset: r.off,
			Reason: fmt.Sprintf("segment ends before seq %d, but the next segment %s starts at seq %d", r.next, s.name(), s.firstSeq)}
	}
	return nil, r.open(s)
}

// following returns the segment after the current one. For a live log,
// r.next is durable, so it must exist; for OpenReader, found == false
// with a nil error means wait.
func (r *Reader) following() (s segment, found bool, err error) {
	var segs []segment
	if r.log != nil {
		r.log.mu.Lock()
		segs = slices.Clone(r.log.segs)
		r.log.mu.Unlock()
	} else if segs, err = listSegments(r.dir); err != nil {
		return s, false, err
	}
	for _, s := range segs {
		if s.index == r.seg.index+1 {
			return s, true, nil
		}
	}
	switch {
	case len(segs) > 0 && segs[0].index > r.seg.index+1:
		return s, false, fmt.Errorf("synclog: read seq %d: %w (the oldest kept segment starts at seq %d; the channel needs a full resync)",
			r.next, ErrPurged, segs[0].firstSeq)
	case r.log != nil:
		return s, false, &CorruptError{Path: r.path(), Offset: r.off,
			Reason: fmt.Sprintf("seq %d is durable but neither here nor in a following segment", r.next)}
	}
	return s, false, r.waitMore()
}

// bad handles bytes at r.off that are not the expected record.
func (r *Reader) bad(reason error) (*Event, error) {
	if r.log != nil {
		return nil, r.corrupt(reason) // r.next is durable: it must be here
	}
	if _, found, err := r.following(); err != nil && !errors.Is(err, errWait) {
		return nil, err
	} else if found {
		// A later segment exists, so this one is final.
		r.rr.reset()
		ev, reason, err := r.try()
		if ev != nil || err != nil {
			return ev, err
		}
		return nil, r.corrupt(reason)
	}
	if r.torn == r.off {
		return nil, r.waitMore()
	}
	t, err := scanTail(r.f, r.off, r.rr.end, r.next)
	if err != nil {
		return nil, fmt.Errorf("synclog: scan %s from offset %d: %w", r.path(), r.off, err)
	}
	if t.torn() {
		r.torn = r.off // a crash's torn tail or a write in progress: wait
		return nil, r.waitMore()
	}
	if r.suspect != r.off {
		r.suspect = r.off // maybe a write caught half way: look again after a poll
		return nil, r.waitMore()
	}
	return nil, &CorruptError{Path: r.path(), Offset: r.off,
		Reason: fmt.Sprintf("%v, yet a valid record follows at offset %d", reason, t.validAt)}
}

func (r *Reader) corrupt(reason error) error {
	return &CorruptError{Path: r.path(), Offset: r.off, Reason: reason.Error()}
}

// waitMore notes the file may since have grown (a writer that reopened a
// cut-short segment extends it) and asks Next to poll.
func (r *Reader) waitMore() error {
	if fi, err := r.f.Stat(); err == nil && fi.Size() != r.rr.end {
		r.rr.end = fi.Size()
		r.torn, r.suspect = -1, -1
	}
	return errWait
}

func (r *Reader) sleep(ctx context.Context) error {
	t := time.NewTimer(pollInterval)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close releases the segment file. Next then returns ErrClosed.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.f.Close()
}
