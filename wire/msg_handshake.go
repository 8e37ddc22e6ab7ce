package wire

import "fmt"

// Capability bits, carried in Greeting, Hello and Welcome. Unknown bits are
// ignored, so a newer peer can offer features an older one never grants.
const (
	CapStartTLS    uint64 = 1 << 0 // Greeting: the server offers STARTTLS
	CapTLSRequired uint64 = 1 << 1 // Greeting: the server refuses Auth before STARTTLS
	CapZstd        uint64 = 1 << 2 // Greeting: offered; Hello: asked; Welcome: granted
	// CapBatchLimits: Hello: the client can take the server's batch
	// limits; Welcome: granted, and Welcome carries them (a server that
	// does not know the bit never grants it, so an older peer on either
	// side sees the Welcome it always did).
	CapBatchLimits uint64 = 1 << 3
)

// Limits on handshake fields.
const (
	maxMechs     = 16
	maxMechLen   = 20 // RFC 4422 section 3.1
	maxSASLData  = 8 << 10
	maxIdentity  = 1024
	maxText      = 4096
	maxErrorPath = 2 * MaxPathLen
)

// Greeting is the server's first frame, and again the first after STARTTLS
// (the client discards what it learnt before TLS). Mechs are the SASL
// mechanisms the server accepts on this connection as it is now.
type Greeting struct {
	Caps         uint64
	Mechs        []string
	Epoch        uint64 // the server's epoch
	MaxFrameSize uint32 // the largest payload the server accepts
}

func (*Greeting) Type() MsgType { return TypeGreeting }

func (m *Greeting) appendPayload(b []byte) []byte {
	b = appendUvarint(b, m.Caps)
	b = appendUvarint(b, uint64(len(m.Mechs)))
	for _, s := range m.Mechs {
		b = appendString(b, s)
	}
	b = appendUvarint(b, m.Epoch)
	return appendUvarint(b, uint64(m.MaxFrameSize))
}

func (m *Greeting) decode(d *decoder) {
	m.Caps = d.uvarint("caps")
	n := d.count("mechs", maxMechs, 1)
	for i := 0; i < n; i++ {
		m.Mechs = append(m.Mechs, d.text("mech", maxMechLen))
	}
	m.Epoch = d.uvarint("epoch")
	m.MaxFrameSize = d.uint32v("max frame size")
}

func (m *Greeting) validate() error {
	if len(m.Mechs) > maxMechs {
		return protoErrf(CodeTooLarge, "Greeting: %d mechanisms, over the limit %d", len(m.Mechs), maxMechs)
	}
	for _, s := range m.Mechs {
		if err := checkMech(s); err != nil {
			return fmt.Errorf("Greeting: %w", err)
		}
	}
	return checkFrameSize("Greeting", m.MaxFrameSize)
}

// StartTLS asks the server to start TLS. The client sends nothing more
// until it has read Proceed; then both sides run the TLS handshake.
type StartTLS struct{}

func (*StartTLS) Type() MsgType                 { return TypeStartTLS }
func (*StartTLS) appendPayload(b []byte) []byte { return b }
func (*StartTLS) decode(*decoder)               {}
func (*StartTLS) validate() error               { return nil }

// Proceed answers StartTLS: the next bytes on the connection are TLS.
type Proceed struct{}

func (*Proceed) Type() MsgType                 { return TypeProceed }
func (*Proceed) appendPayload(b []byte) []byte { return b }
func (*Proceed) decode(*decoder)               {}
func (*Proceed) validate() error               { return nil }

// Auth starts SASL authentication with mechanism Mech. HasInitial tells an
// empty initial response apart from none (RFC 4422 section 5).
type Auth struct {
	Mech       string
	HasInitial bool
	Initial    []byte
}

func (*Auth) Type() MsgType { return TypeAuth }

func (m *Auth) appendPayload(b []byte) []byte {
	b = appendString(b, m.Mech)
	b = appendBool(b, m.HasInitial)
	if m.HasInitial {
		b = appendBytes(b, m.Initial)
	}
	return b
}

func (m *Auth) decode(d *decoder) {
	m.Mech = d.text("mech", maxMechLen)
	m.HasInitial = d.bool("has initial response")
	if m.HasInitial {
		m.Initial = d.bytes("initial response", maxSASLData)
	}
}

func (m *Auth) validate() error {
	if !m.HasInitial && len(m.Initial) != 0 {
		return protoErrf(CodeProtocol, "Auth: initial response without HasInitial")
	}
	if len(m.Initial) > maxSASLData {
		return protoErrf(CodeTooLarge, "Auth: initial response of %d bytes, over the limit %d", len(m.Initial), maxSASLData)
	}
	return checkMech(m.Mech)
}

// AuthChallenge is a SASL server challenge; the client answers with
// AuthResponse.
type AuthChallenge struct{ Data []byte }

func (*AuthChallenge) Type() MsgType                   { return TypeAuthChallenge }
func (m *AuthChallenge) appendPayload(b []byte) []byte { return appendBytes(b, m.Data) }
func (m *AuthChallenge) decode(d *decoder)             { m.Data = d.bytes("data", maxSASLData) }
func (m *AuthChallenge) validate() error               { return checkSASLData("AuthChallenge", m.Data) }

// AuthResponse is a SASL client response to an AuthChallenge.
type AuthResponse struct{ Data []byte }

func (*AuthResponse) Type() MsgType                   { return TypeAuthResponse }
func (m *AuthResponse) appendPayload(b []byte) []byte { return appendBytes(b, m.Data) }
func (m *AuthResponse) decode(d *decoder)             { m.Data = d.bytes("data", maxSASLData) }
func (m *AuthResponse) validate() error               { return checkSASLData("AuthResponse", m.Data) }

// AuthOK ends a successful authentication and names the identity the
// server knows the client as.
type AuthOK struct{ Identity string }

func (*AuthOK) Type() MsgType                   { return TypeAuthOK }
func (m *AuthOK) appendPayload(b []byte) []byte { return appendString(b, m.Identity) }
func (m *AuthOK) decode(d *decoder)             { m.Identity = d.text("identity", maxIdentity) }
func (m *AuthOK) validate() error {
	if m.Identity == "" {
		return protoErrf(CodeProtocol, "AuthOK: empty identity")
	}
	return checkText("AuthOK identity", m.Identity, maxIdentity)
}

// Hello is the client's first frame after authentication: what it asks
// for, its epoch, and the largest payload it accepts.
type Hello struct {
	Caps         uint64
	Epoch        uint64
	MaxFrameSize uint32
}

func (*Hello) Type() MsgType { return TypeHello }

func (m *Hello) appendPayload(b []byte) []byte {
	b = appendUvarint(b, m.Caps)
	b = appendUvarint(b, m.Epoch)
	return appendUvarint(b, uint64(m.MaxFrameSize))
}

func (m *Hello) decode(d *decoder) {
	m.Caps = d.uvarint("caps")
	m.Epoch = d.uvarint("epoch")
	m.MaxFrameSize = d.uint32v("max frame size")
}

func (m *Hello) validate() error { return checkFrameSize("Hello", m.MaxFrameSize) }

// Welcome ends the handshake: Caps are the features granted for the rest
// of the connection. If CapZstd is granted, every byte after the Welcome
// frame, both directions, is one zstd stream per direction. If
// CapBatchLimits is granted, MaxBatchOps and MaxBatchBytes follow: the
// most ops the server takes in one batch, and the most content bytes (of
// Puts and WriteRanges) — a batch's first op that carries content may
// exceed MaxBatchBytes alone, so a file bigger than it can still travel, in
// a batch that starts with it. Both are at least 1.
type Welcome struct {
	Caps          uint64
	MaxBatchOps   uint64
	MaxBatchBytes uint64
}

func (*Welcome) Type() MsgType { return TypeWelcome }
func (m *Welcome) appendPayload(b []byte) []byte {
	b = appendUvarint(b, m.Caps)
	if m.Caps&CapBatchLimits != 0 {
		b = appendUvarint(appendUvarint(b, m.MaxBatchOps), m.MaxBatchBytes)
	}
	return b
}
func (m *Welcome) decode(d *decoder) {
	m.Caps = d.uvarint("caps")
	if m.Caps&CapBatchLimits != 0 {
		m.MaxBatchOps, m.MaxBatchBytes = d.uvarint("max batch ops"), d.uvarint("max batch bytes")
	}
}
func (m *Welcome) validate() error {
	switch {
	case m.Caps&CapBatchLimits == 0 && (m.MaxBatchOps != 0 || m.MaxBatchBytes != 0):
		return protoErrf(CodeProtocol, "Welcome: batch limits without CapBatchLimits")
	case m.Caps&CapBatchLimits != 0 && (m.MaxBatchOps == 0 || m.MaxBatchBytes == 0):
		return protoErrf(CodeProtocol, "Welcome: batch limit of 0")
	}
	return nil
}

func checkMech(s string) error {
	if s == "" || len(s) > maxMechLen {
		return protoErrf(CodeProtocol, "SASL mechanism name of %d bytes", len(s))
	}
	for _, c := range []byte(s) {
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return protoErrf(CodeProtocol, "SASL mechanism name %q has a character outside A-Z 0-9 - _", s)
		}
	}
	return nil
}

func checkSASLData(msg string, b []byte) error {
	if len(b) > maxSASLData {
		return protoErrf(CodeTooLarge, "%s: %d bytes, over the limit %d", msg, len(b), maxSASLData)
	}
	return nil
}

func checkFrameSize(msg string, n uint32) error {
	if n < MinFrameSize || n > MaxFrameSizeLimit {
		return protoErrf(CodeProtocol, "%s: max frame size %d outside [%d, %d]", msg, n, MinFrameSize, MaxFrameSizeLimit)
	}
	return nil
}
