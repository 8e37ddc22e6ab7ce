package fs

import (
	"context"
	"path"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"spoolsync/synclog"
)

// Node is a file or directory of the mount. It embeds the loopback node, so
// every operation not overridden here passes through to the backing dir
// unchanged (and go-fuse's Rename/Link type checks, which require a
// loopback node, keep working).
type Node struct {
	*gofs.LoopbackNode
	c *capture

	mu    sync.Mutex
	dirty []synclog.Range // bytes written since the last write event
	// open handles by kernel I/O mode, see iomode.go
	openPassthrough, openCached int
	cachedReleased              time.Time // when the last cached handle was released
}

// WrapChild makes every node go-fuse creates (lookup, create, mkdir, ...) a
// capturing Node.
func (n *Node) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &Node{LoopbackNode: ops.(*gofs.LoopbackNode), c: n.c}
}

// maxRanges bounds the dirty ranges kept per inode (synclog.AddRange
// merges across the smallest gaps past it).
const maxRanges = 64

// relPath is the node's path relative to the spool root ("." for the root).
// ok is false for a node that no longer has a name (unlinked while open).
func (n *Node) relPath() (p string, ok bool) {
	root := n.Root()
	var parts []string
	for in := n.EmbeddedInode(); in != root; {
		name, parent := in.Parent()
		if parent == nil {
			return "", false
		}
		parts = append(parts, name)
		in = parent
	}
	if len(parts) == 0 {
		return ".", true
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return path.Join(parts...), true
}

// childPath is the relative path of name in directory n.
func (n *Node) childPath(name string) string {
	p, ok := n.relPath()
	if !ok {
		// The directory itself was removed: nothing can be created in it,
		// and the kernel does not send operations on removed directories.
		// Record the name alone rather than lose the event.
		return name
	}
	if p == "." {
		return name
	}
	return p + "/" + name
}

// markDirty notes that [off, off+n) was written.
func (n *Node) markDirty(off int64, cnt uint64) {
	if cnt == 0 || off < 0 {
		return
	}
	n.mu.Lock()
	if len(n.dirty) == 0 {
		n.c.unlogged.Store(n, time.Now())
	}
	n.dirty = synclog.AddRange(n.dirty, synclog.Range{Off: uint64(off), Len: cnt}, maxRanges)
	n.mu.Unlock()
}

// flushDirty records the pending write ranges of n as one event. On failure
// the ranges are kept, so a later flush or fsync tries again.
func (n *Node) flushDirty() syscall.Errno {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	return n.flushDirtyLocked()
}

func (n *Node) flushDirtyLocked() syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.dirty) == 0 {
		return 0
	}
	p, ok := n.relPath()
	if !ok {
		// Unlinked while open: its unlink event is in the log already and
		// its content is gone from every name.
		n.dirty = nil
		n.c.unlogged.Delete(n)
		return 0
	}
	ev := &synclog.Event{Op: synclog.OpWrite, Path: p, Ino: n.StableAttr().Ino, Ranges: n.dirty}
	if errno := n.c.append(ev); errno != 0 {
		return errno
	}
	n.dirty = nil
	n.c.unlogged.Delete(n)
	return 0
}

// event builds an event about n itself.
func (n *Node) event(op synclog.Op) (*synclog.Event, bool) {
	p, ok := n.relPath()
	if !ok {
		return nil, false
	}
	return &synclog.Event{Op: op, Path: p, Ino: n.StableAttr().Ino}, true
}
