package synclog

import (
	"errors"
	"time"
)

// TryNext returns the next event if one is available now, or (nil, nil) at
// the current end of the log (for a reader of a live Log: of its durable
// part; for OpenReader: of what is written, a torn tail counting as not yet
// written). `spoolsync log dump` without --follow reads with it.
func (r *Reader) TryNext() (*Event, error) {
	looked := false
	for {
		if r.closed {
			return nil, ErrClosed
		}
		if r.log != nil && r.log.DurableSeq() < r.next {
			return nil, nil
		}
		ev, err := r.read()
		switch {
		case errors.Is(err, errWait) && r.suspect == r.off && !looked:
			// A bad record with valid ones after it: corruption, unless a
			// write was caught half way. Look once more after a poll
			// rather than report the end of the log.
			looked = true
			time.Sleep(pollInterval)
		case errors.Is(err, errWait):
			return nil, nil
		case err != nil:
			return nil, err
		case ev != nil && ev.Seq >= r.from:
			return ev, nil
		}
	}
}
