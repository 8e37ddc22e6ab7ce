package uring

import (
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// Mount opens /dev/fuse and mounts it on mountpoint as go-fuse's
// DirectMount would, returning the descriptor: fuse.NewServer serves it
// when given "/dev/fd/N" as its mount point, and the ring commands name
// it too. opts.MaxWrite must be set (it becomes max_read).
func Mount(mountpoint string, opts *fuse.MountOptions) (int, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(mountpoint, &st); err != nil {
		return -1, fmt.Errorf("mount point %s: %w", mountpoint, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return -1, fmt.Errorf("mount point %s is not a directory", mountpoint)
	}
	fd, err := syscall.Open("/dev/fuse", os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/fuse: %w", err)
	}
	o := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", st.Mode&syscall.S_IFMT),
		fmt.Sprintf("user_id=%d", os.Geteuid()),
		fmt.Sprintf("group_id=%d", os.Getegid()),
		fmt.Sprintf("max_read=%d", opts.MaxWrite),
	}
	o = append(o, opts.Options...)
	if opts.AllowOther {
		o = append(o, "allow_other")
	}
	source := opts.FsName
	if source == "" {
		source = opts.Name
	}
	err = syscall.Mount(source, mountpoint, "fuse."+opts.Name, syscall.MS_NOSUID|syscall.MS_NODEV, strings.Join(o, ","))
	if err != nil {
		syscall.Close(fd)
		return -1, fmt.Errorf("mount %s on %s: %w", source, mountpoint, err)
	}
	return fd, nil
}
