package uring

import (
	"encoding/binary"
	"errors"
	"fmt"
)

var le = binary.LittleEndian

// The FUSE-over-io_uring ABI (include/uapi/linux/fuse.h, 7.42+).
const (
	cmdRegister       = 1 // FUSE_IO_URING_CMD_REGISTER
	cmdCommitAndFetch = 2 // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

	// struct fuse_uring_req_header
	headerSize     = 288
	inOutOff       = 0   // fuse_in_header in, fuse_out_header out
	inOutSize      = 128 // FUSE_URING_IN_OUT_HEADER_SZ
	opInOff        = 128 // the opcode's fixed argument (in_args[0])
	opInSize       = 128 // FUSE_URING_OP_IN_OUT_SZ
	entInOutOff    = 256 // struct fuse_uring_ent_in_out
	commitIDOff    = entInOutOff + 8
	payloadSizeOff = entInOutOff + 16

	inHeaderSize  = 40 // struct fuse_in_header
	outHeaderSize = 16 // struct fuse_out_header

	// struct fuse_uring_cmd_req, in the SQE's command area
	cmdReqSize     = 24
	cmdReqCommitID = 8
	cmdReqQID      = 16

	opWrite = 16 // FUSE_WRITE
)

// minPayload is FUSE_MIN_READ_BUFFER: the kernel refuses smaller buffers.
const minPayload = 8192

// errBadEntry is a request the kernel put in a ring entry whose sizes do
// not add up. The kernel writes these bytes, so it would be a kernel bug
// or an ABI this code does not know; the request is answered with EIO.
var errBadEntry = errors.New("fuse ring entry: inconsistent sizes")

// request is what a ring entry holds after the kernel filled it: the
// /dev/fuse byte stream of the request is header[:40] + the opcode's
// fixed argument + payload[:payloadLen].
type request struct {
	opcode     uint32
	unique     uint64
	opLen      int // bytes of the fixed argument at opInOff
	payloadLen int
}

// parseEntry reads the request the kernel put in hdr (a
// fuse_uring_req_header) with a payload buffer of payloadCap bytes.
//
// The kernel does not say how long the fixed argument is; it is what the
// in header's total length leaves after the header and the payload (the
// kernel counts in_args[0] in fuse_in_header.len and copies it to op_in,
// the other arguments to the payload).
func parseEntry(hdr []byte, payloadCap int) (request, error) {
	if len(hdr) < headerSize {
		return request{}, fmt.Errorf("%w: header buffer of %d bytes", errBadEntry, len(hdr))
	}
	total := int(le.Uint32(hdr[inOutOff:]))
	r := request{
		opcode:     le.Uint32(hdr[inOutOff+4:]),
		unique:     le.Uint64(hdr[inOutOff+8:]),
		payloadLen: int(le.Uint32(hdr[payloadSizeOff:])),
	}
	if r.payloadLen > payloadCap {
		return r, fmt.Errorf("%w: payload %d bytes in a %d-byte buffer", errBadEntry, r.payloadLen, payloadCap)
	}
	r.opLen = total - inHeaderSize - r.payloadLen
	if r.opLen < 0 || r.opLen > opInSize {
		return r, fmt.Errorf("%w: length %d, payload %d", errBadEntry, total, r.payloadLen)
	}
	if id := le.Uint64(hdr[commitIDOff:]); id != r.unique {
		return r, fmt.Errorf("%w: commit id %d for request %d", errBadEntry, id, r.unique)
	}
	return r, nil
}

// putErrorReply makes hdr a reply with only a status (a negative errno).
func putErrorReply(hdr []byte, unique uint64, errno int32) {
	le.PutUint32(hdr[inOutOff:], outHeaderSize)
	le.PutUint32(hdr[inOutOff+4:], uint32(errno))
	le.PutUint64(hdr[inOutOff+8:], unique)
	le.PutUint32(hdr[payloadSizeOff:], 0)
}

// cmdReq is a struct fuse_uring_cmd_req.
func cmdReq(qid uint16, commitID uint64) []byte {
	b := make([]byte, cmdReqSize)
	le.PutUint64(b[cmdReqCommitID:], commitID)
	le.PutUint16(b[cmdReqQID:], qid)
	return b
}
