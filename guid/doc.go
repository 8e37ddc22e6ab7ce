// Package guid computes and caches content hashes ("GUIDs") of spool files.
//
// A GUID names a file's content: the replicator ships a GUID instead of the
// bytes when the replica already holds a file with that content, and the
// resync engine compares trees by GUID. Every GUID carries the Mode (hash
// function) that produced it, in memory ("sha256:<hex>") and on the wire, so
// GUIDs of different modes never compare equal. That is why the guid_mode
// configuration key can be changed at any time: after a change, old GUIDs
// simply stop matching new ones and the content is shipped once more.
//
// # Why SHA-1 is not the default
//
// Mail content is chosen by whoever sends the mail. SHA-1 collisions are
// practical (SHAttered, 2017; chosen-prefix collisions, 2020), so an attacker
// can mail two different messages with the same SHA-1. A replica that
// deduplicates by SHA-1 could then be steered into putting one message's
// bytes into another mailbox. SHA-1 is offered only for Cyrus compatibility
// (Cyrus GUIDs are SHA-1); SHA-256 is the default and BLAKE3 the fast choice.
// Mode None disables GUIDs: every file is shipped in full.
//
// # Cache
//
// Cache remembers the GUID of a file keyed by what changes when its content
// can have changed: (dev, ino, size, mtime ns, ctime ns, mode). ctime is in
// the key because a rewrite that keeps size and restores mtime (utimes) still
// moves ctime, and ctime cannot be set from user space; as a consequence a
// chmod or touch also invalidates the entry, which costs one re-hash.
//
// The cache lives in a bbolt file. Key layout (41 bytes, big-endian):
//
//	dev u64 | ino u64 | size i64 | mtime_ns i64 | ctime_ns i64 | mode u8
//
// Value: the hash sum, 20 bytes for sha1 and 32 for sha256/blake3.
// New entries are buffered in memory (at most flushAt of them) and written in
// one bbolt transaction, so the in-memory footprint is bounded and hashing a
// large tree does not cost one fsync per file. Losing unflushed entries only
// costs re-hashing.
//
// Writing an entry deletes the entries of the same (dev, ino) with other
// change stamps: they belong to an earlier content of the file, or to a
// deleted file whose inode number was reused, and can never match again. So
// the cache holds about one entry per inode number the filesystem has had in
// use at the same time, not one per file it ever held. Entries of a deleted
// file whose inode number is never reused stay until it is.
package guid
