package fs

import (
	"context"
	"syscall"

	"spoolsync/synclog"
)

func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.pathOp("setxattr", func() syscall.Errno {
		if errno := n.LoopbackNode.Setxattr(ctx, attr, data, flags); errno != 0 {
			return errno
		}
		return n.recordXattrLocked(synclog.OpSetxattr, attr)
	})
}

func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.pathOp("removexattr", func() syscall.Errno {
		if errno := n.LoopbackNode.Removexattr(ctx, attr); errno != 0 {
			return errno
		}
		return n.recordXattrLocked(synclog.OpRemovexattr, attr)
	})
}

// recordXattrLocked records an xattr change of n; ns is held.
func (n *Node) recordXattrLocked(op synclog.Op, attr string) syscall.Errno {
	ev, ok := n.event(op)
	if !ok {
		return 0
	}
	ev.Name = attr
	return n.c.append(ev)
}
