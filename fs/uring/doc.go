// Package uring serves a FUSE connection's requests over io_uring (FUSE
// over io_uring, Linux 6.14+, switched by
// /sys/module/fuse/parameters/enable_uring), instead of read(2) and
// writev(2) on /dev/fuse. go-fuse has no such transport; this one hands
// each request to go-fuse's fuse.ProtocolServer, so the same
// RawFileSystem answers it whichever way it came.
//
// # How a connection gets there
//
// The daemon opens /dev/fuse and mounts with it (Mount), go-fuse answers
// INIT on that descriptor ("/dev/fd/N") offering fuse.CAP_OVER_IO_URING,
// and once the kernel has agreed, Start registers the ring slots. From the
// INIT reply until every queue has a slot, the kernel holds new requests;
// after that it sends every request through the rings, except FORGET and
// INTERRUPT, which still arrive on /dev/fuse (fuse_io_uring_ops), where
// go-fuse's server keeps reading. Notifications (cache invalidation) and
// passthrough registrations are still made on /dev/fuse.
//
// If a registration fails, the kernel clears fc->io_uring and releases the
// held requests to /dev/fuse (fuse_uring_cmd), so a mount that cannot
// register falls back rather than hangs. A ring that cannot even be
// created would leave nothing to fail with, so the rings are created
// (Prepare) before the mount, and a kernel or sysctl (io_uring_disabled)
// that refuses io_uring is found out before INIT promises a ring.
//
// # Threads, queues and slots
//
// The kernel has one queue per possible CPU and queues a request on the
// queue of the CPU its caller runs on. Each queue gets Depth slots; each
// slot is one thread, locked to its goroutine and pinned to the queue's
// CPU, which owns one io_uring (IORING_SETUP_SQE128, SINGLE_ISSUER,
// DEFER_TASKRUN) with one outstanding command. A slot's cycle is one
// io_uring_enter: COMMIT_AND_FETCH submits the reply to the last request
// and waits for the next, which the kernel copies into the slot's buffers
// while this thread waits, on its CPU. A request that blocks (fsync) holds
// its slot only; the kernel hands the next request to another free slot
// of the queue (the most recently freed first).
//
// # Byte layout (include/uapi/linux/fuse.h, fs/fuse/dev_uring.c)
//
// A slot registers two buffers (FUSE_IO_URING_CMD_REGISTER, sqe.addr =
// iovec[2], sqe.len = 2, struct fuse_uring_cmd_req {u64 flags; u64
// commit_id; u16 qid; u8 pad[6]} in the SQE's 80-byte command area):
//
//	headers, struct fuse_uring_req_header, 288 bytes:
//	  0   in_out[128]   fuse_in_header (40 bytes) of the request;
//	                    the reply's fuse_out_header (16 bytes)
//	  128 op_in[128]    the opcode's fixed argument (in_args[0]), if any
//	  256 ring_ent_in_out {u64 flags; u64 commit_id; u32 payload_sz;
//	                       u32 pad; u64 reserved}
//	payload, at least max(8 KiB, max_write): the request's other
//	  arguments (names, data), payload_sz bytes; then the reply's
//	  arguments, all of them (payload_sz set by us)
//
// The fixed argument's length is not given: it is fuse_in_header.len -
// 40 - payload_sz (parseEntry). commit_id is the request's unique, and the
// COMMIT_AND_FETCH that answers it names it.
//
// # Invariants
//
//   - A slot's buffers belong to the kernel from the submission of a
//     command until its completion, and to the slot's thread in between;
//     they are mapped outside the Go heap.
//   - Every request taken from a slot is committed, with an error status if
//     it cannot be parsed or answered: an uncommitted slot is lost to its
//     queue.
//   - INTERRUPT cannot reach a request that came through a ring (go-fuse's
//     server does not know it and answers EAGAIN, which the kernel drops);
//     handlers never depend on being cancelled (see package fs).
package uring
