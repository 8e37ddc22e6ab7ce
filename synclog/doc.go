// Package synclog is the durable sync log of spoolsync: the FUSE layer
// appends one Event per change to the spool, and replicators (one per
// channel, that is per replica host) read the events in order from a
// persistent cursor and ship them.
//
// # Invariants
//
//   - Seqs are 1, 2, 3, ... with no hole and no duplicate, across restarts
//     and failed appends.
//   - When Sync(seq) returns nil, every event up to seq survives a crash of
//     the process or the machine.
//   - Readers of a live Log see only durable events, so a replica never
//     holds an event the master's log could lose in a crash.
//   - Memory does not grow with the log: no index of records is kept;
//     readers stream one segment at a time through a bounded buffer.
//
// # Files
//
// The directory (sync_log_dir, mode 0700) holds:
//
//	LOCK                                   flock(2)ed by the one writer (Open)
//	0000000000000000-0000000000000001.log  segments: %016x-%016x.log = index, first seq
//	0000000000000001-00000000000a3f21.log
//	replica1.cursor                        one per registered channel
//	prealloc-N.tmp                         the next segment, being prepared
//
// Segment indices are consecutive; a segment's first seq is that of the
// first record it holds (or will hold). A reader looking for seq S opens the
// last segment whose first seq is <= S and scans forward.
//
// # Segment layout
//
// A segment is a file of SegmentSize bytes (64 MiB by default), all of it
// written with zeros before use. It starts with a 32-byte header, integers
// little-endian:
//
//	offset size
//	0      8    magic "SPSLOG1\n" (the trailing digit is the format version)
//	8      8    segment index (as in the file name)
//	16     8    first seq (as in the file name)
//	24     4    CRC32-C (Castagnoli) of bytes 0..23
//	28     4    zero
//
// Records follow from offset 32, each starting at a multiple of 8:
//
//	0      4    payload length L, 1 <= L <= 512 KiB
//	4      4    CRC32-C of bytes 0..3 followed by the payload
//	8      L    payload: one encoded event
//	8+L    0-7  zero padding to a multiple of 8
//
// Eight zero bytes where a record would start (L = 0 and CRC = 0), or
// fewer than 8 bytes left in the file, mark the end of the written data.
// A record never spans two segments.
//
// # Event payload
//
// Varints are encoding/binary's (LEB128) in their minimal form only, so a
// payload has a single encoding; strings are a uvarint length and bytes.
//
//	byte     format, 1 (an unknown value is an error, never a guess)
//	byte     Op (1..13, see event.go)
//	uvarint  Seq (>= 1, and the previous record's + 1)
//	varint   Time (zigzag)
//	uvarint  Ino, Size, Flags (Flags < 2^32)
//	string   Path, Path2, Name (each <= 64 KiB, no NUL)
//	uvarint  number of Ranges (<= 4096), then uvarint Off, uvarint Len each
//
// The decoder checks every length against the bytes left before it
// allocates, and then applies Event.Validate (known op, clean relative
// paths, non-empty ranges that do not overflow).
//
// # Reading: three outcomes
//
// Decoding a segment stops at the first offset that holds no valid record
// with the expected seq, with one of three outcomes:
//
//  1. Clean end: a zero header, with nothing but zeros after it.
//  2. Torn tail: a write that never completely reached the disk. The bad
//     record is followed by no valid record, or a whole 512-byte sector
//     between it and the next valid record is zero (never written). Syncs
//     cover a prefix of the file, so a record after an unwritten sector was
//     never acknowledged. A zero header followed by stray bytes is a torn
//     tail as well. Open zeroes the tail (the writer continues there) and
//     logs segment, offset and bytes dropped; OpenReader waits for it to be
//     rewritten.
//  3. Corruption: a bad checksum, length, padding, encoding or seq followed
//     by a valid record (with the expected seq or a later one), with no unwritten sector between
//     them; or any damage in a segment that is not the last (a segment is
//     synced before the next one is created, so only the last can be
//     torn). This is ErrCorrupt, wrapped in a *CorruptError naming the
//     file and offset. Readers stop; Open refuses the log. The operator
//     keeps the file for diagnosis, moves the directory aside and resyncs.
//
// Open scans only the last segment (streaming), to find the end of the data
// and repair a torn tail; older segments are checked as readers reach them.
//
// # Writing, durability and group commit
//
// Append encodes its events into one buffer and writes it with one
// pwrite(2); the events are then written but not yet durable. Sync(seq)
// makes them durable with fdatasync(2). Concurrent callers share the
// fdatasyncs: one caller syncs everything written when it starts while the
// others wait; whoever still needs more starts the next. A seq already
// durable returns at once. A background flusher syncs appended events
// that nobody else has made durable FlushInterval (20 ms) after they woke
// it, so readers are not starved; an event waits at most twice that.
//
// WriteOut (sync_file_range of the records not yet written out) lets a
// caller that flushes the disk cache anyway, the FUSE layer's fsync on the
// same ext4, make the log durable with its own flush (fs.SharedFlush). It
// is a group commit too: a caller whose records a completed write-out
// already covered returns at once.
//
// Why written zeros: on ext4, fdatasync after writing into blocks that are
// already allocated and initialised flushes the data and nothing else. A
// file grown by appending, or preallocated with fallocate(2) (whose extents
// stay "unwritten" until written), changes metadata (size, extent state) on
// every append, so each fdatasync also waits for a journal commit: two
// flushes per message instead of one. So each new segment is written full
// of zeros as prealloc-N.tmp and fsynced, in the background before the
// current one is full (etcd's file pipeline). When the log rolls over, the
// old segment is fdatasynced, the header is written into the new file and
// fdatasynced, the file is renamed to its segment name and the directory
// fsynced.
//
// A failed write (EIO, or ENOSPC on filesystems that allocate on overwrite)
// uses up no seq: the bytes that landed are zeroed and the next Append
// writes at the same offset. Running out of space shows when a segment
// cannot be preallocated: that Append fails, and a later one succeeds once
// space is back. A failed fdatasync is sticky: the page cache may have
// dropped the data, so the Log refuses further work until reopened.
//
// Readers of a live Log (NewReader) return only events with Seq <=
// DurableSeq. OpenReader, for `spoolsync log dump` in another process,
// returns events as soon as they are written and polls for more.
//
// # Cursors
//
// Each channel's cursor is NAME.cursor, 8192 bytes: two 32-byte slots at
// offsets 0 and 4096, in different pages and sectors, so a torn write can
// damage only the slot being written:
//
//	0      8    magic "SPSCUR1\n"
//	8      8    generation counter
//	16     8    seq: the last event the channel has finished with
//	24     4    CRC32-C of bytes 0..23
//	28     4    zero
//
// Generation n is written to slot n%2 with pwrite and fdatasync (the file
// is created full size, so no metadata changes); the valid slot with the
// higher generation wins. A torn write leaves the previous generation.
// New cursors are created as a temp file, fsynced, renamed, and the
// directory fsynced.
//
// # Deletion
//
// After CommitCursor (and DropCursor, and at Open) every segment except the
// active one whose last seq (the next segment's first seq - 1) is <= every
// registered cursor is deleted, oldest first. With no cursor registered
// nothing is deleted. A reader asking for a deleted seq gets ErrPurged: that
// channel needs a full resync.
package synclog
