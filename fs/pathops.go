package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Path-based operations.
//
// The loopback does most operations by path: it computes a node's backing
// path from go-fuse's inode tree, then makes a syscall with that path, and
// the kernel follows any symlink in it (chmod and truncate even the last
// component). If a rename through the mount ran between the two, a user
// could move a folder of theirs away and put a symlink in its place, and
// this daemon, which runs as root, would chmod, truncate, chown, stat, read
// the xattrs of or list whatever the symlink points at, anywhere on the
// host. So every such operation runs under the namespace lock held for
// reading (pathOp), as the creating and removing operations already do, and
// renames hold it for writing (renameSerializer): for the whole operation
// the backing path's directories are the ones the tree names. Opens need
// no lock: go-fuse opens symlink-aware (openat.OpenSymlinkAware) and refuses
// a symlink anywhere in the path. All of this assumes, as spoolsync does
// throughout, that the backing dir's names change only through the mount.

// pathOp runs do, the path-based operation op on the backing dir, with the
// namespace lock held for reading.
func (n *Node) pathOp(op string, do func() syscall.Errno) syscall.Errno {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	if h := n.c.pathOpHook; h != nil {
		h(op)
	}
	return do()
}

func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (ch *gofs.Inode, errno syscall.Errno) {
	errno = n.pathOp("lookup", func() syscall.Errno {
		ch, errno = n.LoopbackNode.Lookup(ctx, name, out)
		return errno
	})
	return ch, errno
}

func (n *Node) Getattr(ctx context.Context, f gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if fg, ok := f.(gofs.FileGetattrer); ok {
		return fg.Getattr(ctx, out) // by descriptor
	}
	return n.pathOp("getattr", func() syscall.Errno { return n.LoopbackNode.Getattr(ctx, f, out) })
}

// Statx is getattr with the fields statx(2) adds. The loopback passes the
// kernel's flags on, which never ask not to follow a final symlink:
// asking for a symlink's own attributes would answer its target's.
func (n *Node) Statx(ctx context.Context, f gofs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	if fs, ok := f.(gofs.FileStatxer); ok {
		return fs.Statx(ctx, flags, mask, out) // by descriptor
	}
	return n.pathOp("statx", func() syscall.Errno {
		return n.LoopbackNode.Statx(ctx, nil, flags|unix.AT_SYMLINK_NOFOLLOW, mask, out)
	})
}

func (n *Node) Readlink(ctx context.Context) (target []byte, errno syscall.Errno) {
	errno = n.pathOp("readlink", func() syscall.Errno {
		target, errno = n.LoopbackNode.Readlink(ctx)
		return errno
	})
	return target, errno
}

func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (size uint32, errno syscall.Errno) {
	errno = n.pathOp("getxattr", func() syscall.Errno {
		size, errno = n.LoopbackNode.Getxattr(ctx, attr, dest)
		return errno
	})
	return size, errno
}

func (n *Node) Listxattr(ctx context.Context, dest []byte) (size uint32, errno syscall.Errno) {
	errno = n.pathOp("listxattr", func() syscall.Errno {
		size, errno = n.LoopbackNode.Listxattr(ctx, dest)
		return errno
	})
	return size, errno
}

// openDir opens the node's backing directory, for fsync(dir).
func (n *Node) openDir() (fd int, errno syscall.Errno) {
	errno = n.pathOp("fsyncdir", func() syscall.Errno {
		var err error
		fd, err = syscall.Open(n.backingPath(""), syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
		return gofs.ToErrno(err)
	})
	return fd, errno
}
