// Package treecmp compares two directory trees the way a replica must
// match its master: type, content, size, mode, owner, mtime, symlink
// target, hard-link structure and extended attributes. Tests, the demo and
// scripts/treecmp use it to say exactly which path differs and how.
//
// The comparison streams: both trees are walked together, one directory
// at a time with its names sorted, and a file's content is compared by
// hashing both copies as they are read. Memory is bounded by the largest
// directory and the number of multiply-linked files (their names are
// kept to compare link groups at the end), never by the content or the
// size of the tree, so a spool of any size can be compared.
package treecmp

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
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

// Diff lists every difference between the trees at a and b, one line each,
// naming the path and what differs; empty means identical. The list is
// held in memory: for a tree that may differ everywhere, use Compare.
func Diff(a, b string, opts Options) ([]string, error) {
	var diffs []string
	err := Compare(a, b, opts, func(d string) { diffs = append(diffs, d) })
	return diffs, err
}

// Compare walks the trees at a and b together and calls report for every
// difference, in walk order (hard-link differences last).
func Compare(a, b string, opts Options, report func(string)) error {
	c := &comparer{a: a, b: b, opts: opts, report: report,
		linksA: map[[2]uint64][]string{}, linksB: map[[2]uint64][]string{}, buf: make([]byte, 256<<10)}
	if err := c.dir(""); err != nil {
		return err
	}
	c.compareLinks()
	return nil
}

type comparer struct {
	a, b   string
	opts   Options
	report func(string)
	// linksA and linksB hold the names of each multiply-linked inode.
	linksA, linksB map[[2]uint64][]string
	buf            []byte
}

func (c *comparer) add(format string, args ...any) { c.report(fmt.Sprintf(format, args...)) }

// names lists a directory's entries, sorted byte-wise; a missing
// directory has none.
func names(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ns, err := f.Readdirnames(-1)
	slices.Sort(ns)
	return ns, err
}

// dir compares the entries of the directory rel ("" for the roots), both
// of which exist and are directories.
func (c *comparer) dir(rel string) error {
	na, err := names(filepath.Join(c.a, rel))
	if err != nil {
		return err
	}
	nb, err := names(filepath.Join(c.b, rel))
	if err != nil {
		return err
	}
	i, j := 0, 0
	for i < len(na) || j < len(nb) {
		var name string
		inA, inB := false, false
		switch {
		case j >= len(nb) || i < len(na) && na[i] < nb[j]:
			name, inA = na[i], true
			i++
		case i >= len(na) || nb[j] < na[i]:
			name, inB = nb[j], true
			j++
		default:
			name, inA, inB = na[i], true, true
			i++
			j++
		}
		p := name
		if rel != "" {
			p = rel + "/" + name
		} else if slices.Contains(c.opts.Skip, name) {
			continue
		}
		if err := c.entry(p, inA, inB); err != nil {
			return err
		}
	}
	return nil
}

// entry compares path p, present in a (inA) and/or b (inB).
func (c *comparer) entry(p string, inA, inB bool) error {
	var sa, sb unix.Stat_t
	if inA {
		if err := unix.Lstat(filepath.Join(c.a, p), &sa); err != nil {
			return fmt.Errorf("lstat %s: %w", filepath.Join(c.a, p), err)
		}
		c.noteLink(c.linksA, p, &sa)
	}
	if inB {
		if err := unix.Lstat(filepath.Join(c.b, p), &sb); err != nil {
			return fmt.Errorf("lstat %s: %w", filepath.Join(c.b, p), err)
		}
		c.noteLink(c.linksB, p, &sb)
	}
	switch {
	case !inB:
		c.add("%s: only in %s", p, c.a)
		return nil
	case !inA:
		c.add("%s: only in %s", p, c.b)
		return nil
	}
	ma, mb := sa.Mode, sb.Mode
	if ma&unix.S_IFMT != mb&unix.S_IFMT {
		c.add("%s: type %o vs %o", p, ma&unix.S_IFMT, mb&unix.S_IFMT)
		return nil
	}
	typ := ma & unix.S_IFMT
	if typ != unix.S_IFLNK && ma&07777 != mb&07777 {
		c.add("%s: mode %o vs %o", p, ma&07777, mb&07777)
	}
	if sa.Uid != sb.Uid || sa.Gid != sb.Gid {
		c.add("%s: owner %d:%d vs %d:%d", p, sa.Uid, sa.Gid, sb.Uid, sb.Gid)
	}
	if (typ != unix.S_IFDIR || c.opts.DirMtimes) && sa.Mtim != sb.Mtim {
		c.add("%s: mtime %d.%09d vs %d.%09d", p, sa.Mtim.Sec, sa.Mtim.Nsec, sb.Mtim.Sec, sb.Mtim.Nsec)
	}
	pa, pb := filepath.Join(c.a, p), filepath.Join(c.b, p)
	switch typ {
	case unix.S_IFLNK:
		ta, err := os.Readlink(pa)
		if err != nil {
			return err
		}
		tb, err := os.Readlink(pb)
		if err != nil {
			return err
		}
		if ta != tb {
			c.add("%s: symlink target %.80q vs %.80q", p, ta, tb)
		}
		return nil // symlinks carry no xattrs a user can set
	case unix.S_IFREG:
		ha, err := c.hash(pa)
		if err != nil {
			return err
		}
		hb, err := c.hash(pb)
		if err != nil {
			return err
		}
		if ha != hb {
			c.add("%s: content differs (%d vs %d bytes)", p, sa.Size, sb.Size)
		}
	}
	xa, err := xattrs(pa)
	if err != nil {
		return err
	}
	xb, err := xattrs(pb)
	if err != nil {
		return err
	}
	if xa != xb {
		c.add("%s: xattrs %s vs %s", p, xa, xb)
	}
	if typ == unix.S_IFDIR {
		return c.dir(p)
	}
	return nil
}

// hash is the SHA-256 of the file at p, read in bounded memory.
func (c *comparer) hash(p string) ([sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	f, err := os.Open(p)
	if err != nil {
		return sum, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, c.buf); err != nil {
		return sum, fmt.Errorf("read %s: %w", p, err)
	}
	h.Sum(sum[:0])
	return sum, nil
}

// xattrs renders p's extended attributes (not following a symlink),
// sorted by name, as one comparable string.
func xattrs(p string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ENOTSUP) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	var list []string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return "", fmt.Errorf("get xattr %s of %s: %w", name, p, err)
		}
		list = append(list, fmt.Sprintf("%s=%q", name, v[:m]))
	}
	slices.Sort(list)
	return "[" + strings.Join(list, " ") + "]", nil
}

func (c *comparer) noteLink(m map[[2]uint64][]string, p string, st *unix.Stat_t) {
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		k := [2]uint64{st.Dev, st.Ino}
		m[k] = append(m[k], p)
	}
}

// compareLinks reports every name whose hard-link group (the names of
// its inode in the tree) differs between the trees.
func (c *comparer) compareLinks() {
	ga, gb := groups(c.linksA), groups(c.linksB)
	var ps []string
	for p := range ga {
		ps = append(ps, p)
	}
	for p := range gb {
		if _, ok := ga[p]; !ok {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	for _, p := range ps {
		if a, b := ga[p], gb[p]; !slices.Equal(a, b) {
			c.add("%s: hard links %v vs %v", p, a, b)
		}
	}
}

// groups maps each name of a multiply-linked inode to the sorted names of
// that inode in the tree.
func groups(byIno map[[2]uint64][]string) map[string][]string {
	out := map[string][]string{}
	for _, names := range byIno {
		slices.Sort(names)
		for _, n := range names {
			out[n] = names
		}
	}
	return out
}
