package wire

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// logBuffer collects a server's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestAuthRefusals(t *testing.T) {
	cases := []struct {
		name       string
		user, pass string
		remote     net.Addr // the address the server sees; nil = net.Pipe's
		plaintext  bool
		want       error
		wantMsg    string
	}{
		{"wrong password", testUser, "nope", nil, false, ErrAuth, `authentication failed for "master"`},
		{"unknown user", "mallory", "x", nil, false, ErrAuth, `authentication failed for "mallory"`},
		{"not an admin", "bob", "bobpw", nil, false, ErrNotAdmin, `"bob" is not in admins on this replica`},
		{"plain without TLS from afar", testUser, testPass, remoteAddr, false, ErrAuth, "not TLS"},
		{"allowplaintext from afar", testUser, testPass, remoteAddr, true, nil, ""},
		{"loopback TCP address", testUser, testPass, &net.TCPAddr{IP: net.IPv6loopback}, false, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var logs logBuffer
			scfg := baseServerConfig()
			scfg.AllowPlaintext = tc.plaintext
			scfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			ccfg := ClientConfig{AuthName: tc.user, Password: tc.pass}
			cc, sc := net.Pipe()
			var snc net.Conn = sc
			if tc.remote != nil {
				snc = addrConn{sc, tc.remote}
			}
			cr, sr := handshakePair(t, cc, snc, ccfg, scfg)
			if tc.want == nil {
				if cr.err != nil || sr.err != nil {
					t.Fatalf("client: %v; server: %v; want success", cr.err, sr.err)
				}
				return
			}
			if !errors.Is(cr.err, tc.want) || !errors.Is(sr.err, tc.want) {
				t.Fatalf("client: %v; server: %v; want %v on both", cr.err, sr.err, tc.want)
			}
			if pe := asProto(cr.err); !pe.Remote || !strings.Contains(pe.Msg, tc.wantMsg) {
				t.Errorf("client got %q, want a remote error containing %q", cr.err, tc.wantMsg)
			}
			if l := logs.String(); !strings.Contains(l, "authentication refused") || !strings.Contains(l, "peer="+snc.RemoteAddr().String()) {
				t.Errorf("log %q does not record the refusal with the peer address", l)
			}
			if strings.Contains(cr.err.Error(), "bad user or password") {
				t.Errorf("client learnt the Authenticate detail: %v", cr.err)
			}
		})
	}
}

func TestRealm(t *testing.T) {
	ccfg := baseClientConfig()
	ccfg.Realm = "example.org"
	scfg := baseServerConfig()
	var gotUser string
	scfg.Authenticate = func(u, p string) error { gotUser = u; return nil }
	c, _ := pipePair(t, ccfg, scfg)
	if gotUser != "master@example.org" || c.Session().Identity != "master@example.org" {
		t.Errorf("Authenticate saw %q, identity %q; want master@example.org", gotUser, c.Session().Identity)
	}
}

func TestFenced(t *testing.T) {
	ccfg := baseClientConfig()
	ccfg.Epoch = 4
	scfg := baseServerConfig()
	scfg.Epoch = func() uint64 { return 5 }
	cc, sc := net.Pipe()
	cr, sr := handshakePair(t, cc, sc, ccfg, scfg)
	if !errors.Is(cr.err, ErrFenced) || !errors.Is(sr.err, ErrFenced) {
		t.Fatalf("client: %v; server: %v; want fenced", cr.err, sr.err)
	}
	pe := asProto(cr.err)
	if pe.Epoch != 5 || !strings.Contains(pe.Msg, "epoch 5") {
		t.Errorf("fenced error %v (epoch %d) does not name the server's epoch 5", pe, pe.Epoch)
	}
	// Equal and higher epochs are welcome.
	for _, e := range []uint64{5, 6} {
		ccfg.Epoch = e
		pipePair(t, ccfg, scfg)
	}
}

// tcpPair runs a TLS handshake over real TCP on 127.0.0.1.
func tcpPair(t *testing.T, ccfg ClientConfig, scfg ServerConfig) (client, server result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan result, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- result{nil, err}
			return
		}
		c, err := Server(context.Background(), nc, scfg)
		done <- result{c, err}
	}()
	ccfg.Addr = ln.Addr().String()
	c, err := Dial(context.Background(), ccfg)
	client = result{c, err}
	server = <-done
	for _, r := range []result{client, server} {
		if r.c != nil {
			t.Cleanup(func() { r.c.Close() })
		}
	}
	return client, server
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	t.Run("plain over TLS, compressed", func(t *testing.T) {
		scfg := baseServerConfig()
		scfg.TLS, scfg.RequireTLS = p.serverTLS(), true
		ccfg := baseClientConfig()
		ccfg.TLS, ccfg.Compress = p.clientTLS(nil), 1
		cr, sr := tcpPair(t, ccfg, scfg)
		if cr.err != nil || sr.err != nil {
			t.Fatalf("client: %v; server: %v", cr.err, sr.err)
		}
		if s := sr.c.Session(); !s.TLS || !s.Compressed || s.Mech != "PLAIN" {
			t.Errorf("server session %+v: want TLS, compressed, PLAIN", s)
		}
		exchange(t, cr.c, sr.c)
	})
	t.Run("external with client certificate", func(t *testing.T) {
		scfg := baseServerConfig()
		scfg.TLS = p.serverTLS()
		ccfg := ClientConfig{TLS: p.clientTLS(&p.client)}
		cr, sr := tcpPair(t, ccfg, scfg)
		if cr.err != nil || sr.err != nil {
			t.Fatalf("client: %v; server: %v", cr.err, sr.err)
		}
		if s := sr.c.Session(); s.Mech != "EXTERNAL" || s.Identity != testUser {
			t.Errorf("server session %+v: want EXTERNAL as %q", s, testUser)
		}
	})
	t.Run("external claiming another name", func(t *testing.T) {
		scfg := baseServerConfig()
		scfg.TLS = p.serverTLS()
		ccfg := ClientConfig{TLS: p.clientTLS(&p.client), AuthName: "bob"}
		cr, sr := tcpPair(t, ccfg, scfg)
		if !errors.Is(cr.err, ErrAuth) || !errors.Is(sr.err, ErrAuth) {
			t.Fatalf("client: %v; server: %v; want auth refused", cr.err, sr.err)
		}
	})
	t.Run("client certificate from another CA", func(t *testing.T) {
		// crypto/tls withholds a certificate the server's CA list does
		// not cover, so the server sees none and does not offer EXTERNAL.
		scfg := baseServerConfig()
		scfg.TLS = p.serverTLS()
		ccfg := ClientConfig{TLS: p.clientTLS(&p.foreign)}
		cr, sr := tcpPair(t, ccfg, scfg)
		if !errors.Is(cr.err, ErrAuth) || !errors.Is(sr.err, ErrAuth) {
			t.Fatalf("client: %v; server: %v; want EXTERNAL refused", cr.err, sr.err)
		}
	})
	t.Run("client certificate from another CA, forced", func(t *testing.T) {
		// A client that sends it anyway fails the TLS handshake.
		scfg := baseServerConfig()
		scfg.TLS = p.serverTLS()
		ccfg := ClientConfig{TLS: p.clientTLS(nil)}
		ccfg.TLS.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &p.foreign, nil }
		cr, sr := tcpPair(t, ccfg, scfg)
		if cr.err == nil || sr.err == nil || !strings.Contains(sr.err.Error(), "TLS") {
			t.Fatalf("client: %v; server: %v; want the TLS handshake to fail", cr.err, sr.err)
		}
	})
	t.Run("server certificate from another CA", func(t *testing.T) {
		scfg := baseServerConfig()
		scfg.TLS = p.serverTLS()
		ccfg := baseClientConfig()
		ccfg.TLS = p.clientTLS(nil)
		ccfg.TLS.RootCAs = p.foreignCAs
		cr, sr := tcpPair(t, ccfg, scfg)
		if cr.err == nil || sr.err == nil {
			t.Fatalf("client: %v; server: %v; want failure", cr.err, sr.err)
		}
	})
	t.Run("TLS required, client without", func(t *testing.T) {
		scfg := baseServerConfig()
		scfg.TLS, scfg.RequireTLS = p.serverTLS(), true
		cr, sr := tcpPair(t, baseClientConfig(), scfg)
		if !errors.Is(cr.err, ErrTLS) || sr.err == nil {
			t.Fatalf("client: %v; server: %v; want tls refusal", cr.err, sr.err)
		}
	})
	t.Run("TLS wanted, server without", func(t *testing.T) {
		ccfg := baseClientConfig()
		ccfg.TLS = p.clientTLS(nil)
		cr, sr := tcpPair(t, ccfg, baseServerConfig())
		if !errors.Is(cr.err, ErrTLS) || sr.err == nil {
			t.Fatalf("client: %v; server: %v; want tls refusal", cr.err, sr.err)
		}
	})
}

// rawClient plays a hostile client: it reads the server's preamble and
// greeting, then writes whatever the test wants.
type rawClient struct {
	nc net.Conn
	fr frameReader
}

func newRawClient(t *testing.T, scfg ServerConfig) (*rawClient, chan result) {
	cc, sc := net.Pipe()
	done := make(chan result, 1)
	go func() {
		c, err := Server(context.Background(), sc, scfg)
		if c != nil {
			t.Cleanup(func() { c.Close() })
		}
		done <- result{c, err}
	}()
	t.Cleanup(func() { cc.Close() })
	r := &rawClient{nc: cc, fr: frameReader{r: bufio.NewReader(cc), max: DefaultMaxFrameSize}}
	if _, err := io.ReadFull(r.fr.r, make([]byte, len(preamble))); err != nil {
		t.Fatal(err)
	}
	if typ, _, err := r.fr.next(); err != nil || typ != TypeGreeting {
		t.Fatalf("greeting: %v %v", typ, err)
	}
	return r, done
}

// write sends parts, then reads what the server answers until it closes,
// and returns the Error frame it sent, if any.
func (r *rawClient) write(t *testing.T, parts ...[]byte) chan *Error {
	t.Helper()
	go r.nc.Write(bytes.Join(parts, nil)) // the server may stop reading
	errc := make(chan *Error, 1)
	go func() {
		var last *Error
		for {
			typ, p, err := r.fr.next()
			if err != nil {
				errc <- last
				return
			}
			if m, err := Unmarshal(typ, p); err == nil {
				if e, ok := m.(*Error); ok {
					last = e
				}
			}
		}
	}()
	return errc
}

func frame(t testing.TB, m Message) []byte {
	b := appendHeader(nil, m.Type(), len(m.appendPayload(nil)))
	return m.appendPayload(b)
}

// TestHandshakeViolations: what a hostile or broken client sends before
// it is authenticated.
func TestHandshakeViolations(t *testing.T) {
	p := newPKI(t)
	cases := map[string]struct {
		scfg  func(*ServerConfig)
		bytes [][]byte
		want  error
	}{
		"not csync":            {nil, [][]byte{[]byte("GET / HTTP/1.0\r\n\r\n")}, ErrVersion},
		"version 2":            {nil, [][]byte{[]byte("CSYNC\x02")}, ErrVersion},
		"starttls not offered": {nil, [][]byte{[]byte(preamble), frame(t, &StartTLS{})}, ErrTLS},
		"starttls injection": {func(c *ServerConfig) { c.TLS = p.serverTLS() },
			[][]byte{[]byte(preamble), frame(t, &StartTLS{}), frame(t, &Auth{Mech: "PLAIN", HasInitial: true, Initial: []byte("\x00master\x00s3cret")})}, ErrProtocol},
		"auth before tls when required": {func(c *ServerConfig) { c.TLS, c.RequireTLS = p.serverTLS(), true },
			[][]byte{[]byte(preamble), frame(t, &Auth{Mech: "PLAIN", HasInitial: true, Initial: []byte("\x00master\x00s3cret")})}, ErrTLS},
		"external without cert": {nil, [][]byte{[]byte(preamble), frame(t, &Auth{Mech: "EXTERNAL", HasInitial: true})}, ErrAuth},
		"unknown mechanism":     {nil, [][]byte{[]byte(preamble), frame(t, &Auth{Mech: "CRAM-MD5"})}, ErrAuth},
		"hello before auth":     {nil, [][]byte{[]byte(preamble), frame(t, &Hello{MaxFrameSize: MinFrameSize})}, ErrProtocol},
		"plain authzid differs": {nil, [][]byte{[]byte(preamble), frame(t, &Auth{Mech: "PLAIN", HasInitial: true, Initial: []byte("root\x00master\x00s3cret")})}, ErrAuth},
		"huge frame":            {nil, [][]byte{[]byte(preamble), {byte(TypeAuth), 0x80, 0x80, 0x80, 0x80, 0x04}}, ErrTooLarge},
		// Within the 4 MiB announced for later, over what an
		// unauthenticated peer may make the server hold.
		"frame over the pre-auth limit": {nil, [][]byte{[]byte(preamble), appendHeader(nil, TypeAuth, MaxPreAuthFrameSize+1)}, ErrTooLarge},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			scfg := baseServerConfig()
			if tc.scfg != nil {
				tc.scfg(&scfg)
			}
			r, done := newRawClient(t, scfg)
			errc := r.write(t, tc.bytes...)
			sr := <-done
			if !errors.Is(sr.err, tc.want) {
				t.Fatalf("server: %v, want %v", sr.err, tc.want)
			}
			r.nc.Close()
			if e := <-errc; e == nil || e.Code != asProto(sr.err).Code {
				t.Errorf("client got Error frame %+v, want code %v", e, asProto(sr.err).Code)
			}
		})
	}
}

// TestSessionViolations: an authenticated client that breaks the rules
// gets an Error frame saying so, and the connection ends.
func TestSessionViolations(t *testing.T) {
	big := make([]byte, 10)
	cases := map[string]struct {
		frames [][]byte
		want   error
	}{
		"op outside batch":     {[][]byte{frame(t, &Unlink{Path: "a"})}, ErrProtocol},
		"bad path":             {[][]byte{frame(t, &BatchBegin{Seq: 1}), frame(t, &Unlink{Path: "../etc/passwd"})}, ErrBadPath},
		"absolute path":        {[][]byte{frame(t, &BatchBegin{Seq: 1}), frame(t, &Put{Path: "/etc/x", Content: ContentInline})}, ErrBadPath},
		"wrong op count":       {[][]byte{frame(t, &BatchBegin{Seq: 1}), frame(t, &Rmdir{Path: "a"}), frame(t, &BatchEnd{Seq: 1, OpCount: 2})}, ErrProtocol},
		"seq goes back":        {[][]byte{frame(t, &BatchBegin{Seq: 2}), frame(t, &BatchEnd{Seq: 2}), frame(t, &BatchBegin{Seq: 1})}, ErrProtocol},
		"op instead of data":   {[][]byte{frame(t, &BatchBegin{Seq: 1}), frame(t, &Put{Path: "a", Content: ContentInline, Size: 5}), frame(t, &Rmdir{Path: "b"})}, ErrProtocol},
		"too much data":        {[][]byte{frame(t, &BatchBegin{Seq: 1}), frame(t, &Put{Path: "a", Content: ContentInline, Size: 5}), frame(t, &Data{Bytes: big})}, ErrProtocol},
		"stray data":           {[][]byte{frame(t, &Data{Bytes: big})}, ErrProtocol},
		"handshake again":      {[][]byte{frame(t, &Hello{MaxFrameSize: MinFrameSize})}, ErrProtocol},
		"server-only message":  {[][]byte{frame(t, &Ack{Seq: 1})}, ErrProtocol},
		"unknown type 0x7e":    {[][]byte{{0x7e, 0x00}}, ErrProtocol},
		"frame over max size":  {[][]byte{{byte(TypeData), 0x81, 0x80, 0x80, 0x02}}, ErrTooLarge},
		"offer inside a batch": {[][]byte{frame(t, &BatchBegin{Seq: 1}), frame(t, &Offer{GUIDs: []GUID{sampleGUID()}})}, ErrProtocol},
		"position in a batch":  {[][]byte{frame(t, &BatchBegin{Seq: 1}), frame(t, &PositionRequest{})}, ErrProtocol},
		"position from client": {[][]byte{frame(t, &Position{Applied: 1})}, ErrProtocol},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, s := pipePair(t, baseClientConfig(), baseServerConfig())
			errc := make(chan error, 1)
			go func() {
				c.wmu.Lock()
				for _, f := range tc.frames {
					c.w.Write(f)
				}
				c.wmu.Unlock()
				c.Flush()
				// The client hears why.
				for {
					if _, err := c.Recv(); err != nil {
						errc <- err
						return
					}
				}
			}()
			var err error
			for err == nil {
				_, err = s.Recv()
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("server: %v, want %v", err, tc.want)
			}
			cerr := <-errc
			if pe := asProto(cerr); pe == nil || !pe.Remote || !errors.Is(cerr, tc.want) {
				t.Errorf("client: %v, want the server's %v error", cerr, tc.want)
			}
		})
	}
}

func TestOptionalTypeSkipped(t *testing.T) {
	c, s := pipePair(t, baseClientConfig(), baseServerConfig())
	go func() {
		c.wmu.Lock()
		c.w.Write([]byte{0x9f, 0x03, 1, 2, 3}) // unknown optional frame
		c.wmu.Unlock()
		c.Send(&Ping{ID: 42})
		c.Flush()
	}()
	m, err := s.Recv()
	if p, ok := m.(*Ping); err != nil || !ok || p.ID != 42 {
		t.Fatalf("got %v, %v; want Ping 42 after the skipped frame", m, err)
	}
}

func TestFrameTooLargeNotAllocated(t *testing.T) {
	// A header claiming 1 GiB: refused before any payload buffer exists.
	in := appendHeader(nil, TypeData, 1<<30)
	fr := frameReader{r: bufioFrom(in), max: DefaultMaxFrameSize}
	if _, _, err := fr.next(); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want toolarge", err)
	}
	if cap(fr.buf) != 0 {
		t.Errorf("payload buffer of %d bytes allocated for a refused frame", cap(fr.buf))
	}
	allocs := testing.AllocsPerRun(10, func() {
		fr := frameReader{r: bufioFrom(in), max: DefaultMaxFrameSize}
		fr.next()
	})
	if allocs > 20 {
		t.Errorf("%v allocations to refuse a frame", allocs)
	}
}

// zstdRLEBomb builds a zstd frame by hand: a window of 1<<windowLog bytes
// and blocks RLE blocks of 128 KiB zeros each (RFC 8878 section 3.1.1),
// four bytes per block, so 8192 blocks are 1 GiB in 32 KiB.
func zstdRLEBomb(windowLog int, blocks int) []byte {
	b := []byte{0x28, 0xB5, 0x2F, 0xFD, // magic
		0x00,                    // frame header descriptor: no content size, no checksum, no dictionary
		byte(windowLog-10) << 3} // window descriptor: exponent, mantissa 0
	const blockSize = 128 << 10
	for i := 0; i < blocks; i++ {
		h := uint32(blockSize<<3 | 1<<1) // RLE block
		if i == blocks-1 {
			h |= 1 // last block
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0x00)
	}
	return b
}

// TestZstdBomb: the stream after Welcome is hostile zstd.
func TestZstdBomb(t *testing.T) {
	cases := map[string]struct {
		bomb []byte
		want error
	}{
		// 1 GiB of zeros in a window the decoder accepts: the first
		// frame header decompressed (type 0) ends it, and no more than a
		// buffer's worth is ever inflated.
		"1 GiB of zeros": {zstdRLEBomb(22, 8192), ErrProtocol},
		// A window over the limit is refused before it is allocated.
		"1 GiB window": {zstdRLEBomb(30, 8192), ErrTooLarge},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			// The bomb is real zstd: a plain decoder inflates it fully.
			if name == "1 GiB of zeros" {
				dec, err := zstd.NewReader(bytes.NewReader(tc.bomb), zstd.WithDecoderConcurrency(1))
				if err != nil {
					t.Fatal(err)
				}
				n, err := io.Copy(io.Discard, dec)
				dec.Close()
				if err != nil || n != 1<<30 {
					t.Fatalf("bomb inflates to %d bytes (%v), want 1 GiB", n, err)
				}
			}
			ccfg := baseClientConfig()
			ccfg.Compress = 1
			c, s := pipePair(t, ccfg, baseServerConfig())
			go func() {
				// Straight onto the transport, under the client's encoder.
				c.wmu.Lock()
				c.bw.Write(tc.bomb)
				c.bw.Flush()
				c.wmu.Unlock()
			}()
			go func() { // take the server's Error frame
				for {
					if _, err := c.Recv(); err != nil {
						return
					}
				}
			}()
			var rerr error
			for rerr == nil {
				_, rerr = s.Recv()
			}
			if !errors.Is(rerr, tc.want) {
				t.Fatalf("server: %v, want %v", rerr, tc.want)
			}
			t.Logf("%d-byte bomb refused: %v", len(tc.bomb), rerr)
		})
	}
}

// TestBatchLimitsNegotiated: a server with batch limits announces them to
// a client that asks, and only then; the Greeting still announces the frame
// size that applies after authentication.
func TestBatchLimitsNegotiated(t *testing.T) {
	scfg := baseServerConfig()
	scfg.MaxBatchOps, scfg.MaxBatchBytes = 1000, 1<<20
	c, s := pipePair(t, baseClientConfig(), scfg)
	for _, sess := range []Session{c.Session(), s.Session()} {
		if sess.Caps&CapBatchLimits == 0 || sess.MaxBatchOps != 1000 || sess.MaxBatchBytes != 1<<20 {
			t.Errorf("session caps %#x limits %d ops %d bytes, want CapBatchLimits 1000 1048576", sess.Caps, sess.MaxBatchOps, sess.MaxBatchBytes)
		}
	}
	c, _ = pipePair(t, baseClientConfig(), baseServerConfig())
	if sess := c.Session(); sess.Caps&CapBatchLimits != 0 || sess.MaxBatchOps != 0 {
		t.Errorf("a server without limits granted %#x, %d ops", sess.Caps, sess.MaxBatchOps)
	}
}
