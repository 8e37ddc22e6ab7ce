package replica

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"spoolsync/guid"
	"spoolsync/internal/testenv"
)

func TestOpenRefuses(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	must(t, os.Mkdir(root, 0o755))
	quiet := slog.New(slog.DiscardHandler)
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"missing root", Options{Root: filepath.Join(base, "nope"), StateDir: filepath.Join(base, "s1")}, "no such file"},
		{"state in root", Options{Root: root, StateDir: filepath.Join(root, "state")}, "inside the replica root"},
		{"state is root", Options{Root: root, StateDir: root}, "inside the replica root"},
		{"no state", Options{Root: root}, "not set"},
	}
	for _, tt := range tests {
		tt.opts.Logger = quiet
		if s, err := Open(tt.opts); err == nil || !strings.Contains(err.Error(), tt.want) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: Open = %v; want an error containing %q", tt.name, err, tt.want)
		}
	}
	s, err := Open(Options{Root: root, StateDir: filepath.Join(base, "state"), Logger: quiet})
	must(t, err)
	defer s.Close()
	for _, state := range []string{filepath.Join(base, "state"), filepath.Join(base, "state2")} {
		if s2, err := Open(Options{Root: root, StateDir: state, Logger: quiet}); !errors.Is(err, ErrLocked) {
			if s2 != nil {
				s2.Close()
			}
			t.Errorf("second Open with state %s = %v; want ErrLocked", state, err)
		}
	}
}

func TestManifest(t *testing.T) {
	tc := newTestCase(t)
	tc.batch(func(tx *Txn) error {
		return run(tx, []op{
			func(tx *Txn) error { return tx.Mkdir("b", meta(0o750, t0)) },
			func(tx *Txn) error { return tx.Mkdir("a", meta(0o755, t0)) },
			func(tx *Txn) error { return tx.Put("a/z", meta(0o600, t0), str("zz")) },
			func(tx *Txn) error { return tx.Put("a/B", meta(0o600, t0), str("B")) },
			func(tx *Txn) error { return tx.Link("a/z", "b/hz") },
			func(tx *Txn) error { return tx.Symlink("b/l", "../a/z", meta(0, t0)) },
			func(tx *Txn) error { return tx.SetXattr("a/z", "user.k", []byte("v")) },
			func(tx *Txn) error { return tx.Mknod("c", meta(0o600, t0)) },
		})
	})
	var got []string
	var z, hz Entry
	err := tc.s.Manifest(context.Background(), "", guid.BLAKE3, func(e Entry) error {
		got = append(got, e.Path)
		switch e.Path {
		case "a/z":
			z = e
		case "b/hz":
			hz = e
		case "b/l":
			if e.Type != fs.ModeSymlink || e.Target != "../a/z" {
				t.Errorf("b/l = %+v", e)
			}
		case "c":
			if e.Type != fs.ModeNamedPipe || e.Mode != 0o600 {
				t.Errorf("c = %+v", e)
			}
		}
		return nil
	})
	must(t, err)
	want := ". a a/B a/z b b/hz b/l c"
	if strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q", strings.Join(got, " "), want)
	}
	wantG, _, _ := guid.Sum(guid.BLAKE3, str("zz"))
	if z.GUID != wantG || z.Size != 2 || z.Nlink != 2 || z.Ino != hz.Ino || z.Mtime != t0 {
		t.Errorf("a/z = %+v; want guid %v, size 2, 2 links shared with b/hz", z, wantG)
	}
	if len(z.Xattrs) != 1 || z.Xattrs[0].Name != "user.k" {
		t.Errorf("a/z xattrs = %v", z.Xattrs)
	}
	// A subtree.
	got = nil
	must(t, tc.s.Manifest(context.Background(), "a", guid.None, func(e Entry) error {
		got = append(got, e.Path)
		if !e.GUID.IsZero() {
			t.Errorf("%s: GUID in mode none", e.Path)
		}
		return nil
	}))
	if strings.Join(got, " ") != "a a/B a/z" {
		t.Errorf("subtree a: %v", got)
	}
}

// TestNoFDLeak applies every replay batch (all op kinds) and closes the
// store: no fd may stay open.
func TestNoFDLeak(t *testing.T) {
	before := testenv.OpenFDs(t)
	tc := newTestCase(t)
	for _, ops := range replayBatches {
		tc.batch(func(tx *Txn) error { return run(tx, ops) })
	}
	must(t, tc.s.Manifest(context.Background(), "", guid.SHA256, func(Entry) error { return nil }))
	must(t, tc.s.Close())
	tc.s = nil
	if after := testenv.OpenFDs(t); after != before {
		t.Errorf("open fds: %d before, %d after", before, after)
	}
}

// TestWalkFallback checks the pre-openat2 resolution path directly.
func TestWalkFallback(t *testing.T) {
	tc := newTestCase(t)
	must(t, os.MkdirAll(tc.path("d/e"), 0o755))
	must(t, os.Symlink("../outside", tc.path("evil")))
	must(t, os.Symlink("e", tc.path("d/l")))
	for dir, want := range map[string]error{"d/e": nil, ".": nil, "evil": ErrOutsideRoot, "d/l": ErrOutsideRoot, "nope": nil} {
		fd, err := walkDirBeneath(tc.s.rootfd, dir)
		if err == nil {
			closeFD(fd)
		}
		switch {
		case want == nil && dir == "nope" && err == nil:
			t.Errorf("walk %s: no error for a missing dir", dir)
		case want == nil && dir != "nope" && err != nil:
			t.Errorf("walk %s: %v", dir, err)
		case want != nil && !errors.Is(err, want):
			t.Errorf("walk %s: %v, want %v", dir, err, want)
		}
	}
}
