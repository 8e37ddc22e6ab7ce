package uring

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// ParamPath is the fuse module's switch for io_uring: while it reads N,
// the kernel does not offer FUSE_OVER_IO_URING in INIT.
const ParamPath = "/sys/module/fuse/parameters/enable_uring"

// Unavailable says why this kernel will not serve a mount over io_uring,
// or returns nil if it will (as far as can be told before mounting).
func Unavailable() error {
	b, err := os.ReadFile(ParamPath)
	if err != nil {
		return fmt.Errorf("FUSE over io_uring: %w (the kernel needs CONFIG_FUSE_IO_URING, Linux 6.14+)", err)
	}
	if strings.TrimSpace(string(b)) != "Y" {
		return fmt.Errorf("FUSE over io_uring is off in the kernel: %s is %s (echo Y > %s)", ParamPath, strings.TrimSpace(string(b)), ParamPath)
	}
	// io_uring itself may be refused (kernel.io_uring_disabled, seccomp).
	r, err := newRing()
	if err != nil {
		return fmt.Errorf("FUSE over io_uring: %w (see sysctl kernel.io_uring_disabled)", err)
	}
	r.close()
	return nil
}

// Config sizes a transport.
type Config struct {
	// Depth is how many requests each CPU's queue can hand to this
	// process at once: one thread per request. A request that blocks
	// (fsync) holds its thread; the others keep serving.
	Depth int
	// MaxWrite is the mount's MaxWrite (fuse.MountOptions): the kernel
	// refuses buffers smaller than the largest request it may send.
	MaxWrite int
	Logger   *slog.Logger
	// BadQueues makes every registration name a queue the kernel does
	// not have, so that it fails (EINVAL) as a real one can: only for
	// tests of the fallback to /dev/fuse.
	BadQueues bool
}

// DefaultDepth is Config.Depth's default where it keeps the slots of all
// queues within maxSlots; more CPUs get fewer slots each, down to 2.
const (
	DefaultDepth = 8
	maxSlots     = 64
)

// Transport serves a FUSE connection's requests from io_uring queues.
type Transport struct {
	cfg        Config
	queues     int
	payloadCap int

	// Set before goCh is closed; read by the workers after.
	devFD     int
	ps        *fuse.ProtocolServer
	cancelled bool
	goCh      chan struct{}
	goOnce    sync.Once

	registered chan error
	workers    int
	wg         sync.WaitGroup
}

// Prepare makes the rings and their threads, one ring per request slot,
// Depth slots for each of the kernel's queues (one per possible CPU),
// before anything is mounted: if this kernel or its io_uring_disabled
// sysctl refuses io_uring, that is found out before INIT promises the
// kernel a ring, after which the kernel would hold every request until
// the ring is registered.
func Prepare(cfg Config) (*Transport, error) {
	queues := possibleCPUs()
	if cfg.Depth <= 0 {
		// Each slot is a thread and about 2 × MaxWrite of buffers: on a
		// machine with many CPUs, fewer slots per queue.
		cfg.Depth = min(DefaultDepth, max(2, maxSlots/queues))
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	page := os.Getpagesize()
	payload := max(minPayload, (cfg.MaxWrite+page-1)/page*page)
	t := &Transport{
		cfg:        cfg,
		queues:     queues,
		payloadCap: payload,
		goCh:       make(chan struct{}),
	}
	t.workers = t.queues * cfg.Depth
	t.registered = make(chan error, t.workers)
	ready := make(chan error, t.workers)
	allowed := allowedCPUs()
	for q := 0; q < t.queues; q++ {
		for range cfg.Depth {
			t.wg.Add(1)
			go t.run(uint16(q), allowed[q], ready)
		}
	}
	var first error
	for range t.workers {
		if err := <-ready; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		t.Close()
		return nil, first
	}
	return t, nil
}

// Queues and Depth describe the transport for logs.
func (t *Transport) Queues() int { return t.queues }
func (t *Transport) Depth() int  { return t.cfg.Depth }

// Close ends a transport that was never started. A started one ends with
// its connection (unmount), which completes every ring command.
func (t *Transport) Close() {
	t.goOnce.Do(func() {
		t.cancelled = true
		close(t.goCh)
	})
	t.wg.Wait()
}

// Wait returns when every ring thread has stopped.
func (t *Transport) Wait() { t.wg.Wait() }

// Start registers every ring slot with the connection on devFD, whose
// INIT was answered with fuse.CAP_OVER_IO_URING, and serves its requests
// with ps. If a registration fails, the kernel has gone back to
// /dev/fuse for this connection (fuse_uring_cmd clears fc->io_uring),
// and Start returns the error; the slots that did register stay idle
// until the connection ends.
func (t *Transport) Start(devFD int, ps *fuse.ProtocolServer) error {
	t.goOnce.Do(func() {
		t.devFD, t.ps = devFD, ps
		close(t.goCh)
	})
	var first error
	for range t.workers {
		if err := <-t.registered; err != nil && first == nil {
			first = err
		}
	}
	return first
}

// InitProtocol gives ps the INIT that the kernel sent (and fuse.Server
// answered) on /dev/fuse, so that ps parses requests for the same
// protocol version and capabilities.
func InitProtocol(ps *fuse.ProtocolServer, kernel *fuse.InitIn) error {
	in := *kernel
	in.InHeader = fuse.InHeader{Length: uint32(unsafe.Sizeof(in)), Opcode: 26 /* FUSE_INIT */, Unique: 2}
	b := unsafe.Slice((*byte)(unsafe.Pointer(&in)), unsafe.Sizeof(in))
	out := make([]byte, 4096)
	n, st := ps.HandleRequest([][]byte{b}, [][]byte{out})
	if !st.Ok() {
		return fmt.Errorf("FUSE over io_uring: INIT: %v", st)
	}
	if n < outHeaderSize || int32(le.Uint32(out[4:])) != 0 {
		return fmt.Errorf("FUSE over io_uring: INIT answered with error %d", int32(le.Uint32(out[4:])))
	}
	return nil
}

// run is one ring slot's thread: it owns the ring (SINGLE_ISSUER) and
// the slot's buffers, and handles the slot's requests one at a time.
func (t *Transport) run(qid uint16, cpu bool, ready chan<- error) {
	defer t.wg.Done()
	// Never unlocked: the thread's CPU affinity ends with it (Go
	// terminates a locked thread whose goroutine returns).
	runtime.LockOSThread()
	if cpu {
		// The kernel queues a request on the queue of the CPU the
		// caller runs on; serving it from that CPU does not wake the
		// other one.
		var set unix.CPUSet
		set.Set(int(qid))
		unix.SchedSetaffinity(0, &set)
	}
	w, err := newWorker(qid, t.payloadCap)
	ready <- err
	if err != nil {
		return
	}
	defer w.close()
	<-t.goCh
	if t.cancelled {
		return
	}
	w.serve(t)
}

type worker struct {
	qid     uint16
	r       *ring
	mem     []byte // headers, then payload: off the Go heap, the kernel writes it
	hdr     []byte
	payload []byte
	scratch []byte
	iov     *[2]unix.Iovec // in mem too: the kernel reads it at registration
}

func newWorker(qid uint16, payloadCap int) (*worker, error) {
	r, err := newRing()
	if err != nil {
		return nil, err
	}
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, page+payloadCap, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("FUSE ring buffer: mmap %d bytes: %w", page+payloadCap, err)
	}
	w := &worker{qid: qid, r: r, mem: mem, hdr: mem[:headerSize], payload: mem[page:], scratch: make([]byte, payloadCap)}
	w.iov = (*[2]unix.Iovec)(unsafe.Pointer(&mem[512]))
	w.iov[0].Base = &w.hdr[0]
	w.iov[0].SetLen(headerSize)
	w.iov[1].Base = &w.payload[0]
	w.iov[1].SetLen(payloadCap)
	return w, nil
}

func (w *worker) close() {
	w.r.close()
	unix.Munmap(w.mem)
}

// connectionGone are the results of a ring command once the connection
// has ended (unmount, abort) or the ring is being torn down.
func connectionGone(errno unix.Errno) bool {
	return errno == unix.ENOTCONN || errno == unix.ECONNABORTED || errno == unix.ECANCELED ||
		errno == unix.ENODEV || errno == unix.EBADF
}

func (w *worker) serve(t *Transport) {
	qid := w.qid
	if t.cfg.BadQueues {
		qid = uint16(t.queues) + qid
	}
	w.r.prepCmd(t.devFD, cmdRegister, unsafe.Pointer(w.iov), 2, cmdReq(qid, 0))
	for w.r.pending() > 0 {
		if err := w.r.enter(false); err != nil {
			t.registered <- fmt.Errorf("FUSE over io_uring: register queue %d: io_uring_enter: %w", w.qid, err)
			return
		}
	}
	// A registered slot completes only when a request arrives; an
	// error completes at once.
	res, got := w.r.peek()
	if got && res < 0 {
		t.registered <- fmt.Errorf("FUSE over io_uring: register queue %d: %w", w.qid, unix.Errno(-res))
		return
	}
	t.registered <- nil
	for {
		if !got {
			var err error
			if res, err = w.r.wait(); err != nil {
				t.cfg.Logger.Error("FUSE over io_uring: queue stopped", "queue", w.qid, "err", err)
				return
			}
		}
		got = false
		if res < 0 {
			if errno := unix.Errno(-res); !connectionGone(errno) {
				t.cfg.Logger.Error("FUSE over io_uring: ring command failed; this slot stops", "queue", w.qid, "err", errno)
			}
			return
		}
		unique := w.handle(t)
		w.r.prepCmd(t.devFD, cmdCommitAndFetch, unsafe.Pointer(w.iov), 2, cmdReq(w.qid, unique))
	}
}

// handle answers the request in the slot's buffers, in place.
func (w *worker) handle(t *Transport) (unique uint64) {
	req, err := parseEntry(w.hdr, len(w.payload))
	if err != nil {
		t.cfg.Logger.Error("FUSE over io_uring: answering EIO", "queue", w.qid, "err", err)
		putErrorReply(w.hdr, req.unique, -int32(unix.EIO))
		return req.unique
	}
	in := w.payload[:req.payloadLen]
	if req.opcode != opWrite && len(in) > 0 {
		// The reply is written into the same buffer; a handler that
		// reads its name or value after it has started writing its
		// result must not see it overwritten. WRITE's data is read
		// before its 8-byte reply is written, and is large: not copied.
		in = w.scratch[:copy(w.scratch, in)]
	}
	n, st := t.ps.HandleRequest(
		[][]byte{w.hdr[inOutOff : inOutOff+inHeaderSize], w.hdr[opInOff : opInOff+req.opLen], in},
		[][]byte{w.hdr[inOutOff : inOutOff+outHeaderSize], w.payload})
	switch {
	case !st.Ok():
		putErrorReply(w.hdr, req.unique, -int32(st))
	case n < outHeaderSize:
		// No reply wanted (go-fuse suppresses some); the slot must
		// still be committed to get the next request.
		putErrorReply(w.hdr, req.unique, 0)
	default:
		le.PutUint32(w.hdr[payloadSizeOff:], uint32(n-outHeaderSize))
	}
	return req.unique
}

// possibleCPUs is the kernel's number of ring queues: num_possible_cpus().
func possibleCPUs() int {
	b, err := os.ReadFile("/sys/devices/system/cpu/possible")
	if err != nil {
		return runtime.NumCPU()
	}
	n := 0
	for _, part := range strings.Split(strings.TrimSpace(string(b)), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		z := a
		var err2 error
		if isRange {
			z, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || z < a {
			return runtime.NumCPU()
		}
		n += z - a + 1
	}
	return n
}

// allowedCPUs says, per queue, whether this process may run on that CPU.
func allowedCPUs() map[int]bool {
	m := map[int]bool{}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return m
	}
	for i := 0; i < len(set)*64; i++ {
		if set.IsSet(i) {
			m[i] = true
		}
	}
	return m
}
