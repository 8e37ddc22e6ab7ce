package synclog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strings"
)

// Cursor file: see doc.go. Two slots in different pages, written
// alternately with pwrite + fdatasync: a torn write can only damage the
// slot being written, and the other still holds the previous value.
const (
	cursorMagic    = "SPSCUR1\n"
	cursorSlotSize = 32
	cursorStride   = 4096
	cursorFileSize = 2 * cursorStride
	cursorSuffix   = ".cursor"
)

type cursor struct {
	f       *os.File
	seq     uint64 // last seq the channel has finished with
	counter uint64 // generation of the newest slot
}

func encodeSlot(counter, seq uint64) []byte {
	b := make([]byte, cursorSlotSize)
	copy(b, cursorMagic)
	binary.LittleEndian.PutUint64(b[8:], counter)
	binary.LittleEndian.PutUint64(b[16:], seq)
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], crcTable))
	return b
}

// slotOffset alternates the slots: generation n goes to slot n%2.
func slotOffset(counter uint64) int64 { return int64(counter%2) * cursorStride }

func decodeSlot(b []byte) (counter, seq uint64, ok bool) {
	if len(b) < cursorSlotSize || string(b[:8]) != cursorMagic ||
		binary.LittleEndian.Uint32(b[24:]) != crc32.Checksum(b[:24], crcTable) {
		return 0, 0, false
	}
	return binary.LittleEndian.Uint64(b[8:]), binary.LittleEndian.Uint64(b[16:]), true
}

// checkCursorName keeps channel names usable as file names.
func checkCursorName(name string) error {
	if name == "" || len(name) > 64 || name[0] == '.' {
		return fmt.Errorf("synclog: cursor name %q: want 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot", name)
	}
	for _, c := range []byte(name) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("synclog: cursor name %q: want 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot", name)
		}
	}
	return nil
}

func (l *Log) cursorPath(name string) string { return filepath.Join(l.dir, name+cursorSuffix) }

// loadCursors reads every cursor file in the directory.
func (l *Log) loadCursors() error {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("synclog: list %s: %w", l.dir, err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), cursorSuffix)
		if !ok || checkCursorName(name) != nil {
			continue
		}
		f, err := os.OpenFile(l.cursorPath(name), os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("synclog: open cursor: %w", err)
		}
		c := &cursor{f: f}
		l.cursors[name] = c // closed by release on error
		if err := c.read(); err != nil {
			return err
		}
	}
	return nil
}

// read takes the valid slot with the higher counter.
func (c *cursor) read() error {
	b := make([]byte, cursorFileSize)
	if _, err := c.f.ReadAt(b, 0); err != nil {
		return &CorruptError{Path: c.f.Name(), Reason: fmt.Sprintf("reading cursor: %v", err)}
	}
	found := false
	for i := range 2 {
		if counter, seq, ok := decodeSlot(b[i*cursorStride:]); ok && (!found || counter > c.counter) {
			c.counter, c.seq, found = counter, seq, true
		}
	}
	if !found {
		return &CorruptError{Path: c.f.Name(), Reason: "neither cursor slot is valid (delete the file to re-register the channel from seq 0)"}
	}
	return nil
}

// Cursor returns the last seq the channel name has finished with, and
// registers the channel: from now on segments are kept until its cursor
// passes them. A new channel starts at 0 (nothing shipped).
func (l *Log) Cursor(name string) (uint64, error) {
	if err := checkCursorName(name); err != nil {
		return 0, err
	}
	l.cmu.Lock()
	defer l.cmu.Unlock()
	c, err := l.cursor(name)
	if err != nil {
		return 0, err
	}
	return c.seq, nil
}

// cursor returns the registered cursor, creating it at 0. Called with cmu
// held.
func (l *Log) cursor(name string) (*cursor, error) {
	if err := l.usable(); err != nil {
		return nil, err
	}
	if c, ok := l.cursors[name]; ok {
		return c, nil
	}
	path := l.cursorPath(name)
	tmp := path + tempSuffix
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err == nil {
		err = writeZeros(f, 0, cursorFileSize)
		if err == nil {
			_, err = f.WriteAt(encodeSlot(1, 0), slotOffset(1))
		}
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = os.Rename(tmp, path)
		}
		if err == nil {
			err = syncDir(l.dir)
		}
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("synclog: register cursor %q: %w", name, err)
	}
	c := &cursor{f: f, counter: 1}
	l.cursors[name] = c
	return c, nil
}

// CommitCursor durably records that channel name has finished with every
// event up to seq (registering it if needed), then deletes the segments
// every registered cursor has passed. seq must be durable and must not go
// backwards.
func (l *Log) CommitCursor(name string, seq uint64) error {
	if err := checkCursorName(name); err != nil {
		return err
	}
	if d := l.DurableSeq(); seq > d {
		return fmt.Errorf("synclog: commit cursor %q at %d: only seqs up to %d are durable", name, seq, d)
	}
	l.cmu.Lock()
	defer l.cmu.Unlock()
	c, err := l.cursor(name)
	if err != nil {
		return err
	}
	switch {
	case seq < c.seq:
		return fmt.Errorf("synclog: commit cursor %q at %d: it is already at %d and cannot move back", name, seq, c.seq)
	case seq == c.seq:
		return nil
	}
	counter := c.counter + 1
	if _, err := c.f.WriteAt(encodeSlot(counter, seq), slotOffset(counter)); err != nil {
		return fmt.Errorf("synclog: commit cursor %q at %d: %w", name, seq, err)
	}
	if err := fdatasync(c.f); err != nil {
		return fmt.Errorf("synclog: commit cursor %q at %d: %w", name, seq, err)
	}
	c.counter, c.seq = counter, seq
	return l.purgeLocked()
}

// DropCursor unregisters channel name and deletes its cursor file; the
// segments only it was holding are deleted. Dropping an unknown name is
// not an error.
func (l *Log) DropCursor(name string) error {
	if err := checkCursorName(name); err != nil {
		return err
	}
	l.cmu.Lock()
	defer l.cmu.Unlock()
	c, ok := l.cursors[name]
	if !ok {
		return nil
	}
	c.f.Close()
	delete(l.cursors, name)
	if err := os.Remove(l.cursorPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("synclog: drop cursor %q: %w", name, err)
	}
	if err := syncDir(l.dir); err != nil {
		return fmt.Errorf("synclog: drop cursor %q: %w", name, err)
	}
	return l.purgeLocked()
}

func (l *Log) purge() error {
	l.cmu.Lock()
	defer l.cmu.Unlock()
	return l.purgeLocked()
}

// purgeLocked deletes the oldest segments whose last seq every registered
// cursor has reached. The active segment always stays, and with no cursor
// registered nothing is deleted. Called with cmu held.
func (l *Log) purgeLocked() error {
	if len(l.cursors) == 0 {
		return nil
	}
	low := uint64(math.MaxUint64)
	for _, c := range l.cursors {
		low = min(low, c.seq)
	}
	l.mu.Lock()
	var doomed []segment
	for len(l.segs) > 1 && l.segs[1].firstSeq-1 <= low {
		doomed = append(doomed, l.segs[0])
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	if len(doomed) == 0 {
		return nil
	}
	for _, s := range doomed {
		if err := os.Remove(filepath.Join(l.dir, s.name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("synclog: delete segment every cursor has passed: %w", err)
		}
	}
	if err := syncDir(l.dir); err != nil {
		return fmt.Errorf("synclog: delete segments: %w", err)
	}
	return nil
}
