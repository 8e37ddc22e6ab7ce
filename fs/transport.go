package fs

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"spoolsync/fs/uring"
)

// The transports a mount can use (Mount.Transport).
const (
	TransportURing   = "io_uring"
	TransportDevFUSE = "/dev/fuse"
)

// maxWrite is the mount's MaxWrite, go-fuse's default, set explicitly
// because the io_uring transport sizes its buffers from it.
const maxWrite = 128 << 10

// prepareUring makes the io_uring transport if opts ask for it and the
// kernel allows it; nil (and no error) means /dev/fuse.
func prepareUring(opts Options) (*uring.Transport, error) {
	switch opts.Uring {
	case "off":
		return nil, nil
	case "on", "auto", "":
	default:
		return nil, fmt.Errorf("fuse_uring %q: want auto, on or off", opts.Uring)
	}
	why := uring.Unavailable()
	var tr *uring.Transport
	if why == nil {
		tr, why = uring.Prepare(uring.Config{MaxWrite: maxWrite, Logger: opts.Logger, BadQueues: opts.uringBadQueues})
	}
	if why != nil {
		if opts.Uring == "on" {
			return nil, fmt.Errorf("fuse_uring is on: %w", why)
		}
		opts.Logger.Info("serving FUSE requests from /dev/fuse", "why", why.Error())
		return nil, nil
	}
	return tr, nil
}

// serveUring mounts with the project's own /dev/fuse descriptor, lets
// go-fuse answer INIT on it (offering fuse.CAP_OVER_IO_URING), then
// registers tr's rings, which serve every request from then on. The
// go-fuse server keeps reading /dev/fuse: the kernel still sends FORGET
// and INTERRUPT there (fuse_io_uring_ops), and notifications (cache
// invalidation) are written there. Passthrough backing files are
// registered on the same descriptor, so they work on either transport.
//
// If the kernel answers INIT without io_uring, or a registration fails
// (then the kernel itself goes back to /dev/fuse), the mount is served
// from /dev/fuse, unless strict (fuse_uring on), where it is an error.
func (m *Mount) serveUring(tr *uring.Transport, raw fuse.RawFileSystem, mo *fuse.MountOptions, strict bool) (err error) {
	mo.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
	mo.MaxWrite = maxWrite
	fd, err := uring.Mount(m.mountpoint, mo)
	if err != nil {
		tr.Close()
		return err
	}
	// go-fuse's DirectMount would mount the path it is given, and
	// /dev/fd/N resolves to /dev/fuse itself: the mount is done.
	so := *mo
	so.DirectMount, so.DirectMountStrict = false, false
	server, err := fuse.NewServer(raw, fmt.Sprintf("/dev/fd/%d", fd), &so)
	if err != nil {
		tr.Close()
		syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
		syscall.Close(fd)
		return err
	}
	m.server = server
	served := make(chan struct{})
	go func() {
		server.Serve()
		close(served)
	}()
	go func() {
		<-served
		tr.Wait()
		m.served()
	}()
	fail := func(err error) error {
		syscall.Unmount(m.mountpoint, syscall.MNT_DETACH)
		return err
	}
	offered := server.KernelSettings().Flags64()&fuse.CAP_OVER_IO_URING != 0
	switch {
	case !offered:
		tr.Close()
		why := errors.New("the kernel did not offer FUSE_OVER_IO_URING in INIT (" + uring.ParamPath + " changed?)")
		if strict {
			return fail(fmt.Errorf("fuse_uring is on: %w", why))
		}
		m.logger.Info("serving FUSE requests from /dev/fuse", "why", why.Error())
	default:
		ps := fuse.NewProtocolServer(raw, &so)
		if err := uring.InitProtocol(ps, server.KernelSettings()); err != nil {
			// The kernel waits for the ring: nothing can be served.
			tr.Close()
			return fail(err)
		}
		if err := tr.Start(fd, ps); err != nil {
			if strict {
				return fail(fmt.Errorf("fuse_uring is on: %w", err))
			}
			m.logger.Warn("serving FUSE requests from /dev/fuse", "why", err.Error())
			break
		}
		m.transport = TransportURing
		m.logger.Debug("FUSE over io_uring", "queues", tr.Queues(), "depth", tr.Depth())
	}
	return waitServing(m.mountpoint)
}

// waitServing does what go-fuse's WaitMount does for a mount point it
// knows: it opens the poll-hack file, whose LOOKUP, OPEN and POLL go-fuse
// answers itself, so the kernel learns that POLL is not supported before
// a caller polls a real file, and so the first requests have gone
// through the transport before New returns.
func waitServing(mountpoint string) error {
	done := make(chan error, 1)
	go func() {
		fd, err := syscall.Open(filepath.Join(mountpoint, ".go-fuse-epoll-hack"), syscall.O_RDONLY, 0)
		if err == nil {
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
			syscall.Close(fd)
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			syscall.Unmount(mountpoint, syscall.MNT_DETACH)
			return fmt.Errorf("first request through the mount: %w", err)
		}
		return nil
	case <-time.After(30 * time.Second):
		syscall.Unmount(mountpoint, syscall.MNT_DETACH)
		return errors.New("first request through the mount got no answer in 30 s")
	}
}
