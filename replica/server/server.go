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
	if opts.SpoolDir == "" {
		return nil, errors.New("server: no spool directory")
	}
	if err := os.MkdirAll(opts.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: spool directory: %w", err)
	}
	if err := sweepSpool(opts.SpoolDir); err != nil {
		return nil, fmt.Errorf("server: clean the spool directory %s: %w", opts.SpoolDir, err)
	}
	s := &Server{opts: opts, log: opts.Logger, hard: make(chan struct{}),
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
	c, err := wire.Server(s.ctx, nc, s.opts.Wire)
	if err != nil {
		// wire logged the refusal with the peer address.
		return
	}
	ss, err := newSession(s, c)
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
