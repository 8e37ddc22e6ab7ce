package replica

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStaged: staged files land by rename in op order after one sync, and
// staged files a batch did not put in place leave no temp file behind.
func TestStaged(t *testing.T) {
	tc := newTestCase(t)
	tc.batch(func(txn *Txn) error {
		var st []*Staged
		for i := 0; i < 5; i++ {
			s, err := tc.s.Stage(Meta{Mode: 0o640, Mtime: 1e18}, fill(fmt.Sprintf("message %d", i)))
			if err != nil {
				return err
			}
			st = append(st, s)
		}
		if err := tc.s.SyncStaged(); err != nil {
			return err
		}
		defer tc.s.DropStaged(st[4:]) // never put in place
		for i, s := range st[:4] {
			if err := txn.PutStaged(fmt.Sprintf("m%d", i), s); err != nil {
				return err
			}
		}
		return nil
	})
	for i := 0; i < 4; i++ {
		if got, want := tc.read(fmt.Sprintf("m%d", i)), fmt.Sprintf("message %d", i); got != want {
			t.Errorf("m%d = %q, want %q", i, got, want)
		}
		if st := tc.lstat(fmt.Sprintf("m%d", i)); st.Mode&0o777 != 0o640 || st.Mtim.Nano() != 1e18 {
			t.Errorf("m%d: mode %o mtime %d", i, st.Mode&0o777, st.Mtim.Nano())
		}
	}
	checkNoTemps(t, tc)
}

// TestStagedAfterDirRename: PutStaged keeps its directory open across
// consecutive puts; an op between them that moves that directory must make
// the next put resolve its path again, not land in the moved directory.
func TestStagedAfterDirRename(t *testing.T) {
	tc := newTestCase(t)
	tc.batch(func(txn *Txn) error {
		var st []*Staged
		for _, c := range []string{"first", "second"} {
			s, err := tc.s.Stage(Meta{Mode: 0o600}, fill(c))
			if err != nil {
				return err
			}
			st = append(st, s)
		}
		if err := tc.s.SyncStaged(); err != nil {
			return err
		}
		defer tc.s.DropStaged(st)
		if err := txn.Mkdir("a", Meta{Mode: 0o755}); err != nil {
			return err
		}
		if err := txn.PutStaged("a/m1", st[0]); err != nil {
			return err
		}
		if err := txn.Rename("a", "b", 0); err != nil {
			return err
		}
		if err := txn.Mkdir("a", Meta{Mode: 0o755}); err != nil {
			return err
		}
		return txn.PutStaged("a/m2", st[1])
	})
	if got := tc.read("b/m1"); got != "first" {
		t.Errorf("b/m1 = %q, want first", got)
	}
	if got := tc.read("a/m2"); got != "second" {
		t.Errorf("a/m2 = %q, want second", got)
	}
	if _, err := os.Lstat(tc.path("b/m2")); err == nil {
		t.Errorf("b/m2 exists: the second put landed in the renamed directory")
	}
	checkNoTemps(t, tc)
}

// fill is a Stage content producer writing s.
func fill(s string) func(io.Writer) error {
	return func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	}
}

func checkNoTemps(t *testing.T, tc *testCase) {
	t.Helper()
	ents, err := os.ReadDir(tc.path(".spoolsync/tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("temp file left behind: %s", e.Name())
	}
}

// TestStagedSurviveEarlySync: a batch that touches more directories than
// the Txn keeps open syncs them early; files staged before must survive
// that (a 3,000-message resync lost them: "staged file: no such file").
func TestStagedSurviveEarlySync(t *testing.T) {
	tc := newTestCase(t)
	tc.batch(func(txn *Txn) error {
		s, err := tc.s.Stage(Meta{Mode: 0o600}, fill("kept"))
		if err != nil {
			return err
		}
		if err := tc.s.SyncStaged(); err != nil {
			return err
		}
		for i := 0; i < maxHeld+10; i++ {
			if err := txn.Mkdir(fmt.Sprintf("d%d", i), Meta{Mode: 0o755}); err != nil {
				return err
			}
		}
		return txn.PutStaged(fmt.Sprintf("d%d/m", maxHeld+5), s)
	})
	if got := tc.read(fmt.Sprintf("d%d/m", maxHeld+5)); got != "kept" {
		t.Errorf("staged file = %q", got)
	}
	checkNoTemps(t, tc)
}

// TestQuarantine: a file and a directory move under
// .spoolsync-quarantine/<epoch>/ with their paths; a name taken there is
// not overwritten; clients cannot name the quarantine; manifests leave it out.
func TestQuarantine(t *testing.T) {
	tc := newTestCase(t)
	tc.write("user/bob/new/1.host", "late mail")
	tc.write("user/bob/.Sent/cur/2.host", "sent")
	tc.batch(func(txn *Txn) error {
		if err := txn.Quarantine("user/bob/new/1.host", 3); err != nil {
			return err
		}
		return txn.Quarantine("user/bob/.Sent", 3)
	})
	if got := tc.read(".spoolsync-quarantine/3/user/bob/new/1.host"); got != "late mail" {
		t.Errorf("quarantined file = %q", got)
	}
	if got := tc.read(".spoolsync-quarantine/3/user/bob/.Sent/cur/2.host"); got != "sent" {
		t.Errorf("quarantined dir file = %q", got)
	}
	if tc.exists("user/bob/new/1.host") || tc.exists("user/bob/.Sent") {
		t.Error("quarantined entries still in the live tree")
	}
	tc.write("user/bob/new/1.host", "again")
	tc.batch(func(txn *Txn) error { return txn.Quarantine("user/bob/new/1.host", 3) })
	if got := tc.read(".spoolsync-quarantine/3/user/bob/new/1.host.1"); got != "again" {
		t.Errorf("second quarantine of the same name = %q", got)
	}
	if err := tc.try(func(txn *Txn) error { return txn.Unlink(".spoolsync-quarantine/3/user/bob/new/1.host") }); err == nil {
		t.Error("a client op reached into the quarantine")
	}
	tc.s.Manifest(context.Background(), "", 0, func(e Entry) error {
		if strings.HasPrefix(e.Path, QuarantineDir) {
			t.Errorf("manifest lists %s", e.Path)
		}
		return nil
	})
}

// TestHolesStayHoles: a sparse file's content — holes arrive as zeros —
// lands with its holes, staged or put, and a file that ends in a hole
// keeps its size (issue 14: sparse files took 3.7× the blocks here).
func TestHolesStayHoles(t *testing.T) {
	const hole = 8 << 20
	content := strings.Repeat("\x00", hole) + "data after the hole" + strings.Repeat("\x00", hole)
	tc := newTestCase(t)
	tc.batch(func(txn *Txn) error {
		s, err := tc.s.Stage(Meta{Mode: 0o600}, fill(content))
		if err != nil {
			return err
		}
		if err := tc.s.SyncStaged(); err != nil {
			return err
		}
		if err := txn.PutStaged("staged", s); err != nil {
			return err
		}
		return txn.Put("put", Meta{Mode: 0o600}, str(content))
	})
	for _, p := range []string{"staged", "put"} {
		if tc.read(p) != content {
			t.Errorf("%s: content differs", p)
		}
		if st := tc.lstat(p); st.Blocks*512 > 1<<20 {
			t.Errorf("%s: %d KiB allocated for %d KiB of data, the rest holes; want the holes kept", p, st.Blocks/2, len("data after the hole")/1024)
		}
	}
}

// TestSetAttrAlreadyMatching: attributes the entry already has are not set
// again, so its ctime — which the GUID index checks a copy source by —
// does not move for nothing.
func TestSetAttrAlreadyMatching(t *testing.T) {
	tc := newTestCase(t)
	m := Meta{Mode: 0o640, Mtime: 1e18, Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	tc.batch(func(txn *Txn) error { return txn.Put("f", m, str("content")) })
	before := tc.lstat("f")
	time.Sleep(20 * time.Millisecond)
	tc.batch(func(txn *Txn) error { return txn.SetAttr("f", AttrMode|AttrOwner|AttrMtime, m) })
	if after := tc.lstat("f"); after.Ctim != before.Ctim {
		t.Errorf("ctime moved from %v to %v by setting the attributes the file had", before.Ctim, after.Ctim)
	}
	m.Mode = 0o600
	tc.batch(func(txn *Txn) error { return txn.SetAttr("f", AttrMode|AttrOwner|AttrMtime, m) })
	if st := tc.lstat("f"); st.Mode&0o7777 != 0o600 || st.Mtim.Nano() != 1e18 {
		t.Errorf("mode %o mtime %d, want 600 and 1e18", st.Mode&0o7777, st.Mtim.Nano())
	}
}
