package guid

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// Mode is the hash function a GUID was computed with.
type Mode uint8

// Modes. The numeric values travel on the wire and in indexes on disk: never
// renumber them.
const (
	None   Mode = 0
	SHA256 Mode = 1
	BLAKE3 Mode = 2
	SHA1   Mode = 3 // Cyrus-compatible; see the package doc for why not default
)

// Default is the mode used when guid_mode is not configured.
const Default = SHA256

var modeNames = [...]string{None: "none", SHA256: "sha256", BLAKE3: "blake3", SHA1: "sha1"}

// String returns the guid_mode spelling of m.
func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Valid reports whether m is a known mode (None included).
func (m Mode) Valid() bool { return int(m) < len(modeNames) }

// Size is the number of meaningful bytes of a Sum in mode m.
func (m Mode) Size() int {
	switch m {
	case SHA256, BLAKE3:
		return 32
	case SHA1:
		return 20
	}
	return 0
}

// ParseMode parses the guid_mode configuration value.
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if s == name {
			return Mode(m), nil
		}
	}
	return 0, fmt.Errorf("guid_mode %q: unknown mode; valid values are sha256 (default), blake3, sha1, none", s)
}

// GUID is a content hash together with the mode that produced it.
// Only the first Mode.Size() bytes of Sum are used; the rest are zero.
type GUID struct {
	Mode Mode
	Sum  [32]byte
}

// ErrNoHash is returned when a GUID is asked for in mode None.
var ErrNoHash = errors.New("guid: mode none computes no GUID")

// String formats g as "mode:hex", e.g. "sha256:e3b0c4...". The zero GUID
// formats as "none".
func (g GUID) String() string {
	if g.Mode == None {
		return "none"
	}
	return g.Mode.String() + ":" + hex.EncodeToString(g.Sum[:g.Mode.Size()])
}

// Bytes returns the significant bytes of the sum.
func (g GUID) Bytes() []byte { return g.Sum[:g.Mode.Size()] }

// IsZero reports whether g is the zero GUID (no hash).
func (g GUID) IsZero() bool { return g == GUID{} }

// Parse parses the String form of a GUID.
func Parse(s string) (GUID, error) {
	if s == "none" {
		return GUID{}, nil
	}
	name, hx, ok := strings.Cut(s, ":")
	if !ok {
		return GUID{}, fmt.Errorf("guid %q: want mode:hex", s)
	}
	m, err := ParseMode(name)
	if err != nil {
		return GUID{}, fmt.Errorf("guid %q: %w", s, err)
	}
	if m == None {
		return GUID{}, fmt.Errorf("guid %q: mode none has no hex part", s)
	}
	if len(hx) != 2*m.Size() {
		return GUID{}, fmt.Errorf("guid %q: want %d hex digits for %s, got %d", s, 2*m.Size(), m, len(hx))
	}
	g := GUID{Mode: m}
	if _, err := hex.Decode(g.Sum[:], []byte(hx)); err != nil {
		return GUID{}, fmt.Errorf("guid %q: %w", s, err)
	}
	return g, nil
}

// FromBytes builds a GUID from a mode and its raw sum (as produced by Bytes).
func FromBytes(m Mode, b []byte) (GUID, error) {
	if m == None || !m.Valid() || len(b) != m.Size() {
		return GUID{}, fmt.Errorf("guid: %d bytes are not a %s sum", len(b), m)
	}
	g := GUID{Mode: m}
	copy(g.Sum[:], b)
	return g, nil
}

// New returns a fresh hash.Hash for mode m, or nil for None or an unknown mode.
func New(m Mode) hash.Hash {
	switch m {
	case SHA256:
		return sha256.New()
	case BLAKE3:
		return blake3.New()
	case SHA1:
		return sha1.New()
	}
	return nil
}

// FromHash finishes h (made by New(m)) into a GUID.
func FromHash(m Mode, h hash.Hash) GUID {
	g := GUID{Mode: m}
	h.Sum(g.Sum[:0])
	return g
}

// copyBufs are Sum's read buffers: a resync hashes every file of a spool,
// and io.Copy's fresh 32 KiB buffer per file (allocated, zeroed, collected)
// cost more CPU than SHA-256 itself.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

// Sum hashes everything r yields and returns the GUID and the byte count.
func Sum(m Mode, r io.Reader) (GUID, int64, error) {
	h := New(m)
	if h == nil {
		return GUID{}, 0, fmt.Errorf("hash with %s: %w", m, ErrNoHash)
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	n, err := io.CopyBuffer(h, r, *buf)
	if err != nil {
		return GUID{}, n, err
	}
	return FromHash(m, h), n, nil
}

// FileAt hashes the regular file name in the directory open as dirfd
// (unix.AT_FDCWD: name is a path), without the cache (a --verify resync). Like HashAt it never follows a
// final symlink or blocks on a fifo.
func FileAt(m Mode, dirfd int, name string) (GUID, error) {
	return FileAtLimited(m, dirfd, name, Limit{})
}

// FileAtLimited is FileAt within lim.
func FileAtLimited(m Mode, dirfd int, name string, lim Limit) (GUID, error) {
	fd, err := openAt(dirfd, name)
	if err != nil {
		return GUID{}, err
	}
	defer unix.Close(fd)
	st, err := statRegular(fd, name)
	if err != nil {
		return GUID{}, err
	}
	if err := lim.check(name, st.Size); err != nil {
		return GUID{}, err
	}
	return sumFD(fd, name, m, lim)
}
