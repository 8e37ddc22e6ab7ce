package server

import (
	"errors"
	"io/fs"

	"spoolsync/digest"
	"spoolsync/guid"
	"spoolsync/replica"
	"spoolsync/wire"
)

// digest answers a DigestRequest: per directory, in order, whether the
// replica's digest is the one the master has, and if not, the
// directory's entries, so that the master can descend only where they
// differ. A Shutdown stops it between directories (srv.ctx).
func (ss *session) digest(m *wire.DigestRequest) error {
	for _, d := range m.Dirs {
		list, err := ss.store.Digest(ss.srv.ctx, d.Path, guid.Mode(m.GUIDMode))
		rep := &wire.DigestReply{Path: d.Path}
		switch {
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, replica.ErrBadPath):
			// A path clients may not name (.spoolsync) is not in the tree.
			rep.Tag = wire.DigestAbsent
		case errors.Is(err, digest.ErrNotDir):
			rep.Tag = wire.DigestNotDir
		case err != nil:
			if ss.srv.ctx.Err() != nil {
				return ss.srv.ctx.Err()
			}
			return &wire.ProtoError{Code: wire.CodeApply, Path: d.Path, Msg: "digest: " + err.Error()}
		case wire.Digest(list.Digest) == d.Digest:
			rep.Tag, rep.Digest = wire.DigestSame, wire.Digest(list.Digest)
		default:
			rep.Tag, rep.Digest, rep.Count = wire.DigestDiffer, wire.Digest(list.Digest), uint64(len(list.Entries))
		}
		if err := ss.c.Send(rep); err != nil {
			return err
		}
		if rep.Tag != wire.DigestDiffer {
			continue
		}
		for _, e := range list.Entries {
			de := &wire.DigestEntry{Name: e.Name, Kind: e.Kind, Attr: wire.Digest(e.Attr)}
			if e.Kind == digest.KindDir {
				de.Sub = wire.Digest(e.Sub)
			}
			if err := ss.c.Send(de); err != nil {
				return err
			}
		}
	}
	return ss.c.Flush()
}
