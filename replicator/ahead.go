package replicator

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"spoolsync/internal/durable"
	"spoolsync/wire"
)

// aheadStore remembers the subtrees a resync brought to the master's
// state while the channel's cursor was behind, and the log position that
// state stands for: a resync reads the tree as it is, every event up to
// that position included, while the batches after the cursor still hold
// events older than it.
//
// Replaying such an old tree operation on a path the resync already
// brought forward does not always undo itself: a RENAME_EXCHANGE swaps
// back, a rename moves a name's newer object to where the master has
// the older one. So the steps of those operations on those paths are not
// sent: their paths are owed instead (the master's present state, like a
// step the replica could not apply), and once the cursor has passed the
// position the record goes. Content, attributes and directory times are
// read when a batch is sent, so they are never older than the resync.
//
// The record is a small JSON file beside the cursor, {"upto":N,"paths":
// [...]}, an empty list standing for the whole tree; it survives a restart
// of the mount, whose cursor is still behind.
type aheadStore struct {
	path string
	mu   sync.Mutex
	a    ahead
}

type ahead struct {
	UpTo  uint64   `json:"upto"`
	Paths []string `json:"paths"` // topmost; none: the whole tree
	Whole bool     `json:"whole,omitempty"`
}

func openAhead(dir, channel string) (*aheadStore, error) {
	as := &aheadStore{path: filepath.Join(dir, channel+".ahead")}
	b, err := os.ReadFile(as.path)
	if errors.Is(err, os.ErrNotExist) {
		return as, nil
	}
	if err != nil {
		return nil, err
	}
	as.a = decodeAhead(b)
	return as, nil
}

// decodeAhead reads an ahead record. A damaged one reads as the whole
// tree up to the end of any log: the safe reading, whose cost is that
// tree ops become owed paths until the cursor passes it (nothing is lost).
func decodeAhead(b []byte) ahead {
	var a ahead
	if err := json.Unmarshal(b, &a); err != nil {
		return ahead{UpTo: ^uint64(0) >> 1, Whole: true}
	}
	for _, p := range a.Paths {
		if wire.ValidPath(p) != nil {
			return ahead{UpTo: max(a.UpTo, 1), Whole: true}
		}
	}
	if len(a.Paths) == 0 && a.UpTo != 0 {
		a.Whole = true
	}
	return a
}

// add records that paths (nil: the whole tree) stand for every event up
// to upto.
func (as *aheadStore) add(paths []string, upto uint64) error {
	as.mu.Lock()
	defer as.mu.Unlock()
	a := as.a
	a.UpTo = max(a.UpTo, upto)
	if paths == nil || a.Whole {
		a.Whole, a.Paths = true, nil
	} else {
		all := append(slices.Clone(a.Paths), paths...)
		slices.SortFunc(all, wire.ComparePaths)
		a.Paths = topmost(slices.Compact(all))
		if a.Paths == nil {
			a.Whole = true
		}
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := durable.WriteFile(as.path, b, 0o600); err != nil {
		return fmt.Errorf("replicator: %w", err)
	}
	as.a = a
	return nil
}

// passed drops the record once the cursor is at or past its position.
func (as *aheadStore) passed(cursor uint64) error {
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.a.UpTo == 0 && !as.a.Whole || cursor < as.a.UpTo {
		return nil
	}
	if err := os.Remove(as.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	as.a = ahead{}
	return nil
}

// stale takes out of steps the tree operations older than the record on
// paths it covers, and returns the paths they touch, which are owed.
func (as *aheadStore) stale(steps []step) ([]step, []string) {
	as.mu.Lock()
	a := as.a
	as.mu.Unlock()
	if a.UpTo == 0 {
		return steps, nil
	}
	covered := func(p string) bool {
		if p == "" {
			return false
		}
		if a.Whole {
			return true
		}
		for _, d := range a.Paths {
			if under(p, d) {
				return true
			}
		}
		return false
	}
	var owed []string
	out := steps[:0]
	for _, s := range steps {
		switch s.kind {
		case stepRename, stepLink, stepUnlink, stepRmdir:
			if s.seq != 0 && s.seq <= a.UpTo && (covered(s.path) || covered(s.path2)) {
				owed = append(owed, s.path)
				if s.path2 != "" {
					owed = append(owed, s.path2)
				}
				continue
			}
		}
		out = append(out, s)
	}
	return out, owed
}
