package wire

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// TestDigestExchange: a request and its answer (a directory that is the
// same, one that differs with its entries, one absent) pass both ends'
// state machines intact.
func TestDigestExchange(t *testing.T) {
	c, s := pipePair(t, baseClientConfig(), baseServerConfig())
	answer := []Message{
		&DigestReply{Tag: DigestSame, Digest: sampleDigest(1)},
		&DigestReply{Path: "user/bob", Tag: DigestDiffer, Digest: sampleDigest(2), Count: 2},
		&DigestEntry{Name: "cur", Kind: KindDir, Attr: sampleDigest(3), Sub: sampleDigest(4)},
		&DigestEntry{Name: "new", Kind: KindDir, Attr: sampleDigest(5), Sub: sampleDigest(6)},
		&DigestReply{Path: "user/gone", Tag: DigestAbsent},
	}
	req := &DigestRequest{GUIDMode: GUIDSHA256, Dirs: []DigestDirReq{{Path: ""}, {Path: "user/bob"}, {Path: "user/gone"}}}
	errc := serve(t, func() error {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(m, req) {
			return fmt.Errorf("got %+v, want %+v", m, req)
		}
		for _, a := range answer {
			if err := s.Send(a); err != nil {
				return err
			}
		}
		return s.Flush()
	})
	if err := errors.Join(c.Send(req), c.Flush()); err != nil {
		t.Fatal(err)
	}
	for i, want := range answer {
		m, err := c.Recv()
		if err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
		if !reflect.DeepEqual(m, want) {
			t.Errorf("answer %d: got %+v, want %+v", i, m, want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestDigestRequestInsideBatch: a DigestRequest is only asked between
// batches; the server refuses one inside a batch.
func TestDigestRequestInsideBatch(t *testing.T) {
	var st recvState
	st.server = true
	if err := st.check(&BatchBegin{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	if err := st.check(&DigestRequest{Dirs: []DigestDirReq{{}}}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("DigestRequest inside a batch: %v, want a protocol error", err)
	}
}

// FuzzClientSession feeds arbitrary bytes to a client-side Conn as if a
// server sent them after the handshake: the client's state machine (acks,
// manifests, digest streams) and the decoders of what a server sends.
func FuzzClientSession(f *testing.F) {
	fuzzRecv(f, false, &Ack{Seq: 1}, &DigestReply{Path: "a", Tag: DigestDiffer, Count: 2},
		&DigestEntry{Name: "b", Kind: KindDir, Sub: sampleDigest(1)}, &DigestEntry{Name: "c", Kind: KindFile},
		&DigestReply{Tag: DigestSame}, &ManifestEntry{Path: "a", Kind: KindDir}, &ManifestEnd{Count: 1}, &Lacks{Lacking: []bool{true}})
}
