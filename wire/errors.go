package wire

import (
	"errors"
	"fmt"
)

// Code classifies a protocol error. Codes travel in Error frames, so their
// values are part of the protocol: never renumber, only append.
type Code uint8

// Error codes. A receiver must accept codes it does not know (a newer peer
// may send them) and treat them like CodeInternal.
const (
	CodeProtocol    Code = 1  // malformed frame, unknown message, message out of order
	CodeAuth        Code = 2  // authentication failed or mechanism refused
	CodeNotAdmin    Code = 3  // authenticated, but not allowed to replicate here
	CodeFenced      Code = 4  // the client's epoch is below the server's
	CodeBadPath     Code = 5  // a path is not relative, clean and within limits
	CodeTooLarge    Code = 6  // a frame or a count is over a limit
	CodeLackingGUID Code = 7  // a Put by GUID names content the replica does not have
	CodeApply       Code = 8  // the replica could not apply an op (disk full, EIO...)
	CodeTLS         Code = 9  // TLS required but not used, or not offered but asked for
	CodeVersion     Code = 10 // protocol version or magic mismatch
	CodeShutdown    Code = 11 // the peer is going away; reconnect later
	CodeInternal    Code = 12 // anything else
	CodeMissing     Code = 13 // an op names an object the replica does not have (Path)
)

var codeNames = map[Code]string{
	CodeProtocol: "protocol", CodeAuth: "auth", CodeNotAdmin: "notadmin",
	CodeFenced: "fenced", CodeBadPath: "badpath", CodeTooLarge: "toolarge",
	CodeLackingGUID: "lacking-guid", CodeApply: "apply", CodeTLS: "tls",
	CodeVersion: "version", CodeShutdown: "shutdown", CodeInternal: "internal",
	CodeMissing: "missing",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code(%d)", uint8(c))
}

// ProtoError is a protocol-level failure: one this end detected (Remote is
// false; it is usually also sent to the peer in an Error frame) or one the
// peer reported in an Error frame (Remote is true).
type ProtoError struct {
	Code   Code
	Msg    string
	Seq    uint64 // batch the error is about, 0 if none
	Path   string // path the error is about, "" if none
	Remote bool   // reported by the peer
	Epoch  uint64 // for CodeFenced seen by a client: the server's epoch
}

func (e *ProtoError) Error() string {
	s := e.Code.String() + ": " + e.Msg
	if e.Remote {
		s = "peer: " + s
	}
	if e.Seq != 0 {
		s += fmt.Sprintf(" (batch %d)", e.Seq)
	}
	if e.Path != "" {
		s += fmt.Sprintf(" (path %q)", e.Path)
	}
	return s
}

// Is makes errors.Is(err, ErrFenced) and friends match any ProtoError with
// the same code.
func (e *ProtoError) Is(target error) bool {
	t, ok := target.(*ProtoError)
	return ok && t.Msg == "" && t.Code == e.Code
}

// Sentinels for errors.Is. They match any *ProtoError with that code,
// whichever end detected it.
var (
	ErrProtocol    = &ProtoError{Code: CodeProtocol}
	ErrAuth        = &ProtoError{Code: CodeAuth}
	ErrNotAdmin    = &ProtoError{Code: CodeNotAdmin}
	ErrFenced      = &ProtoError{Code: CodeFenced}
	ErrBadPath     = &ProtoError{Code: CodeBadPath}
	ErrTooLarge    = &ProtoError{Code: CodeTooLarge}
	ErrLackingGUID = &ProtoError{Code: CodeLackingGUID}
	ErrApply       = &ProtoError{Code: CodeApply}
	ErrTLS         = &ProtoError{Code: CodeTLS}
	ErrVersion     = &ProtoError{Code: CodeVersion}
	ErrMissing     = &ProtoError{Code: CodeMissing}
)

// ErrClosed is returned by Recv after the peer said Goodbye, and by any
// call on a closed Conn.
var ErrClosed = errors.New("wire: connection closed")

func protoErrf(code Code, format string, args ...any) *ProtoError {
	return &ProtoError{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// asProto returns err's *ProtoError, or nil.
func asProto(err error) *ProtoError {
	var pe *ProtoError
	if errors.As(err, &pe) {
		return pe
	}
	return nil
}
