package server

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"spoolsync/wire"
)

// spool holds one batch as it arrives, so the replica's single batch lock
// is taken only once the whole batch is here: a client that sends slowly
// delays its own batch, never another connection's. Records are
//
//	type:u8  length:uvarint  payload
//
// with the wire payload of each op (wire.Marshal) and of each Data chunk.
// The first memLimit bytes stay in memory; past that the batch goes to an
// unlinked temp file in dir, so memory stays bounded whatever the batch
// size. The temp file is unlinked as soon as it is created: a crash leaves
// nothing behind (and sweepSpool removes what an older crash between
// create and unlink could leave).
type spool struct {
	dir      string
	memLimit int
	mem      bytes.Buffer
	f        *os.File // nil until the batch outgrows memLimit
	w        *bufio.Writer
	size     int64
	hdr      []byte
}

const spoolPrefix = "batch-"

func newSpool(dir string, memLimit int) *spool {
	return &spool{dir: dir, memLimit: memLimit}
}

// reset empties the spool for the next batch, keeping its file.
func (s *spool) reset() error {
	s.mem.Reset()
	s.size = 0
	if s.f != nil {
		if err := s.f.Truncate(0); err != nil {
			return fmt.Errorf("spool: truncate %s: %w", s.f.Name(), err)
		}
		if _, err := s.f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		s.w.Reset(s.f)
	}
	return nil
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}

func (s *spool) record(t wire.MsgType, payload []byte) error {
	s.hdr = binary.AppendUvarint(append(s.hdr[:0], byte(t)), uint64(len(payload)))
	if err := s.write(s.hdr); err != nil {
		return err
	}
	return s.write(payload)
}

// op spools an op message.
func (s *spool) op(m wire.Message) error {
	p, err := wire.Marshal(m)
	if err != nil {
		return err
	}
	return s.record(m.Type(), p)
}

// Write spools one Data chunk: Conn.RecvData calls it once per frame.
func (s *spool) Write(p []byte) (int, error) {
	if err := s.record(wire.TypeData, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *spool) write(p []byte) error {
	s.size += int64(len(p))
	if s.f == nil && s.mem.Len()+len(p) <= s.memLimit {
		s.mem.Write(p)
		return nil
	}
	if s.f == nil {
		if err := s.spill(); err != nil {
			return err
		}
	}
	if _, err := s.w.Write(p); err != nil {
		return fmt.Errorf("spool: write %s: %w (is the state dir's disk full?)", s.dir, err)
	}
	return nil
}

// spill moves the batch from memory to a new unlinked temp file.
func (s *spool) spill() error {
	f, err := os.CreateTemp(s.dir, spoolPrefix+"*")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	os.Remove(f.Name())
	s.f, s.w = f, bufio.NewWriterSize(f, 256<<10)
	_, err = s.w.Write(s.mem.Bytes())
	s.mem.Reset()
	return err
}

// reader returns the spooled records from the start.
func (s *spool) reader() (*spoolReader, error) {
	if s.f == nil {
		return &spoolReader{r: bufio.NewReader(bytes.NewReader(s.mem.Bytes()))}, nil
	}
	if err := s.w.Flush(); err != nil {
		return nil, fmt.Errorf("spool: write %s: %w (is the state dir's disk full?)", s.dir, err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return &spoolReader{r: bufio.NewReaderSize(s.f, 256<<10)}, nil
}

// sweepSpool removes spool files a crashed server left in dir.
func sweepSpool(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), spoolPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// spoolReader reads the records back. The spool was written by this
// process from messages that already passed wire's validation, so a
// decoding error here means the spool file itself is damaged.
type spoolReader struct {
	r    *bufio.Reader
	left uint64 // payload bytes of the current Data record not yet read
}

var errSpool = errors.New("spool: damaged batch record (disk error?)")

// next returns the next op. Data records must have been consumed by the
// previous op's content reader.
func (sr *spoolReader) next() (wire.Message, error) {
	t, n, err := sr.header()
	if err != nil {
		return nil, err
	}
	if t == wire.TypeData || sr.left != 0 {
		return nil, errSpool
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(sr.r, p); err != nil {
		return nil, errSpool
	}
	return wire.Unmarshal(t, p)
}

func (sr *spoolReader) header() (wire.MsgType, uint64, error) {
	b, err := sr.r.ReadByte()
	if err != nil {
		return 0, 0, err // io.EOF: the end of the batch
	}
	n, err := binary.ReadUvarint(sr.r)
	if err != nil {
		return 0, 0, errSpool
	}
	return wire.MsgType(b), n, nil
}

// content returns a reader of the next n content bytes, streamed from
// the Data records that follow the op.
func (sr *spoolReader) content(n uint64) io.Reader { return &contentReader{sr: sr, left: n} }

type contentReader struct {
	sr   *spoolReader
	left uint64
}

func (c *contentReader) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, io.EOF
	}
	sr := c.sr
	if sr.left == 0 {
		t, n, err := sr.header()
		if err != nil || t != wire.TypeData || n == 0 || n > c.left {
			return 0, errSpool
		}
		sr.left = n
	}
	p = p[:min(uint64(len(p)), sr.left)]
	k, err := sr.r.Read(p)
	sr.left -= uint64(k)
	c.left -= uint64(k)
	if err == io.EOF {
		err = errSpool
	}
	return k, err
}
