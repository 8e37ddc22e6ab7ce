// Package replicator is rolling replication: inside the mount process, one
// Channel per replica reads the sync log (package synclog) from its cursor
// and ships the changes to the replica's `spoolsync server` over the wire
// protocol (package wire), the way Cyrus's `sync_client -r` services its
// sync log — with lag in milliseconds and no event ever skipped.
//
// # A batch
//
//  1. gather: wait for the next durable event, then take whatever else is
//     durable now, up to sync_batch_size. There is no timer: a batch leaves
//     as soon as the link is idle, and while it is in flight the log
//     gathers the next one.
//  2. plan (plan.go): the events become steps. Objects created in the
//     batch are sent once, whole, at the name they end with (create, write,
//     rename = one put); objects created and removed are not sent; what the
//     replica has is renamed, linked and removed in log order, so a rename
//     sends no content; changed byte ranges of files the replica has are
//     merged and sent at the end (an mbox append sends the appended bytes);
//     attributes, xattrs and the times of every directory whose entries
//     changed come last.
//  3. resolve (ship.go): each step reads the backing directory — never the
//     mount — for the current state, beneath its root without following a
//     symlink anywhere in a path (tree.go). Files are opened here and held
//     until sent, so a rename before sending cannot lose them. An object
//     already gone (renamed or removed by events after this batch) is
//     remembered as pending, durably — its content, or only its
//     attributes — and the next batch starts from it;
//     if later steps of the batch act on it in place (a link, as in a
//     dotlock), an empty stand-in is put for them to act on.
//  4. offer: the GUIDs of the files to put are offered; content crosses the
//     wire only for what the replica lacks, once per batch however many
//     mailboxes it was delivered to; the rest is copied on the replica.
//  5. send and wait for the Ack, which the replica sends only once the
//     batch is durable there; then the cursor moves (synclog.CommitCursor).
//
// # Invariants
//
//   - The cursor moves only past acknowledged batches; any error closes the
//     connection, and after a capped exponential backoff everything after
//     the cursor is sent again. Re-sending is harmless: the replica skips a
//     batch whose seq it has applied, and its ops are idempotent.
//   - Content is always the newest: it is read when the batch is sent, so a
//     replica can be ahead of the log's position for a file, never behind
//     it once the log is shipped. It is also the same object's: steps carry
//     the inode number their events gave, and a name another object took
//     since makes the object pending rather than shipping the other's
//     bytes. Changes made through a hard link that goes in the batch are
//     sent to it before it goes, read through the file handle its event
//     carries (synclog.FileHandle).
//   - The replica knows a channel as name@log-id: sequence numbers are
//     meaningful only within one log, and a master whose log was
//     re-created must not have its first events taken as already applied.
//   - Memory does not grow with the backlog: the backlog is the log on
//     disk, read a batch at a time.
//   - After an unclean stop, files changed since the last checkpoint are
//     recorded as OpRescan and shipped whole (package fs/recovery).
//   - A replica this log has never shipped to, or one whose tree is of an
//     older epoch (the old master after a failover), is first brought to
//     the current tree by a whole-tree resync (resync.go) that keeps what
//     only the replica holds — in its quarantine after a failover — and
//     the cursor then starts where that resync started — where its first
//     attempt started, if an earlier one was cut short (its batches may
//     have left on the replica what later events removed). What that
//     resync found gone when it read a batch becomes pending: the events
//     that moved it come after the cursor.
//   - A batch the replica was applying when it died is sent again with
//     the same events (the replica replays it), and then the directories
//     it touched are resynced: a few op sequences do not replay exactly
//     (an exchange applied twice swaps back).
//   - sync_mode sync (syncmode.go): an fsync on the mount waits until
//     every channel's cursor has passed its events, or until a channel is
//     given up on after sync_timeout (degraded, logged, until a batch that
//     took everything durable is acknowledged).
//   - Every batch applies, whatever state the replica is in (see below).
//
// # Convergence: a step that cannot apply becomes the master's present state
//
// The replica's tree is not always the one a batch was planned against: a
// batch cut short by a crash and replayed, a resync (a replay's, a
// failback's, an administrator's `spoolsync resync --delete`) that brought
// paths ahead of the log, files lost or changed behind spoolsync's back.
// A step whose precondition does not hold there — a rename's or link's
// source gone, a file to write or give attributes gone, a name in the way,
// a directory not empty, a directory missing — is neither retried nor
// refused, nor healed a step at a time: the replica skips it, applies the
// rest of the batch, and lists the paths it touches before its Ack
// (wire.Owed). The channel asks for those paths durably (the resync
// marker, askResync) before its cursor passes the batch, and before the
// next batch resyncs them: each becomes the master's present state —
// present with its content (by GUID when the replica has it), attributes
// and link identity, or absent. So:
//
//   - the same batch is never sent twice for the same reason, and the
//     backlog drains whatever the replica holds;
//   - replaying an old batch after a newer resync can only bring a path
//     to the master's present state: what the old steps did where they
//     could is undone by the log's later events, and what they could not
//     do is replaced by the present;
//   - an Ack lost with a crash of either side loses the owed list (the
//     replica does not keep it): the batches the replica says it applied
//     beyond the cursor have their directories resynced instead;
//   - a resync (of owed paths, of a replayed batch's directories, a
//     first contact's or a failback's) reads the tree as it is, while the
//     batches after the cursor still hold older events. Their renames,
//     exchanges, links and removals on the resynced subtrees are not sent
//     but owed (ahead.go): replayed there, an exchange would swap back and
//     a rename move a newer object over an older one's name.
//
// What is no precondition of the tree still fails the batch and is sent
// again after a backoff: a disk error or a full disk on the replica, a
// path it refuses, content by GUID it no longer holds (then sent inline).
// A batch refused the same way maxRefusals times (code apply) is passed
// by resyncing its directories (passRefused).
//
// Continuous verification (verify.go, sync_verify_interval): each
// channel's replica is compared with the backing tree by per-directory
// Merkle digests (package digest), top-down, reading only the subtrees
// that differ, when the channel is caught up; a difference seen at two
// looks is logged with its path, counted in Status (which says "in sync"
// only with backlog 0, no resync owed and a clean last verify) and, with
// sync_verify repair, resynced. The walk is paced to 3% of the machine.
//
// Resync (resync.go) is also `spoolsync resync`: the master's walk and the
// replica's manifest merged in one order, the differences shipped through
// the same resolve/offer/send path.
package replicator
