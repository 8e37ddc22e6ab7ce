package fs

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"spoolsync/synclog"
)

// file is a cached handle (see iomode.go): its reads and writes come to us,
// and its writes are recorded range by range. It holds the loopback file
// rather than embedding it, so it does not offer PassthroughFd: go-fuse
// would otherwise register it for kernel passthrough and its writes would
// never reach us.
// Only the methods below are offered; ioctl in particular is not (it could
// change a file behind the log's back).
type file struct {
	lf   *gofs.LoopbackFile
	node *Node

	killPrivOnce sync.Once
}

// fd is the backing descriptor. PassthroughFd is the loopback file's only
// public accessor of it; we never hand it to the kernel.
func (f *file) fd() int {
	fd, _ := f.lf.PassthroughFd()
	return fd
}

func (f *file) Read(ctx context.Context, buf []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	return f.lf.Read(ctx, buf, off)
}

func (f *file) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if errno := f.node.c.writable(f.node); errno != 0 {
		return 0, errno
	}
	f.killPriv(ctx)
	n, errno := f.lf.Write(ctx, data, off)
	f.node.markDirty(off, uint64(n))
	return n, errno
}

func (f *file) Writev(ctx context.Context, data [][]byte, off int64) (uint32, syscall.Errno) {
	if errno := f.node.c.writable(f.node); errno != 0 {
		return 0, errno
	}
	f.killPriv(ctx)
	n, errno := f.lf.Writev(ctx, data, off)
	f.node.markDirty(off, uint64(n))
	return n, errno
}

// killPriv clears set-user-ID and set-group-ID bits on the first write by
// an unprivileged caller, as the kernel would on a local filesystem. We ask
// the kernel for CAP_HANDLE_KILLPRIV_V2 (it saves a GETXATTR round trip per
// write), which makes this our job; this daemon writes as root, so the
// backing filesystem would not do it for us.
func (f *file) killPriv(ctx context.Context) {
	f.killPrivOnce.Do(func() {
		if caller, ok := fuse.FromContext(ctx); !ok || caller.Uid == 0 {
			return
		}
		var st unix.Stat_t
		if unix.Fstat(f.fd(), &st) != nil {
			return
		}
		kill := st.Mode & unix.S_ISUID
		if st.Mode&(unix.S_ISGID|unix.S_IXGRP) == unix.S_ISGID|unix.S_IXGRP {
			kill |= unix.S_ISGID
		}
		if kill != 0 && unix.Fchmod(f.fd(), st.Mode&07777&^kill) == nil {
			f.node.recordSetattr(synclog.AttrMode)
		}
	})
}

// Flush is close(2): record the writes so far; an error here is what
// close returns to the mail server.
func (f *file) Flush(ctx context.Context) syscall.Errno {
	if errno := f.node.flushDirty(); errno != 0 {
		return errno
	}
	return f.lf.Flush(ctx)
}

func (f *file) Release(ctx context.Context) syscall.Errno {
	f.node.flushDirty()
	f.node.leaveMode(false)
	return f.lf.Release(ctx)
}

// fsyncDataOnly is FUSE_FSYNC_FDATASYNC in fsync_flags (linux/fuse.h).
const fsyncDataOnly = 1 << 0

// Fsync returns when the file's data is on the backing disk and its events
// are durable in the log (package doc, invariant 2).
func (f *file) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if errno := f.node.flushDirty(); errno != 0 {
		return errno
	}
	return parallelSync(f.node.c, f.fd(), func() syscall.Errno {
		if flags&fsyncDataOnly != 0 {
			return gofs.ToErrno(unix.Fdatasync(f.fd()))
		}
		return gofs.ToErrno(unix.Fsync(f.fd()))
	})
}

func (f *file) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Getattr(ctx, out)
}

// Statx by descriptor, which also works once the file's name is gone.
func (f *file) Statx(ctx context.Context, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	return f.lf.Statx(ctx, flags, mask, out)
}

func (f *file) Setattr(ctx context.Context, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return f.lf.Setattr(ctx, in, out)
}

func (f *file) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	return f.lf.Lseek(ctx, off, whence)
}

func (f *file) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if errno := f.node.c.writable(f.node); errno != 0 {
		return errno
	}
	errno := f.lf.Allocate(ctx, off, size, mode)
	if errno == 0 {
		// Extending, punching a hole or zeroing: the range is what changed.
		f.node.markDirty(int64(off), size)
	}
	return errno
}

// loopbackFile unwraps a handle for the loopback's CopyFileRange, which
// insists on bare loopback files.
func loopbackFile(fh gofs.FileHandle) (*gofs.LoopbackFile, bool) {
	switch h := fh.(type) {
	case *gofs.LoopbackFile:
		return h, true
	case *file:
		return h.lf, true
	case *passthroughFile:
		return h.LoopbackFile, true
	}
	return nil, false
}

func (n *Node) CopyFileRange(ctx context.Context, fhIn gofs.FileHandle, offIn uint64, out *gofs.Inode, fhOut gofs.FileHandle, offOut uint64, length uint64, flags uint64) (uint32, syscall.Errno) {
	in, ok1 := loopbackFile(fhIn)
	out2, ok2 := loopbackFile(fhOut)
	if !ok1 || !ok2 {
		return 0, syscall.ENOTSUP
	}
	if errno := n.c.writable(out.Operations().(*Node)); errno != 0 {
		return 0, errno
	}
	cnt, errno := n.LoopbackNode.CopyFileRange(ctx, in, offIn, out, out2, offOut, length, flags)
	if errno == 0 {
		out.Operations().(*Node).markDirty(int64(offOut), uint64(cnt))
	}
	return cnt, errno
}
