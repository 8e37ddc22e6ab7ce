package replica

import (
	"os"
	"testing"
	"time"

	"spoolsync/guid"
)

func TestPutGUIDCopies(t *testing.T) {
	tc := newTestCase(t)
	const msg = "Subject: hi\r\n\r\nbody\r\n"
	g, _, _ := guid.Sum(guid.SHA256, str(msg))
	tc.batch(func(tx *Txn) error { return tx.Put("a", meta(0o600, t0), str(msg)) })
	tc.reopen() // the index is durable
	var ok bool
	tc.batch(func(tx *Txn) error {
		if got := tx.Lacks([]guid.GUID{g, {Mode: guid.SHA256}}); !got[1] || got[0] {
			t.Errorf("Lacks = %v, want [false true]", got)
		}
		var err error
		ok, err = tx.PutGUID("b", meta(0o640, t0+5), g)
		return err
	})
	if !ok {
		t.Fatal("PutGUID: ok=false, want a copy of a")
	}
	tc.wantFile("b", msg, 0o640, t0+5)
	if a, b := tc.lstat("a"), tc.lstat("b"); a.Ino == b.Ino {
		t.Fatal("b is a hard link to a; want a copy")
	}
	// The copy is a source too: remove a, copy from b.
	tc.batch(func(tx *Txn) error {
		if err := tx.Unlink("a"); err != nil {
			return err
		}
		var err error
		ok, err = tx.PutGUID("c", meta(0o600, t0), g)
		return err
	})
	if !ok {
		t.Fatal("PutGUID from the second copy failed")
	}
	tc.wantContent("c", msg)
}

// TestPutGUIDRefusesTampered modifies the indexed source behind the index's
// back with the same size and mtime. Only ctime tells; PutGUID must see it,
// re-check by hash and refuse.
func TestPutGUIDRefusesTampered(t *testing.T) {
	tc := newTestCase(t)
	g, _, _ := guid.Sum(guid.SHA256, str("AAAA"))
	tc.batch(func(tx *Txn) error { return tx.Put("a", meta(0o600, t0), str("AAAA")) })
	before := tc.lstat("a")
	for tc.lstat("a").Ctim == before.Ctim {
		must(t, os.WriteFile(tc.path("a"), []byte("EVIL"), 0o600))
		must(t, os.Chtimes(tc.path("a"), time.Unix(0, t0), time.Unix(0, t0)))
	}
	if now := tc.lstat("a"); now.Size != before.Size || now.Mtim != before.Mtim || now.Ino != before.Ino {
		t.Fatal("test setup: size, mtime or inode changed")
	}
	var ok bool
	tc.batch(func(tx *Txn) error {
		var err error
		ok, err = tx.PutGUID("b", meta(0o600, t0), g)
		return err
	})
	if ok || tc.exists("b") {
		t.Fatal("PutGUID copied tampered content")
	}
	tc.batch(func(tx *Txn) error {
		if got := tx.Lacks([]guid.GUID{g}); !got[0] {
			t.Error("Lacks: the tampered source still counts")
		}
		return nil
	})
	tc.wantNoTemp()
}

// TestPutGUIDRehashes: a source whose ctime moved but whose content did not
// (chmod behind the index's back) is re-verified by hash and used.
func TestPutGUIDRehashes(t *testing.T) {
	tc := newTestCase(t)
	g, _, _ := guid.Sum(guid.SHA256, str("same"))
	tc.batch(func(tx *Txn) error { return tx.Put("a", meta(0o600, t0), str("same")) })
	st := tc.lstat("a")
	for tc.lstat("a").Ctim == st.Ctim {
		must(t, os.Chmod(tc.path("a"), 0o644))
		must(t, os.Chmod(tc.path("a"), 0o600))
	}
	var ok bool
	tc.batch(func(tx *Txn) error {
		var err error
		ok, err = tx.PutGUID("b", meta(0o600, t0), g)
		return err
	})
	if !ok {
		t.Fatal("PutGUID refused a source whose content is unchanged")
	}
	tc.wantContent("b", "same")
}

// TestIndexFollowsTree: the index moves with renames and keeps up with our
// own metadata changes, and forgets files written in place.
func TestIndexFollowsTree(t *testing.T) {
	tc := newTestCase(t)
	g, _, _ := guid.Sum(guid.SHA256, str("m"))
	mustHave := func(want bool) {
		t.Helper()
		tc.batch(func(tx *Txn) error {
			if got := !tx.Lacks([]guid.GUID{g})[0]; got != want {
				t.Errorf("has %v = %v, want %v", g, got, want)
			}
			return nil
		})
	}
	tc.batch(func(tx *Txn) error {
		if err := tx.Mkdir("d", meta(0o755, t0)); err != nil {
			return err
		}
		return tx.Put("d/a", meta(0o600, t0), str("m"))
	})
	tc.batch(func(tx *Txn) error {
		if err := tx.Rename("d", "e", 0); err != nil {
			return err
		}
		if err := tx.SetAttr("e/a", AttrMode|AttrMtime, meta(0o644, t0+1)); err != nil {
			return err
		}
		if err := tx.SetXattr("e/a", "user.x", []byte("1")); err != nil {
			return err
		}
		if err := tx.Link("e/a", "e/b"); err != nil {
			return err
		}
		return tx.Rename("e/a", "e/c", 0)
	})
	tc.batch(func(tx *Txn) error {
		if g2, _, _ := tx.ix().get("e/c"); g2 != g {
			t.Errorf("index for e/c = %v, want %v", g2, g)
		}
		if _, _, ok := tx.ix().get("d/a"); ok {
			t.Error("index still has d/a")
		}
		return nil
	})
	mustHave(true)
	tc.batch(func(tx *Txn) error {
		if err := tx.WriteRanges("e/c", 1, []Range{{0, 1}}, str("z")); err != nil {
			return err
		}
		return tx.Unlink("e/b")
	})
	mustHave(false)
}

// TestPutGUIDFromPinnedSource: a batch removes the only copy of some
// content and later puts that content by GUID elsewhere (the master saw
// the replica holding it when it offered). Pinned at the start of the
// batch, the source still serves the copy; unpinned, the batch would fail
// for lack of it. A source changed in place by the batch is used only if
// the copy still hashes to the GUID.
func TestPutGUIDFromPinnedSource(t *testing.T) {
	tc := newTestCase(t)
	const msg = "Subject: moved\r\n\r\nbody\r\n"
	g, _, _ := guid.Sum(guid.SHA256, str(msg))
	tc.batch(func(tx *Txn) error { return tx.Put("inbox-a", meta(0o600, t0), str(msg)) })
	var ok bool
	tc.batch(func(tx *Txn) error {
		tx.Pin([]guid.GUID{g})
		if err := tx.Unlink("inbox-a"); err != nil {
			return err
		}
		var err error
		ok, err = tx.PutGUID("archive-a", meta(0o600, t0), g)
		return err
	})
	if !ok {
		t.Fatal("PutGUID after the source's removal: ok=false, want a copy from the pinned source")
	}
	tc.wantContent("archive-a", msg)

	// Without the pin the same batch cannot copy.
	tc.batch(func(tx *Txn) error { return tx.Put("inbox-b", meta(0o600, t0), str(msg+"b")) })
	gb, _, _ := guid.Sum(guid.SHA256, str(msg+"b"))
	tc.batch(func(tx *Txn) error {
		if err := tx.Unlink("inbox-b"); err != nil {
			return err
		}
		var err error
		ok, err = tx.PutGUID("archive-b", meta(0o600, t0), gb)
		return err
	})
	if ok {
		t.Fatal("PutGUID copied from a removed source that was not pinned: the test proves nothing")
	}

	// A pinned source rewritten in place by the batch no longer holds g.
	tc.batch(func(tx *Txn) error { return tx.Put("inbox-c", meta(0o600, t0), str(msg+"c")) })
	gc, _, _ := guid.Sum(guid.SHA256, str(msg+"c"))
	tc.batch(func(tx *Txn) error {
		tx.Pin([]guid.GUID{gc})
		if err := tx.WriteRanges("inbox-c", int64(len(msg)+1), []Range{{0, 4}}, str("EVIL")); err != nil {
			return err
		}
		if err := tx.Unlink("inbox-c"); err != nil {
			return err
		}
		var err error
		ok, err = tx.PutGUID("archive-c", meta(0o600, t0), gc)
		return err
	})
	if ok || tc.exists("archive-c") {
		t.Fatal("PutGUID copied a pinned source the batch had changed")
	}
	tc.wantNoTemp()
}
