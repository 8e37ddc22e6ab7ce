package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"
)

func TestHandshakePipe(t *testing.T) {
	for _, compress := range []int{0, 3} {
		ccfg := baseClientConfig()
		ccfg.Compress = compress
		ccfg.Epoch = 7
		scfg := baseServerConfig()
		scfg.Epoch = func() uint64 { return 5 }
		c, s := pipePair(t, ccfg, scfg)
		cs, ss := c.Session(), s.Session()
		if ss.Identity != testUser || cs.Identity != testUser {
			t.Errorf("identity: client sees %q, server %q; want %q", cs.Identity, ss.Identity, testUser)
		}
		if ss.PeerEpoch != 7 || cs.PeerEpoch != 5 {
			t.Errorf("epochs: server sees %d, client sees %d; want 7, 5", ss.PeerEpoch, cs.PeerEpoch)
		}
		if want := compress > 0; cs.Compressed != want || ss.Compressed != want {
			t.Errorf("compress %d: client compressed %v, server %v", compress, cs.Compressed, ss.Compressed)
		}
		exchange(t, c, s)
	}
}

// exchange sends a batch with content both ways of the protocol's
// request/answer pattern and checks what arrives.
func exchange(t *testing.T, c, s *Conn) {
	t.Helper()
	content := bytes.Repeat([]byte("From bob Mon Jan  1 00:00:00 2024\nhello\n"), 30000) // > one Data chunk
	put := &Put{Path: "user/bob/cur/1.eml", Content: ContentInline, Mode: 0o600, UID: 8, GID: 12, Mtime: 1700000000123456789, Size: uint64(len(content))}
	sent := []Message{
		&BatchBegin{Seq: 1, Channel: "standby"},
		put,
		&Mkdir{Path: "user/bob/new", Mode: 0o700},
		&BatchEnd{Seq: 1, OpCount: 2},
	}
	errc := make(chan error, 1)
	go func() {
		errc <- func() error {
			if err := c.Send(sent[0]); err != nil {
				return err
			}
			if err := c.Send(sent[1]); err != nil {
				return err
			}
			if err := c.SendData(bytes.NewReader(content), int64(len(content))); err != nil {
				return err
			}
			for _, m := range sent[2:] {
				if err := c.Send(m); err != nil {
					return err
				}
			}
			return c.Flush()
		}()
	}()
	var got []Message
	var data bytes.Buffer
	for len(got) < len(sent) {
		m, err := s.Recv()
		if err != nil {
			t.Fatalf("server Recv: %v", err)
		}
		got = append(got, m)
		if p, ok := m.(*Put); ok {
			if err := s.RecvData(&data, p.DataLen()); err != nil {
				t.Fatalf("RecvData: %v", err)
			}
		}
	}
	if err := <-errc; err != nil {
		t.Fatalf("client send: %v", err)
	}
	if !reflect.DeepEqual(got, sent) {
		t.Errorf("got %+v, want %+v", got, sent)
	}
	if !bytes.Equal(data.Bytes(), content) {
		t.Errorf("content: got %d bytes, want %d", data.Len(), len(content))
	}
	// The answer: an Ack, read by the client.
	go func() { errc <- errors.Join(s.Send(&Ack{Seq: 1}), s.Flush()) }()
	m, err := c.Recv()
	if err != nil {
		t.Fatalf("client Recv: %v", err)
	}
	if a, ok := m.(*Ack); !ok || a.Seq != 1 {
		t.Errorf("got %#v, want Ack 1", m)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// A clean close.
	go func() { errc <- errors.Join(c.Send(&Goodbye{Reason: "done"}), c.Flush()) }()
	if m, err := s.Recv(); err != nil || m.Type() != TypeGoodbye {
		t.Errorf("got %v, %v; want Goodbye", m, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, ErrClosed) {
		t.Errorf("Recv after Goodbye: %v, want ErrClosed", err)
	}
}

// serve runs fn as the server's side of a test exchange.
func serve(t *testing.T, fn func() error) chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- fn() }()
	return errc
}

func TestOfferAndManifest(t *testing.T) {
	c, s := pipePair(t, baseClientConfig(), baseServerConfig())
	entries := []*ManifestEntry{
		{Path: "user", Kind: KindDir, Mode: 0o755, Nlink: 3, Inode: 1},
		{Path: "user/bob", Kind: KindDir, Mode: 0o700, Nlink: 2, Inode: 2},
		{Path: "user/bob/1.", Kind: KindFile, Mode: 0o600, Nlink: 2, Inode: 9, Size: 5, GUID: sampleGUID()},
		{Path: "user/bob.old", Kind: KindFile, Mode: 0o600, Nlink: 2, Inode: 9, Size: 5, GUID: sampleGUID()},
		{Path: "user/link", Kind: KindSymlink, Mode: 0o777, Nlink: 1, Inode: 4, Target: "bob"},
	}
	errc := serve(t, func() error {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		o := m.(*Offer)
		if err := s.Send(&Lacks{ID: o.ID, Lacking: []bool{false, true}}); err != nil {
			return err
		}
		if m, err = s.Recv(); err != nil {
			return err
		}
		if _, ok := m.(*ManifestRequest); !ok {
			return fmt.Errorf("got %v, want ManifestRequest", m.Type())
		}
		for _, e := range entries {
			if err := s.Send(e); err != nil {
				return err
			}
		}
		return errors.Join(s.Send(&ManifestEnd{Count: uint64(len(entries))}), s.Flush())
	})
	if err := errors.Join(c.Send(&Offer{ID: 5, GUIDs: []GUID{sampleGUID(), sampleSHA1()}}), c.Send(&ManifestRequest{}), c.Flush()); err != nil {
		t.Fatal(err)
	}
	m, err := c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if l := m.(*Lacks); l.ID != 5 || !reflect.DeepEqual(l.Lacking, []bool{false, true}) {
		t.Errorf("got %+v, want Lacks 5 [false true]", l)
	}
	for i := 0; ; i++ {
		m, err := c.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m.(*ManifestEnd); ok {
			if i != len(entries) {
				t.Errorf("%d entries, want %d", i, len(entries))
			}
			break
		}
		if !reflect.DeepEqual(m, entries[i]) {
			t.Errorf("entry %d: got %+v, want %+v", i, m, entries[i])
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestPosition: a PositionRequest between batches is answered in order.
func TestPosition(t *testing.T) {
	c, s := pipePair(t, baseClientConfig(), baseServerConfig())
	errc := serve(t, func() error {
		m, err := s.Recv()
		if err != nil {
			return err
		}
		r, ok := m.(*PositionRequest)
		if !ok {
			return fmt.Errorf("got %v, want PositionRequest", m.Type())
		}
		return errors.Join(s.Send(&Position{Channel: r.Channel, Applied: 41, Interrupted: 42}), s.Flush())
	})
	if err := errors.Join(c.Send(&PositionRequest{Channel: "dr"}), c.Flush()); err != nil {
		t.Fatal(err)
	}
	m, err := c.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m, (&Position{Channel: "dr", Applied: 41, Interrupted: 42}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestClientSideViolations: a server that breaks the rules is refused
// by the client the same way.
func TestClientSideViolations(t *testing.T) {
	cases := map[string][]Message{
		"manifest out of order": {&ManifestEntry{Path: "b", Kind: KindDir}, &ManifestEntry{Path: "a", Kind: KindDir}},
		"manifest miscounted":   {&ManifestEntry{Path: "a", Kind: KindDir}, &ManifestEnd{Count: 2}},
		"acks go back":          {&Ack{Seq: 2}, &Ack{Seq: 2}},
		"client-only message":   {&BatchBegin{Seq: 1}},
		"digest entry unasked":  {&DigestEntry{Name: "a", Kind: KindFile}},
		"digest entries short":  {&DigestReply{Tag: DigestDiffer, Count: 2}, &DigestEntry{Name: "a", Kind: KindFile}, &Ack{Seq: 1}},
		"digest entries extra":  {&DigestReply{Tag: DigestDiffer, Count: 1}, &DigestEntry{Name: "a", Kind: KindFile}, &DigestEntry{Name: "b", Kind: KindFile}},
		"digest entry order":    {&DigestReply{Tag: DigestDiffer, Count: 2}, &DigestEntry{Name: "b", Kind: KindFile}, &DigestEntry{Name: "a", Kind: KindFile}},
	}
	for name, msgs := range cases {
		t.Run(name, func(t *testing.T) {
			c, s := pipePair(t, baseClientConfig(), baseServerConfig())
			errc := serve(t, func() error {
				for _, m := range msgs {
					if err := s.Send(m); err != nil {
						return err
					}
				}
				if err := s.Flush(); err != nil {
					return err
				}
				_, err := s.Recv()
				return err
			})
			var err error
			for err == nil {
				_, err = c.Recv()
			}
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("client: %v, want protocol error", err)
			}
			if serr := <-errc; !errors.Is(serr, ErrProtocol) || !asProto(serr).Remote {
				t.Errorf("server: %v, want the client's protocol error", serr)
			}
		})
	}
}

func TestSendRefusesInvalid(t *testing.T) {
	c, _ := pipePair(t, baseClientConfig(), baseServerConfig())
	if err := c.Send(&Unlink{Path: "../x"}); !errors.Is(err, ErrBadPath) {
		t.Errorf("Send(Unlink ../x) = %v, want badpath", err)
	}
	big := &SetXattr{Path: "a", Name: "user.x", Value: make([]byte, MaxXattrValue)}
	c.maxSend = MinFrameSize // as if the peer said so
	if err := c.Send(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Send of a frame over the peer's limit = %v, want toolarge", err)
	}
}

func TestSendDataShortSource(t *testing.T) {
	c, _ := pipePair(t, baseClientConfig(), baseServerConfig())
	err := c.SendData(bytes.NewReader([]byte("abc")), 10)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("SendData of a short source = %v, want unexpected EOF", err)
	}
}
