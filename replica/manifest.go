package replica

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
)

// Entry describes one entry of the replica tree, for resync.
type Entry struct {
	Path   string      // relative to Root; "." for Root itself
	Type   fs.FileMode // fs.ModeDir, fs.ModeSymlink, fs.ModeNamedPipe, ..., 0 for a regular file
	Size   int64
	Mode   uint32 // permission bits incl. setuid/setgid/sticky
	Uid    uint32
	Gid    uint32
	Mtime  int64 // ns
	Nlink  uint64
	Ino    uint64
	Dev    uint64
	Target string    // symlink target
	Xattrs []Xattr   // sorted by name
	GUID   guid.GUID // regular files, when mode is not None
}

// Manifest walks subtree ("" or "." for the whole root) in filepath.WalkDir
// order — a directory before its children, names in lexical byte order,
// depth first — calling fn for every entry, the subtree itself first. The
// reserved .spoolsync dir is left out. Symlinks are reported, never
// followed. Regular files get their GUID in mode from the GUID cache, hashed
// when not cached. fn returning fs.SkipDir for a directory skips its
// children; any other error stops the walk and is returned. Only one
// directory's names are held in memory at a time per level of depth.
// Manifest may run while a batch is being applied; it then sees some state
// in between, which is what resync expects of a live tree.
func (s *Store) Manifest(subtree string, mode guid.Mode, fn func(Entry) error) error {
	if subtree == "" || subtree == "." {
		fd, err := unix.Openat(s.rootfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return opErr("manifest", ".", err)
		}
		e, err := s.entry(parent{fd, "."}, ".", mode)
		if err != nil {
			unix.Close(fd)
			return opErr("manifest", ".", err)
		}
		return s.walkDir(fd, e, mode, fn)
	}
	par, err := openParent(s.rootfd, subtree)
	if err != nil {
		return opErr("manifest", subtree, err)
	}
	defer par.close()
	return s.walkAt(par, subtree, mode, fn)
}

// walkAt reports the entry par names and, for a directory, walks it.
func (s *Store) walkAt(par parent, p string, mode guid.Mode, fn func(Entry) error) error {
	e, err := s.entry(par, p, mode)
	if err != nil {
		return opErr("manifest", p, err)
	}
	if e.Type != fs.ModeDir {
		return fn(e)
	}
	fd, err := unix.Openat(par.fd, par.name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return opErr("manifest", p, err)
	}
	return s.walkDir(fd, e, mode, fn)
}

// walkDir reports e, the directory open as fd (which it closes), then its
// children.
func (s *Store) walkDir(fd int, e Entry, mode guid.Mode, fn func(Entry) error) error {
	dir := os.NewFile(uintptr(fd), e.Path)
	defer dir.Close()
	if err := fn(e); err != nil {
		if errors.Is(err, fs.SkipDir) {
			return nil
		}
		return err
	}
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return opErr("manifest", e.Path, err)
	}
	slices.Sort(names)
	for _, name := range names {
		if e.Path == "." && (name == reserved || name == QuarantineDir) {
			continue
		}
		err := s.walkAt(parent{fd, name}, path.Join(e.Path, name), mode, fn)
		if errors.Is(err, unix.ENOENT) {
			continue // removed since it was listed
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// entry describes par's entry (not following it).
func (s *Store) entry(par parent, p string, mode guid.Mode) (Entry, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(par.fd, par.name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Entry{}, err
	}
	e := Entry{
		Path: p, Type: fileType(st.Mode), Size: st.Size, Mode: st.Mode & 07777,
		Uid: st.Uid, Gid: st.Gid, Mtime: st.Mtim.Nano(), Nlink: uint64(st.Nlink),
		Ino: st.Ino, Dev: uint64(st.Dev),
	}
	var err error
	if e.Xattrs, err = readXattrs(par.proc()); err != nil && err != unix.EOPNOTSUPP {
		return Entry{}, err
	}
	switch e.Type {
	case fs.ModeSymlink:
		if e.Target, err = readlinkat(par); err != nil {
			return Entry{}, err
		}
	case 0:
		if mode != guid.None {
			fd, err := par.openFile(unix.O_RDONLY)
			if err != nil {
				return Entry{}, err
			}
			f := os.NewFile(uintptr(fd), p)
			e.GUID, err = s.cache.HashFD(f, mode)
			f.Close()
			if err != nil {
				return Entry{}, err
			}
		}
	}
	return e, nil
}

func readlinkat(par parent) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(par.fd, par.name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

func fileType(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return 0
}
