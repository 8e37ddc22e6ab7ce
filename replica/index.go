package replica

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"spoolsync/guid"
)

// Bucket names of the state database (StateDir/index.db); see the package
// doc for their layout.
var (
	bucketGUIDs    = []byte("guids")
	bucketPaths    = []byte("paths")
	bucketApplied  = []byte("applied")
	bucketInflight = []byte("inflight")
)

const recordV1 = 1
const recordLen = 41

// record is what the index remembers of a file it vouches for: enough to
// tell by one lstat whether the file is still the one that was hashed.
type record struct {
	dev, ino     uint64
	size         int64
	mtime, ctime int64 // ns
}

func recordOf(st *unix.Stat_t) record {
	return record{dev: uint64(st.Dev), ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

// matches reports whether st is the regular file r was taken from, unchanged.
func (r record) matches(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFREG && recordOf(st) == r
}

func (r record) encode() []byte {
	b := make([]byte, recordLen)
	b[0] = recordV1
	binary.BigEndian.PutUint64(b[1:], r.dev)
	binary.BigEndian.PutUint64(b[9:], r.ino)
	binary.BigEndian.PutUint64(b[17:], uint64(r.size))
	binary.BigEndian.PutUint64(b[25:], uint64(r.mtime))
	binary.BigEndian.PutUint64(b[33:], uint64(r.ctime))
	return b
}

var errBadRecord = errors.New("damaged index record")

func decodeRecord(b []byte) (record, error) {
	if len(b) != recordLen || b[0] != recordV1 {
		return record{}, fmt.Errorf("%w: %d bytes, version %d", errBadRecord, len(b), firstByte(b))
	}
	r := record{
		dev:   binary.BigEndian.Uint64(b[1:]),
		ino:   binary.BigEndian.Uint64(b[9:]),
		size:  int64(binary.BigEndian.Uint64(b[17:])),
		mtime: int64(binary.BigEndian.Uint64(b[25:])),
		ctime: int64(binary.BigEndian.Uint64(b[33:])),
	}
	if r.size < 0 {
		return record{}, fmt.Errorf("%w: negative size", errBadRecord)
	}
	return r, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// guidKey is mode byte + sum bytes: a fixed length per mode, so a guids-bucket
// key guidKey+path can be split again without a separator.
func guidKey(g guid.GUID) []byte {
	return append([]byte{byte(g.Mode)}, g.Bytes()...)
}

func decodeGUIDKey(b []byte) (guid.GUID, int, error) {
	if len(b) == 0 {
		return guid.GUID{}, 0, fmt.Errorf("%w: empty guid key", errBadRecord)
	}
	m := guid.Mode(b[0])
	n := 1 + m.Size()
	if m == guid.None || !m.Valid() || len(b) < n {
		return guid.GUID{}, 0, fmt.Errorf("%w: guid key of mode %d, %d bytes", errBadRecord, b[0], len(b))
	}
	g, err := guid.FromBytes(m, b[1:n])
	return g, n, err
}

// decodeEntryKey splits a guids-bucket key into the GUID and the path; the
// path must pass checkPath so a damaged index can never name a path outside
// the root or in .spoolsync.
func decodeEntryKey(b []byte) (guid.GUID, string, error) {
	g, n, err := decodeGUIDKey(b)
	if err != nil {
		return g, "", err
	}
	p := string(b[n:])
	if err := checkPath(p); err != nil {
		return g, "", fmt.Errorf("%w: %w", errBadRecord, err)
	}
	return g, p, nil
}

// index is the GUID index seen through one bbolt transaction.
type index struct{ tx *bolt.Tx }

// candidate is one indexed location of a GUID.
type candidate struct {
	path string
	rec  record
}

// lookup lists the indexed locations of g. Damaged entries are skipped.
func (ix index) lookup(g guid.GUID) []candidate {
	if g.Mode == guid.None || !g.Mode.Valid() {
		return nil
	}
	prefix := guidKey(g)
	var out []candidate
	c := ix.tx.Bucket(bucketGUIDs).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		_, p, err := decodeEntryKey(k)
		if err != nil {
			continue
		}
		r, err := decodeRecord(v)
		if err != nil {
			continue
		}
		out = append(out, candidate{p, r})
	}
	return out
}

// get returns the GUID and record indexed for path p.
func (ix index) get(p string) (guid.GUID, record, bool) {
	gk := ix.tx.Bucket(bucketPaths).Get([]byte(p))
	if gk == nil {
		return guid.GUID{}, record{}, false
	}
	g, _, err := decodeGUIDKey(gk)
	if err != nil {
		return guid.GUID{}, record{}, false
	}
	v := ix.tx.Bucket(bucketGUIDs).Get(append(gk[:len(gk):len(gk)], p...))
	r, err := decodeRecord(v)
	if err != nil {
		return guid.GUID{}, record{}, false
	}
	return g, r, true
}

// put records that p holds content g, as stat st describes it.
func (ix index) put(p string, g guid.GUID, st *unix.Stat_t) error {
	if g.Mode == guid.None {
		return ix.del(p)
	}
	if err := ix.del(p); err != nil {
		return err
	}
	gk := guidKey(g)
	if err := ix.tx.Bucket(bucketPaths).Put([]byte(p), gk); err != nil {
		return err
	}
	return ix.tx.Bucket(bucketGUIDs).Put(append(gk, p...), recordOf(st).encode())
}

// del forgets p.
func (ix index) del(p string) error {
	paths := ix.tx.Bucket(bucketPaths)
	gk := paths.Get([]byte(p))
	if gk == nil {
		return nil
	}
	if err := ix.tx.Bucket(bucketGUIDs).Delete(append(bytes.Clone(gk), p...)); err != nil {
		return err
	}
	return paths.Delete([]byte(p))
}

// underTree lists p and every indexed path below it.
func (ix index) underTree(p string) []string {
	out := []string{}
	if ix.tx.Bucket(bucketPaths).Get([]byte(p)) != nil {
		out = append(out, p)
	}
	prefix := []byte(p + "/")
	c := ix.tx.Bucket(bucketPaths).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k))
	}
	return out
}

// delTree forgets p and everything below it.
func (ix index) delTree(p string) error {
	for _, q := range ix.underTree(p) {
		if err := ix.del(q); err != nil {
			return err
		}
	}
	return nil
}

// moved is an index entry lifted out by take, to be put back elsewhere.
type moved struct {
	rel string // path relative to the moved tree's top ("" for the top)
	g   guid.GUID
	rec record
}

// take removes and returns the entries of p's tree.
func (ix index) take(p string) ([]moved, error) {
	var out []moved
	for _, q := range ix.underTree(p) {
		g, r, ok := ix.get(q)
		if ok {
			out = append(out, moved{strings.TrimPrefix(q, p), g, r})
		}
		if err := ix.del(q); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// place puts entries taken by take back under dst.
func (ix index) place(dst string, ms []moved) error {
	for _, m := range ms {
		p := dst + m.rel
		gk := guidKey(m.g)
		if err := ix.del(p); err != nil {
			return err
		}
		if err := ix.tx.Bucket(bucketPaths).Put([]byte(p), gk); err != nil {
			return err
		}
		if err := ix.tx.Bucket(bucketGUIDs).Put(append(gk, p...), m.rec.encode()); err != nil {
			return err
		}
	}
	return nil
}
