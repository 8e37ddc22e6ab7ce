package replica

import (
	"context"
	"errors"

	"spoolsync/digest"
	"spoolsync/guid"
)

// Digest returns the listing and Merkle digest of directory dir ("" for
// the root) of the replica tree as it is now, with file GUIDs in mode
// (package digest). The digests are cached per GUID mode and validated by
// stat (see package digest for why not by the batches applied: the
// verifier asks in order to see what changed behind spoolsync's back), so
// an unchanged tree costs a getdents per directory and an fstatat per
// entry; nothing is opened or hashed. Like Manifest it may run while a
// batch is applied, and then sees some state in between. A missing dir
// satisfies errors.Is(err, fs.ErrNotExist); a non-directory,
// errors.Is(err, digest.ErrNotDir).
func (s *Store) Digest(ctx context.Context, dir string, mode guid.Mode) (*digest.Dir, error) {
	if dir != "" && dir != "." {
		if err := checkPath(dir); err != nil {
			return nil, err
		}
	}
	d, err := s.digestTree(mode).Refresh(ctx, dir)
	if errors.Is(err, ErrOutsideRoot) {
		// A symlink where a directory was asked for: not a directory.
		return nil, errors.Join(err, digest.ErrNotDir)
	}
	return d, err
}

func (s *Store) digestTree(mode guid.Mode) *digest.Tree {
	s.digestMu.Lock()
	defer s.digestMu.Unlock()
	t := s.digests[mode]
	if t == nil {
		if s.digests == nil {
			s.digests = map[guid.Mode]*digest.Tree{}
		}
		t = digest.New(digest.Options{Cache: s.cache, Mode: mode,
			OpenDir: func(dir string) (int, error) { return openDirBeneath(s.rootfd, dir) }})
		s.digests[mode] = t
	}
	return t
}
