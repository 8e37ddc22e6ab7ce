package synclog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// Segment header: see doc.go.
const (
	segmentMagic      = "SPSLOG1\n"
	segmentHeaderSize = 32
	tempSuffix        = ".tmp"
)

// segment names one segment file: its position in the sequence of segments
// and the Seq of its first record (which may not be written yet).
type segment struct {
	index    uint64
	firstSeq uint64
}

func (s segment) name() string { return fmt.Sprintf("%016x-%016x.log", s.index, s.firstSeq) }

func parseSegmentName(name string) (segment, bool) {
	var s segment
	if len(name) != 16+1+16+4 || !strings.HasSuffix(name, ".log") {
		return s, false
	}
	if _, err := fmt.Sscanf(name, "%016x-%016x.log", &s.index, &s.firstSeq); err != nil {
		return s, false
	}
	return s, s.name() == name // rejects upper-case hex and other spellings
}

func (s segment) header() []byte {
	b := make([]byte, segmentHeaderSize)
	copy(b, segmentMagic)
	binary.LittleEndian.PutUint64(b[8:], s.index)
	binary.LittleEndian.PutUint64(b[16:], s.firstSeq)
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], crcTable))
	return b
}

// checkHeader reads the header of f and checks it against the file name.
func (s segment) checkHeader(f *os.File) error {
	b := make([]byte, segmentHeaderSize)
	if _, err := f.ReadAt(b, 0); err != nil {
		return &CorruptError{Path: f.Name(), Reason: fmt.Sprintf("reading segment header: %v", err)}
	}
	want := s.header()
	switch {
	case string(b[:8]) != segmentMagic:
		return &CorruptError{Path: f.Name(), Reason: fmt.Sprintf("bad magic %q (want %q)", b[:8], segmentMagic)}
	case string(b) != string(want):
		return &CorruptError{Path: f.Name(), Reason: "segment header does not match the file name or its checksum"}
	}
	return nil
}

// listSegments returns the segments in dir in order. A gap in the indices
// or a first seq going backwards means files were lost or mixed up.
func listSegments(dir string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("synclog: list %s: %w", dir, err)
	}
	var segs []segment
	for _, e := range ents {
		if s, ok := parseSegmentName(e.Name()); ok {
			segs = append(segs, s)
		}
	}
	slices.SortFunc(segs, func(a, b segment) int { return cmpUint(a.index, b.index) })
	for i := 1; i < len(segs); i++ {
		if segs[i].index != segs[i-1].index+1 || segs[i].firstSeq < segs[i-1].firstSeq {
			return nil, &CorruptError{Path: filepath.Join(dir, segs[i].name()),
				Reason: fmt.Sprintf("does not follow %s (segment missing or foreign file)", segs[i-1].name())}
		}
	}
	return segs, nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// removeTemps deletes preallocated files a previous process left behind.
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("synclog: list %s: %w", dir, err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), tempSuffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("synclog: remove leftover %w", err)
			}
		}
	}
	return nil
}

// preallocate creates path and writes size zero bytes into it, then
// fsyncs it. Written zeros, not fallocate: fallocate leaves unwritten
// extents, and on ext4 the first write to one converts it, which is a
// metadata change, so every fdatasync after an append would wait for a
// journal commit. With the blocks written, fdatasync flushes data only.
func preallocate(path string, size int64) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("preallocate segment: %w", err)
	}
	err = writeZeros(f, 0, size)
	if err == nil {
		err = f.Sync() // fsync, not fdatasync: the size and block map changed
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("preallocate %s (%d bytes): %w", path, size, err)
	}
	return f, nil
}

// writeZeros writes zero bytes over [off, end) of f.
func writeZeros(f *os.File, off, end int64) error {
	for off < end {
		n := int(min(end-off, int64(len(zeroPage))))
		if _, err := f.WriteAt(zeroPage[:n], off); err != nil {
			return err
		}
		off += int64(n)
	}
	return nil
}

// seal turns a preallocated temp file into segment s: header written and
// synced, then renamed into place and the directory synced, so the
// segment exists with its header or not at all. On failure f is closed and
// both names are removed.
func seal(dir string, f *os.File, tmp string, s segment) (err error) {
	final := filepath.Join(dir, s.name())
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			os.Remove(final)
			err = fmt.Errorf("create segment %s: %w", filepath.Base(final), err)
		}
	}()
	if _, err := f.WriteAt(s.header(), 0); err != nil {
		return err
	}
	if err := fdatasync(f); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(dir)
}

// pipeline prepares the next segment file in the background, so that
// rolling over does not wait for a segment of zeros (etcd's filePipeline).
// It starts only when asked (Log asks once the active segment is half
// full): writing a whole segment of zeros and syncing it competes with the
// mail server's own fsyncs, so it is not done before it is needed. An
// attempt that fails (ENOSPC) is handed to the next taker, who asks again.
type pipeline struct {
	dir  string
	size int64
	want chan struct{} // buffered 1: prepare one file
	out  chan prepared
	stop chan struct{}
	done chan struct{}
}

type prepared struct {
	f    *os.File
	path string
	err  error
}

func newPipeline(dir string, size int64) *pipeline {
	p := &pipeline{dir: dir, size: size, want: make(chan struct{}, 1), out: make(chan prepared),
		stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *pipeline) run() {
	defer close(p.done)
	for n := 0; ; n++ {
		select {
		case <-p.want:
		case <-p.stop:
			return
		}
		path := filepath.Join(p.dir, fmt.Sprintf("prealloc-%d%s", n, tempSuffix))
		f, err := preallocate(path, p.size)
		select {
		case p.out <- prepared{f, path, err}:
		case <-p.stop:
			if f != nil {
				f.Close()
				os.Remove(path)
			}
			return
		}
	}
}

// request asks for the next file to be prepared; asking twice before it is
// taken prepares one.
func (p *pipeline) request() {
	select {
	case p.want <- struct{}{}:
	default:
	}
}

// take returns a prepared file, asking for it if nobody has. If the one
// waiting had failed, it asks again and waits for the fresh attempt: a
// caller retrying after space came back gets a new answer, not an old
// ENOSPC.
func (p *pipeline) take() (*os.File, string, error) {
	p.request()
	r := <-p.out
	if r.err != nil {
		p.request()
		r = <-p.out
	}
	return r.f, r.path, r.err
}

func (p *pipeline) close() {
	close(p.stop)
	<-p.done
}

// fdatasync flushes the file's data (and only the metadata needed to read
// it back) to disk.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if !errors.Is(err, syscall.EINTR) {
			return os.NewSyscallError("fdatasync", err)
		}
	}
}

// syncDir makes renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
