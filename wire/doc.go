// Package wire is the spoolsync replication protocol ("csync", TCP port
// 2005): what a master (the client, which ships changes) and a replica
// (the server, `spoolsync server`, which applies them) say to each other.
// This comment is the specification; it is meant to be enough for a
// second implementation.
//
// # Overview
//
// A connection goes: preambles and greeting in clear → optional STARTTLS
// (TLS 1.3) and a fresh greeting → SASL authentication → Hello/Welcome,
// which fixes the epochs, the frame limits and compression → the session,
// in which the client sends batches of ops, content offers, manifest and
// digest requests, and the server answers with acks, lacks, manifests and
// digests.
//
// # Field encodings
//
// All integers are unsigned LEB128 varints ("uvarint", as
// encoding/binary.AppendUvarint: 7 bits per byte, low group first, high
// bit set on every byte but the last), at most 10 bytes and minimal: a
// multi-byte varint whose last byte is 0x00 is an error. Signed integers
// (times) are zigzag-encoded first ("varint", as
// encoding/binary.AppendVarint). Fields named u8 are one byte. A bool is
// one byte, 0 or 1. A string or bytes field is a uvarint length followed
// by that many bytes. uid, gid, mode, flags and masks must fit in 32 bits.
// Times are Unix nanoseconds. A GUID is a mode byte followed by its digest:
// mode 0 = none (no digest bytes), 1 = sha256 (32 bytes), 2 = blake3 (32),
// 3 = sha1 (20); any other mode is an error. A payload must be consumed
// exactly: trailing bytes are an error. So every message has exactly one
// encoding (the golden tests pin them).
//
// # Frames
//
//	frame   = type:u8  length:uvarint  payload:length bytes
//
// length is the payload's size; it is checked against the receiver's
// MaxFrameSize before anything is allocated or read. Each end announces
// its MaxFrameSize in the handshake (Greeting and Hello; between MinFrameSize
// 64 KiB and MaxFrameSizeLimit 64 MiB; default 4 MiB) and must never send
// a larger payload. Before the client has authenticated (until AuthOK) a
// server accepts payloads of at most MaxPreAuthFrameSize (16 KiB) whatever
// it announced: an unauthenticated peer cannot make it allocate more.
// Types 0x80-0xFF are optional: a receiver that does not
// know one skips its payload by length and goes on, so later versions can
// add advisory messages. An unknown type below 0x80 is a protocol error.
//
// # Message types
//
// Each message's payload is its fields, in the order listed, in the
// encodings above ("path" is a string that must pass ValidPath).
//
//	0x01 Greeting      S→C  caps:uvarint  n:uvarint  n×mech:string  epoch:uvarint  maxframe:uvarint
//	0x02 StartTLS      C→S  (empty)
//	0x03 Proceed       S→C  (empty)
//	0x04 Auth          C→S  mech:string  has_initial:bool  [initial:bytes, only if has_initial]
//	0x05 AuthChallenge S→C  data:bytes
//	0x06 AuthResponse  C→S  data:bytes
//	0x07 AuthOK        S→C  identity:string
//	0x08 Hello         C→S  caps:uvarint  epoch:uvarint  maxframe:uvarint
//	0x09 Welcome       S→C  caps:uvarint  [maxops:uvarint  maxbytes:uvarint, only if caps has CapBatchLimits]
//	0x10 BatchBegin    C→S  seq:uvarint  channel:string
//	0x11 BatchEnd      C→S  seq:uvarint  opcount:uvarint
//	0x12 Ack           S→C  seq:uvarint
//	0x13 PositionRequest C→S  channel:string
//	0x14 Position      S→C  channel:string  applied:uvarint  interrupted:uvarint  epoch:uvarint
//	0x15 Owed          S→C  seq:uvarint  n:uvarint  n×path  (1-1024 paths; just before Ack{seq})
//	0x20 Put           C→S  path  content:u8  mode uid gid:uvarint  mtime:varint  size:uvarint  guid
//	0x21 WriteRanges   C→S  path  size:uvarint  n:uvarint  n×(off:uvarint len:uvarint)  guid
//	0x22 Truncate      C→S  path  size:uvarint
//	0x23 Mkdir         C→S  path  mode uid gid:uvarint  mtime:varint
//	0x24 Rmdir         C→S  path
//	0x25 Unlink        C→S  path
//	0x26 Rename        C→S  src:path  dst:path  flags:uvarint
//	0x27 Link          C→S  existing:path  new:path
//	0x28 Symlink       C→S  path  target:string  uid gid:uvarint  mtime:varint
//	0x29 Mknod         C→S  path  kind:u8  mode uid gid:uvarint  mtime:varint
//	0x2A SetAttr       C→S  path  mask:uvarint  mode uid gid:uvarint  mtime:varint  atime:varint
//	0x2B SetXattr      C→S  path  name:string  value:bytes
//	0x2C RemoveXattr   C→S  path  name:string
//	0x2D Quarantine    C→S  path  epoch:uvarint  (move path to .spoolsync-quarantine/<epoch>/<path>)
//	0x2E SetXattrs     C→S  path  n:uvarint  n×(name:string value:bytes)
//	0x30 Data          C→S  the content bytes themselves (no length prefix; never empty)
//	0x31 Offer         C→S  id:uvarint  n:uvarint  n×guid
//	0x32 Lacks         S→C  id:uvarint  n:uvarint  bitmap:ceil(n/8) bytes
//	0x40 ManifestRequest C→S  n:uvarint  n×path  guidmode:u8
//	0x41 ManifestEntry S→C  path  kind:u8  mode uid gid:uvarint  mtime:varint  size nlink inode:uvarint
//	                        guid  target:string  n:uvarint  n×(name:string value:bytes)
//	0x42 ManifestEnd   S→C  count:uvarint
//	0x43 DigestRequest C→S  guidmode:u8  n:uvarint  n×(dir:string digest:32 bytes)
//	0x44 DigestReply   S→C  dir:string  tag:u8  digest:32 bytes  count:uvarint
//	0x45 DigestEntry   S→C  name:string  kind:u8  attr:32 bytes  [sub:32 bytes, only if kind is 2]
//	0x50 Ping          both id:uvarint
//	0x51 Pong          both id:uvarint
//	0x52 Goodbye       both reason:string
//	0x7F Error         both code:u8  seq:uvarint  path:string  message:string
//
// # Handshake
//
// Every byte below is in frames except the preamble, which is the six
// bytes "CSYNC" 0x01 (magic and protocol version 1). A change of version
// is a new preamble; features within a version are negotiated by caps.
//
//	S: preamble, Greeting{caps, mechs, epoch, maxframe}
//	C: preamble, then either
//	   StartTLS                  S: Proceed; both run a TLS handshake
//	                             S: Greeting (again, now over TLS)
//	   or nothing (no TLS)
//	C: Auth{mech, initial}      S: AuthChallenge ↔ C: AuthResponse, 0-4 rounds
//	                            S: AuthOK{identity}   or Error, and close
//	C: Hello{caps, epoch, maxframe}
//	                            S: Welcome{caps}      or Error, and close
//
// Hello caps: CapZstd (4) asks for compression, CapBatchLimits (8) says the
// client can take batch limits. Welcome grants what it grants of those;
// with CapBatchLimits it carries the server's limits per batch, most ops
// and most content bytes, which the client must respect (a batch's first
// op with content may exceed the byte limit alone). A server enforces
// them whether it announced them or not: a bigger batch is refused with
// code toolarge.
//
// Greeting caps: CapStartTLS (1) the server offers STARTTLS, CapTLSRequired
// (2) it refuses Auth before TLS, CapZstd (4) it can compress. Mechs are
// the SASL mechanisms accepted on the connection as it is. After TLS the
// client must discard the first Greeting, which an attacker could have
// forged, and use the second. Bytes the receiver already holds after
// StartTLS or after Proceed (plaintext sent ahead of the TLS handshake)
// are a protocol error: they would be injected, not protected, data.
//
// The server verifies a client certificate when it presents one and the
// server has client CAs; a certificate from another CA fails the TLS
// handshake. SASL (RFC 4422) mechanisms:
//
//   - PLAIN (RFC 4616): offered and accepted only over TLS, from a
//     loopback address (or a Unix socket, or net.Pipe), or when the server
//     sets AllowPlaintext. The authcid is the identity: "authname", or
//     "authname@realm" when the client has a realm. An authzid, if given,
//     must equal it.
//   - EXTERNAL: offered only over TLS with a verified client certificate.
//     The identity is the certificate's subject CN, or, when the client
//     sends an authzid, that authzid if it is the CN, a DNS SAN or an email
//     SAN of the certificate.
//
// The identity must then be an admin on the replica. A refusal (code auth
// or notadmin; also tls, version, protocol, fenced) is logged by the
// server with the peer address, delayed by FailDelay (1 s by default, so
// guessing passwords is slow), sent as an Error frame with a message
// naming the reason ("authentication failed for \"bob\"", "\"bob\" is not
// in admins on this replica"), and the server closes. Wrong password and
// unknown user get the same message.
//
// Hello carries the client's epoch. If it is below the server's epoch
// (from the Greeting), the server refuses with code fenced, naming its
// epoch: that master lost a failover and must not write here. Hello caps
// ask for features (CapZstd); Welcome grants a subset. If CapZstd is
// granted, every byte after the Welcome frame, in both directions, is a
// single zstd stream (RFC 8878) per direction; the client sends nothing
// between Hello and reading Welcome, so the switch point is unambiguous.
// A sender ends a zstd block (flush) whenever it is about to wait for the
// peer. A sender's window must be at most ZstdMaxWindow (8 MiB); a receiver
// refuses a larger one with an Error (code toolarge) rather than allocate
// it, and the decompressed bytes are frames held to the same limits as
// uncompressed ones. Compression starts only after authentication, so an
// unauthenticated peer never reaches the decompressor.
//
// # Session
//
// After Welcome, the client (C) and server (S) may send:
//
//	C: BatchBegin · ops (each Put or WriteRanges immediately followed by its Data) · BatchEnd
//	C: Offer             S: Lacks (same id), in order
//	C: ManifestRequest   S: ManifestEntry… ManifestEnd, in order
//	C: PositionRequest   S: Position, in order
//	C: DigestRequest     S: (DigestReply DigestEntry…)… one reply per dir, in order
//	S: Owed{seq, paths}… Ack{seq}   after batch seq is durable
//	either: Ping → Pong; Goodbye; Error
//
// The receiver enforces: ops only inside a batch; BatchBegin not inside
// one; seqs strictly increase on a connection (seq ≥ 1); BatchEnd names
// the open batch and its exact op count; Offer, ManifestRequest and
// PositionRequest only between batches; after a Put with content 1 or a
// WriteRanges, only Data frames until exactly the announced bytes have
// come; acks increase; manifest entries strictly increase (below) and
// ManifestEnd counts them; no handshake message after the handshake, and
// no message in the wrong direction. Ping, Pong and Goodbye may come
// anywhere but inside Data. The client may pipeline: send more batches,
// offers and requests before the answers to earlier ones arrive. A
// DigestRequest comes only between batches, and a client receives exactly
// the count of DigestEntry messages its DigestReply announced, names
// strictly increasing byte-wise, before anything but Ping, Pong or
// Goodbye. The
// server answers offers, manifest requests and position requests in the
// order received. An offer answered while an earlier batch is still being
// applied describes the replica before that batch: a Put by GUID relying
// on it can be refused (lacking-guid) if that batch removed the content,
// and the client then sends the batch again with the content.
//
// Heartbeat. The client pings a connection that is idle, or on which it
// waits for an answer, every few seconds, and gives the server up when
// nothing has come from it for a while (15 s by default). So the server
// answers a Ping at once, also while it applies a batch.
//
// Batches. seq is the master's sync-log sequence number of the batch;
// channel names its log channel ("" for the default one). The server
// applies ops in order and sends Ack{seq} only once batch seq — and every
// earlier one — is durable. A reconnecting client resends every batch not
// acked; applying a batch twice must be harmless, so the server may
// remember the last seq it applied per channel and ack a repeat at once.
//
// Every batch applies, whatever state the replica is in. An op whose
// precondition does not hold on the replica's tree — its object is gone
// (a rename's or link's source, a file to write, truncate or give
// attributes), a name is in the way (an entry of another type, a
// directory not empty), a directory that should hold it is missing — is
// not an error: the replica skips that op, applies the rest of the batch,
// and before the Ack sends Owed messages listing the paths the skipped ops
// touch (for a path whose parent directory the replica lacks, or has as
// another type, the topmost such ancestor instead). The client then owes
// the replica, before its next batch, the master's present state of each
// owed path: present with its content (by GUID when the replica holds
// it), attributes and link identity, or absent — what a resync of those
// paths ships. A client also does not send a rename, link or removal
// older than a resync that covered its paths (it owes them instead). So a
// step never brings a path to a state the master no longer has for
// longer than that, the same batch never fails twice, and replaying an
// old batch after a newer resync can only bring paths back to the
// master's present state. Owed paths are not kept by the replica: a
// client that loses the Ack (a crash) owes the directories of the
// batches the replica says it applied beyond those acknowledged. Refusals stay for what is no precondition of the tree: a path the
// replica refuses (badpath), content it does not hold (lacking-guid), an
// I/O error of its disk (apply).
//
// Position. A client asks, typically right after the handshake, where the
// replica stands for one of its channels: PositionRequest{channel} is
// answered by Position{channel, applied, interrupted}. The replica keys
// its progress by the authenticated identity and the channel, so two
// masters (or two channels) never share a position. applied is the seq of
// the last batch durable on the replica (0 = none yet); interrupted, when
// not 0, is the seq of a batch whose apply was cut short by a crash: the
// tree may hold part of it, and the client must resend that batch (its
// ops are idempotent) before any later one. The client resumes with the
// first batch after applied.
//
// Ops. Modes are permission bits only (≤ 07777). Every path is relative to
// the replica root. Symlinks are never followed when applying.
//
//   - Put: create or replace the regular file path as a whole, atomically
//     (temp file, fsync, rename). content 1 (inline): exactly size bytes
//     follow in Data frames. content 2 (by GUID): no Data; the replica
//     copies or links content it holds under guid (required, verified),
//     or fails the batch with code lacking-guid. guid is optional for
//     inline content.
//   - WriteRanges: the existing file path is set to size bytes and each
//     range's bytes (which follow in Data frames, in range order, the
//     lengths added up) are written at its offset. 1-1024 ranges, each
//     non-empty, sorted, not overlapping, inside size. guid, if not none,
//     is the file's GUID afterwards.
//   - Truncate: set the size of the existing file path.
//   - Mkdir: create directory path (or set its attributes if it exists).
//   - Rmdir, Unlink: remove the empty directory / the non-directory path.
//   - Rename: renameat2(src, dst, flags); flags 1 = RENAME_NOREPLACE,
//     2 = RENAME_EXCHANGE, not both.
//   - Link: new becomes a hard link to existing.
//   - Symlink: create symlink path → target. target is opaque bytes (it
//     may be absolute or contain ".."; the replica never follows it):
//     1-4096 bytes, no NUL.
//   - Mknod: kind 4 (FIFO) or 5 (socket); no other kind is accepted.
//     Kind 5 was added later: upgrade replicas before masters, an older
//     replica ends the connection on it (protocol error).
//   - SetAttr: mask 1 = mode, 2 = uid and gid, 4 = mtime and atime; at
//     least one bit, no others. Fields outside the mask are ignored.
//   - SetXattr, RemoveXattr: name is 1-255 bytes, no NUL, in the user.,
//     trusted., security. or system. namespace; value ≤ 64 KiB.
//   - SetXattrs: path's extended attributes become the listed ones
//     (0-256, sorted by name, names unique, each as in SetXattr); any
//     other in the user. and trusted. namespaces is removed (security.
//     and system. ones are set when listed, never removed: the replica's
//     own labels and ACL defaults stay). What rolling replication sends
//     with an entry's attributes, so that an attribute removed on the
//     master goes too.
//
// Content dedup. Offer lists 1-1024 GUIDs (no mode 0) the client may
// ship; Lacks answers with the same id and count and a bitmap whose bit i
// (byte i/8, value 1<<(i%8)) is set when the server does not hold GUID i.
// Unused bits are zero. The client then sends Put by GUID for what the
// server holds and inline content for what it lacks.
//
// Manifests. ManifestRequest names 0-1024 paths (none = the whole tree),
// strictly increasing in manifest order and none inside another, and the
// GUID mode the client compares content in; the files' GUIDs come in that
// mode, so a master and a replica with different guid_modes still compare
// (the replica hashes in the master's mode once and caches it). The
// server answers with one ManifestEntry per name in the requested
// subtrees — each requested path itself included, the root excluded, a
// requested path that does not exist simply absent — then ManifestEnd
// with the number of entries. The order is that of a depth-first walk
// visiting each directory's names sorted byte-wise, a directory before
// its contents (filepath.WalkDir order); equivalently, paths compared
// component by component, byte-wise (ComparePaths). It is not plain string
// order: "a/b" comes before "a.txt". So both sides can merge-walk their
// trees without holding either. Entry kinds: 1 file, 2 dir, 3 symlink, 4
// FIFO, 5 socket. guid only for files (none if unknown), target only for symlinks;
// entries with the same inode are hard links of one file; at most 256
// xattrs, sorted by name, names unique.
//
// Digests. The continuous verifier compares the master's tree with the
// replica's through per-directory Merkle digests (package digest defines
// what they cover, byte for byte). DigestRequest names 1-1024 directories
// ("" for the root, else a path), strictly increasing in ComparePaths
// order, each with the client's own digest of it, and the GUID mode the
// files' GUIDs are hashed in. The server answers each, in order, with a
// DigestReply: tag 0 absent (nothing at dir), 3 not a directory, 1 same
// (its digest equals the client's: no entries follow), 2 differs (its
// digest, then count DigestEntry messages: the directory's entries sorted
// byte-wise by name, each one path component, with its kind, attribute
// hash and, for a directory, its digest). A digest or attribute hash is
// 32 bytes; with tags 0 and 3 the digest is zero and count 0, and the
// sub-digest of a non-directory is absent. So a tree that is the same
// costs one request and one reply, 37 bytes each (frames of the root), and the client descends only
// into directories whose digests differ. The server computes digests from
// its tree as it is at the request, not from what it applied.
//
// Errors. An Error frame is always its sender's last frame: it closes the
// connection after it. code is one of the Code constants (protocol 1, auth
// 2, notadmin 3, fenced 4, badpath 5, toolarge 6, lacking-guid 7, apply 8,
// tls 9, version 10, shutdown 11, internal 12, missing 13; a receiver
// treats unknown codes like internal); seq and path name the batch and
// path concerned, or are 0 and "". missing (13) is no longer sent: an op whose
// object the replica lacks makes its path owed (Owed) instead; a client
// treats it like apply. A receiver that finds a violation — malformed frame, limit
// exceeded, unknown required type, message out of order, invalid path —
// sends Error and closes. The client then reconnects and resends what was
// not acked.
//
// # Limits
//
// Paths (ValidPath): relative, slash-separated, clean — not empty, no
// leading or trailing "/", no "//", no "." or ".." component, no NUL —
// each component ≤ 255 bytes, whole ≤ 4096 bytes. Sizes ≤ 2^63-1. SASL
// mechanism names 1-20 bytes of A-Z 0-9 - _; at most 16 offered; SASL data
// ≤ 8 KiB; identities ≤ 1024 bytes; channel ≤ 255 bytes; messages and
// Goodbye reasons ≤ 4096 bytes, UTF-8 without NUL. Counts are bounded as
// given above and by the bytes left in the payload, so no count makes a
// receiver allocate more than the frame it arrived in.
//
// # Using the package
//
// Dial (or Client over an existing net.Conn) runs the client handshake;
// Server runs the server's on an accepted net.Conn. Both return a *Conn:
// Send validates and buffers a message, SendData streams file content as
// Data frames in bounded memory, Flush pushes what was sent (ending the
// zstd block), Recv returns the next message after checking it against
// the rules above, RecvData copies Data frames to an io.Writer. Decoders
// validate everything; a *ProtoError with a Code says what went wrong,
// and errors.Is(err, ErrFenced) etc. tells the cases apart.
package wire
