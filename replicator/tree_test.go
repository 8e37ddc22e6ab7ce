package replicator

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"spoolsync/guid"
)

// TestResolveNeverLeavesSpool: a user swaps a directory of theirs for a
// symlink to a place outside the spool between an event and its batch.
// The replicator runs as root: it must find the message gone, not read
// the file the symlink leads to and ship it as the user's.
func TestResolveNeverLeavesSpool(t *testing.T) {
	base := t.TempDir()
	spool, outside := filepath.Join(base, "spool"), filepath.Join(base, "outside")
	for _, d := range []string{filepath.Join(spool, "u"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "m"), []byte("root's secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(spool, "u", "cur")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(spool, "top")); err != nil {
		t.Fatal(err)
	}
	cache, err := guid.OpenCache(filepath.Join(base, "guids.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	r := &resolver{backing: spool, cache: cache, mode: guid.SHA256}
	steps := []step{
		{kind: stepPut, path: "u/cur/m", src: "u/cur/m"},
		{kind: stepPut, path: "top/m", src: "top/m"},
		{kind: stepWrite, path: "u/cur/m", ranges: nil},
		{kind: stepAttrs, path: "u/cur/m"},
		{kind: stepMkdir, path: "u/cur", src: "u/cur"},
	}
	ops, pending, err := r.resolve(steps)
	if err != nil {
		t.Fatal(err)
	}
	defer closeFiles(ops)
	for _, op := range ops {
		if op.file != nil {
			t.Errorf("%v: opened %s, outside the spool", op.msg.Type(), op.file.Name())
		}
		if op.msg.Type().String() == "SetAttr" {
			t.Errorf("SetAttr from a stat through a symlink: %+v", op.msg)
		}
	}
	if len(pending) != 4 {
		t.Errorf("pending = %+v, want both puts, the write and the directory's attributes, as gone", pending)
	}
}

// TestResolveFifoDoesNotBlock: a file replaced by a fifo before its batch
// is read is not shipped, and does not hang the replicator.
func TestResolveFifoDoesNotBlock(t *testing.T) {
	spool := t.TempDir()
	if err := unix.Mkfifo(filepath.Join(spool, "m"), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := openTree(spool)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	if f, _, ok := tr.open("m"); ok {
		f.Close()
		t.Fatal("opened a fifo as a message")
	}
	if _, err := guid.FileAt(guid.SHA256, unix.AT_FDCWD, filepath.Join(spool, "m")); err == nil {
		t.Fatal("hashed a fifo")
	}
}
