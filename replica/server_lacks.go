package replica

import (
	bolt "go.etcd.io/bbolt"

	"spoolsync/guid"
)

// Lacks is Txn.Lacks without a batch: for each GUID, whether the replica
// has no verified local copy of it. It runs in a read-only index
// transaction, so a server answers a content offer while another
// connection's batch is being applied, instead of waiting for it. Stale
// entries are reported as lacking but left in the index (a read-only
// transaction cannot drop them; the next batch that meets them does).
func (s *Store) Lacks(gs []guid.GUID) []bool {
	out := make([]bool, len(gs))
	for i := range out {
		out[i] = true
	}
	if s.db == nil {
		return out
	}
	s.db.View(func(tx *bolt.Tx) error {
		ix := index{tx}
		for i, g := range gs {
			for _, c := range ix.lookup(g) {
				if s.stillValid(c) {
					out[i] = false
					break
				}
			}
		}
		return nil
	})
	return out
}

// stillValid reports whether c's file is unchanged since it was indexed
// (same inode, size, mtime and ctime), without following any symlink.
func (s *Store) stillValid(c candidate) bool {
	par, err := openParent(s.rootfd, c.path)
	if err != nil {
		return false
	}
	defer par.close()
	st, err := par.lstat()
	return err == nil && c.rec.matches(&st)
}
