package replica

import (
	"bytes"
	"os"
)

// sparseBlock is the unit sparseWriter leaves unwritten when it is all
// zeros: the page size, the smallest hole most filesystems keep.
const sparseBlock = 4096

var zeroBlock [sparseBlock]byte

// sparseWriter writes a new file's content at increasing offsets, leaving
// every block-aligned run of zeros unwritten, so that the holes of a
// sparse file on the master stay holes here (issue 14: the replica held
// 3.7× the blocks). The master reads holes as zeros and sends them (zstd
// makes that cheap on the wire); which zeros the master had allocated is
// not kept, the content is. finish sets the size, for a file that ends
// in a hole.
type sparseWriter struct {
	f   *os.File
	off int64
}

func (w *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		// Up to the next block boundary, so that whole blocks are tested.
		k := min(len(p), sparseBlock-int(w.off%sparseBlock))
		chunk := p[:k]
		if !bytes.Equal(chunk, zeroBlock[:k]) {
			if _, err := w.f.WriteAt(chunk, w.off); err != nil {
				return n - len(p), err
			}
		}
		w.off += int64(k)
		p = p[k:]
	}
	return n, nil
}

// finish gives the file the size of everything written, holes included.
func (w *sparseWriter) finish() error { return w.f.Truncate(w.off) }
