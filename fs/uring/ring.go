package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The io_uring ABI this file needs (include/uapi/linux/io_uring.h).
const (
	setupCoopTaskrun                            = 1 << 8
	setupSQE128                                 = 1 << 10
	setupSingleIssuer                           = 1 << 12
	setupDeferTaskrun                           = 1 << 13
	featSingleMmap                              = 1 << 0
	enterGetEvents                              = 1 << 0
	offSQRing                                   = 0
	offCQRing                                   = 0x8000000
	offSQEs                                     = 0x10000000
	opURingCmd                                  = 46
	sqeSize                                     = 128 // IORING_SETUP_SQE128
	cqeSize                                     = 16
	sqeCmdOff                                   = 48 // struct io_uring_sqe.cmd: 80 bytes with SQE128
	sqeCmdOpOff                                 = 8  // struct io_uring_sqe.cmd_op
	sqeAddrOff                                  = 16
	sqeLenOff                                   = 24
	sqeFdOff                                    = 4
	sqeUserDataOff                              = 32
	paramsSize                                  = 120
	sqOffHead, sqOffTail, sqOffMask, sqOffArray = 0, 4, 8, 24
)

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // struct io_sqring_offsets
	cqOff                                                                  [10]uint32 // struct io_cqring_offsets
}

var _ [paramsSize - unsafe.Sizeof(params{})]byte
var _ [unsafe.Sizeof(params{}) - paramsSize]byte

// ring is an io_uring instance with one submission slot, used by one
// thread for one outstanding command at a time: the FUSE ring entry it
// serves. One ring per entry keeps each thread's submissions and
// completions its own, with no locking and no completion to route.
type ring struct {
	fd     int
	rings  []byte // SQ and CQ rings (one mapping: IORING_FEAT_SINGLE_MMAP)
	sqeMem []byte

	sqHead, sqTail, sqMask, sqArray *uint32
	cqHead, cqTail, cqMask          *uint32
	cqes                            unsafe.Pointer
}

// newRing sets up a ring whose submissions come only from the calling
// thread (the caller has locked it): IORING_SETUP_SINGLE_ISSUER and
// DEFER_TASKRUN let the kernel run the FUSE request's copy into our
// buffers when this thread waits, instead of interrupting it.
func newRing() (*ring, error) {
	var p params
	p.flags = setupSQE128 | setupSingleIssuer | setupDeferTaskrun
	fd, err := ioURingSetup(1, &p)
	if errors.Is(err, unix.EINVAL) {
		p = params{flags: setupSQE128 | setupCoopTaskrun}
		fd, err = ioURingSetup(1, &p)
	}
	if err != nil {
		return nil, fmt.Errorf("io_uring_setup: %w", err)
	}
	if p.features&featSingleMmap == 0 {
		unix.Close(fd)
		return nil, errors.New("io_uring_setup: kernel lacks IORING_FEAT_SINGLE_MMAP")
	}
	r := &ring{fd: fd}
	sqSize := int(p.sqOff[sqOffArray/4]) + int(p.sqEntries)*4
	cqSize := int(p.cqOff[5]) + int(p.cqEntries)*cqeSize // cq_off.cqes
	size := max(sqSize, cqSize)
	if r.rings, err = unix.Mmap(fd, offSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring: mmap rings: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(fd, offSQEs, int(p.sqEntries)*sqeSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		unix.Munmap(r.rings)
		unix.Close(fd)
		return nil, fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&r.rings[off])) }
	r.sqHead, r.sqTail, r.sqMask, r.sqArray = at(p.sqOff[0]), at(p.sqOff[1]), at(p.sqOff[2]), at(p.sqOff[6])
	r.cqHead, r.cqTail, r.cqMask = at(p.cqOff[0]), at(p.cqOff[1]), at(p.cqOff[2])
	r.cqes = unsafe.Pointer(&r.rings[p.cqOff[5]])
	return r, nil
}

func ioURingSetup(entries uint32, p *params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, errno
	}
	return int(fd), nil
}

func (r *ring) close() {
	unix.Munmap(r.sqeMem)
	unix.Munmap(r.rings)
	unix.Close(r.fd)
}

// prepCmd fills the next submission slot with IORING_OP_URING_CMD op on
// fd, with addr/len and the 80-byte command area cmd, and publishes it.
// Only one command is outstanding per ring, so the slot is free.
func (r *ring) prepCmd(fd int, op uint32, addr unsafe.Pointer, n uint32, cmd []byte) {
	tail := *r.sqTail
	idx := tail & *r.sqMask
	sqe := r.sqeMem[int(idx)*sqeSize : int(idx+1)*sqeSize]
	clear(sqe)
	sqe[0] = opURingCmd
	le.PutUint32(sqe[sqeFdOff:], uint32(int32(fd)))
	le.PutUint32(sqe[sqeCmdOpOff:], op)
	le.PutUint64(sqe[sqeAddrOff:], uint64(uintptr(addr)))
	le.PutUint32(sqe[sqeLenOff:], n)
	copy(sqe[sqeCmdOff:], cmd)
	arr := unsafe.Slice(r.sqArray, *r.sqMask+1)
	arr[idx] = idx
	atomic.StoreUint32(r.sqTail, tail+1)
}

// pending is how many published submissions the kernel has not taken.
func (r *ring) pending() uint32 { return atomic.LoadUint32(r.sqTail) - atomic.LoadUint32(r.sqHead) }

// peek returns a completion if one is there, and consumes it.
func (r *ring) peek() (res int32, ok bool) {
	head := *r.cqHead
	if head == atomic.LoadUint32(r.cqTail) {
		return 0, false
	}
	cqe := unsafe.Add(r.cqes, uintptr(head&*r.cqMask)*cqeSize)
	res = *(*int32)(unsafe.Add(cqe, 8)) // struct io_uring_cqe.res
	atomic.StoreUint32(r.cqHead, head+1)
	return res, true
}

// enter submits what is published and, if wait, blocks until a
// completion arrives (or a signal: Go's preemption signals interrupt it,
// and the caller loops).
func (r *ring) enter(wait bool) error {
	var flags, minComplete uintptr
	if wait {
		flags, minComplete = enterGetEvents, 1
	}
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.pending()), minComplete, flags, 0, 0)
	switch errno {
	case 0, unix.EINTR, unix.EAGAIN, unix.EBUSY:
		return nil
	}
	return errno
}

// wait submits what is published and returns the next completion's result.
func (r *ring) wait() (int32, error) {
	for {
		if res, ok := r.peek(); ok {
			return res, nil
		}
		if err := r.enter(true); err != nil {
			return 0, fmt.Errorf("io_uring_enter: %w", err)
		}
	}
}
