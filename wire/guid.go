package wire

import (
	"encoding/hex"
	"fmt"
)

// GUID modes: the content hash a GUID was computed with. Values are part of
// the protocol.
const (
	GUIDNone   uint8 = 0 // no GUID (guid_mode none, or not computed)
	GUIDSHA256 uint8 = 1
	GUIDBlake3 uint8 = 2
	GUIDSHA1   uint8 = 3 // Cyrus-compatible
)

// GUID is a content hash as it travels on the wire: a mode byte followed by
// the digest, 32 bytes for sha256 and blake3, 20 for sha1, none for
// GUIDNone. Sum bytes past the digest length are zero. The guid package
// converts to and from its own type.
type GUID struct {
	Mode uint8
	Sum  [32]byte
}

// guidSize is the digest length for mode, or -1 for an unknown mode.
func guidSize(mode uint8) int {
	switch mode {
	case GUIDNone:
		return 0
	case GUIDSHA256, GUIDBlake3:
		return 32
	case GUIDSHA1:
		return 20
	}
	return -1
}

// IsZero reports whether g is the absent GUID.
func (g GUID) IsZero() bool { return g == GUID{} }

// Digest returns the digest bytes (a copy), empty for GUIDNone or an
// unknown mode.
func (g GUID) Digest() []byte {
	n := guidSize(g.Mode)
	if n <= 0 {
		return nil
	}
	return append([]byte(nil), g.Sum[:n]...)
}

// Valid reports whether g has a known mode and, for GUIDNone, an all-zero
// sum, and for sha1, zero bytes past the 20-byte digest.
func (g GUID) Valid() error {
	n := guidSize(g.Mode)
	if n < 0 {
		return fmt.Errorf("unknown GUID mode %d", g.Mode)
	}
	for _, b := range g.Sum[n:] {
		if b != 0 {
			return fmt.Errorf("GUID mode %d has bytes past its %d-byte digest", g.Mode, n)
		}
	}
	return nil
}

func (g GUID) String() string {
	switch g.Mode {
	case GUIDNone:
		return "none"
	case GUIDSHA256:
		return "sha256:" + hex.EncodeToString(g.Sum[:])
	case GUIDBlake3:
		return "blake3:" + hex.EncodeToString(g.Sum[:])
	case GUIDSHA1:
		return "sha1:" + hex.EncodeToString(g.Sum[:20])
	}
	return fmt.Sprintf("guid(mode %d)", g.Mode)
}
