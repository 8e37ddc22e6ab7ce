package digest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
)

func newTree(t *testing.T, root string) *Tree {
	t.Helper()
	cache, err := guid.OpenCache(filepath.Join(t.TempDir(), "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	return New(Options{Cache: cache, Mode: guid.SHA256, OpenDir: func(dir string) (int, error) {
		return unix.Open(filepath.Join(root, dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	}})
}

func write(t *testing.T, p, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// makeSpool builds a small maildir-like tree with fixed times.
func makeSpool(t *testing.T, root string) {
	t.Helper()
	write(t, root+"/user/bob/cur/1.eml", "Subject: one\n\nbody\n")
	write(t, root+"/user/bob/cur/2.eml", "Subject: two\n\nbody\n")
	write(t, root+"/user/bob/new/3.eml", "")
	write(t, root+"/user/amy/cur/1.eml", "Subject: hi\n")
	if err := os.Symlink("cur/1.eml", root+"/user/bob/link"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(root+"/user/bob/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(root+"/user/bob/cur", "user.flags", []byte("S"), 0); err != nil {
		t.Skipf("user xattrs not supported on %s: %v", root, err)
	}
	write(t, root+"/.spoolsync/state", "reserved: never compared")
	settle(t, root)
}

// settle gives every entry the same fixed mtime, so two trees built
// apart compare equal.
func settle(t *testing.T, root string) {
	t.Helper()
	ts := []unix.Timespec{unix.NsecToTimespec(1e18), unix.NsecToTimespec(1e18)}
	var paths []string
	filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		paths = append(paths, p)
		return err
	})
	for i := len(paths) - 1; i >= 0; i-- {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Fatal(err)
		}
	}
}

func rootDigest(t *testing.T, tr *Tree) Sum {
	t.Helper()
	d, err := tr.Refresh(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest
}

// TestChangesShow: two trees built alike have one digest; each kind of
// change the verifier must catch changes it, and the cache of a Tree that
// saw the tree before never hides it.
func TestChangesShow(t *testing.T) {
	old := cacheSlack
	cacheSlack = -time.Hour // reuse everything that looks unchanged
	t.Cleanup(func() { cacheSlack = old })
	changes := map[string]func(t *testing.T, root string){
		"file removed": func(t *testing.T, root string) { os.Remove(root + "/user/bob/cur/2.eml") },
		"byte flipped, mtime kept": func(t *testing.T, root string) {
			write(t, root+"/user/bob/cur/2.eml", "Subject: twO\n\nbody\n")
			settle(t, root)
		},
		"xattr dropped": func(t *testing.T, root string) {
			if err := unix.Lremovexattr(root+"/user/bob/cur", "user.flags"); err != nil {
				t.Fatal(err)
			}
		},
		"xattr value": func(t *testing.T, root string) {
			unix.Lsetxattr(root+"/user/bob/cur", "user.flags", []byte("T"), 0)
		},
		"dir mtime": func(t *testing.T, root string) {
			ts := []unix.Timespec{unix.NsecToTimespec(5), unix.NsecToTimespec(5)}
			unix.UtimesNanoAt(unix.AT_FDCWD, root+"/user/amy", ts, 0)
		},
		"file mode":    func(t *testing.T, root string) { os.Chmod(root+"/user/bob/cur/1.eml", 0o600) },
		"dir mode":     func(t *testing.T, root string) { os.Chmod(root+"/user/bob/new", 0o700) },
		"owner":        func(t *testing.T, root string) { os.Lchown(root+"/user/bob/link", 12345, 12345) },
		"extra file":   func(t *testing.T, root string) { write(t, root+"/user/amy/cur/9.eml", ""); settle(t, root) },
		"empty dir":    func(t *testing.T, root string) { os.Mkdir(root+"/user/amy/tmp", 0o755); settle(t, root) },
		"renamed":      func(t *testing.T, root string) { os.Rename(root+"/user/bob/new/3.eml", root+"/user/bob/new/4.eml") },
		"fifo removed": func(t *testing.T, root string) { os.Remove(root + "/user/bob/fifo") },
		"hard link made": func(t *testing.T, root string) {
			os.Link(root+"/user/amy/cur/1.eml", root+"/user/amy/x")
			settle(t, root)
		},
		"symlink target": func(t *testing.T, root string) {
			os.Remove(root + "/user/bob/link")
			os.Symlink("cur/2.eml", root+"/user/bob/link")
			settle(t, root)
		},
	}
	a, b := t.TempDir(), t.TempDir()
	makeSpool(t, a)
	makeSpool(t, b)
	ta := newTree(t, a)
	want := rootDigest(t, ta)
	if got := rootDigest(t, newTree(t, b)); got != want {
		t.Fatalf("two trees built alike: digests %x and %x", want, got)
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			if os.Getuid() != 0 && name == "owner" {
				t.Skip("chown needs root")
			}
			root := t.TempDir()
			makeSpool(t, root)
			tr := newTree(t, root)
			if got := rootDigest(t, tr); got != want {
				t.Fatalf("before the change: digest %x, want %x", got, want)
			}
			change(t, root)
			if got := rootDigest(t, tr); got == want {
				t.Fatalf("after the change: digest unchanged (%x)", got)
			}
			if got := rootDigest(t, newTree(t, root)); got == want {
				t.Fatalf("after the change, fresh tree: digest unchanged")
			}
		})
	}
}

// TestUnchangedReadsNothing: a second digest of an unchanged tree reuses
// every attribute hash (stat only), and the reserved names are left out.
func TestUnchangedReadsNothing(t *testing.T) {
	old := cacheSlack
	cacheSlack = -time.Hour
	t.Cleanup(func() { cacheSlack = old })
	root := t.TempDir()
	makeSpool(t, root)
	tr := newTree(t, root)
	first := rootDigest(t, tr)
	n := tr.reads
	if n == 0 {
		t.Fatal("the first digest read no entry")
	}
	if got := rootDigest(t, tr); got != first {
		t.Fatalf("digest changed with nothing changed: %x then %x", first, got)
	}
	if tr.reads != n {
		t.Fatalf("second digest read %d entries again, want 0", tr.reads-n)
	}
	for _, e := range tr.Listing("").Entries {
		if e.Name == ".spoolsync" {
			t.Fatal("the reserved .spoolsync is in the root listing")
		}
	}
	os.WriteFile(root+"/.spoolsync/state", []byte("changed"), 0o644)
	if got := rootDigest(t, tr); got != first {
		t.Fatal("a change under .spoolsync changed the digest")
	}
}

// TestRacyEntryReread: with the real slack, an entry changed less than
// CacheSlack before it was read is read again next time, so a change in
// the same clock tick is not hidden.
func TestRacyEntryReread(t *testing.T) {
	root := t.TempDir()
	write(t, root+"/a", "x")
	tr := newTree(t, root)
	rootDigest(t, tr)
	n := tr.reads
	rootDigest(t, tr)
	if tr.reads == n {
		t.Fatal("an entry changed just now was reused from the cache")
	}
}

func TestSubtreeAndErrors(t *testing.T) {
	root := t.TempDir()
	makeSpool(t, root)
	tr := newTree(t, root)
	whole := rootDigest(t, tr)
	bob := tr.Listing("user/bob")
	if bob == nil || len(bob.Entries) != 4 {
		t.Fatalf("listing of user/bob: %+v, want 4 entries (cur, fifo, link, new)", bob)
	}
	d, err := tr.Refresh(context.Background(), "user/bob")
	if err != nil || d.Digest != bob.Digest {
		t.Fatalf("subtree refresh: %v, digest %x want %x", err, d.Digest, bob.Digest)
	}
	if _, err := tr.Refresh(context.Background(), "user/nobody"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing dir: err %v, want not-exist", err)
	}
	if _, err := tr.Refresh(context.Background(), "user/bob/link"); err == nil {
		t.Fatal("a symlink was digested as a directory")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.Refresh(ctx, ""); err == nil {
		t.Fatal("a cancelled context did not stop the digest")
	}
	if got := rootDigest(t, tr); got != whole {
		t.Fatal("digest changed after a cancelled refresh")
	}
}
