package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"spoolsync/guid"
	"spoolsync/replica"
	"spoolsync/wire"
)

// Options configure a Server.
type Options struct {
	Store *replica.Store
	// Wire is the handshake configuration: TLS, PLAIN verification,
	// admins, compression. Its Logger defaults to Logger.
	Wire wire.ServerConfig
	// SpoolDir holds batches that outgrow SpoolMemory while they arrive
	// (unlinked files). It must be on disk, outside the replica root; it is
	// created if missing.
	SpoolDir string
	// SpoolMemory is how much of a batch a connection holds in memory
	// before spooling to disk; 0 = 64 MiB.
	SpoolMemory int
	// GUIDMode is the mode the Store indexes content in (guid_mode).
	// Zero means guid.Default. Manifests report GUIDs in the mode the
	// client asks for, its own guid_mode.
	GUIDMode guid.Mode
	// Logger: nil = slog.Default().
	Logger *slog.Logger
	// Root is the directory Store serves (its fence records the tree's
	// epoch).
	Root string
	// TreeFor, when set, gives each master its own tree (sub-roots): it
	// is called with the authenticated identity and Store/Root are not
	// used.
	TreeFor func(identity string) (Tree, error)

	// MaxHandshakes and MaxHandshakesPerAddr cap the connections that
	// have not authenticated yet, in total and per source IP; more are
	// closed at once. 0 = DefaultMaxHandshakes, DefaultMaxHandshakesPerAddr.
	MaxHandshakes, MaxHandshakesPerAddr int
	// FreeFailures and MaxLoginBackoff: after FreeFailures failed logins
	// from an address, it must wait 1 s, then 2 s, 4 s... up to
	// MaxLoginBackoff before its next connection is heard; until then its
	// connections are closed at once. 0 = the Default values.
	FreeFailures    int
	MaxLoginBackoff time.Duration
	// Tarpit is how long a connection refused for its address is held
	// before it is closed (see tarpit); 0 = DefaultTarpit, <0 = none.
	Tarpit time.Duration
	// Passwords, when set, checks PLAIN logins instead of
	// Wire.Authenticate, urgent connections' first (see guard).
	Passwords *Passwords

	// AcceptEpoch is an epoch a master may bring the tree to even though
	// it is more than one above the tree's (see session.go,
	// plausibleEpoch); 0 = none.
	AcceptEpoch uint64

	// MaxBatchOps and MaxBatchBytes bound a batch: its ops, and the
	// content of its Puts and WriteRanges (the first op with content may
	// exceed MaxBatchBytes alone). They are announced in the handshake;
	// a bigger batch is refused with code toolarge. MaxFileSize refuses
	// a bigger Put, WriteRanges or Truncate, and bounds what a manifest
	// hashes (the Store's). 0 = the Default values.
	MaxBatchOps   int
	MaxBatchBytes int64
	MaxFileSize   int64
	// MinFreeSpace is what staging and spooling a batch leave free on the
	// replica's and the state dir's filesystems (a twentieth of a smaller
	// filesystem); an op whose content would eat into it refuses the
	// batch. 0 = DefaultMinFreeSpace, <0 = no check.
	MinFreeSpace int64
	// Metrics, when set, counts batches, refusals and the rest
	// (metrics_listen); see NewMetrics.
	Metrics *Metrics
}

// Tree is where one master's batches land.
type Tree struct {
	Store *replica.Store
	Root  string
}

// Server serves replication connections to one Store. Its methods are
// safe for concurrent use.
type Server struct {
	opts Options
	log  *slog.Logger

	ctx    context.Context // canceled by Shutdown: ends handshakes in progress
	cancel context.CancelFunc
	hard   chan struct{} // closed when Shutdown's grace is over: abort batches

	mu        sync.Mutex
	quitting  bool
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}
	conns     map[net.Conn]struct{} // every accepted connection, for a hard stop
	wg        sync.WaitGroup
	hardOnce  sync.Once

	guard     *guard
	lastWarn  time.Time // of a refused connection; under mu
	tarpitted int       // connections held by tarpit; under mu
	turns     map[*replica.Store]*turns
}

// New checks opts and prepares the spool directory.
func New(opts Options) (*Server, error) {
	if opts.Store == nil && opts.TreeFor == nil {
		return nil, errors.New("server: no replica store")
	}
	if opts.TreeFor == nil {
		tree := Tree{Store: opts.Store, Root: opts.Root}
		opts.TreeFor = func(string) (Tree, error) { return tree, nil }
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Wire.Logger == nil {
		opts.Wire.Logger = opts.Logger
	}
	if opts.GUIDMode == guid.None {
		opts.GUIDMode = guid.Default
	}
	if opts.SpoolMemory <= 0 {
		// A typical batch (hundreds of messages) stays in memory: a batch
		// spooled to disk is written twice more before it lands (measured:
		// seeding 54,000 messages spent most of its time there).
		opts.SpoolMemory = 64 << 20
	}
	// Zero (or negative) limits take their defaults.
	orDefault(&opts.MaxHandshakes, DefaultMaxHandshakes)
	orDefault(&opts.MaxHandshakesPerAddr, DefaultMaxHandshakesPerAddr)
	orDefault(&opts.FreeFailures, DefaultFreeFailures)
	orDefault(&opts.MaxLoginBackoff, DefaultMaxLoginBackoff)
	orDefault(&opts.MaxBatchOps, DefaultMaxBatchOps)
	orDefault(&opts.MaxBatchBytes, DefaultMaxBatchBytes)
	orDefault(&opts.MaxFileSize, DefaultMaxFileSize)
	if opts.Tarpit == 0 { // negative: no tarpit
		opts.Tarpit = DefaultTarpit
	}
	if opts.MinFreeSpace == 0 {
		opts.MinFreeSpace = DefaultMinFreeSpace
	}
	opts.Wire.MaxBatchOps, opts.Wire.MaxBatchBytes = uint64(opts.MaxBatchOps), uint64(opts.MaxBatchBytes)
	if opts.SpoolDir == "" {
		return nil, errors.New("server: no spool directory")
	}
	if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: spool directory: %w", err)
	}
	if err := sweepSpool(opts.SpoolDir); err != nil {
		return nil, fmt.Errorf("server: clean the spool directory %s: %w", opts.SpoolDir, err)
	}
	s := &Server{opts: opts, log: opts.Logger, hard: make(chan struct{}), guard: newGuard(&opts),
		listeners: map[net.Listener]struct{}{}, sessions: map[*session]struct{}{}, conns: map[net.Conn]struct{}{}}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("server: shut down")

// Serve accepts connections on ln and serves each in its own goroutine
// until Shutdown. It always returns an error: ErrServerClosed after
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.quitting {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				// EMFILE and friends: back off as net/http does instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("server: accept failed; retrying", "listen", ln.Addr().String(), "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("server: accept on %v: %w", ln.Addr(), err)
		}
		delay = 0
		if !s.track(nc) {
			nc.Close()
			return ErrServerClosed
		}
		go s.ServeConn(nc)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) closing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.quitting
}

// track registers an accepted connection (and one goroutine serving it);
// false once shutting down.
func (s *Server) track(nc net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quitting {
		return false
	}
	s.conns[nc] = struct{}{}
	s.wg.Add(1)
	return true
}

// ServeConn runs the handshake and the session on nc, and closes it.
// Serve calls it for each accepted connection; tests call it on one end of
// a net.Pipe.
func (s *Server) ServeConn(nc net.Conn) {
	s.mu.Lock()
	if _, ok := s.conns[nc]; !ok {
		if s.quitting {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[nc] = struct{}{}
		s.wg.Add(1)
	}
	s.mu.Unlock()
	defer func() {
		nc.Close()
		s.mu.Lock()
		delete(s.conns, nc)
		s.mu.Unlock()
		s.wg.Done()
	}()
	c, err := s.handshake(nc)
	if err != nil {
		return
	}
	ss, err := newSession(s, c, nc)
	if err != nil {
		var pe *wire.ProtoError
		if errors.As(err, &pe) {
			c.SendError(pe)
			s.opts.Metrics.refused(pe.Code)
		}
		s.log.Warn("server: refusing the master", "peer", c.Session().Peer, "identity", c.Session().Identity, "err", err)
		c.Close()
		return
	}
	if !s.register(ss) {
		c.Send(&wire.Goodbye{Reason: "replica shutting down"})
		c.Flush()
		c.Close()
		return
	}
	ss.serve()
	s.mu.Lock()
	delete(s.sessions, ss)
	s.mu.Unlock()
}

// handshake runs wire's handshake within the guard's limits: a
// connection over them is closed before anything is read, and a failed
// login counts against its source address.
func (s *Server) handshake(nc net.Conn) (*wire.Conn, error) {
	ip := sourceIP(nc.RemoteAddr())
	done, urgent, refused := s.guard.admit(ip)
	if refused != "" {
		s.warnRefused(nc.RemoteAddr().String(), refused)
		if refused != refusedTotal {
			s.tarpit(nc)
		}
		return nil, errors.New(refused)
	}
	cfg := s.opts.Wire
	if pw := s.opts.Passwords; pw != nil {
		cfg.Authenticate = func(user, pass string) error { return pw.Check(user, pass, urgent) }
	}
	c, err := wire.Server(s.ctx, nc, cfg)
	done()
	switch {
	case err == nil:
		s.guard.succeeded(ip)
	case errors.Is(err, wire.ErrAuth):
		// wire logged the refusal with the peer address. (Not ErrNotAdmin:
		// that password was right, and its next check is the cache's.)
		if wait := s.guard.failed(ip); wait > 0 {
			s.log.Warn("server: repeated failed logins: connections from this address are closed unheard for a while",
				"peer", nc.RemoteAddr().String(), "wait", wait)
		}
	}
	return c, err
}

// Tarpit bounds: a connection refused for its address (backoff, or too
// many of its connections in the handshake) is held up to DefaultTarpit
// before it is closed, and at most maxTarpit of them at once.
const (
	DefaultTarpit = 5 * time.Second
	maxTarpit     = 512
)

// tarpit holds a connection the guard refused for its address until the
// peer gives up or tarpitFor has passed, reading and dropping what it
// sends (up to Options.Tarpit): a guessing loop that reconnects the moment it is refused would
// otherwise spin, and its thousands of connections a second took the CPU
// a master's login needs (measured: a fresh login took 2.2 s under 200
// loops from one address, with no bcrypt among them). A held connection
// costs a goroutine, a descriptor and 512 bytes; past maxTarpit, and at
// shutdown (Shutdown closes every connection), refusals close at once.
func (s *Server) tarpit(nc net.Conn) {
	s.mu.Lock()
	if s.tarpitted >= maxTarpit || s.quitting || s.opts.Tarpit < 0 {
		s.mu.Unlock()
		return
	}
	s.tarpitted++
	s.mu.Unlock()
	nc.SetReadDeadline(time.Now().Add(s.opts.Tarpit))
	stop := context.AfterFunc(s.ctx, func() { nc.SetReadDeadline(time.Unix(1, 0)) })
	var b [512]byte
	for {
		if _, err := nc.Read(b[:]); err != nil {
			break
		}
	}
	stop()
	s.mu.Lock()
	s.tarpitted--
	s.mu.Unlock()
}

// warnRefused logs a connection closed by the guard: at most one line
// every 10 s, since an attack would otherwise fill the log.
func (s *Server) warnRefused(peer, why string) {
	s.mu.Lock()
	quiet := time.Since(s.lastWarn) < 10*time.Second
	if !quiet {
		s.lastWarn = time.Now()
	}
	s.mu.Unlock()
	if quiet {
		s.log.Debug("server: connection refused", "peer", peer, "reason", why)
		return
	}
	s.log.Warn("server: connection refused (further refusals within 10 s are logged at debug level)", "peer", peer, "reason", why)
}

// turnsOf is the apply turns of store.
func (s *Server) turnsOf(store *replica.Store) *turns {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.turns == nil {
		s.turns = map[*replica.Store]*turns{}
	}
	t := s.turns[store]
	if t == nil {
		t = &turns{}
		s.turns[store] = t
	}
	return t
}

func (s *Server) register(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quitting {
		return false
	}
	s.sessions[ss] = struct{}{}
	return true
}

// Shutdown stops accepting, lets each connection finish the batch it is
// applying (a batch still arriving is dropped: it was not acked, the
// master resends it) and closes them with a Goodbye. When ctx ends first,
// batches being applied are aborted between two ops and the connections
// closed. Shutdown returns once every connection is done, so the caller
// can close the Store; it returns ctx's error if the grace ran out.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.quitting = true
	for ln := range s.listeners {
		ln.Close()
	}
	for ss := range s.sessions {
		ss.interrupt()
	}
	s.mu.Unlock()
	s.cancel()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.hardOnce.Do(func() { close(s.hard) })
	s.mu.Lock()
	for nc := range s.conns {
		nc.Close()
	}
	s.mu.Unlock()
	<-done // an apply notices the hard stop before its next op
	return ctx.Err()
}

func (s *Server) stopping() bool {
	select {
	case <-s.hard:
		return true
	default:
		return false
	}
}

// orDefault sets *v to def unless it is positive.
func orDefault[T int | int64 | uint64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}
