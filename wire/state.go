package wire

import "fmt"

// recvState enforces the session state machine on what one end receives
// after the handshake (see the package doc, "Session"). It knows only what
// arrived, never what this end sent, so the rules are the ones a receiver
// can check alone.
type recvState struct {
	server bool

	// Server side: batches and the content that follows ops.
	inBatch  bool
	batchSeq uint64 // seq of the open batch
	lastSeq  uint64 // seq of the last closed batch
	ops      uint64 // ops so far in the open batch
	dataLeft uint64 // Data bytes still owed to the last Put / WriteRanges
	dataFor  string // its path, for errors

	// Client side: acks and manifest streams.
	lastAck       uint64
	manifestLast  string // last entry of the current stream, "" at its start
	manifestCount uint64
	digestLeft    uint64 // DigestEntry messages the last DigestReply announced and not yet come
	digestLast    string // the last of them, "" at the start
}

func (s *recvState) check(m Message) error {
	t := m.Type()
	if s.dataLeft > 0 {
		d, ok := m.(*Data)
		if !ok {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("%v while %d content bytes are still owed", t, s.dataLeft), Seq: s.batchSeq, Path: s.dataFor}
		}
		if uint64(len(d.Bytes)) > s.dataLeft {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("Data of %d bytes, but only %d are owed", len(d.Bytes), s.dataLeft), Seq: s.batchSeq, Path: s.dataFor}
		}
		s.dataLeft -= uint64(len(d.Bytes))
		return nil
	}
	switch t {
	case TypePing, TypePong, TypeGoodbye:
		return nil
	}
	if s.server {
		return s.checkServer(m)
	}
	return s.checkClient(m)
}

// checkServer: what a server may receive.
func (s *recvState) checkServer(m Message) error {
	switch m := m.(type) {
	case *BatchBegin:
		if s.inBatch {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("BatchBegin %d inside batch %d", m.Seq, s.batchSeq), Seq: m.Seq}
		}
		if m.Seq <= s.lastSeq {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("BatchBegin %d after batch %d: seqs must increase", m.Seq, s.lastSeq), Seq: m.Seq}
		}
		s.inBatch, s.batchSeq, s.ops = true, m.Seq, 0
		return nil
	case *BatchEnd:
		switch {
		case !s.inBatch:
			return &ProtoError{Code: CodeProtocol, Msg: "BatchEnd outside a batch", Seq: m.Seq}
		case m.Seq != s.batchSeq:
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("BatchEnd %d closes batch %d", m.Seq, s.batchSeq), Seq: s.batchSeq}
		case m.OpCount != s.ops:
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("BatchEnd says %d ops, %d arrived", m.OpCount, s.ops), Seq: s.batchSeq}
		}
		s.inBatch, s.lastSeq = false, s.batchSeq
		return nil
	case *Offer, *ManifestRequest, *PositionRequest, *DigestRequest:
		if s.inBatch {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("%v inside batch %d", m.Type(), s.batchSeq), Seq: s.batchSeq}
		}
		return nil
	case *Put:
		return s.op(m, m.Path, m.DataLen())
	case *WriteRanges:
		return s.op(m, m.Path, m.DataLen())
	case *Truncate, *Mkdir, *Rmdir, *Unlink, *Rename, *Link, *Symlink, *Mknod, *SetAttr, *SetXattr, *SetXattrs, *RemoveXattr, *Quarantine:
		return s.op(m, "", 0)
	}
	return protoErrf(CodeProtocol, "unexpected %v from a client", m.Type())
}

func (s *recvState) op(m Message, path string, data uint64) error {
	if !s.inBatch {
		return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("%v outside a batch", m.Type()), Path: truncPath(path)}
	}
	s.ops++
	s.dataLeft, s.dataFor = data, truncPath(path)
	return nil
}

// checkClient: what a client may receive.
func (s *recvState) checkClient(m Message) error {
	if _, entry := m.(*DigestEntry); s.digestLeft > 0 && !entry {
		return protoErrf(CodeProtocol, "%v while %d digest entries are still owed", m.Type(), s.digestLeft)
	}
	switch m := m.(type) {
	case *Ack:
		if m.Seq <= s.lastAck {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("Ack %d after Ack %d: acks must increase", m.Seq, s.lastAck), Seq: m.Seq}
		}
		s.lastAck = m.Seq
		return nil
	case *Owed:
		if m.Seq <= s.lastAck {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("Owed for batch %d after Ack %d", m.Seq, s.lastAck), Seq: m.Seq}
		}
		return nil
	case *Lacks, *Position:
		return nil
	case *DigestReply:
		s.digestLeft, s.digestLast = m.Count, ""
		return nil
	case *DigestEntry:
		return s.digestEntry(m)
	case *ManifestEntry:
		if s.manifestCount > 0 && ComparePaths(s.manifestLast, m.Path) >= 0 {
			return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("manifest entry out of order after %q", truncPath(s.manifestLast)), Path: truncPath(m.Path)}
		}
		s.manifestLast = m.Path
		s.manifestCount++
		return nil
	case *ManifestEnd:
		if m.Count != s.manifestCount {
			return protoErrf(CodeProtocol, "ManifestEnd says %d entries, %d arrived", m.Count, s.manifestCount)
		}
		s.manifestLast, s.manifestCount = "", 0
		return nil
	}
	return protoErrf(CodeProtocol, "unexpected %v from a server", m.Type())
}

// digestEntry checks a DigestEntry: one the last DigestReply announced,
// names strictly increasing.
func (s *recvState) digestEntry(m *DigestEntry) error {
	switch {
	case s.digestLeft == 0:
		return &ProtoError{Code: CodeProtocol, Msg: "DigestEntry that no DigestReply announced", Path: truncPath(m.Name)}
	case s.digestLast != "" && m.Name <= s.digestLast:
		return &ProtoError{Code: CodeProtocol, Msg: fmt.Sprintf("DigestEntry out of order after %q", s.digestLast), Path: truncPath(m.Name)}
	}
	s.digestLeft--
	s.digestLast = m.Name
	return nil
}
