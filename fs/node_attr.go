package fs

import (
	"context"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"spoolsync/synclog"
)

// Setattr is chmod, chown, truncate and utimens, by path or by handle.
func (n *Node) Setattr(ctx context.Context, f gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var mask uint32
	if _, ok := in.GetMode(); ok {
		mask |= synclog.AttrMode
	}
	_, uok := in.GetUID()
	_, gok := in.GetGID()
	if uok || gok {
		mask |= synclog.AttrOwner
	}
	_, mok := in.GetMTime()
	_, aok := in.GetATime()
	if mok || aok {
		mask |= synclog.AttrTimes
	}
	size, truncate := in.GetSize()
	if h, ok := f.(*file); ok {
		f = h.lf // the loopback applies attributes through the fd
	}
	// Without a handle the loopback chmods, truncates and chowns by path:
	// see pathops.go for why under the lock.
	return n.pathOp("setattr", func() syscall.Errno {
		if errno := n.LoopbackNode.Setattr(ctx, f, in, out); errno != 0 {
			return errno
		}
		if truncate {
			if errno := n.recordTruncateLocked(size); errno != 0 {
				return errno
			}
		}
		if mask != 0 {
			return n.recordSetattrLocked(mask)
		}
		return 0
	})
}

// recordSetattr records that the attributes in mask changed.
func (n *Node) recordSetattr(mask uint32) syscall.Errno {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	return n.recordSetattrLocked(mask)
}

// recordSetattrLocked is recordSetattr with ns held.
func (n *Node) recordSetattrLocked(mask uint32) syscall.Errno {
	ev, ok := n.event(synclog.OpSetattr)
	if !ok {
		return 0
	}
	ev.Flags = mask
	return n.c.append(ev)
}
