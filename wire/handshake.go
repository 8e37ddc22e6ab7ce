package wire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"
)

// DefaultPort is csync, the port of Cyrus sync_server.
const DefaultPort = 2005

// Handshake defaults.
const (
	DefaultHandshakeTimeout = 30 * time.Second
	DefaultFailDelay        = time.Second
)

// ClientConfig configures the master's end of a connection.
type ClientConfig struct {
	Addr string // replica host[:port]; the port defaults to DefaultPort

	// TLS, when set, is used through STARTTLS; the connection fails if
	// the server does not offer it. Nil means no TLS, which a server
	// accepts for PLAIN only from loopback or with AllowPlaintext.
	// ServerName defaults to Addr's host.
	TLS *tls.Config

	AuthName string // SASL authentication identity (sync_authname)
	Realm    string // when set, the identity is AuthName@Realm
	Password string // for PLAIN
	Mech     string // "" = PLAIN if Password is set, else EXTERNAL

	Compress         int    // zstd level 1-22 asked for; 0 = no compression
	Epoch            uint64 // this master's epoch; below the replica's = fenced
	MaxFrameSize     int    // largest payload accepted; 0 = DefaultMaxFrameSize
	Dialer           *net.Dialer
	HandshakeTimeout time.Duration // 0 = DefaultHandshakeTimeout
	// Wrap, when set, wraps the dialed connection before anything is sent
	// (the replicator counts the bytes on the wire with it).
	Wrap func(net.Conn) net.Conn
}

// ServerConfig configures the replica's end of a connection.
type ServerConfig struct {
	TLS            *tls.Config // nil = STARTTLS not offered
	RequireTLS     bool        // refuse Auth before STARTTLS
	AllowPlaintext bool        // accept PLAIN without TLS from non-loopback peers

	// Authenticate checks a PLAIN user and password; nil disables PLAIN.
	// Its error is logged, never sent: the client only learns that
	// authentication failed.
	Authenticate func(user, pass string) error
	// IsAdmin says whether an authenticated identity may replicate here.
	// Nil refuses everyone.
	IsAdmin func(identity string) bool
	// Epoch returns the replica's current epoch; nil means 0.
	Epoch func() uint64

	Compress         int           // zstd level for what the server sends; 0 = default; <0 = refuse compression
	FailDelay        time.Duration // wait before refusing a handshake; 0 = DefaultFailDelay, <0 = none
	MaxFrameSize     int           // largest payload accepted after authentication; 0 = DefaultMaxFrameSize
	HandshakeTimeout time.Duration // 0 = DefaultHandshakeTimeout
	Logger           *slog.Logger  // nil = slog.Default()

	// MaxBatchOps and MaxBatchBytes, when both set, are announced in
	// Welcome to a client that asks (CapBatchLimits); the caller enforces
	// them.
	MaxBatchOps, MaxBatchBytes uint64
	// AuthFailed, when set, is told of each refused authentication
	// (metrics): the mechanism the client asked for, as it asked.
	AuthFailed func(mech string)
}

// MaxPreAuthFrameSize is the largest payload a server accepts before the
// client has authenticated: the biggest handshake message (an Auth with
// 8 KiB of SASL data) fits, and an unauthenticated peer cannot make the
// server allocate a frame buffer of MaxFrameSize (4 MiB by default) per
// connection by declaring one.
const MaxPreAuthFrameSize = 16 << 10

func frameSize(n int) (int, error) {
	if n == 0 {
		return DefaultMaxFrameSize, nil
	}
	if n < MinFrameSize || n > MaxFrameSizeLimit {
		return 0, fmt.Errorf("MaxFrameSize %d outside [%d, %d]", n, MinFrameSize, MaxFrameSizeLimit)
	}
	return n, nil
}

// handshakeDeadline bounds the handshake by timeout and ctx; the returned
// func lifts both.
func handshakeDeadline(ctx context.Context, nc net.Conn, timeout time.Duration) func() {
	if timeout <= 0 {
		timeout = DefaultHandshakeTimeout
	}
	_ = nc.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	return func() {
		stop()
		_ = nc.SetDeadline(time.Time{})
	}
}

// expect reads the next handshake message, which must be a T. An Error
// frame comes back as its *ProtoError.
func expect[T Message](c *Conn) (T, error) {
	var zero T
	m, err := c.readMessage()
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, protoErrf(CodeProtocol, "handshake: expected %v, got %v", zero.Type(), m.Type())
	}
	return t, nil
}

func (c *Conn) sendFlush(ms ...Message) error {
	for _, m := range ms {
		if err := c.Send(m); err != nil {
			return err
		}
	}
	return c.Flush()
}

func readPreamble(c *Conn) error {
	var p [len(preamble)]byte
	if _, err := io.ReadFull(c.fr.r, p[:]); err != nil {
		return fmt.Errorf("read preamble: %w", err)
	}
	if string(p[:len(Magic)]) != Magic {
		return protoErrf(CodeVersion, "peer does not speak csync (preamble %q)", p[:])
	}
	if p[len(Magic)] != Version {
		return protoErrf(CodeVersion, "peer speaks csync version %d, this end %d", p[len(Magic)], Version)
	}
	return nil
}

// noPlaintextAhead refuses bytes already buffered when TLS is about to
// start: they would be plaintext injected by a man in the middle, to be
// taken as if it came over TLS (the STARTTLS injection of CVE-2011-0411).
func (c *Conn) noPlaintextAhead() error {
	if n := c.fr.r.Buffered(); n != 0 {
		return protoErrf(CodeProtocol, "%d plaintext bytes after STARTTLS", n)
	}
	return nil
}

// startTLS swaps c's transport for tlsConn.
func (c *Conn) startTLS(tlsConn *tls.Conn) {
	c.nc = tlsConn
	c.fr.r.Reset(tlsConn)
	c.bw.Reset(tlsConn)
	c.sess.TLS = true
}

// Dial connects to cfg.Addr and runs the client handshake.
func Dial(ctx context.Context, cfg ClientConfig) (*Conn, error) {
	addr := cfg.Addr
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, strconv.Itoa(DefaultPort))
	}
	d := cfg.Dialer
	if d == nil {
		d = &net.Dialer{Timeout: DefaultHandshakeTimeout}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to replica %s: %w", addr, err)
	}
	if cfg.Wrap != nil {
		nc = cfg.Wrap(nc)
	}
	c, err := Client(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// Client runs the client handshake over nc: greeting, STARTTLS if cfg.TLS
// is set, SASL, Hello/Welcome, compression. On error nc is closed.
func Client(ctx context.Context, nc net.Conn, cfg ClientConfig) (*Conn, error) {
	c, err := client(ctx, nc, cfg)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("handshake with replica %v: %w", nc.RemoteAddr(), err)
	}
	return c, nil
}

func client(ctx context.Context, nc net.Conn, cfg ClientConfig) (*Conn, error) {
	maxRecv, err := frameSize(cfg.MaxFrameSize)
	if err != nil {
		return nil, err
	}
	mech, err := clientSASL(&cfg)
	if err != nil {
		return nil, err
	}
	defer handshakeDeadline(ctx, nc, cfg.HandshakeTimeout)()
	c := newConn(nc, false, maxRecv)
	c.sess.Peer = nc.RemoteAddr().String()
	c.sess.LocalEpoch = cfg.Epoch

	if err := readPreamble(c); err != nil {
		return nil, err
	}
	g, err := expect[*Greeting](c)
	if err != nil {
		return nil, err
	}
	// The client's preamble goes out with its first frame.
	c.bw.WriteString(preamble)
	if cfg.TLS != nil {
		if g.Caps&CapStartTLS == 0 {
			return nil, protoErrf(CodeTLS, "TLS is configured but the replica does not offer STARTTLS (no tls_cert_file there?)")
		}
		if err := c.sendFlush(&StartTLS{}); err != nil {
			return nil, err
		}
		if _, err := expect[*Proceed](c); err != nil {
			return nil, err
		}
		if err := c.noPlaintextAhead(); err != nil {
			return nil, err
		}
		tcfg := cfg.TLS.Clone()
		if tcfg.ServerName == "" {
			if host, _, err := net.SplitHostPort(cfg.Addr); err == nil {
				tcfg.ServerName = host
			} else {
				tcfg.ServerName = cfg.Addr
			}
		}
		tc := tls.Client(c.nc, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("TLS: %w", err)
		}
		c.startTLS(tc)
		// What the server said before TLS may have been forged: only the
		// greeting that came over TLS counts.
		if g, err = expect[*Greeting](c); err != nil {
			return nil, err
		}
	} else if g.Caps&CapTLSRequired != 0 {
		return nil, protoErrf(CodeTLS, "the replica requires TLS; configure tls_ca_file")
	}
	c.sess.PeerCaps, c.sess.PeerEpoch = g.Caps, g.Epoch
	c.maxSend = int(g.MaxFrameSize)

	name, ir, err := mech.Start()
	if err != nil {
		return nil, fmt.Errorf("SASL %s: %w", name, err)
	}
	c.sess.Mech = name
	if err := c.sendFlush(&Auth{Mech: name, HasInitial: ir != nil, Initial: ir}); err != nil {
		return nil, err
	}
	for rounds := 0; ; rounds++ {
		m, err := c.readMessage()
		if err != nil {
			return nil, err
		}
		if ok, isOK := m.(*AuthOK); isOK {
			c.sess.Identity = ok.Identity
			break
		}
		ch, isCh := m.(*AuthChallenge)
		if !isCh || rounds == maxSASLRounds {
			return nil, protoErrf(CodeProtocol, "handshake: expected AuthOK or AuthChallenge, got %v", m.Type())
		}
		resp, err := mech.Next(ch.Data)
		if err != nil {
			return nil, fmt.Errorf("SASL %s: %w", name, err)
		}
		if err := c.sendFlush(&AuthResponse{Data: resp}); err != nil {
			return nil, err
		}
	}

	caps := CapBatchLimits
	if cfg.Compress > 0 && g.Caps&CapZstd != 0 {
		caps |= CapZstd
	}
	if err := c.sendFlush(&Hello{Caps: caps, Epoch: cfg.Epoch, MaxFrameSize: uint32(maxRecv)}); err != nil {
		return nil, err
	}
	w, err := expect[*Welcome](c)
	if err != nil {
		if pe := asProto(err); pe != nil && pe.Code == CodeFenced {
			pe.Epoch = g.Epoch
		}
		return nil, err
	}
	if w.Caps&^caps != 0 {
		return nil, protoErrf(CodeProtocol, "Welcome grants caps %#x never asked for (%#x)", w.Caps, caps)
	}
	c.sess.Caps = w.Caps
	c.sess.MaxBatchOps, c.sess.MaxBatchBytes = w.MaxBatchOps, w.MaxBatchBytes
	if w.Caps&CapZstd != 0 {
		if err := c.startCompression(cfg.Compress); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// serverHandshake is the server's state during the handshake.
type serverHandshake struct {
	c         *Conn
	cfg       *ServerConfig
	log       *slog.Logger
	tls       bool
	certNames []string // names of a verified client certificate
	maxRecv   int      // the frame limit once authenticated
}

// Server runs the server handshake on an accepted connection and returns
// the established Conn; c.Session() says who the client is. A refused
// client gets an Error frame naming the reason after cfg.FailDelay; every
// refusal is logged with the peer address. On error nc is closed.
func Server(ctx context.Context, nc net.Conn, cfg ServerConfig) (*Conn, error) {
	maxRecv, err := frameSize(cfg.MaxFrameSize)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if cfg.RequireTLS && cfg.TLS == nil {
		nc.Close()
		return nil, fmt.Errorf("RequireTLS without a TLS configuration")
	}
	// Until the client has authenticated, only handshake-sized frames.
	h := &serverHandshake{c: newConn(nc, true, MaxPreAuthFrameSize), cfg: &cfg, log: cfg.Logger, maxRecv: maxRecv}
	if h.log == nil {
		h.log = slog.Default()
	}
	h.c.sess.Peer = nc.RemoteAddr().String()
	stop := handshakeDeadline(ctx, nc, cfg.HandshakeTimeout)
	err = h.run(ctx, maxRecv)
	stop()
	if err != nil {
		h.refuse(ctx, err)
		return nil, fmt.Errorf("handshake with %v: %w", nc.RemoteAddr(), err)
	}
	s := h.c.sess
	h.log.Info("wire: client connected", "peer", s.Peer, "identity", s.Identity, "mech", s.Mech,
		"tls", s.TLS, "zstd", s.Compressed, "epoch", s.PeerEpoch)
	return h.c, nil
}

func (h *serverHandshake) greeting() *Greeting {
	g := &Greeting{Mechs: h.mechs(), Epoch: h.epoch(), MaxFrameSize: uint32(h.maxRecv)}
	if h.cfg.TLS != nil && !h.tls {
		g.Caps |= CapStartTLS
		if h.cfg.RequireTLS {
			g.Caps |= CapTLSRequired
		}
	}
	if h.cfg.Compress >= 0 {
		g.Caps |= CapZstd
	}
	return g
}

func (h *serverHandshake) epoch() uint64 {
	if h.cfg.Epoch == nil {
		return 0
	}
	return h.cfg.Epoch()
}

func (h *serverHandshake) run(ctx context.Context, maxRecv int) error {
	c := h.c
	c.bw.WriteString(preamble)
	if err := c.sendFlush(h.greeting()); err != nil {
		return err
	}
	if err := readPreamble(c); err != nil {
		return err
	}
	var auth *Auth
	for auth == nil {
		m, err := c.readMessage()
		if err != nil {
			return err
		}
		switch m := m.(type) {
		case *StartTLS:
			if h.cfg.TLS == nil || h.tls {
				return protoErrf(CodeTLS, "STARTTLS is not offered on this connection")
			}
			if err := c.noPlaintextAhead(); err != nil {
				return err
			}
			if err := c.sendFlush(&Proceed{}); err != nil {
				return err
			}
			tc := tls.Server(c.nc, h.cfg.TLS)
			if err := tc.HandshakeContext(ctx); err != nil {
				return fmt.Errorf("TLS: %w", err)
			}
			c.startTLS(tc)
			h.tls = true
			h.certNames = verifiedPeerNames(tc.ConnectionState())
			if err := c.sendFlush(h.greeting()); err != nil {
				return err
			}
		case *Auth:
			if h.cfg.RequireTLS && !h.tls {
				return protoErrf(CodeTLS, "this replica requires TLS before authentication")
			}
			auth = m
		default:
			return protoErrf(CodeProtocol, "handshake: expected StartTLS or Auth, got %v", m.Type())
		}
	}
	id, logMsg, perr := h.authenticate(auth)
	if perr != nil {
		h.log.Warn("wire: authentication refused", "peer", c.sess.Peer, "mech", auth.Mech, "code", perr.Code.String(), "err", perr.Msg, "detail", logMsg)
		if h.cfg.AuthFailed != nil {
			h.cfg.AuthFailed(auth.Mech)
		}
		return &loggedError{perr}
	}
	c.sess.Identity, c.sess.Mech = id, auth.Mech
	c.fr.max = maxRecv
	if err := c.sendFlush(&AuthOK{Identity: id}); err != nil {
		return err
	}

	hello, err := expect[*Hello](c)
	if err != nil {
		return err
	}
	c.sess.PeerCaps, c.sess.PeerEpoch = hello.Caps, hello.Epoch
	c.sess.LocalEpoch = h.epoch()
	if hello.Epoch < c.sess.LocalEpoch {
		return protoErrf(CodeFenced, "client epoch %d is below this replica's epoch %d: that master was fenced by a failover; it must not replicate here", hello.Epoch, c.sess.LocalEpoch)
	}
	c.maxSend = int(hello.MaxFrameSize)
	var caps uint64
	if hello.Caps&CapZstd != 0 && h.cfg.Compress >= 0 {
		caps |= CapZstd
	}
	w := &Welcome{}
	if hello.Caps&CapBatchLimits != 0 && h.cfg.MaxBatchOps > 0 && h.cfg.MaxBatchBytes > 0 {
		caps |= CapBatchLimits
		w.MaxBatchOps, w.MaxBatchBytes = h.cfg.MaxBatchOps, h.cfg.MaxBatchBytes
		c.sess.MaxBatchOps, c.sess.MaxBatchBytes = w.MaxBatchOps, w.MaxBatchBytes
	}
	c.sess.Caps, w.Caps = caps, caps
	if err := c.sendFlush(w); err != nil {
		return err
	}
	if caps&CapZstd != 0 {
		return c.startCompression(h.cfg.Compress)
	}
	return nil
}

// loggedError marks an error already logged in detail.
type loggedError struct{ *ProtoError }

func (e *loggedError) Unwrap() error { return e.ProtoError }

// refuse logs a failed handshake, waits FailDelay so that password
// guessing is slow, tells the client why when the reason is one of the
// protocol's, and closes.
func (h *serverHandshake) refuse(ctx context.Context, err error) {
	var le *loggedError
	if !errors.As(err, &le) {
		h.log.Warn("wire: handshake failed", "peer", h.c.sess.Peer, "err", err)
	}
	if d := h.cfg.FailDelay; d >= 0 {
		if d == 0 {
			d = DefaultFailDelay
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	if pe := asProto(err); pe != nil && !pe.Remote {
		h.c.fail(pe)
		return
	}
	h.c.Close()
}
