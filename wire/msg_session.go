package wire

import (
	"strings"
	"unicode/utf8"
)

// Limits on session messages.
const (
	MaxOfferGUIDs        = 1024 // GUIDs in one Offer
	MaxManifestPaths     = 1024 // paths in one ManifestRequest
	MaxXattrs            = 256  // xattrs in one ManifestEntry or SetXattrs
	maxChannelLen        = 255
	maxGoodbyeReasonSize = maxText
)

// BatchBegin opens batch Seq. Seq is the sender's log sequence number of
// the batch; it is at least 1 and increases from batch to batch on one
// connection. A batch already applied may be sent again on a new
// connection: applying it again is harmless. Channel names the sender's
// log channel (sync_log_channels), "" for the unnamed one.
type BatchBegin struct {
	Seq     uint64
	Channel string
}

func (*BatchBegin) Type() MsgType { return TypeBatchBegin }
func (m *BatchBegin) appendPayload(b []byte) []byte {
	return appendString(appendUvarint(b, m.Seq), m.Channel)
}
func (m *BatchBegin) decode(d *decoder) {
	m.Seq, m.Channel = d.uvarint("seq"), d.text("channel", maxChannelLen)
}
func (m *BatchBegin) validate() error {
	if m.Seq == 0 {
		return protoErrf(CodeProtocol, "BatchBegin: seq 0")
	}
	return checkText("BatchBegin channel", m.Channel, maxChannelLen)
}

// BatchEnd closes batch Seq, which held OpCount ops.
type BatchEnd struct {
	Seq     uint64
	OpCount uint64
}

func (*BatchEnd) Type() MsgType { return TypeBatchEnd }
func (m *BatchEnd) appendPayload(b []byte) []byte {
	return appendUvarint(appendUvarint(b, m.Seq), m.OpCount)
}
func (m *BatchEnd) decode(d *decoder) { m.Seq, m.OpCount = d.uvarint("seq"), d.uvarint("op count") }
func (m *BatchEnd) validate() error {
	if m.Seq == 0 {
		return protoErrf(CodeProtocol, "BatchEnd: seq 0")
	}
	return nil
}

// Ack says batch Seq, and with it every earlier batch of the connection,
// is durable on the replica.
type Ack struct{ Seq uint64 }

func (*Ack) Type() MsgType                   { return TypeAck }
func (m *Ack) appendPayload(b []byte) []byte { return appendUvarint(b, m.Seq) }
func (m *Ack) decode(d *decoder)             { m.Seq = d.uvarint("seq") }
func (m *Ack) validate() error {
	if m.Seq == 0 {
		return protoErrf(CodeProtocol, "Ack: seq 0")
	}
	return nil
}

// PositionRequest asks, between batches, where the replica stands for the
// client's log channel Channel ("" for the unnamed one). The server answers
// with a Position, in order with Lacks and manifests.
type PositionRequest struct{ Channel string }

func (*PositionRequest) Type() MsgType                   { return TypePositionRequest }
func (m *PositionRequest) appendPayload(b []byte) []byte { return appendString(b, m.Channel) }
func (m *PositionRequest) decode(d *decoder)             { m.Channel = d.text("channel", maxChannelLen) }
func (m *PositionRequest) validate() error {
	return checkText("PositionRequest channel", m.Channel, maxChannelLen)
}

// Position answers a PositionRequest. Applied is the seq of the last batch
// of Channel durable on the replica for the authenticated identity (0 =
// none). Interrupted is the seq of a batch whose apply was cut short (a
// crash) and which the client must resend before anything newer; 0 = none.
type Position struct {
	Channel     string
	Applied     uint64
	Interrupted uint64
	// Epoch is the epoch of the tree this master writes to, as the
	// connection found it: below the master's own, the replica is an old
	// master come back (failback) or a new tree, and needs a resync.
	Epoch uint64
}

func (*Position) Type() MsgType { return TypePosition }
func (m *Position) appendPayload(b []byte) []byte {
	return appendUvarint(appendUvarint(appendUvarint(appendString(b, m.Channel), m.Applied), m.Interrupted), m.Epoch)
}
func (m *Position) decode(d *decoder) {
	m.Channel = d.text("channel", maxChannelLen)
	m.Applied, m.Interrupted, m.Epoch = d.uvarint("applied"), d.uvarint("interrupted"), d.uvarint("epoch")
}
func (m *Position) validate() error {
	return checkText("Position channel", m.Channel, maxChannelLen)
}

// MaxOwedPaths bounds the paths of one Owed message; a batch that owes
// more sends several.
const MaxOwedPaths = 1024

// Owed comes just before the Ack of batch Seq when some of its ops could
// not be applied as operations, because the replica's tree was not in the
// state they expect (a rename's source gone, a name in the way, a
// directory not empty). Each of Paths is a path such an op touches (or
// the topmost of its ancestors the replica lacks): the batch skipped
// those ops and applied the rest, and the client owes the replica the
// master's present state of each path — present with its content,
// attributes and links, or absent — before its next batch.
type Owed struct {
	Seq   uint64
	Paths []string
}

func (*Owed) Type() MsgType { return TypeOwed }
func (m *Owed) appendPayload(b []byte) []byte {
	b = appendUvarint(appendUvarint(b, m.Seq), uint64(len(m.Paths)))
	for _, p := range m.Paths {
		b = appendString(b, p)
	}
	return b
}
func (m *Owed) decode(d *decoder) {
	m.Seq = d.uvarint("seq")
	n := d.count("paths", MaxOwedPaths, 1)
	m.Paths = make([]string, n)
	for i := range m.Paths {
		m.Paths[i] = d.str("path", MaxPathLen)
	}
}
func (m *Owed) validate() error {
	if m.Seq == 0 {
		return protoErrf(CodeProtocol, "Owed: seq 0")
	}
	if len(m.Paths) == 0 || len(m.Paths) > MaxOwedPaths {
		return protoErrf(CodeProtocol, "Owed: %d paths, want 1 to %d", len(m.Paths), MaxOwedPaths)
	}
	for _, p := range m.Paths {
		if err := checkPath("Owed", "path", p); err != nil {
			return err
		}
	}
	return nil
}

// Data is a chunk of file content following a Put or WriteRanges. Its
// payload is the bytes themselves, with no length prefix; it is never
// empty. A received Data's Bytes alias the connection's buffer and are
// valid only until the next Recv.
type Data struct{ Bytes []byte }

func (*Data) Type() MsgType                   { return TypeData }
func (m *Data) appendPayload(b []byte) []byte { return append(b, m.Bytes...) }
func (m *Data) decode(d *decoder)             { m.Bytes, d.b = d.b, nil }
func (m *Data) validate() error {
	if len(m.Bytes) == 0 {
		return protoErrf(CodeProtocol, "Data: empty chunk")
	}
	return nil
}

// Offer lists GUIDs the sender may need to ship; the server answers with a
// Lacks of the same ID saying which it does not hold.
type Offer struct {
	ID    uint64
	GUIDs []GUID
}

func (*Offer) Type() MsgType { return TypeOffer }
func (m *Offer) appendPayload(b []byte) []byte {
	b = appendUvarint(appendUvarint(b, m.ID), uint64(len(m.GUIDs)))
	for _, g := range m.GUIDs {
		b = appendGUID(b, g)
	}
	return b
}
func (m *Offer) decode(d *decoder) {
	m.ID = d.uvarint("id")
	n := d.count("guids", MaxOfferGUIDs, 1)
	m.GUIDs = make([]GUID, n)
	for i := range m.GUIDs {
		m.GUIDs[i] = d.guid("guid")
	}
}
func (m *Offer) validate() error {
	if len(m.GUIDs) == 0 || len(m.GUIDs) > MaxOfferGUIDs {
		return protoErrf(CodeProtocol, "Offer: %d GUIDs, want 1 to %d", len(m.GUIDs), MaxOfferGUIDs)
	}
	for i, g := range m.GUIDs {
		if err := g.Valid(); err != nil || g.IsZero() {
			return protoErrf(CodeProtocol, "Offer: GUID %d is absent or invalid", i)
		}
	}
	return nil
}

// Lacks answers the Offer with the same ID: Lacking[i] is true when the
// server does not hold the Offer's GUID i. On the wire it is a count and a
// bitmap, bit i in byte i/8 at weight 1<<(i%8), unused bits zero.
type Lacks struct {
	ID      uint64
	Lacking []bool
}

func (*Lacks) Type() MsgType { return TypeLacks }
func (m *Lacks) appendPayload(b []byte) []byte {
	b = appendUvarint(appendUvarint(b, m.ID), uint64(len(m.Lacking)))
	bm := make([]byte, (len(m.Lacking)+7)/8)
	for i, l := range m.Lacking {
		if l {
			bm[i/8] |= 1 << (i % 8)
		}
	}
	return append(b, bm...)
}
func (m *Lacks) decode(d *decoder) {
	m.ID = d.uvarint("id")
	n := d.uvarint("count")
	if d.err != nil {
		return
	}
	if n == 0 || n > MaxOfferGUIDs {
		d.fail(CodeProtocol, "count", "%d, want 1 to %d", n, MaxOfferGUIDs)
		return
	}
	if uint64(len(d.b)) < (n+7)/8 {
		d.fail(CodeProtocol, "bitmap", "truncated")
		return
	}
	bm := d.b[:(n+7)/8]
	d.b = d.b[len(bm):]
	m.Lacking = make([]bool, n)
	for i := range m.Lacking {
		m.Lacking[i] = bm[i/8]&(1<<(i%8)) != 0
	}
	if n%8 != 0 && bm[len(bm)-1]>>(n%8) != 0 {
		d.fail(CodeProtocol, "bitmap", "unused bits set")
	}
}
func (m *Lacks) validate() error {
	if len(m.Lacking) == 0 || len(m.Lacking) > MaxOfferGUIDs {
		return protoErrf(CodeProtocol, "Lacks: %d entries, want 1 to %d", len(m.Lacking), MaxOfferGUIDs)
	}
	return nil
}

// ManifestRequest asks the server to describe the subtrees at Paths, or
// the whole tree when Paths is empty. Paths are in ComparePaths order and
// none is inside another, so the answer is one stream in that order.
// GUIDMode is the mode the client compares content in (its guid_mode):
// the files' GUIDs come in it, whatever the server's own guid_mode, and
// none with GUIDNone.
type ManifestRequest struct {
	Paths    []string
	GUIDMode uint8
}

func (*ManifestRequest) Type() MsgType { return TypeManifestRequest }
func (m *ManifestRequest) appendPayload(b []byte) []byte {
	b = appendUvarint(b, uint64(len(m.Paths)))
	for _, p := range m.Paths {
		b = appendString(b, p)
	}
	return append(b, m.GUIDMode)
}
func (m *ManifestRequest) decode(d *decoder) {
	n := d.count("paths", MaxManifestPaths, 1)
	m.Paths = make([]string, n)
	for i := range m.Paths {
		m.Paths[i] = d.str("path", MaxPathLen)
	}
	m.GUIDMode = d.u8("guid mode")
}
func (m *ManifestRequest) validate() error {
	if guidSize(m.GUIDMode) < 0 {
		return protoErrf(CodeProtocol, "ManifestRequest: unknown GUID mode %d", m.GUIDMode)
	}
	if len(m.Paths) > MaxManifestPaths {
		return protoErrf(CodeTooLarge, "ManifestRequest: %d paths, over the limit %d", len(m.Paths), MaxManifestPaths)
	}
	for i, p := range m.Paths {
		if err := checkPath("ManifestRequest", "path", p); err != nil {
			return err
		}
		if i > 0 && (ComparePaths(m.Paths[i-1], p) >= 0 || isAncestor(m.Paths[i-1], p)) {
			return &ProtoError{Code: CodeProtocol, Msg: "ManifestRequest: paths not in order, repeated or nested", Path: truncPath(p)}
		}
	}
	return nil
}

// File kinds, in ManifestEntry and Mknod.
const (
	KindFile    uint8 = 1
	KindDir     uint8 = 2
	KindSymlink uint8 = 3
	KindFIFO    uint8 = 4
	// KindSocket (protocol addition): a bound unix socket's name. A
	// replica that predates it refuses kind 5 with a protocol error, so
	// replicas are upgraded before masters.
	KindSocket uint8 = 5
)

// Xattr is one extended attribute.
type Xattr struct {
	Name  string
	Value []byte
}

// ManifestEntry describes one name in the server's tree. Entries come in
// ComparePaths order (a depth-first walk, each directory's names sorted
// byte-wise, a directory before its contents); the requested paths
// themselves are included, the root is not. Inode and Nlink let the
// receiver see hard links: entries with the same Inode are one file.
type ManifestEntry struct {
	Path     string
	Kind     uint8
	Mode     uint32
	UID, GID uint32
	Mtime    int64
	Size     uint64
	Nlink    uint64
	Inode    uint64
	GUID     GUID    // files only; zero when not known
	Target   string  // symlinks only
	Xattrs   []Xattr // sorted by name, names unique
}

func (*ManifestEntry) Type() MsgType { return TypeManifestEntry }
func (m *ManifestEntry) appendPayload(b []byte) []byte {
	b = append(appendString(b, m.Path), m.Kind)
	b = appendOwner(b, m.Mode, m.UID, m.GID, m.Mtime)
	b = appendUvarint(appendUvarint(appendUvarint(b, m.Size), m.Nlink), m.Inode)
	b = appendString(appendGUID(b, m.GUID), m.Target)
	return appendXattrs(b, m.Xattrs)
}
func (m *ManifestEntry) decode(d *decoder) {
	m.Path, m.Kind = d.str("path", MaxPathLen), d.u8("kind")
	m.Mode, m.UID, m.GID, m.Mtime = d.owner()
	m.Size, m.Nlink, m.Inode = d.uvarint("size"), d.uvarint("nlink"), d.uvarint("inode")
	m.GUID, m.Target = d.guid("guid"), d.str("target", MaxPathLen)
	m.Xattrs = d.xattrs()
}
func (m *ManifestEntry) validate() error {
	const msg = "ManifestEntry"
	if err := firstErr(checkPath(msg, "path", m.Path), checkPerm(msg, m.Mode), checkSize(msg, m.Size), checkGUID(msg, m.GUID)); err != nil {
		return err
	}
	switch m.Kind {
	case KindFile, KindDir, KindSymlink, KindFIFO, KindSocket:
	default:
		return protoErrf(CodeProtocol, "%s %q: unknown kind %d", msg, m.Path, m.Kind)
	}
	if m.Kind != KindFile && !m.GUID.IsZero() {
		return protoErrf(CodeProtocol, "%s %q: GUID on a non-file", msg, m.Path)
	}
	if m.Kind == KindSymlink {
		if err := checkTarget(msg, m.Path, m.Target); err != nil {
			return err
		}
	} else if m.Target != "" {
		return protoErrf(CodeProtocol, "%s %q: target on a non-symlink", msg, m.Path)
	}
	return checkXattrs(msg, m.Path, m.Xattrs)
}

// ManifestEnd ends a manifest stream; Count is the number of entries sent.
type ManifestEnd struct{ Count uint64 }

func (*ManifestEnd) Type() MsgType                   { return TypeManifestEnd }
func (m *ManifestEnd) appendPayload(b []byte) []byte { return appendUvarint(b, m.Count) }
func (m *ManifestEnd) decode(d *decoder)             { m.Count = d.uvarint("count") }
func (m *ManifestEnd) validate() error               { return nil }

// Ping asks for a Pong with the same ID, whatever else is in flight.
type Ping struct{ ID uint64 }

func (*Ping) Type() MsgType                   { return TypePing }
func (m *Ping) appendPayload(b []byte) []byte { return appendUvarint(b, m.ID) }
func (m *Ping) decode(d *decoder)             { m.ID = d.uvarint("id") }
func (m *Ping) validate() error               { return nil }

// Pong answers a Ping.
type Pong struct{ ID uint64 }

func (*Pong) Type() MsgType                   { return TypePong }
func (m *Pong) appendPayload(b []byte) []byte { return appendUvarint(b, m.ID) }
func (m *Pong) decode(d *decoder)             { m.ID = d.uvarint("id") }
func (m *Pong) validate() error               { return nil }

// Goodbye is a clean close: the sender sends nothing after it.
type Goodbye struct{ Reason string }

func (*Goodbye) Type() MsgType                   { return TypeGoodbye }
func (m *Goodbye) appendPayload(b []byte) []byte { return appendString(b, m.Reason) }
func (m *Goodbye) decode(d *decoder)             { m.Reason = d.text("reason", maxGoodbyeReasonSize) }
func (m *Goodbye) validate() error {
	return checkText("Goodbye reason", m.Reason, maxGoodbyeReasonSize)
}

// Error reports a failure to the peer. It is always the sender's last
// frame: it closes the connection after it. Seq and Path are 0 and "" when
// the error is not about a batch or a path. Path is whatever the peer sent
// (so it may itself be invalid), cut to a bounded length.
type Error struct {
	Code    Code
	Seq     uint64
	Path    string
	Message string
}

func (*Error) Type() MsgType { return TypeError }
func (m *Error) appendPayload(b []byte) []byte {
	b = appendUvarint(append(b, uint8(m.Code)), m.Seq)
	return appendString(appendString(b, m.Path), m.Message)
}
func (m *Error) decode(d *decoder) {
	m.Code, m.Seq = Code(d.u8("code")), d.uvarint("seq")
	m.Path, m.Message = d.str("path", maxErrorPath), d.text("message", maxText)
}
func (m *Error) validate() error {
	if m.Code == 0 {
		return protoErrf(CodeProtocol, "Error: code 0")
	}
	if len(m.Path) > maxErrorPath {
		return protoErrf(CodeTooLarge, "Error: path of %d bytes", len(m.Path))
	}
	return checkText("Error message", m.Message, maxText)
}

// errorFrame builds the Error frame reporting err to the peer.
func errorFrame(err error) *Error {
	if pe := asProto(err); pe != nil {
		return &Error{Code: pe.Code, Seq: pe.Seq, Path: clip(pe.Path, maxErrorPath), Message: sanitize(pe.Msg)}
	}
	return &Error{Code: CodeInternal, Message: sanitize(err.Error())}
}

// asError turns a received Error frame into the error Recv returns.
func (m *Error) asError() *ProtoError {
	return &ProtoError{Code: m.Code, Msg: m.Message, Seq: m.Seq, Path: m.Path, Remote: true}
}

func checkText(what, s string, max int) error {
	if len(s) > max {
		return protoErrf(CodeTooLarge, "%s: %d bytes, over the limit %d", what, len(s), max)
	}
	for _, c := range []byte(s) {
		if c == 0 {
			return protoErrf(CodeProtocol, "%s: contains NUL", what)
		}
	}
	if !utf8.ValidString(s) {
		return protoErrf(CodeProtocol, "%s: not valid UTF-8", what)
	}
	return nil
}

func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	return s[:max]
}

// sanitize makes s a valid Error message: UTF-8, no NUL, bounded.
func sanitize(s string) string {
	s = strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", ""), "?")
	for len(s) > maxText {
		s = strings.ToValidUTF8(s[:maxText-3], "") + "..."
	}
	return s
}
