// Package fusestats counts the FUSE requests a mount serves, by opcode, for
// benchmarks: how many round trips a mail server's delivery costs is the
// number the mount's CPU per message follows (docs/BENCHMARKS.md).
//
// It is switched on by the environment, not the configuration, like
// SPOOLSYNC_CPUPROFILE: when SPOOLSYNC_FUSE_STATS names a file, FromEnv
// wraps the mount's fuse.RawFileSystem in a counter and writes the counts
// there as one JSON object, rewritten (temp file, rename) whenever the
// process gets SIGUSR1 and when the mount ends:
//
//	{"dumps": 3, "ops": {"CREATE": 3000, "GETATTR": 12012, ...}}
//
// "dumps" grows by one per write, so a benchmark that sends SIGUSR1 knows
// when the file it reads is the answer. Names are the kernel's opcodes
// (FUSE_LOOKUP without the prefix). Writev is counted as WRITE, one per
// request. FORGET counts forgotten nodes: go-fuse splits a BATCH_FORGET
// into one Forget call per node. INIT, INTERRUPT, DESTROY and notify
// replies never reach the RawFileSystem and are not counted.
//
// The cost when it is on is one atomic add per request; when it is off,
// nothing is wrapped.
package fusestats

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Env is the environment variable that switches counting on.
const Env = "SPOOLSYNC_FUSE_STATS"

type opcode int

// Counter holds the number of requests served per opcode.
type Counter struct {
	n [numOpcodes]atomic.Uint64
}

func (c *Counter) count(op opcode) { c.n[op].Add(1) }

// Snapshot returns the counts so far, leaving out opcodes never seen.
func (c *Counter) Snapshot() map[string]uint64 {
	m := make(map[string]uint64)
	for op := range numOpcodes {
		if v := c.n[op].Load(); v > 0 {
			m[opNames[op]] = v
		}
	}
	return m
}

// Wrap returns raw with every request counted in c.
func Wrap(raw fuse.RawFileSystem, c *Counter) fuse.RawFileSystem {
	return &counting{RawFileSystem: raw, c: c}
}

// dumper writes a Counter's snapshots to a file.
type dumper struct {
	mu    sync.Mutex
	c     *Counter
	name  string
	dumps int
}

// write replaces the file by the current snapshot.
func (d *dumper) write() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dumps++
	b, err := json.Marshal(struct {
		Dumps int               `json:"dumps"`
		Ops   map[string]uint64 `json:"ops"`
	}{d.dumps, d.c.Snapshot()})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(d.name), ".fusestats-*")
	if err != nil {
		return fmt.Errorf("%s: %w", Env, err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), d.name)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("%s: write %s: %w", Env, d.name, err)
	}
	return nil
}

// FromEnv wraps raw in a counter when Env names a file (see the package
// doc) and returns the function that writes the final counts and stops
// listening for SIGUSR1; call it once the mount has ended. When Env is
// unset it returns raw itself and a no-op.
func FromEnv(raw fuse.RawFileSystem, logger *slog.Logger) (fuse.RawFileSystem, func()) {
	name := os.Getenv(Env)
	if name == "" {
		return raw, func() {}
	}
	if logger == nil {
		logger = slog.Default()
	}
	d := &dumper{c: new(Counter), name: name}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-sig:
				if err := d.write(); err != nil {
					logger.Warn("cannot write the FUSE request counts", "err", err)
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return Wrap(raw, d.c), func() {
		once.Do(func() {
			signal.Stop(sig)
			close(done)
			if err := d.write(); err != nil {
				logger.Warn("cannot write the FUSE request counts", "err", err)
			}
		})
	}
}

// counting counts each request, then hands it on. Every method of
// fuse.RawFileSystem that serves a request is here (TestEveryRequestCounted
// checks it against the interface), so that a go-fuse upgrade adding one
// is noticed rather than passed through uncounted.
type counting struct {
	fuse.RawFileSystem
	c *Counter
}

func (c *counting) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) (status fuse.Status) {
	c.c.count(opLOOKUP)
	return c.RawFileSystem.Lookup(cancel, header, name, out)
}

func (c *counting) Forget(nodeid, nlookup uint64) {
	c.c.count(opFORGET)
	c.RawFileSystem.Forget(nodeid, nlookup)
}

func (c *counting) GetAttr(cancel <-chan struct{}, input *fuse.GetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	c.c.count(opGETATTR)
	return c.RawFileSystem.GetAttr(cancel, input, out)
}

func (c *counting) SetAttr(cancel <-chan struct{}, input *fuse.SetAttrIn, out *fuse.AttrOut) (code fuse.Status) {
	c.c.count(opSETATTR)
	return c.RawFileSystem.SetAttr(cancel, input, out)
}

func (c *counting) Mknod(cancel <-chan struct{}, input *fuse.MknodIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	c.c.count(opMKNOD)
	return c.RawFileSystem.Mknod(cancel, input, name, out)
}

func (c *counting) Mkdir(cancel <-chan struct{}, input *fuse.MkdirIn, name string, out *fuse.EntryOut) (code fuse.Status) {
	c.c.count(opMKDIR)
	return c.RawFileSystem.Mkdir(cancel, input, name, out)
}

func (c *counting) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	c.c.count(opUNLINK)
	return c.RawFileSystem.Unlink(cancel, header, name)
}

func (c *counting) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) (code fuse.Status) {
	c.c.count(opRMDIR)
	return c.RawFileSystem.Rmdir(cancel, header, name)
}

func (c *counting) Rename(cancel <-chan struct{}, input *fuse.RenameIn, oldName string, newName string) (code fuse.Status) {
	c.c.count(opRENAME)
	return c.RawFileSystem.Rename(cancel, input, oldName, newName)
}

func (c *counting) Link(cancel <-chan struct{}, input *fuse.LinkIn, filename string, out *fuse.EntryOut) (code fuse.Status) {
	c.c.count(opLINK)
	return c.RawFileSystem.Link(cancel, input, filename, out)
}

func (c *counting) Symlink(cancel <-chan struct{}, header *fuse.InHeader, pointedTo string, linkName string, out *fuse.EntryOut) (code fuse.Status) {
	c.c.count(opSYMLINK)
	return c.RawFileSystem.Symlink(cancel, header, pointedTo, linkName, out)
}

func (c *counting) Readlink(cancel <-chan struct{}, header *fuse.InHeader) (out []byte, code fuse.Status) {
	c.c.count(opREADLINK)
	return c.RawFileSystem.Readlink(cancel, header)
}

func (c *counting) Access(cancel <-chan struct{}, input *fuse.AccessIn) (code fuse.Status) {
	c.c.count(opACCESS)
	return c.RawFileSystem.Access(cancel, input)
}

func (c *counting) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (sz uint32, code fuse.Status) {
	c.c.count(opGETXATTR)
	return c.RawFileSystem.GetXAttr(cancel, header, attr, dest)
}

func (c *counting) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	c.c.count(opLISTXATTR)
	return c.RawFileSystem.ListXAttr(cancel, header, dest)
}

func (c *counting) SetXAttr(cancel <-chan struct{}, input *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	c.c.count(opSETXATTR)
	return c.RawFileSystem.SetXAttr(cancel, input, attr, data)
}

func (c *counting) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) (code fuse.Status) {
	c.c.count(opREMOVEXATTR)
	return c.RawFileSystem.RemoveXAttr(cancel, header, attr)
}

func (c *counting) Create(cancel <-chan struct{}, input *fuse.CreateIn, name string, out *fuse.CreateOut) (code fuse.Status) {
	c.c.count(opCREATE)
	return c.RawFileSystem.Create(cancel, input, name, out)
}

func (c *counting) Tmpfile(cancel <-chan struct{}, input *fuse.CreateIn, out *fuse.CreateOut) (code fuse.Status) {
	c.c.count(opTMPFILE)
	return c.RawFileSystem.Tmpfile(cancel, input, out)
}

func (c *counting) Open(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	c.c.count(opOPEN)
	return c.RawFileSystem.Open(cancel, input, out)
}

func (c *counting) Read(cancel <-chan struct{}, input *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	c.c.count(opREAD)
	return c.RawFileSystem.Read(cancel, input, buf)
}

func (c *counting) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	c.c.count(opLSEEK)
	return c.RawFileSystem.Lseek(cancel, in, out)
}

func (c *counting) GetLk(cancel <-chan struct{}, input *fuse.LkIn, out *fuse.LkOut) (code fuse.Status) {
	c.c.count(opGETLK)
	return c.RawFileSystem.GetLk(cancel, input, out)
}

func (c *counting) SetLk(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	c.c.count(opSETLK)
	return c.RawFileSystem.SetLk(cancel, input)
}

func (c *counting) SetLkw(cancel <-chan struct{}, input *fuse.LkIn) (code fuse.Status) {
	c.c.count(opSETLKW)
	return c.RawFileSystem.SetLkw(cancel, input)
}

func (c *counting) Release(cancel <-chan struct{}, input *fuse.ReleaseIn) {
	c.c.count(opRELEASE)
	c.RawFileSystem.Release(cancel, input)
}

func (c *counting) Write(cancel <-chan struct{}, input *fuse.WriteIn, data []byte) (written uint32, code fuse.Status) {
	c.c.count(opWRITE)
	return c.RawFileSystem.Write(cancel, input, data)
}

func (c *counting) Writev(cancel <-chan struct{}, input *fuse.WriteIn, data [][]byte) (written uint32, code fuse.Status) {
	c.c.count(opWRITE)
	return c.RawFileSystem.Writev(cancel, input, data)
}

func (c *counting) CopyFileRange(cancel <-chan struct{}, input *fuse.CopyFileRangeIn) (written uint32, code fuse.Status) {
	c.c.count(opCOPYFILERANGE)
	return c.RawFileSystem.CopyFileRange(cancel, input)
}

func (c *counting) Ioctl(cancel <-chan struct{}, input *fuse.IoctlIn, inbuf []byte, output *fuse.IoctlOut, outbuf []byte) (code fuse.Status) {
	c.c.count(opIOCTL)
	return c.RawFileSystem.Ioctl(cancel, input, inbuf, output, outbuf)
}

func (c *counting) Flush(cancel <-chan struct{}, input *fuse.FlushIn) fuse.Status {
	c.c.count(opFLUSH)
	return c.RawFileSystem.Flush(cancel, input)
}

func (c *counting) Fsync(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	c.c.count(opFSYNC)
	return c.RawFileSystem.Fsync(cancel, input)
}

func (c *counting) Fallocate(cancel <-chan struct{}, input *fuse.FallocateIn) (code fuse.Status) {
	c.c.count(opFALLOCATE)
	return c.RawFileSystem.Fallocate(cancel, input)
}

func (c *counting) OpenDir(cancel <-chan struct{}, input *fuse.OpenIn, out *fuse.OpenOut) (status fuse.Status) {
	c.c.count(opOPENDIR)
	return c.RawFileSystem.OpenDir(cancel, input, out)
}

func (c *counting) ReadDir(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.c.count(opREADDIR)
	return c.RawFileSystem.ReadDir(cancel, input, out)
}

func (c *counting) ReadDirPlus(cancel <-chan struct{}, input *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.c.count(opREADDIRPLUS)
	return c.RawFileSystem.ReadDirPlus(cancel, input, out)
}

func (c *counting) ReleaseDir(input *fuse.ReleaseIn) {
	c.c.count(opRELEASEDIR)
	c.RawFileSystem.ReleaseDir(input)
}

func (c *counting) FsyncDir(cancel <-chan struct{}, input *fuse.FsyncIn) (code fuse.Status) {
	c.c.count(opFSYNCDIR)
	return c.RawFileSystem.FsyncDir(cancel, input)
}

func (c *counting) StatFs(cancel <-chan struct{}, input *fuse.InHeader, out *fuse.StatfsOut) (code fuse.Status) {
	c.c.count(opSTATFS)
	return c.RawFileSystem.StatFs(cancel, input, out)
}

func (c *counting) Statx(cancel <-chan struct{}, input *fuse.StatxIn, out *fuse.StatxOut) (code fuse.Status) {
	c.c.count(opSTATX)
	return c.RawFileSystem.Statx(cancel, input, out)
}

// The opcodes counted; the names are the kernel's (linux/fuse.h, FUSE_
// left off).
// opcodes counted; their names are the kernel's (FUSE_ + name, linux/fuse.h).
const (
	opLOOKUP opcode = iota
	opFORGET
	opGETATTR
	opSETATTR
	opMKNOD
	opMKDIR
	opUNLINK
	opRMDIR
	opRENAME
	opLINK
	opSYMLINK
	opREADLINK
	opACCESS
	opGETXATTR
	opLISTXATTR
	opSETXATTR
	opREMOVEXATTR
	opCREATE
	opTMPFILE
	opOPEN
	opREAD
	opLSEEK
	opGETLK
	opSETLK
	opSETLKW
	opRELEASE
	opWRITE
	opCOPYFILERANGE
	opIOCTL
	opFLUSH
	opFSYNC
	opFALLOCATE
	opOPENDIR
	opREADDIR
	opREADDIRPLUS
	opRELEASEDIR
	opFSYNCDIR
	opSTATFS
	opSTATX
	numOpcodes
)

var opNames = [numOpcodes]string{
	opLOOKUP:        "LOOKUP",
	opFORGET:        "FORGET",
	opGETATTR:       "GETATTR",
	opSETATTR:       "SETATTR",
	opMKNOD:         "MKNOD",
	opMKDIR:         "MKDIR",
	opUNLINK:        "UNLINK",
	opRMDIR:         "RMDIR",
	opRENAME:        "RENAME",
	opLINK:          "LINK",
	opSYMLINK:       "SYMLINK",
	opREADLINK:      "READLINK",
	opACCESS:        "ACCESS",
	opGETXATTR:      "GETXATTR",
	opLISTXATTR:     "LISTXATTR",
	opSETXATTR:      "SETXATTR",
	opREMOVEXATTR:   "REMOVEXATTR",
	opCREATE:        "CREATE",
	opTMPFILE:       "TMPFILE",
	opOPEN:          "OPEN",
	opREAD:          "READ",
	opLSEEK:         "LSEEK",
	opGETLK:         "GETLK",
	opSETLK:         "SETLK",
	opSETLKW:        "SETLKW",
	opRELEASE:       "RELEASE",
	opWRITE:         "WRITE",
	opCOPYFILERANGE: "COPY_FILE_RANGE",
	opIOCTL:         "IOCTL",
	opFLUSH:         "FLUSH",
	opFSYNC:         "FSYNC",
	opFALLOCATE:     "FALLOCATE",
	opOPENDIR:       "OPENDIR",
	opREADDIR:       "READDIR",
	opREADDIRPLUS:   "READDIRPLUS",
	opRELEASEDIR:    "RELEASEDIR",
	opFSYNCDIR:      "FSYNCDIR",
	opSTATFS:        "STATFS",
	opSTATX:         "STATX",
}
