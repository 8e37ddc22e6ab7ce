// Package replica is the replica side of spoolsync: it applies batches of
// operations from a master to a replica root directory, confined to it, and
// keeps the GUID index that lets the master send a content hash instead of
// the bytes. It knows nothing of the network: the server glue decodes wire
// messages and calls Store and Txn.
//
// # Use
//
//	s, _ := replica.Open(replica.Options{Root: "/srv/spool", StateDir: "/var/lib/spoolsync"})
//	t, err := s.Begin(source, seq) // errors.Is(err, ErrAlreadyApplied): ack, do nothing
//	t.Put(...); t.Rename(...); ...  // in batch order; on error: t.Abort()
//	t.Commit()                      // durable; AppliedSeq(source) == seq
//
// # Invariants
//
// Confinement. Nothing a client sends can touch anything outside Root. Every
// path is first checked lexically (ValidPath: relative, clean,
// slash-separated, no NUL, components ≤ 255 bytes, ≤ 4096 bytes in all,
// not .spoolsync or below). Then its parent directory is opened beneath the
// root fd with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS): no symlink in the parent chain is followed, even
// one pointing inside the root (the master's paths come from FUSE, which
// never names a path through a symlink). The final component is used only
// with *at calls that do not follow it: renameat2, unlinkat, linkat without
// AT_SYMLINK_FOLLOW, fchownat/utimensat with AT_SYMLINK_NOFOLLOW, fchmodat2
// with AT_SYMLINK_NOFOLLOW (chmod of a symlink is refused), openat with
// O_NOFOLLOW. xattr syscalls have no *at form, so they use the l* forms on
// "/proc/self/fd/<parent fd>/<name>": the only magic link is the parent fd,
// already beneath the root, and the single final name is not followed.
// (fsetxattr on an O_PATH fd fails with EBADF, and lsetxattr on
// /proc/self/fd/<fd> would act on the magic link itself, hence this form.)
// Linux refuses user.* xattrs on symlinks; trusted.* works as root. os.Root
// is not used: it follows symlinks that stay inside the root, and has no
// renameat2 flags, xattrs or mknod. Kernels without openat2 (< 5.6) get a
// per-component openat(O_NOFOLLOW) walk. Mount points below Root are
// crossed; Root must be one filesystem for Put's rename from the temp dir.
//
// Reserved dir. Root/.spoolsync holds the root lock and tmp/, where content
// is written before it is renamed into place. Temp names are
// "<seq as 16 hex digits>-<serial>.tmp", and "stage-<serial>.tmp" for
// content staged before its batch begins (Store.Stage). Open empties tmp/,
// so a server killed mid-batch leaves no temp file anywhere. Clients cannot name
// .spoolsync, and Manifest leaves it out.
//
// Durability. Content lands by temp file, write, meta, fsync, rename; a
// batch's staged content by temp files, write, meta, one syncfs for all of
// them (Store.SyncStaged), renames. Files
// written in place (WriteRanges, Truncate), entries whose metadata changed,
// and every directory whose entries changed are fsynced at Commit, before
// the index changes and AppliedSeq(source) are committed in one bbolt
// transaction. A half-applied batch is never recorded as applied.
//
// Re-sends. Begin with a seq at or below AppliedSeq fails with
// ErrAlreadyApplied (nothing to undo, nothing to redo). Single ops are
// idempotent: Unlink and Rmdir of a missing path succeed; Mkdir of an
// existing directory applies meta; Put, PutGUID, Symlink and Mknod replace;
// Rename with src missing and dst present succeeds; Link replaces newp, and
// succeeds if newp already is oldp's inode or oldp is missing and newp
// present. Begin durably marks
// a batch in flight; after a crash, Interrupted reports it, and beginning
// that seq again replays it tolerantly: ops on a path that a later op of the
// batch already moved away (WriteRanges, Truncate, SetAttr, SetXattr,
// RemoveXattr) are skipped, and a NoReplace rename replaces. Not exact on
// replay: RENAME_EXCHANGE (it swaps back); a rename or link whose source
// path is re-created later in the same batch; a rename of a directory the
// batch itself filled (the replay re-creates and refills the source, and the
// rename meets a non-empty dst). The master should resync the paths of an
// interrupted batch.
//
// Unmet preconditions. An op that fails because the tree is not in the
// state it expects (Unmet: its object gone, another type of entry or a
// non-empty directory at its name, a directory missing) is no reason to
// refuse a batch: the server skips it, records its paths with Txn.Owe,
// applies the rest, and tells the master which paths it owes the replica
// its present state of (wire.Owed). A path the tree refuses as leaving
// the root, or an I/O error, still fails the batch.
//
// Holes. Content written to a new file (Put, Stage) leaves block-aligned
// runs of zeros unwritten, so a sparse file stays sparse here.
//
// Metadata. Mode, owner (when Options.Owner allows; by default when running
// as root), mtime, xattrs (user.* and trusted.* exactly; see Meta), symlinks
// and hard links are preserved. mtime is set last, after content and xattrs.
// Directory mtimes change only by explicit Mkdir/SetAttr: the master sends a
// directory's mtime after the changes inside it. Atimes are not replicated.
// Unless Options.AllowPrivileged, what would plant privileges on the
// standby is refused with ErrPrivileged before anything changes: set-id
// bits on a non-directory (Put, Stage, SetAttr, Mknod) and the
// security.capability and system.posix_acl_* xattrs. A directory's setgid
// stays allowed (shared folders).
//
// GUID index. GUID → locations, verified before every use: a location is
// used as a copy source only if lstat shows the same inode, size, mtime and
// ctime as when it was indexed, or if the copy hashes to the GUID. A stale
// location is dropped (Lacks) or re-verified by hash (PutGUID), never used
// blindly, so PutGUID never puts wrong content. Put, PutGUID, Link and
// Rename index; WriteRanges, Truncate and Unlink drop; metadata ops
// re-stamp the ctime of an entry that was valid just before.
// A batch opens a verified source of each GUID it puts by GUID before its
// first op (Txn.Pin, at most maxPins), so a put whose source the same batch
// removed earlier still finds the content; a pinned file changed since is
// used only if the copy hashes to the GUID.
//
// Digests. Store.Digest gives a directory's Merkle digest and listing
// (package digest) for the master's continuous verifier, computed from the
// tree as it is, through a cache validated by stat (not updated by the
// batches: the verifier looks for what changed behind spoolsync's back).
//
// # State database (StateDir/index.db, bbolt)
//
//	bucket "guids":    key  mode u8 | sum (20 or 32 bytes, by mode) | path
//	                   value version u8 = 1 | dev u64 | ino u64 | size i64 |
//	                         mtime_ns i64 | ctime_ns i64     (41 bytes, big-endian)
//	bucket "paths":    key path; value mode u8 | sum  (reverse map, for
//	                   Unlink/Rename/WriteRanges)
//	bucket "applied":  key source; value seq u64 (last committed batch)
//	bucket "inflight": key source; value seq u64 (begun, not committed)
//
// A record of another version or length, a key whose mode is unknown, or a
// path that fails ValidPath is treated as absent. StateDir also holds the
// GUID cache (guid-cache.db, package guid) and "lock", flocked exclusively
// while the Store is open; Root/.spoolsync/lock is flocked as well.
package replica
