package wire

import "fmt"

// MsgType is the first byte of every frame. Values are part of the
// protocol: never renumber, only append. Types 0x80-0xFF are optional: a
// receiver that does not know one skips it by its length. An unknown type
// below 0x80 is a protocol error.
type MsgType uint8

// Message types, grouped by phase (see the package doc for who sends what).
const (
	// Handshake.
	TypeGreeting      MsgType = 0x01 // S→C
	TypeStartTLS      MsgType = 0x02 // C→S
	TypeProceed       MsgType = 0x03 // S→C
	TypeAuth          MsgType = 0x04 // C→S
	TypeAuthChallenge MsgType = 0x05 // S→C
	TypeAuthResponse  MsgType = 0x06 // C→S
	TypeAuthOK        MsgType = 0x07 // S→C
	TypeHello         MsgType = 0x08 // C→S
	TypeWelcome       MsgType = 0x09 // S→C

	// Batches.
	TypeBatchBegin MsgType = 0x10 // C→S
	TypeBatchEnd   MsgType = 0x11 // C→S
	TypeAck        MsgType = 0x12 // S→C

	// Where the replica stands, between batches.
	TypePositionRequest MsgType = 0x13 // C→S
	TypePosition        MsgType = 0x14 // S→C
	TypeOwed            MsgType = 0x15 // S→C, before an Ack

	// Ops, only inside a batch.
	TypePut         MsgType = 0x20
	TypeWriteRanges MsgType = 0x21
	TypeTruncate    MsgType = 0x22
	TypeMkdir       MsgType = 0x23
	TypeRmdir       MsgType = 0x24
	TypeUnlink      MsgType = 0x25
	TypeRename      MsgType = 0x26
	TypeLink        MsgType = 0x27
	TypeSymlink     MsgType = 0x28
	TypeMknod       MsgType = 0x29
	TypeSetAttr     MsgType = 0x2A
	TypeSetXattr    MsgType = 0x2B
	TypeRemoveXattr MsgType = 0x2C
	TypeQuarantine  MsgType = 0x2D
	TypeSetXattrs   MsgType = 0x2E

	// Content.
	TypeData  MsgType = 0x30 // C→S, after Put / WriteRanges
	TypeOffer MsgType = 0x31 // C→S
	TypeLacks MsgType = 0x32 // S→C

	// Manifest.
	TypeManifestRequest MsgType = 0x40 // C→S
	TypeManifestEntry   MsgType = 0x41 // S→C
	TypeManifestEnd     MsgType = 0x42 // S→C

	// Digests (continuous verification).
	TypeDigestRequest MsgType = 0x43 // C→S
	TypeDigestReply   MsgType = 0x44 // S→C
	TypeDigestEntry   MsgType = 0x45 // S→C

	// Control, either direction.
	TypePing    MsgType = 0x50
	TypePong    MsgType = 0x51
	TypeGoodbye MsgType = 0x52
	TypeError   MsgType = 0x7F
)

// Message is one protocol message. Each is a struct in this package; the
// set is closed. Decoded messages own their memory, except Data, whose
// Bytes alias the connection's buffer until the next Recv.
type Message interface {
	// Type is the frame type byte.
	Type() MsgType
	appendPayload(b []byte) []byte
	decode(d *decoder)
	// validate applies the semantic rules (paths, enums, bounds). The
	// decoder calls it after parsing; Send calls it before encoding, so
	// the sender gets the error, not the peer.
	validate() error
}

// newMessage returns an empty message of type t, or nil if t is unknown.
func newMessage(t MsgType) Message {
	switch t {
	case TypeGreeting:
		return new(Greeting)
	case TypeStartTLS:
		return new(StartTLS)
	case TypeProceed:
		return new(Proceed)
	case TypeAuth:
		return new(Auth)
	case TypeAuthChallenge:
		return new(AuthChallenge)
	case TypeAuthResponse:
		return new(AuthResponse)
	case TypeAuthOK:
		return new(AuthOK)
	case TypeHello:
		return new(Hello)
	case TypeWelcome:
		return new(Welcome)
	case TypeBatchBegin:
		return new(BatchBegin)
	case TypeBatchEnd:
		return new(BatchEnd)
	case TypeAck:
		return new(Ack)
	case TypePositionRequest:
		return new(PositionRequest)
	case TypePosition:
		return new(Position)
	case TypeOwed:
		return new(Owed)
	case TypePut:
		return new(Put)
	case TypeWriteRanges:
		return new(WriteRanges)
	case TypeTruncate:
		return new(Truncate)
	case TypeMkdir:
		return new(Mkdir)
	case TypeRmdir:
		return new(Rmdir)
	case TypeUnlink:
		return new(Unlink)
	case TypeRename:
		return new(Rename)
	case TypeLink:
		return new(Link)
	case TypeSymlink:
		return new(Symlink)
	case TypeMknod:
		return new(Mknod)
	case TypeSetAttr:
		return new(SetAttr)
	case TypeSetXattr:
		return new(SetXattr)
	case TypeRemoveXattr:
		return new(RemoveXattr)
	case TypeQuarantine:
		return new(Quarantine)
	case TypeSetXattrs:
		return new(SetXattrs)
	case TypeData:
		return new(Data)
	case TypeOffer:
		return new(Offer)
	case TypeLacks:
		return new(Lacks)
	case TypeManifestRequest:
		return new(ManifestRequest)
	case TypeManifestEntry:
		return new(ManifestEntry)
	case TypeManifestEnd:
		return new(ManifestEnd)
	case TypeDigestRequest:
		return new(DigestRequest)
	case TypeDigestReply:
		return new(DigestReply)
	case TypeDigestEntry:
		return new(DigestEntry)
	case TypePing:
		return new(Ping)
	case TypePong:
		return new(Pong)
	case TypeGoodbye:
		return new(Goodbye)
	case TypeError:
		return new(Error)
	}
	return nil
}

func (t MsgType) String() string {
	if m := newMessage(t); m != nil {
		return fmt.Sprintf("%T", m)[len("*wire."):]
	}
	return fmt.Sprintf("type(0x%02x)", uint8(t))
}

// Optional reports whether t is in the range a receiver may skip when it
// does not know the type.
func (t MsgType) Optional() bool { return t >= 0x80 }

// Marshal returns the payload of m (without the frame header), after
// checking m is valid.
func Marshal(m Message) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m.appendPayload(nil), nil
}

// Unmarshal decodes and validates a payload of type t. It is what a Conn
// does with every frame it receives; errors are *ProtoError. Data's Bytes
// alias payload; every other message copies what it keeps.
func Unmarshal(t MsgType, payload []byte) (Message, error) {
	m := newMessage(t)
	if m == nil {
		return nil, protoErrf(CodeProtocol, "unknown message type 0x%02x", uint8(t))
	}
	d := &decoder{typ: t, b: payload}
	m.decode(d)
	if err := d.finish(); err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return m, nil
}

// checkPath validates a path field for message msg.
func checkPath(msg, field, p string) error {
	if err := ValidPath(p); err != nil {
		return badPath(msg, field, p, err)
	}
	return nil
}

// checkPerm validates a permission field: the low 12 bits of st_mode
// (rwx for user, group, other, setuid, setgid, sticky), no file type bits.
func checkPerm(msg string, mode uint32) error {
	if mode&^0o7777 != 0 {
		return protoErrf(CodeProtocol, "%s: mode %#o has bits outside 07777", msg, mode)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
