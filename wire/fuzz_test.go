package wire

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func addSeeds(f *testing.F, withType bool) {
	for _, s := range samples {
		p := s.m.appendPayload(nil)
		if withType {
			f.Add(append([]byte{byte(s.m.Type())}, p...))
		} else {
			f.Add(appendHeader(nil, s.m.Type(), len(p)))
			f.Add(append(appendHeader(nil, s.m.Type(), len(p)), p...))
		}
	}
}

// FuzzReadFrame feeds arbitrary bytes to the frame reader and decodes
// every frame: nothing may panic, no buffer may exceed the limit, and
// whatever decodes must re-encode to the same bytes (one encoding per
// message).
func FuzzReadFrame(f *testing.F) {
	addSeeds(f, false)
	f.Add([]byte{0x9f, 0x02, 0, 0, byte(TypePing), 1, 7})
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := frameReader{r: bufioFrom(in), max: MinFrameSize}
		for {
			typ, p, err := fr.next()
			if err != nil {
				return
			}
			if len(p) > MinFrameSize || cap(fr.buf) > MinFrameSize {
				t.Fatalf("payload buffer of %d bytes over the limit", cap(fr.buf))
			}
			checkCanonical(t, typ, p)
		}
	})
}

// FuzzDecode dispatches on the first byte as the message type and decodes
// the rest as its payload.
func FuzzDecode(f *testing.F) {
	addSeeds(f, true)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		checkCanonical(t, MsgType(in[0]), in[1:])
	})
}

func checkCanonical(t *testing.T, typ MsgType, p []byte) {
	m, err := Unmarshal(typ, p)
	if err != nil {
		if asProto(err) == nil {
			t.Fatalf("decode error %v is not a *ProtoError", err)
		}
		return
	}
	out, err := Marshal(m)
	if err != nil {
		t.Fatalf("decoded %+v but cannot encode it: %v", m, err)
	}
	if !bytes.Equal(out, p) {
		t.Fatalf("%v re-encodes differently:\n in %x\nout %x", typ, p, out)
	}
}

// FuzzSession feeds arbitrary bytes to a server-side Conn as if they came
// after the handshake: the state machine and every decoder together.
func FuzzSession(f *testing.F) {
	fuzzRecv(f, true, &BatchBegin{Seq: 1}, &Put{Path: "a", Content: ContentInline, Size: 3}, &Data{Bytes: []byte("abc")},
		&Rename{Src: "a", Dst: "b"}, &BatchEnd{Seq: 1, OpCount: 2}, &Offer{GUIDs: []GUID{sampleGUID()}}, &ManifestRequest{}, &Goodbye{})
}

// fuzzRecv feeds arbitrary bytes, seeded with the frames of seeds, to a
// Conn of the server's side (server) or the client's, and receives until
// it refuses them.
func fuzzRecv(f *testing.F, server bool, seeds ...Message) {
	var seq []byte
	for _, m := range seeds {
		seq, _ = AppendFrame(seq, m)
	}
	f.Add(seq)
	addSeeds(f, false)
	f.Fuzz(func(t *testing.T, in []byte) {
		c := newConn(&fakeConn{r: bytes.NewReader(in)}, server, MinFrameSize)
		c.maxSend = MinFrameSize
		for i := 0; i < 1000; i++ {
			m, err := c.Recv()
			if err != nil {
				return
			}
			if m == nil {
				t.Fatal("nil message without error")
			}
		}
	})
}

// fakeConn reads from r and swallows writes.
type fakeConn struct{ r io.Reader }

func (c *fakeConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)        { return len(p), nil }
func (c *fakeConn) Close() error                       { return nil }
func (c *fakeConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c *fakeConn) SetDeadline(t time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(t time.Time) error { return nil }

// componentCompare is ComparePaths as its doc defines it, component by
// component: the reference the fast byte-wise version must agree with.
func componentCompare(a, b string) int {
	for {
		ca, ra, moreA := strings.Cut(a, "/")
		cb, rb, moreB := strings.Cut(b, "/")
		if c := strings.Compare(ca, cb); c != 0 {
			return c
		}
		switch {
		case !moreA && !moreB:
			return 0
		case !moreA:
			return -1
		case !moreB:
			return 1
		}
		a, b = ra, rb
	}
}

func FuzzComparePaths(f *testing.F) {
	for _, s := range [][2]string{{"a/b", "a.txt"}, {"a", "a/b"}, {"a-b", "a/b"}, {"ab/c", "a/c"}, {"a", "a"}, {".Sent/cur", ".Sent.x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if got, want := ComparePaths(a, b), componentCompare(a, b); got != want {
			t.Fatalf("ComparePaths(%q, %q) = %d, component by component %d", a, b, got, want)
		}
	})
}
