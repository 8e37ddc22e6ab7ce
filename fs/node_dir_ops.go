package fs

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"spoolsync/synclog"
)

// backingPath is the absolute path of name in directory n on the backing dir.
func (n *Node) backingPath(name string) string {
	return filepath.Join(n.RootData.Path, n.Path(n.Root()), name)
}

// recordNew records the creation of child name of n, whose inode the
// loopback made (go-fuse attaches it only when we return success). When the event cannot be written the new entry is
// removed again, so the mail server sees a failed operation and no stray
// unreplicated entry is left (invariant 1).
func (n *Node) recordNew(op synclog.Op, name, path2 string, flags uint32, ch *gofs.Inode, undo func(string) error) syscall.Errno {
	ev := &synclog.Event{Op: op, Path: n.childPath(name), Path2: path2, Flags: flags, Ino: ch.StableAttr().Ino}
	if errno := n.c.append(ev); errno != 0 {
		undo(n.backingPath(name))
		return errno
	}
	return 0
}

// inheritGroup gives the new entry name the group of directory n when n
// is setgid, as a local filesystem does: the loopback chowns what it
// creates to the caller's uid and primary gid, which would take a shared
// folder's new mail out of the folder's group. n.c.ns is held.
func (n *Node) inheritGroup(name string, out *fuse.EntryOut) {
	var st unix.Stat_t
	if unix.Lstat(n.backingPath(""), &st) != nil || st.Mode&unix.S_ISGID == 0 || out.Attr.Gid == st.Gid {
		return
	}
	if unix.Lchown(n.backingPath(name), -1, int(st.Gid)) == nil {
		out.Attr.Gid = st.Gid
	}
}

// exactMode gives the new entry name exactly the permission bits the
// caller asked for. The kernel has applied the caller's umask already
// (go-fuse does not ask for FUSE_DONT_MASK) and stripped a setgid bit the
// caller may not set; the loopback then creates through os.OpenFile and
// os.Mkdir, which apply this daemon's umask on top and drop raw set-id and
// sticky bits (os.FileMode keeps them elsewhere). The chmod comes after the
// chowns of preserveOwner and inheritGroup, which would clear set-id bits.
// syscall.Chmod, not os.Chmod: the latter drops raw 07000 bits too. A
// directory keeps the setgid bit it inherited from a setgid parent: the
// kernel never passes S_ISGID to mkdir (it comes from the parent, as on
// ext4). n.c.ns is held.
func (n *Node) exactMode(name string, mode uint32, out *fuse.EntryOut) syscall.Errno {
	want := mode & 0o7777
	if out.Attr.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		want |= out.Attr.Mode & syscall.S_ISGID
	}
	if out.Attr.Mode&0o7777 == want {
		return 0
	}
	if err := syscall.Chmod(n.backingPath(name), want); err != nil {
		return gofs.ToErrno(err)
	}
	out.Attr.Mode = out.Attr.Mode&^0o7777 | want
	return 0
}

func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	ch, errno := n.LoopbackNode.Mkdir(ctx, name, mode, out)
	if errno != 0 {
		return nil, errno
	}
	n.inheritGroup(name, out)
	if errno := n.exactMode(name, mode, out); errno != 0 {
		syscall.Rmdir(n.backingPath(name))
		return nil, errno
	}
	return ch, n.recordNew(synclog.OpMkdir, name, "", 0, ch, syscall.Rmdir)
}

func (n *Node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	op := synclog.OpMknod
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		op = synclog.OpCreate
	case syscall.S_IFIFO, syscall.S_IFSOCK:
		// A socket is what bind(2) leaves (Cyrus's idle and lmtp
		// sockets): replicated as a name, like a fifo.
	default:
		// A mail spool holds no device nodes, and the replica refuses
		// them (a device node planted on the standby would be a way
		// into its hardware): fail here rather than accept what cannot
		// replicate.
		n.c.logger.Error("mknod of a device node refused: spoolsync replicates files, directories, symlinks, fifos and sockets, never block or character devices (README: what is not replicated)",
			"path", n.childPath(name), "type", fmt.Sprintf("%#o", mode&syscall.S_IFMT))
		return nil, syscall.EPERM
	}
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	ch, errno := n.LoopbackNode.Mknod(ctx, name, mode, rdev, out)
	if errno != 0 {
		return nil, errno
	}
	n.inheritGroup(name, out)
	if errno := n.exactMode(name, mode, out); errno != 0 {
		syscall.Unlink(n.backingPath(name))
		return nil, errno
	}
	return ch, n.recordNew(op, name, "", mode, ch, syscall.Unlink)
}

func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	ch, errno := n.LoopbackNode.Symlink(ctx, target, name, out)
	if errno != 0 {
		return nil, errno
	}
	n.inheritGroup(name, out)
	return ch, n.recordNew(synclog.OpSymlink, name, target, 0, ch, syscall.Unlink)
}

func (n *Node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	tn, ok := target.(*Node)
	if !ok {
		return nil, syscall.EXDEV
	}
	// Pending writes first: the replicator must see the content before
	// the second name appears.
	if errno := tn.flushDirtyLocked(); errno != 0 {
		return nil, errno
	}
	src, ok := tn.relPath()
	if !ok {
		return nil, syscall.ENOENT
	}
	ch, errno := n.LoopbackNode.Link(ctx, target, name, out)
	if errno != 0 {
		return nil, errno
	}
	ev := &synclog.Event{Op: synclog.OpLink, Path: src, Path2: n.childPath(name), Ino: ch.StableAttr().Ino}
	if errno := n.c.append(ev); errno != 0 {
		syscall.Unlink(n.backingPath(name))
		return nil, errno
	}
	return ch, 0
}

func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, synclog.OpUnlink, n.LoopbackNode.Unlink)
}

func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(ctx, name, synclog.OpRmdir, n.LoopbackNode.Rmdir)
}

func (n *Node) remove(ctx context.Context, name string, op synclog.Op, do func(context.Context, string) syscall.Errno) syscall.Errno {
	n.c.ns.RLock()
	defer n.c.ns.RUnlock()
	var ino uint64
	if ch := n.GetChild(name); ch != nil {
		ino = ch.StableAttr().Ino
	}
	var survivor string
	if op == synclog.OpUnlink {
		survivor = survivorHandle(n.backingPath(name))
	}
	if errno := do(ctx, name); errno != 0 {
		return errno
	}
	return n.c.append(&synclog.Event{Op: op, Path: n.childPath(name), Path2: survivor, Ino: ino})
}

// survivorHandle returns the file handle (synclog.FileHandle) of the
// regular file (or symlink) at p if other hard links will keep it once p
// is unlinked, else "". The replicator reads through it what was written
// via p and not yet shipped (a symlink's: its owner and times); nothing
// else can reach the object then. A filesystem without handles gives ""
// (see the README's known limits).
func survivorHandle(p string) string {
	var st unix.Stat_t
	if unix.Lstat(p, &st) != nil || st.Nlink < 2 {
		return ""
	}
	if t := st.Mode & unix.S_IFMT; t != unix.S_IFREG && t != unix.S_IFLNK {
		return ""
	}
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, p, 0)
	if err != nil {
		return ""
	}
	return synclog.FileHandle(h.Type(), h.Bytes())
}

// Rename runs with the namespace lock held for writing by renameSerializer
// (mount.go), which also covers go-fuse's tree update after we return.
func (n *Node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok {
		return syscall.EXDEV
	}
	var ino uint64
	if ch := n.GetChild(name); ch != nil {
		ino = ch.StableAttr().Ino
	}
	var replaced string // the handle of a file the rename replaces, if other names keep it
	if flags&unix.RENAME_EXCHANGE == 0 {
		replaced = survivorHandle(np.backingPath(newName))
	}
	if errno := n.LoopbackNode.Rename(ctx, name, newParent, newName, flags); errno != 0 {
		return errno
	}
	errno := n.c.append(&synclog.Event{Op: synclog.OpRename, Path: n.childPath(name), Path2: np.childPath(newName), Name: replaced, Flags: flags, Ino: ino})
	if errno != 0 {
		// Undo what can be undone: an exchange by exchanging again, a
		// rename by renaming back unless that would replace something.
		// A file the rename replaced is gone either way.
		undo := uint(unix.RENAME_NOREPLACE)
		if flags&unix.RENAME_EXCHANGE != 0 {
			undo = unix.RENAME_EXCHANGE
		}
		unix.Renameat2(unix.AT_FDCWD, np.backingPath(newName), unix.AT_FDCWD, n.backingPath(name), undo)
	}
	return errno
}

// Fsync on a directory (and on files opened without a handle we wrap):
// make the log durable along with the backing directory.
func (n *Node) Fsync(ctx context.Context, f gofs.FileHandle, flags uint32) syscall.Errno {
	if h, ok := f.(*file); ok {
		return h.Fsync(ctx, flags)
	}
	if errno := n.flushDirty(); errno != 0 {
		return errno
	}
	return parallelSync(n.c, -1, func() syscall.Errno {
		if fs, ok := f.(gofs.FileFsyncer); ok {
			return fs.Fsync(ctx, flags)
		}
		fd, errno := n.openDir()
		if errno != 0 {
			return errno
		}
		defer syscall.Close(fd)
		return gofs.ToErrno(syscall.Fsync(fd))
	})
}

// parallelSync makes the backing file or directory and every event so far
// durable, and in sync_mode sync then waits for the replicas to hold them
// (the caller has appended the file's pending ranges). With a shared flush
// (SharedFlush) the log is written out and the backing fsync's cache flush
// makes it durable too; otherwise the backing sync and the log sync run
// concurrently. The backing error comes first:
// it names the real I/O error.
//
// fd, when not -1, is a backing file whose dirty data the fsync will
// write: its writeback is started (not waited for) before the log's
// write-out, so that the two writes are on the disk at the same time
// instead of one after the other. The cache flush comes only after both
// have completed (fsync waits for the file's writeback itself), so it
// still covers both.
func parallelSync(c *capture, fd int, backing func() syscall.Errno) syscall.Errno {
	// Every event of this file or directory is appended by now.
	seq := c.log.LastSeq()
	errno := localSync(c, fd, backing)
	if errno == 0 && c.replicas != nil && seq > 0 {
		c.replicas.WaitReplicated(seq)
	}
	return errno
}

// localSync is parallelSync without the wait for the replicas.
func localSync(c *capture, fd int, backing func() syscall.Errno) syscall.Errno {
	if c.shared != nil {
		if fd >= 0 {
			// Errors show again, and are reported, in the fsync.
			unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
		}
		target, err := c.shared.WriteOut()
		if err != nil {
			c.logger.Error("cannot write out the sync log; fsync fails with EIO", "err", err)
			return syscall.EIO
		}
		errno := backing()
		if errno == 0 {
			c.shared.Flushed(target)
		}
		return errno
	}
	logErr := make(chan syscall.Errno, 1)
	go func() { logErr <- c.sync() }()
	errno := backing()
	if le := <-logErr; errno == 0 {
		errno = le
	}
	return errno
}
