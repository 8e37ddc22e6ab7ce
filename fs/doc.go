// Package fs is the FUSE layer of spoolsync: a passthrough filesystem over a
// backing directory that records every change the mail server makes as a
// sync event. It knows nothing of the network.
//
// # What is recorded, and when
//
// Every mutating operation is first done on the backing directory; only when
// it succeeded is it recorded (Log.Append). Events name what changed, never
// the content: the replicator reads current content from the backing dir.
//
//   - create, mkdir, mknod (fifo or socket; device nodes are refused with
//     EPERM), symlink, link, unlink, rmdir, rename (with RENAME_NOREPLACE / RENAME_EXCHANGE in Flags): one event each,
//     appended before the operation returns.
//   - chmod, chown, utimens: one setattr event with a mask of what changed;
//     truncate (also open with O_TRUNC): a truncate event with the new size.
//   - setxattr, removexattr: one event naming the attribute.
//   - write, fallocate, copy_file_range: the changed byte ranges are kept per
//     inode, merged, and recorded as one write event at flush (close),
//     fsync or release — or before a truncate or when the node is forgotten,
//     so that the log keeps the order in which the file changed.
//
// # Invariants
//
//  1. No success without an event. If an event cannot be appended (disk
//     full, I/O error), the operation returns EIO and an error is logged.
//     Creations are undone on the backing dir when their event cannot be
//     written (the mail server sees a failed create, not a stray file);
//     other operations cannot be undone and are reported as failed.
//     While the log is failing, writes fail with EIO too.
//  2. fsync(file) and fsync(dir) return only when every event appended so
//     far, including the file's pending write ranges, is durable in the log
//     (Log.Sync). The backing fsync and the log's sync run concurrently, so
//     an fsync'd delivery costs max(file fsync, log sync), not their sum;
//     the log shares one sync between concurrent callers (group commit).
//     In sync_mode sync (Options.Replicas) they then wait for the replicas
//     to hold those events durably, or to be given up on (ReplicaWaiter).
//  3. The log order is a valid history of paths. An event's path is taken
//     from go-fuse's inode tree while the namespace lock is held for
//     reading; rename takes it for writing across the backing rename, the
//     event, and go-fuse's own tree update (done by the bridge after
//     Node.Rename returns, hence the lock is taken in the RawFileSystem
//     wrapper, see mount.go). So no event can name a path from before a
//     rename and land after the rename's event.
//  4. No operation follows a symlink out of the spool. Operations the
//     loopback does by backing path (setattr, getattr, statx, lookup,
//     readlink, xattrs, opendir) hold the same lock for reading across
//     computing the path and using it (pathops.go), so a user cannot swap
//     a folder of theirs for a symlink in between and have this root
//     daemon chmod, truncate or read what it points at; statx never
//     follows the last component. Opens are symlink-aware in go-fuse.
//
// # Reads and caching
//
// Read-only opens are served by the kernel's FUSE passthrough where it is
// available (the kernel reads the backing file directly; READ never reaches
// this process). Handles that can write never use passthrough, because their
// writes must be seen to be recorded. Entry and attribute timeouts are 1 s:
// safe because every change to the backing dir goes through this mount, and
// the kernel updates its caches from the replies to our own operations. An
// administrator writing the backing dir directly may see stale attributes
// for up to a second; such writes are not replicated anyway (use
// `spoolsync resync`). File data is cached longer: the kernel keeps a
// file's pages until this mount or memory pressure drops them, not only
// while its mtime and size stay the same (no FUSE_AUTO_INVAL_DATA, which
// cost a GETATTR before every read(2)). A file rewritten in the backing
// dir directly may read stale through the mount until
// `echo 1 > /proc/sys/vm/drop_caches` or a remount.
//
// Locks (fcntl, flock) are handled by the kernel on the FUSE inodes: every
// mail process on the host goes through the mount, so kernel-local locks
// give them the same exclusion as on a local filesystem, without a round
// trip per lock.
//
// # Transports
//
// Requests come either from /dev/fuse (go-fuse's server) or, where the
// kernel offers FUSE over io_uring and Options.Uring allows it, from
// per-CPU io_uring queues (package fs/uring, transport.go). Both hand
// them to the same RawFileSystem, so every invariant above holds on
// either. Requests that came over io_uring cannot be interrupted (the
// kernel's INTERRUPT for them arrives on /dev/fuse, where go-fuse does
// not know them), which changes nothing here: no operation is abandoned
// because its context is done.
package fs
