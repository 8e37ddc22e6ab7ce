package wire

import (
	"bytes"
	"errors"
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
