// Package treecmp compares two directory trees the way a replica must
// match its master: type, content, size, mode, owner, mtime, symlink
// target, hard-link structure and extended attributes. Tests and the demo
// use it to say exactly which path differs and how.
package treecmp

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Options say what to compare.
type Options struct {
	Skip      []string // top-level names to ignore on either side (".spoolsync")
	DirMtimes bool     // compare directories' mtimes too
}

// entry is one path of a tree.
type entry struct {
	st      unix.Stat_t
	target  string
	xattrs  map[string]string
	content []byte // regular files; read lazily would be nicer, trees in tests are small
}

func scan(root string, opts Options) (map[string]*entry, error) {
	out := map[string]*entry{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if slices.Contains(opts.Skip, strings.SplitN(rel, string(filepath.Separator), 2)[0]) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		e := &entry{xattrs: map[string]string{}}
		if err := unix.Lstat(p, &e.st); err != nil {
			return err
		}
		switch e.st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			e.target, err = os.Readlink(p)
		case unix.S_IFREG:
			e.content, err = os.ReadFile(p)
		}
		if err != nil {
			return err
		}
		if e.st.Mode&unix.S_IFMT != unix.S_IFLNK {
			buf := make([]byte, 64<<10)
			if n, err := unix.Llistxattr(p, buf); err == nil {
				for _, name := range strings.Split(string(buf[:n]), "\x00") {
					if name == "" {
						continue
					}
					v := make([]byte, 64<<10)
					if m, err := unix.Lgetxattr(p, name, v); err == nil {
						e.xattrs[name] = string(v[:m])
					}
				}
			}
		}
		out[rel] = e
		return nil
	})
	return out, err
}

// Diff lists every difference between the trees at a and b, one line each,
// naming the path and what differs; empty means identical.
func Diff(a, b string, opts Options) ([]string, error) {
	ta, err := scan(a, opts)
	if err != nil {
		return nil, err
	}
	tb, err := scan(b, opts)
	if err != nil {
		return nil, err
	}
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	// Hard-link structure: names sharing an inode on one side must share
	// one on the other.
	linksA, linksB := groups(ta), groups(tb)
	for _, p := range sortedKeys(ta) {
		ea, eb := ta[p], tb[p]
		if eb == nil {
			add("%s: only in %s", p, a)
			continue
		}
		ma, mb := ea.st.Mode, eb.st.Mode
		if ma&unix.S_IFMT != mb&unix.S_IFMT {
			add("%s: type %o vs %o", p, ma&unix.S_IFMT, mb&unix.S_IFMT)
			continue
		}
		isLink := ma&unix.S_IFMT == unix.S_IFLNK
		isDir := ma&unix.S_IFMT == unix.S_IFDIR
		if !isLink && ma&07777 != mb&07777 {
			add("%s: mode %o vs %o", p, ma&07777, mb&07777)
		}
		if ea.st.Uid != eb.st.Uid || ea.st.Gid != eb.st.Gid {
			add("%s: owner %d:%d vs %d:%d", p, ea.st.Uid, ea.st.Gid, eb.st.Uid, eb.st.Gid)
		}
		if (!isDir || opts.DirMtimes) && ea.st.Mtim != eb.st.Mtim {
			add("%s: mtime %d.%09d vs %d.%09d", p, ea.st.Mtim.Sec, ea.st.Mtim.Nsec, eb.st.Mtim.Sec, eb.st.Mtim.Nsec)
		}
		if ea.target != eb.target {
			add("%s: symlink target %q vs %q", p, ea.target, eb.target)
		}
		if !bytes.Equal(ea.content, eb.content) {
			add("%s: content differs (%d vs %d bytes)", p, len(ea.content), len(eb.content))
		}
		if fmt.Sprint(ea.xattrs) != fmt.Sprint(eb.xattrs) {
			add("%s: xattrs %v vs %v", p, ea.xattrs, eb.xattrs)
		}
		if ga, gb := linksA[p], linksB[p]; !isDir && !slices.Equal(ga, gb) {
			add("%s: hard links %v vs %v", p, ga, gb)
		}
	}
	for _, p := range sortedKeys(tb) {
		if ta[p] == nil {
			add("%s: only in %s", p, b)
		}
	}
	return diffs, nil
}

// groups maps each multiply-linked path to the sorted names of its inode.
func groups(t map[string]*entry) map[string][]string {
	byIno := map[[2]uint64][]string{}
	for p, e := range t {
		if e.st.Mode&unix.S_IFMT != unix.S_IFDIR && e.st.Nlink > 1 {
			k := [2]uint64{e.st.Dev, e.st.Ino}
			byIno[k] = append(byIno[k], p)
		}
	}
	out := map[string][]string{}
	for _, names := range byIno {
		slices.Sort(names)
		for _, n := range names {
			out[n] = names
		}
	}
	return out
}

func sortedKeys(m map[string]*entry) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
