package fs

import (
	"context"
	"syscall"

	"spoolsync/replicator/synclog"
)

func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if errno := n.LoopbackNode.Setxattr(ctx, attr, data, flags); errno != 0 {
		return errno
	}
	return n.recordXattr(synclog.OpSetxattr, attr)
}

func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if errno := n.LoopbackNode.Removexattr(ctx, attr); errno != 0 {
		return errno
	}
	return n.recordXattr(synclog.OpRemovexattr, attr)
}

func (n *Node) recordXattr(op synclog.Op, attr string) syscall.Errno {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	ev, ok := n.event(op)
	if !ok {
		return 0
	}
	ev.Name = attr
	return n.c.append(ev)
}
