package replica

import (
	"fmt"
	"testing"
)

type op func(tx *Txn) error

// replayBatches are batches of the shapes rolling replication sends. Each is
// applied partly (every prefix), interrupted, and replayed in full; the
// result must equal applying it once.
var replayBatches = map[string][]op{
	"maildir delivery": {
		func(tx *Txn) error { return tx.Mkdir("u", meta(0o700, t0)) },
		func(tx *Txn) error { return tx.Mkdir("u/tmp", meta(0o700, t0)) },
		func(tx *Txn) error { return tx.Mkdir("u/new", meta(0o700, t0)) },
		func(tx *Txn) error { return tx.Put("u/tmp/1", meta(0o600, t0), str("mail 1")) },
		func(tx *Txn) error { return tx.Rename("u/tmp/1", "u/new/1", 0) },
		func(tx *Txn) error { return tx.Put("u/tmp/2", meta(0o600, t0), str("mail 2")) },
		func(tx *Txn) error { return tx.Rename("u/tmp/2", "u/new/2", NoReplace) },
		func(tx *Txn) error { return tx.SetAttr("u/new", AttrMtime, meta(0, t0+9)) },
	},
	"mbox append and flags": {
		func(tx *Txn) error { return tx.Put("mbox", meta(0o600, t0), str("From a\n")) },
		func(tx *Txn) error { return tx.WriteRanges("mbox", 14, []Range{{7, 7}}, str("From b\n")) },
		func(tx *Txn) error { return tx.Rename("mbox", "inbox", 0) },
		func(tx *Txn) error { return tx.Link("inbox", "inbox.bak") },
		func(tx *Txn) error { return tx.SetXattr("inbox", "user.seen", []byte("1")) },
		func(tx *Txn) error { return tx.SetAttr("inbox", AttrMtime, meta(0, t0+1)) },
	},
	"expunge": {
		func(tx *Txn) error { return tx.Mkdir("d", meta(0o755, t0)) },
		func(tx *Txn) error { return tx.Put("d/a", meta(0o600, t0), str("a")) },
		func(tx *Txn) error { return tx.Symlink("d/l", "a", meta(0, t0)) },
		func(tx *Txn) error { return tx.Mknod("d/fifo", meta(0o600, t0)) },
		func(tx *Txn) error { return tx.Truncate("d/a", 0) },
		func(tx *Txn) error { return tx.Unlink("d/a") },
		func(tx *Txn) error { return tx.Unlink("d/l") },
		func(tx *Txn) error { return tx.Mkdir("d/sub", meta(0o755, t0)) },
		func(tx *Txn) error { return tx.Rmdir("d/sub") },
	},
}

func TestReplayIsIdempotent(t *testing.T) {
	for name, ops := range replayBatches {
		want := func() string {
			tc := newTestCase(t)
			tc.batch(func(tx *Txn) error { return run(tx, ops) })
			return tree(t, tc.root)
		}()
		for k := 0; k <= len(ops); k++ {
			t.Run(fmt.Sprintf("%s/crash after %d ops", name, k), func(t *testing.T) {
				tc := newTestCase(t)
				tx, err := tc.s.Begin("m1", 1)
				must(t, err)
				must(t, run(tx, ops[:k]))
				tx.Abort() // as far as the tree knows, a crash
				tc.reopen()
				if seq, ok := tc.s.Interrupted("m1"); k > 0 && (!ok || seq != 1) {
					t.Fatalf("Interrupted = %d, %v; want 1, true", seq, ok)
				}
				if got := tc.s.AppliedSeq("m1"); got != 0 {
					t.Fatalf("AppliedSeq = %d after an interrupted batch", got)
				}
				tc.seq = 0
				tc.batch(func(tx *Txn) error { return run(tx, ops) })
				if got := tree(t, tc.root); got != want {
					t.Errorf("tree after replay:\n%s\nwant\n%s", got, want)
				}
				if _, ok := tc.s.Interrupted("m1"); ok {
					t.Error("still interrupted after commit")
				}
			})
		}
	}
}

func run(tx *Txn, ops []op) error {
	for i, o := range ops {
		if err := o(tx); err != nil {
			return fmt.Errorf("op %d: %w", i, err)
		}
	}
	return nil
}
