package fs

import (
	"context"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The kernel keeps one I/O mode per inode (fs/fuse/iomode.c): while any
// handle of an inode is open with FOPEN_PASSTHROUGH, every other open of it
// must be passthrough too (else the open fails, EINVAL), and while a cached
// handle is open, a passthrough open fails (ETXTBSY). Measured here: a
// writer opening a file that a reader holds in passthrough got EIO.
//
// So each Node counts its open handles by mode and every open joins the
// mode the inode is in:
//
//   - no handle open: readers get passthrough (the kernel reads the backing
//     file itself), writers get a cached handle whose writes we see and
//     record range by range;
//   - cached handles open: every new handle is cached;
//   - passthrough handles open: every new handle is passthrough. A writer
//     then writes straight to the backing file, unseen, so its handle
//     records the whole file as changed at flush, fsync and release. It is
//     rare (a file rewritten while being read) and costs only bytes on the
//     wire. One change it cannot see: a write through a shared mapping
//     made after the last close, since the kernel maps the backing file
//     itself (README, known limits). A direct-I/O handle, whose writes
//     would come to us, is no way out: while an inode has a backing file
//     the kernel refuses any open that is not passthrough
//     (fuse_file_io_open; the opener gets EIO, measured).
//
// The kernel does not tell us when it has dropped an inode's mode: a
// cached handle's RELEASE can reach us before the kernel has left cached
// mode, and a passthrough open then fails (ETXTBSY, which the opener sees
// as EIO; go-fuse's posixtest OpenSymlinkRace hit it about once in 25
// runs). So an inode whose last cached handle was released less than
// cachedLinger ago is opened cached again; a message just delivered is
// read from the page cache its writer filled anyway.

// ioMode is the mode a new handle of n gets.
func (n *Node) joinMode(wantPassthrough bool) (passthrough bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.openPassthrough > 0:
		passthrough = true
	case n.openCached > 0 || time.Since(n.cachedReleased) < cachedLinger:
		passthrough = false
	default:
		passthrough = wantPassthrough
	}
	if passthrough {
		n.openPassthrough++
	} else {
		n.openCached++
	}
	return passthrough
}

func (n *Node) leaveMode(passthrough bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if passthrough {
		n.openPassthrough--
	} else {
		n.openCached--
		n.cachedReleased = time.Now()
	}
}

// cachedLinger is how long after its last cached handle is released an
// inode is still opened cached (see above).
const cachedLinger = time.Second

// wrap returns the handle to give the kernel for a new open of n, and the
// FOPEN flags to add.
func (n *Node) wrap(fh gofs.FileHandle, flags uint32) (gofs.FileHandle, uint32) {
	lf := fh.(*gofs.LoopbackFile)
	w := writable(flags)
	// A read-only handle has nothing to record at close: spare the FLUSH
	// round trip, a third of what reading a message costs.
	var noFlush uint32
	if !w {
		noFlush = fuse.FOPEN_NOFLUSH
	}
	if n.joinMode(n.c.passthrough && !w) {
		return &passthroughFile{LoopbackFile: lf, node: n, writable: w}, noFlush
	}
	// Keeping the page cache across opens is safe: every write to the
	// backing file goes through this mount and so through the cache.
	return &file{lf: lf, node: n}, fuse.FOPEN_KEEP_CACHE | noFlush
}

// passthroughFile is a handle the kernel serves from the backing file
// directly; go-fuse registers it because it embeds the loopback file (and
// so offers PassthroughFd).
type passthroughFile struct {
	*gofs.LoopbackFile
	node     *Node
	writable bool // writes happen unseen: record the whole file
}

// recordWhole records the whole current file as written.
func (f *passthroughFile) recordWhole() syscall.Errno {
	if !f.writable {
		return 0
	}
	fd, _ := f.PassthroughFd()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return gofs.ToErrno(err)
	}
	// An empty range still says "this file changed" to the replicator.
	f.node.markDirty(0, max(uint64(st.Size), 1))
	return f.node.flushDirty()
}

func (f *passthroughFile) Flush(ctx context.Context) syscall.Errno {
	if errno := f.recordWhole(); errno != 0 {
		return errno
	}
	return f.LoopbackFile.Flush(ctx)
}

func (f *passthroughFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.recordWhole(); errno != 0 {
		return errno
	}
	fd, _ := f.PassthroughFd()
	return parallelSync(f.node.c, fd, func() syscall.Errno { return f.LoopbackFile.Fsync(ctx, flags) })
}

func (f *passthroughFile) Release(ctx context.Context) syscall.Errno {
	f.recordWhole()
	f.node.leaveMode(true)
	return f.LoopbackFile.Release(ctx)
}

// Ioctl is refused, as on the cached handle: it could change the file
// behind the log's back.
func (f *passthroughFile) Ioctl(ctx context.Context, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	return 0, syscall.ENOTTY
}
