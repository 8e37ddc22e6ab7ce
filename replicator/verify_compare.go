package replicator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"spoolsync/digest"
	"spoolsync/guid"
	"spoolsync/wire"
)

// The comparison itself (see verify.go for when and why it runs): the
// master's digests against the replica's, top-down, a level of
// differing directories a round trip, each difference looked at twice.

// comparer compares the backing tree with one replica's.
type comparer struct {
	tree   *digest.Tree // the backing tree's digests, shared by the channels
	mode   guid.Mode
	client wire.ClientConfig

	walk     time.Duration // the last pass's master digest walk (Verify's report)
	requests int           // DigestRequests sent since the last pass began
	dirs     int           // directories they asked about
}

// difference is one entry that differs between the trees.
type difference struct {
	path   string
	what   string
	master digest.Sum // the master's attribute hash of the entry; zero if it has none
}

func (d difference) String() string { return d.path + " (" + d.what + ")" }

// pass compares the trees once caughtUp returns (nil: at once) and returns
// the differences seen at two looks (see the top of this file).
func (cm *comparer) pass(ctx context.Context, caughtUp func(context.Context) error, beforeRecheck func()) ([]difference, error) {
	cm.requests, cm.dirs = 0, 0
	if caughtUp == nil {
		caughtUp = func(context.Context) error { return nil }
	}
	if err := caughtUp(ctx); err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := cm.tree.Refresh(ctx, ""); err != nil {
		return nil, err
	}
	cm.walk = time.Since(start)
	conn, err := wire.Dial(ctx, cm.client)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	first, err := cm.compare(conn, []string{""}, true)
	if err != nil || len(first) == 0 {
		return nil, err
	}
	// Seen once. Look again once what was in flight has landed.
	if beforeRecheck != nil {
		beforeRecheck()
	}
	if err := caughtUp(ctx); err != nil {
		return nil, err
	}
	var dirs []string
	for _, d := range first {
		dirs = append(dirs, parentDir(d.path))
	}
	slices.SortFunc(dirs, wire.ComparePaths)
	dirs = slices.Compact(dirs)
	refresh := dirs
	if dirs[0] == "" {
		refresh = dirs[:1] // the root's refresh covers the others
	}
	for _, d := range refresh {
		if _, err := cm.tree.Refresh(ctx, d); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, digest.ErrNotDir) {
			return nil, err
		}
	}
	second, err := cm.compare(conn, dirs, false)
	if err != nil {
		return nil, err
	}
	again := map[difference]bool{}
	for _, d := range second {
		again[d] = true
	}
	var confirmed []difference
	for _, d := range first {
		if again[d] {
			confirmed = append(confirmed, d)
		}
	}
	return confirmed, nil
}

// parentDir is the directory holding p, "" for the root.
func parentDir(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// compare asks the replica about dirs (in ComparePaths order) and compares
// their entries with the master's listings (as the last Refresh left
// them). With descend, it goes on into the subdirectories whose digests
// differ; without, a subdirectory's own entry is all it compares.
func (cm *comparer) compare(conn *wire.Conn, dirs []string, descend bool) ([]difference, error) {
	var diffs []difference
	for len(dirs) > 0 {
		var next []string
		for len(dirs) > 0 {
			n := min(len(dirs), wire.MaxDigestDirs)
			chunk := dirs[:n]
			dirs = dirs[n:]
			req := &wire.DigestRequest{GUIDMode: uint8(cm.mode)}
			listings := make([]*digest.Dir, 0, n)
			for _, d := range chunk {
				l := cm.tree.Listing(d)
				if l == nil {
					continue // gone from the master since: in flight
				}
				listings = append(listings, l)
				req.Dirs = append(req.Dirs, wire.DigestDirReq{Path: d, Digest: wire.Digest(l.Digest)})
			}
			if len(req.Dirs) == 0 {
				continue
			}
			cm.requests++
			cm.dirs += len(req.Dirs)
			if err := conn.Send(req); err != nil {
				return nil, err
			}
			if err := conn.Flush(); err != nil {
				return nil, err
			}
			for i, d := range req.Dirs {
				rep, entries, err := recvDigest(conn)
				if err != nil {
					return nil, err
				}
				if rep.Path != d.Path {
					return nil, fmt.Errorf("verify: the replica answered about %q when asked about %q", rep.Path, d.Path)
				}
				switch rep.Tag {
				case wire.DigestSame:
				case wire.DigestAbsent:
					diffs = append(diffs, difference{path: d.Path, what: "missing on the replica"})
				case wire.DigestNotDir:
					diffs = append(diffs, difference{path: d.Path, what: "not a directory on the replica"})
				case wire.DigestDiffer:
					dd, sub := diffEntries(d.Path, listings[i].Entries, entries)
					diffs = append(diffs, dd...)
					if descend {
						next = append(next, sub...)
					}
				}
			}
		}
		slices.SortFunc(next, wire.ComparePaths)
		dirs = next
	}
	return diffs, nil
}

// recvDigest reads one DigestReply and the entries it announces.
func recvDigest(conn *wire.Conn) (*wire.DigestReply, []*wire.DigestEntry, error) {
	for {
		m, err := conn.Recv()
		if err != nil {
			return nil, nil, err
		}
		switch m := m.(type) {
		case *wire.Ping:
			if err := conn.Send(&wire.Pong{ID: m.ID}); err != nil {
				return nil, nil, err
			}
			continue
		case *wire.Pong:
			continue
		case *wire.DigestReply:
			entries := make([]*wire.DigestEntry, 0, m.Count)
			for range m.Count {
				e, err := conn.Recv()
				if err != nil {
					return nil, nil, err
				}
				de, ok := e.(*wire.DigestEntry)
				if !ok {
					return nil, nil, fmt.Errorf("verify: the replica sent %v among digest entries", e.Type())
				}
				entries = append(entries, de)
			}
			return m, entries, nil
		default:
			return nil, nil, fmt.Errorf("verify: the replica answered a digest request with %v", m.Type())
		}
	}
}

// diffEntries merges the master's and the replica's entries of dir, both
// sorted by name: the entries that differ, and the subdirectories whose
// attributes match but whose digests do not, to descend into.
func diffEntries(dir string, master []digest.Entry, replica []*wire.DigestEntry) (diffs []difference, sub []string) {
	i, j := 0, 0
	for i < len(master) || j < len(replica) {
		var c int
		switch {
		case i == len(master):
			c = 1
		case j == len(replica):
			c = -1
		default:
			c = strings.Compare(master[i].Name, replica[j].Name)
		}
		switch {
		case c < 0:
			m := master[i]
			diffs = append(diffs, difference{path: joinPath(dir, m.Name), what: "missing on the replica", master: m.Attr})
			i++
		case c > 0:
			diffs = append(diffs, difference{path: joinPath(dir, replica[j].Name), what: "only on the replica"})
			j++
		default:
			m, r := master[i], replica[j]
			p := joinPath(dir, m.Name)
			switch {
			case m.Kind != r.Kind:
				diffs = append(diffs, difference{path: p, what: "type differs", master: m.Attr})
			case wire.Digest(m.Attr) != r.Attr:
				what := "content or attributes differ"
				if m.Kind == digest.KindDir {
					what = "directory attributes differ"
				}
				diffs = append(diffs, difference{path: p, what: what, master: m.Attr})
			}
			if m.Kind == digest.KindDir && r.Kind == digest.KindDir && wire.Digest(m.Sub) != r.Sub {
				sub = append(sub, p)
			}
			i++
			j++
		}
	}
	return diffs, sub
}

// VerifyOptions configure a one-shot Verify (`spoolsync verify`).
type VerifyOptions struct {
	Backing string
	Client  wire.ClientConfig
	Cache   *guid.Cache
	Mode    guid.Mode
	// Passes is how many passes to make (at least 1). The second and
	// later find the digest caches of both sides warm, as the mount's
	// verifier always does: what a pass of continuous verification costs.
	Passes int
}

// VerifyPass is what one pass of Verify found and cost.
type VerifyPass struct {
	Seconds       float64  `json:"seconds"`               // the whole pass, connection included
	DigestSeconds float64  `json:"master_digest_seconds"` // the master's digest walk
	Requests      int      `json:"digest_requests"`       // round trips of digests
	Dirs          int      `json:"digest_dirs"`           // directories they asked about
	WireBytes     int64    `json:"wire_bytes"`            // sent, handshake included
	WireBytesIn   int64    `json:"wire_bytes_received"`   // received, handshake included
	Differences   []string `json:"differences,omitempty"` // path (what), seen at both looks
	Different     int      `json:"different"`
}

// Verify compares the backing tree with the replica's, unpaced, Passes
// times, with a second look at once at each difference. Run it while the
// mount's channel is caught up (status: backlog 0), or what is in flight
// shows up as differences.
func Verify(ctx context.Context, o VerifyOptions) ([]VerifyPass, error) {
	tree, closeTree, err := newVerifyTree(&resolver{backing: o.Backing, cache: o.Cache, mode: o.Mode}, false)
	if err != nil {
		return nil, err
	}
	defer closeTree()
	var out []VerifyPass
	for range max(o.Passes, 1) {
		var sent, recvd atomic.Int64
		cc := o.Client
		cc.Wrap = func(nc net.Conn) net.Conn { return &countingConn{Conn: nc, n: &sent, in: &recvd} }
		cm := &comparer{tree: tree, mode: o.Mode, client: cc}
		start := time.Now()
		diffs, err := cm.pass(ctx, nil, nil)
		if err != nil {
			return out, err
		}
		p := VerifyPass{Seconds: time.Since(start).Seconds(), DigestSeconds: cm.walk.Seconds(), Requests: cm.requests, Dirs: cm.dirs,
			WireBytes: sent.Load(), WireBytesIn: recvd.Load(), Different: len(diffs)}
		for _, d := range diffs {
			p.Differences = append(p.Differences, d.String())
		}
		out = append(out, p)
	}
	return out, nil
}
