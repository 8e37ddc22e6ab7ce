package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"spoolsync/fence"
)

// A tree's top level holds spoolsync's own directories (fence.Reserved:
// .spoolsync with the epoch and locks, .spoolsync-quarantine after a
// failback). A promoted replica tree has them when it is mounted; the mail
// server must neither see nor create them, and nothing there may become
// an event. They are hidden at the root: lookups answer ENOENT, listings
// leave them out, and creating, linking or renaming to or from such a
// name answers EPERM.

// fuseRootID is the node ID of the mount's root in the FUSE protocol.
const fuseRootID = 1

// reservedHider refuses the reserved names at the root, before go-fuse's
// bridge or our nodes see the request.
type reservedHider struct{ fuse.RawFileSystem }

func reservedAtRoot(parent uint64, name string) bool {
	return parent == fuseRootID && fence.Reserved(name)
}

func (r reservedHider) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	if reservedAtRoot(h.NodeId, name) {
		return fuse.ENOENT
	}
	return r.RawFileSystem.Lookup(cancel, h, name, out)
}

func (r reservedHider) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	if reservedAtRoot(in.NodeId, name) {
		return fuse.EPERM
	}
	return r.RawFileSystem.Create(cancel, in, name, out)
}

func (r reservedHider) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	if reservedAtRoot(in.NodeId, name) {
		return fuse.EPERM
	}
	return r.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (r reservedHider) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	if reservedAtRoot(in.NodeId, name) {
		return fuse.EPERM
	}
	return r.RawFileSystem.Mknod(cancel, in, name, out)
}

func (r reservedHider) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	if reservedAtRoot(h.NodeId, name) {
		return fuse.EPERM
	}
	return r.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (r reservedHider) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	if reservedAtRoot(in.NodeId, name) {
		return fuse.EPERM
	}
	return r.RawFileSystem.Link(cancel, in, name, out)
}

func (r reservedHider) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	if reservedAtRoot(in.NodeId, oldName) || reservedAtRoot(in.Newdir, newName) {
		return fuse.EPERM
	}
	return r.RawFileSystem.Rename(cancel, in, oldName, newName)
}

// OpendirHandle wraps every directory handle: fsync(dir) must make the
// log durable too (go-fuse sends FSYNCDIR to the handle when it has
// Fsyncdir, as the loopback's has, and never to Node.Fsync), and the
// root's listing leaves the reserved names out.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	var fh gofs.FileHandle
	var fuseFlags uint32
	errno := n.pathOp("opendir", func() (errno syscall.Errno) {
		fh, fuseFlags, errno = n.LoopbackNode.OpendirHandle(ctx, flags) // lists by path
		return errno
	})
	if errno != 0 {
		return fh, fuseFlags, errno
	}
	return &dirHandle{inner: fh, node: n, hide: n.EmbeddedInode() == n.Root()}, fuseFlags, 0
}

// dirHandle is a directory handle of the mount.
type dirHandle struct {
	inner gofs.FileHandle
	node  *Node
	hide  bool // the root: leave the reserved names out
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	rd := d.inner.(gofs.FileReaddirenter)
	for {
		e, errno := rd.Readdirent(ctx)
		if e == nil || errno != 0 || !d.hide || !fence.Reserved(e.Name) {
			return e, errno
		}
	}
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if s, ok := d.inner.(gofs.FileSeekdirer); ok {
		return s.Seekdir(ctx, off)
	}
	return syscall.ENOTSUP
}

func (d *dirHandle) Releasedir(ctx context.Context, flags uint32) {
	if r, ok := d.inner.(gofs.FileReleasedirer); ok {
		r.Releasedir(ctx, flags)
	}
}

// Fsyncdir returns when the directory is on disk and every event so far
// is durable in the log (package doc, invariant 2).
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	return d.node.Fsync(ctx, d.inner, flags)
}
