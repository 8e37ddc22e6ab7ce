package wire

import (
	"cmp"
	"fmt"
	"strings"
)

// Path limits, the same as Linux's NAME_MAX and PATH_MAX.
const (
	MaxNameLen = 255  // bytes in one path component
	MaxPathLen = 4096 // bytes in a whole path
)

// ValidPath reports whether p may travel on the wire as a path under the
// spool root: relative, slash-separated and clean — not empty, no leading
// or trailing "/", no empty component ("//"), no "." or ".." component, no
// NUL — with each component at most MaxNameLen bytes and the whole at most
// MaxPathLen bytes. The root itself (".") is not a valid path: no op names
// the root. The replica applies this same rule before it touches its tree.
func ValidPath(p string) error {
	if p == "" {
		return fmt.Errorf("empty path")
	}
	if len(p) > MaxPathLen {
		return fmt.Errorf("path is %d bytes, over the limit %d", len(p), MaxPathLen)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return fmt.Errorf("path %q contains NUL", p)
	}
	if p[0] == '/' {
		return fmt.Errorf("path %q is absolute", p)
	}
	for rest := p; ; {
		comp, tail, more := strings.Cut(rest, "/")
		switch {
		case comp == "":
			return fmt.Errorf("path %q has an empty component", p)
		case comp == "." || comp == "..":
			return fmt.Errorf("path %q has a %q component", p, comp)
		case len(comp) > MaxNameLen:
			return fmt.Errorf("path %q has a component of %d bytes, over the limit %d", p, len(comp), MaxNameLen)
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// ComparePaths orders paths as a depth-first walk visits them: component by
// component, each compared byte-wise, an ancestor before its descendants.
// This is the order filepath.WalkDir gives (it sorts each directory's
// entries by name) and the order of a manifest stream. It differs from
// plain string order: "a/b" < "a.txt" here, because the directory "a"
// sorts before "a.txt" and its subtree follows it immediately.
//
// It is one byte-wise comparison in which "/" sorts below every other
// byte: at the first byte where the paths differ, a "/" means that path's
// component ended first, so it is the smaller one; when one path is a
// prefix of the other, the shorter (an ancestor, or a shorter name) comes
// first. A resync's merge compares every entry of both trees with it.
func ComparePaths(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	switch {
	case i == n:
		return cmp.Compare(len(a), len(b))
	case a[i] == '/':
		return -1
	case b[i] == '/':
		return 1
	}
	return cmp.Compare(a[i], b[i])
}

// isAncestor reports whether dir is a proper ancestor of p.
func isAncestor(dir, p string) bool {
	return len(p) > len(dir) && p[len(dir)] == '/' && p[:len(dir)] == dir
}

func badPath(msg, field, p string, err error) *ProtoError {
	return &ProtoError{Code: CodeBadPath, Msg: fmt.Sprintf("%s: %s: %v", msg, field, err), Path: truncPath(p)}
}

// truncPath keeps error messages bounded when a path is hostile.
func truncPath(p string) string {
	if len(p) > 256 {
		return p[:256] + "..."
	}
	return p
}
