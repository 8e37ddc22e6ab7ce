package replica

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
	"spoolsync/internal/walk"
	"spoolsync/internal/xattr"
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
// reserved .spoolsync dir and the quarantine are left out. Symlinks are
// reported, never followed. Regular files get their GUID in mode from the
// GUID cache, hashed when not cached. An error from fn stops the walk and
// is returned. Directories are read ahead in parallel, a bounded number of
// them (internal/walk). Manifest may run while a batch is being applied;
// it then sees some state in between, which is what resync expects of a
// live tree. The walk and every hash end when ctx does (with its error),
// and a file over Options.MaxFileSize is not hashed: the walk ends with
// guid.ErrTooLarge naming it.
func (s *Store) Manifest(ctx context.Context, subtree string, mode guid.Mode, fn func(Entry) error) error {
	s.cache.Prefetch()
	if subtree == "" {
		subtree = "."
	}
	lim := guid.Limit{Ctx: ctx, MaxSize: s.maxFile}
	top, err := s.topEntry(subtree, mode, lim)
	if err != nil {
		return opErr("manifest", subtree, err)
	}
	if err := fn(top); err != nil || top.Type != fs.ModeDir {
		return err
	}
	opts := walk.Options[Entry]{
		Open: func(dir string) (int, error) { return openDirBeneath(s.rootfd, dir) },
		Skip: func(p string) bool { return p == reserved || p == QuarantineDir },
		Prepare: func(w *walk.Entry[Entry]) {
			w.Detail.GUID = s.cachedGUID(&w.Stat, mode)
			if w.Detail.GUID.Mode == guid.None && mode != guid.None && fileType(w.Stat.Mode) == 0 {
				guid.Readahead(w.Dir, w.Name) // for entry's hash
			}
		},
		Detail: func(w *walk.Entry[Entry]) (Entry, error) {
			return s.entry(parent{w.Dir, w.Name}, w.Path, &w.Stat, mode, w.Detail.GUID, lim)
		},
	}
	return walk.Tree(subtree, opts, func(w *walk.Entry[Entry]) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if errors.Is(w.DetailErr, unix.ENOENT) {
			return nil // removed since it was listed
		}
		if w.DetailErr != nil {
			return opErr("manifest", w.Path, w.DetailErr)
		}
		return fn(w.Detail)
	})
}

// topEntry describes the subtree's own entry ("." for the root).
func (s *Store) topEntry(subtree string, mode guid.Mode, lim guid.Limit) (Entry, error) {
	par := parent{fd: s.rootfd, name: "."}
	if subtree != "." {
		var err error
		if par, err = openParent(s.rootfd, subtree); err != nil {
			return Entry{}, err
		}
		defer par.close()
	}
	st, err := par.lstat()
	if err != nil {
		return Entry{}, err
	}
	return s.entry(par, subtree, &st, mode, s.cachedGUID(&st, mode), lim)
}

// cachedGUID is the GUID the cache holds for a regular file by its stat
// (no open); zero when none.
func (s *Store) cachedGUID(st *unix.Stat_t, mode guid.Mode) guid.GUID {
	g, _ := s.cache.Lookup(st, mode)
	return g
}

// entry describes par's entry, whose stat is st (not following it); a
// regular file's GUID is cached, else it is hashed.
func (s *Store) entry(par parent, p string, st *unix.Stat_t, mode guid.Mode, cached guid.GUID, lim guid.Limit) (Entry, error) {
	e := Entry{
		Path: p, Type: fileType(st.Mode), Size: st.Size, Mode: st.Mode & 07777,
		Uid: st.Uid, Gid: st.Gid, Mtime: st.Mtim.Nano(), Nlink: uint64(st.Nlink),
		Ino: st.Ino, Dev: uint64(st.Dev),
	}
	var err error
	if e.Xattrs, err = xattr.Read(par.fd, par.name); err != nil && err != unix.EOPNOTSUPP {
		return Entry{}, err
	}
	switch e.Type {
	case fs.ModeSymlink:
		if e.Target, err = walk.Readlink(par.fd, par.name); err != nil {
			return Entry{}, err
		}
	case 0:
		if cached.Mode != guid.None {
			e.GUID = cached
		} else if mode != guid.None {
			fd, err := par.openFile(unix.O_RDONLY)
			if err != nil {
				return Entry{}, err
			}
			f := os.NewFile(uintptr(fd), p)
			e.GUID, err = s.cache.HashFDLimited(f, mode, lim)
			f.Close()
			if err != nil {
				return Entry{}, err
			}
		}
	}
	return e, nil
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
