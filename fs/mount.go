package fs

import (
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"spoolsync/internal/fusestats"
)

// Options tune a mount. The zero value is not useful; start from
// DefaultOptions.
type Options struct {
	// Passthrough lets the kernel serve read-only opens straight from the
	// backing file (FUSE passthrough, Linux 6.9+).
	Passthrough bool
	// EntryTimeout and AttrTimeout are how long the kernel may cache names
	// and attributes. See the package doc for why 1 s is safe.
	EntryTimeout, AttrTimeout time.Duration
	// ReadDirPlus makes directory listings return attributes too.
	ReadDirPlus bool
	// SharedFlush: the backing dir's fsync also flushes the log's disk
	// (see SharedFlush); the log must implement WriteOut and Flushed.
	SharedFlush bool
	// Replicas, when set (sync_mode sync), is waited on by every fsync
	// and fdatasync once its events are durable in the log.
	Replicas ReplicaWaiter
	// Uring chooses the transport of requests and replies: "on" serves
	// them from io_uring queues (FUSE over io_uring, one queue per CPU;
	// see package fs/uring) and fails if the kernel will not; "off" reads
	// /dev/fuse; "auto" (or "") uses io_uring where the kernel allows it
	// and /dev/fuse elsewhere.
	Uring string
	// uringBadQueues: see uring.Config.BadQueues (tests only).
	uringBadQueues bool
	Logger         *slog.Logger
	Debug          bool // log every FUSE request
}

// DefaultOptions are the settings measured fastest for mail workloads
// (docs/BENCHMARKS.md).
func DefaultOptions() Options {
	return Options{
		Passthrough:  true,
		EntryTimeout: time.Second,
		AttrTimeout:  time.Second,
		ReadDirPlus:  false,
		Uring:        "auto",
		Logger:       slog.Default(),
	}
}

// Mount is a mounted spool.
type Mount struct {
	c          *capture
	server     *fuse.Server
	mountpoint string
	logger     *slog.Logger
	transport  string
	stopStats  func() // writes the request counts (SPOOLSYNC_FUSE_STATS) once serving ended
	done       chan struct{}
}

// served ends the mount's life: what runs after the last request is done
// before Done (and so Unmount) returns.
func (m *Mount) served() {
	m.stopStats()
	close(m.done)
}

// renameSerializer holds the namespace lock for writing across the whole
// RENAME request: our Node.Rename (backing rename and event) and go-fuse's
// update of its inode tree, which the bridge does after Node.Rename
// returns. Without it, an event computed between the two would name a
// path from before the rename and land in the log after it.
type renameSerializer struct {
	fuse.RawFileSystem
	ns *sync.RWMutex
}

func (r renameSerializer) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	r.ns.Lock()
	defer r.ns.Unlock()
	return r.RawFileSystem.Rename(cancel, in, oldName, newName)
}

// New mounts backing at mountpoint, recording every change in lg. The
// caller has checked the directories (see cmd/spoolsync).
func New(backing, mountpoint string, lg Log, opts Options) (*Mount, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	var st syscall.Stat_t
	if err := syscall.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("mount: backing directory %s: %w", backing, err)
	}
	c := &capture{log: lg, logger: opts.Logger, passthrough: opts.Passthrough, replicas: opts.Replicas}
	if fsr, ok := lg.(flushSharer); ok && opts.SharedFlush {
		c.shared = fsr
	}
	root := &gofs.LoopbackRoot{Path: backing, Dev: uint64(st.Dev)}
	rootNode := &Node{LoopbackNode: &gofs.LoopbackNode{RootData: root}, c: c}
	root.RootNode = rootNode

	entry, attr := opts.EntryTimeout, opts.AttrTimeout
	fopts := &gofs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &entry,
		// Modes are reported as they are: without it go-fuse shows a
		// mode-000 entry as 0644 (0755 for a directory), and the kernel's
		// default_permissions would let every user read it.
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			AllowOther: true,
			// The kernel checks permissions against the backing file's
			// mode and owner, as on a local filesystem; this daemon runs
			// as root and would otherwise let anyone do anything.
			Options:     []string{"default_permissions"},
			FsName:      backing,
			Name:        "spoolsync",
			DirectMount: true,
			// Without it every write costs a GETXATTR security.capability
			// round trip; file.killPriv does the kernel's part instead.
			ExtraCapabilities:  fuse.CAP_HANDLE_KILLPRIV_V2,
			DisableReadDirPlus: !opts.ReadDirPlus,
			Debug:              opts.Debug,
			Logger:             log.New(io.Discard, "", 0),
		},
	}
	if opts.Debug {
		fopts.MountOptions.Logger = slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)
	}
	if !opts.Passthrough {
		fopts.MountOptions.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	// The kernel keeps a file's cached pages when its mtime or size moves
	// (no FUSE_AUTO_INVAL_DATA), and so no longer asks GETATTR before
	// every read(2) of a file it has pages of: about 4.5 READs and 4.5
	// GETATTRs fewer per Dovecot delivery (docs/BENCHMARKS.md, Mail
	// servers). That is safe because every data change reaches the backing
	// file through this mount and so through its page cache (write,
	// truncate, fallocate and copy_file_range update or drop the pages in
	// the kernel), except a writer's in passthrough mode, and the kernel
	// holds no pages of an inode in passthrough mode: it drops them when
	// the inode enters it (TestPassthroughWriteDropsCachedPages).
	fopts.MountOptions.ExplicitDataCacheControl = true
	var raw fuse.RawFileSystem = renameSerializer{RawFileSystem: reservedHider{gofs.NewNodeFS(rootNode, fopts)}, ns: &c.ns}
	raw, stopStats := fusestats.FromEnv(raw, opts.Logger)
	m := &Mount{c: c, mountpoint: mountpoint, logger: opts.Logger, transport: TransportDevFUSE, stopStats: stopStats, done: make(chan struct{})}
	tr, err := prepareUring(opts)
	if err != nil {
		return nil, fmt.Errorf("mount %s on %s: %w", backing, mountpoint, err)
	}
	if tr != nil {
		if err := m.serveUring(tr, raw, &fopts.MountOptions, opts.Uring == "on"); err != nil {
			stopStats()
			return nil, fmt.Errorf("mount %s on %s: %w", backing, mountpoint, err)
		}
		return m, nil
	}
	server, err := fuse.NewServer(raw, mountpoint, &fopts.MountOptions)
	if err != nil {
		stopStats()
		return nil, fmt.Errorf("mount %s on %s: %w", backing, mountpoint, err)
	}
	m.server = server
	go func() {
		server.Serve()
		m.served()
	}()
	if err := server.WaitMount(); err != nil {
		syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		return nil, fmt.Errorf("mount %s on %s: %w", backing, mountpoint, err)
	}
	return m, nil
}

// Transport says how the mount gets its requests: TransportURing or
// TransportDevFUSE.
func (m *Mount) Transport() string { return m.transport }

// Checkpoint is a time before which every change made through the mount
// is in the log: the first unrecorded write of any open file, or now. After
// an unclean stop, files changed since the last checkpoint saved are the
// only ones that can hold writes the log lacks.
func (m *Mount) Checkpoint() time.Time {
	t := time.Now()
	m.c.unlogged.Range(func(_, v any) bool {
		if s := v.(time.Time); s.Before(t) {
			t = s
		}
		return true
	})
	return t
}

// Done is closed when the kernel has ended the FUSE session.
func (m *Mount) Done() <-chan struct{} { return m.done }

// Unmount unmounts. If files are still open (a mail server that did not
// stop first), it detaches the mount point instead (lazy unmount: no new
// opens, open files keep working) and keeps serving the open files for up
// to grace, so that their writes are still recorded; after that it returns
// and the caller exits, and the kernel fails what is still open with
// ENOTCONN.
func (m *Mount) Unmount(grace time.Duration) error {
	err := syscall.Unmount(m.mountpoint, 0)
	if errors.Is(err, syscall.EBUSY) {
		m.logger.Warn("files are still open on the mount; detaching it (lazy unmount) and serving them until they are closed",
			"mountpoint", m.mountpoint, "grace", grace)
		err = syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	select {
	case <-m.done:
		return nil
	case <-time.After(grace):
		return fmt.Errorf("unmount %s: files still open after %v; they will fail with ENOTCONN", m.mountpoint, grace)
	}
}
