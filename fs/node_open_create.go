package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"spoolsync/synclog"
)

// writable reports whether open flags allow writing.
func writable(flags uint32) bool {
	return flags&syscall.O_ACCMODE != syscall.O_RDONLY
}

func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	ch, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	n.inheritGroup(name, out)
	if errno := n.exactMode(name, mode, out); errno != 0 {
		fh.(gofs.FileReleaser).Release(ctx)
		syscall.Unlink(n.backingPath(name))
		return nil, nil, 0, errno
	}
	if errno := n.recordNew(synclog.OpCreate, name, "", 0, ch, syscall.Unlink); errno != 0 {
		fh.(gofs.FileReleaser).Release(ctx)
		return nil, nil, 0, errno
	}
	h, extra := ch.Operations().(*Node).wrap(fh, flags)
	return ch, h, fuseFlags | extra, 0
}

func (n *Node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	if writable(flags) && flags&syscall.O_TRUNC != 0 {
		// The kernel normally truncates with SETATTR before OPEN; with
		// atomic O_TRUNC it arrives here instead.
		if errno := n.recordTruncate(0); errno != 0 {
			fh.(gofs.FileReleaser).Release(ctx)
			return nil, 0, errno
		}
	}
	h, extra := n.wrap(fh, flags)
	return h, fuseFlags | extra, 0
}

// Tmpfile (O_TMPFILE) is refused: the file would have no name to record
// until linkat(2), and go-fuse cannot link a nameless inode either (it
// answers EXDEV). glibc and mail servers fall back to a named temp file.
func (n *Node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, syscall.EOPNOTSUPP
}

// recordTruncate records a size change of n, after its pending writes.
func (n *Node) recordTruncate(size uint64) syscall.Errno {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	return n.recordTruncateLocked(size)
}

// recordTruncateLocked is recordTruncate with ns held.
func (n *Node) recordTruncateLocked(size uint64) syscall.Errno {
	if errno := n.flushDirtyLocked(); errno != 0 {
		return errno
	}
	ev, ok := n.event(synclog.OpTruncate)
	if !ok {
		return 0
	}
	ev.Size = size
	return n.c.append(ev)
}
