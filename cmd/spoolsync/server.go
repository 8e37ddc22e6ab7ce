package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"spoolsync/config"
	"spoolsync/fence"
	"spoolsync/guid"
	"spoolsync/replica"
	"spoolsync/replica/server"
	"spoolsync/wire"
)

const serverAbout = `
The replica daemon: listens for masters (port 2005, csync), authenticates
them (PLAIN against sasl_passwd_file, or EXTERNAL with a client certificate
signed by tls_ca_file), lets only the identities in admins replicate, and
applies their batches under --root, confined to it. State (GUID index,
applied sequence numbers) lives in <state_dir>/replica, outside the root.

Prints one line when it is listening. SIGINT or SIGTERM stops accepting,
lets batches being applied finish (for up to --grace) and exits 0.`

func runServer(args []string) error {
	fl := newFlags("server", "server [-c FILE] [--listen ADDR] --root DIR", serverAbout)
	cfgPath := fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	listen := fl.String("listen", fmt.Sprintf(":%d", wire.DefaultPort), "`address` to listen on")
	rootFlag := fl.String("root", "", "replica root `directory` (required; must exist)")
	grace := fl.Duration("grace", 30*time.Second, "at shutdown, how long batches being applied may take to finish")
	debug := fl.Bool("debug", false, "log every batch applied")
	perMaster := fl.Bool("per-master", false, "give each master its own tree: ROOT/<identity> (state in <state_dir>/replica/masters/<identity>)")
	acceptEpoch := fl.Uint64("accept-epoch", 0, "let a master bring the tree to `epoch` N though it is more than one above the tree's (a tree that missed several failovers); without it such a jump is refused")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return usagef("server takes no arguments (got %q); the root is given with --root DIR", fl.Arg(0))
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.LogFormat, *debug)
	sc, err := checkServerConfig(cfg, *rootFlag, logger)
	if err != nil {
		return err
	}
	if sc.wire.TLS, err = serverTLS(cfg); err != nil {
		return err
	}
	sc.wire.Logger = logger

	trees := &treeSet{sc: sc, logger: logger, stores: map[string]server.Tree{}}
	defer trees.close()
	opts := server.Options{Wire: sc.wire, SpoolDir: filepath.Join(sc.state, "spool"), GUIDMode: sc.mode, Logger: logger,
		AcceptEpoch: *acceptEpoch, Passwords: sc.passwords, MaxBatchOps: cfg.ReplicaBatchOps, MaxBatchBytes: cfg.ReplicaBatchBytes, MaxFileSize: cfg.MaxFileSize}
	treeDesc := "one tree per master"
	if *perMaster {
		opts.TreeFor = trees.forIdentity
	} else {
		t, err := trees.open(sc.root, sc.state)
		if err != nil {
			return err
		}
		opts.Store, opts.Root = t.Store, t.Root
		st, _ := fence.Read(sc.root, fence.Replica)
		treeDesc = st.String()
		// The greeting carries the tree's epoch, so a fenced master learns
		// it before it even authenticates.
		opts.Wire.Epoch = func() uint64 {
			st, err := fence.Read(sc.root, fence.Replica)
			if err != nil {
				return math.MaxUint64
			}
			return st.Epoch
		}
	}
	var metrics *server.Metrics
	if cfg.MetricsListen != "" {
		metrics = server.NewMetrics(trees.roots)
		opts.Metrics, opts.Wire.AuthFailed = metrics, metrics.AuthFailed
	}
	srv, err := server.New(opts)
	if err != nil {
		return err
	}
	if metrics != nil {
		ctx, stopMetrics := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		defer wg.Wait()
		defer stopMetrics()
		reg := prometheus.NewRegistry()
		if err := metrics.Register(reg, srv); err != nil {
			return err
		}
		if err := serveRegistry(ctx, &wg, cfg.MetricsListen, reg, logger); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w (another server on that port? choose one with --listen)", *listen, err)
	}
	logger.Info("serving", "root", sc.root, "tree", treeDesc, "listen", ln.Addr().String(), "state", sc.state,
		"tls", sc.wire.TLS != nil, "client_certs", cfg.TLSCAFile != "", "passwords", cfg.SASLPasswdFile, "admins", cfg.Admins)
	// Signals are caught before the ready line: a supervisor may stop the
	// server as soon as it is ready, and that must be a clean stop.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	fmt.Printf("spoolsync: ready: serving %s on %s\n", sc.root, ln.Addr())
	sdNotify(logger, fmt.Sprintf("READY=1\nSTATUS=serving %s on %s", sc.root, ln.Addr()))

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case s := <-sig:
		logger.Info("shutting down", "signal", s.String(), "grace", *grace)
		sdNotify(logger, "STOPPING=1")
	case err := <-served:
		srv.Shutdown(context.Background())
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *grace)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Warn("grace over: batches still being applied were aborted; masters will resend them", "grace", *grace)
	}
	if err := trees.close(); err != nil {
		return fmt.Errorf("server: close the replica: %w", err)
	}
	logger.Info("stopped", "root", sc.root)
	return nil
}

type serverSetup struct {
	root, state string
	mode        guid.Mode
	wire        wire.ServerConfig
	passwords   *server.Passwords
	privileged  bool // replica_allow_privileged
	maxFile     int64
}

// checkServerConfig refuses setups in which nobody could replicate or the
// replica's own state could be overwritten; each message names the key or
// path and what to do.
func checkServerConfig(cfg *config.Config, root string, logger *slog.Logger) (serverSetup, error) {
	var sc serverSetup
	conf := configName(cfg)
	if root == "" {
		return sc, usagef("server: --root DIR is required: the directory the replica is written to")
	}
	abs, err := filepath.Abs(root)
	if err == nil {
		sc.root, err = filepath.EvalSymlinks(abs)
	}
	if errors.Is(err, os.ErrNotExist) {
		return sc, usagef("server: the replica root %s does not exist: create it (mkdir -p %s)", abs, abs)
	} else if err != nil {
		return sc, fmt.Errorf("server: replica root %s: %w", root, err)
	}
	if st, err := os.Stat(sc.root); err != nil || !st.IsDir() {
		return sc, usagef("server: the replica root %s is not a directory", sc.root)
	}
	sc.state = filepath.Join(cfg.StateDir, "replica")
	if real := existingPrefix(sc.state); real == sc.root || within(real, sc.root) {
		return sc, usagef("server: the state dir %s is inside the replica root %s: masters could overwrite the replica's index; set state_dir in %s elsewhere", sc.state, sc.root, conf)
	}
	if len(cfg.Admins) == 0 {
		return sc, usagef("server: no admins in %s: nobody could replicate; set admins: to the masters' sync_authname", conf)
	}
	if cfg.SASLPasswdFile == "" && cfg.TLSCAFile == "" {
		return sc, usagef("server: no way to authenticate a master: set sasl_passwd_file in %s (and add a master with spoolsync passwd NAME), or tls_ca_file for client certificates", conf)
	}
	if cfg.TLSCAFile != "" && cfg.TLSCertFile == "" {
		return sc, usagef("server: tls_ca_file verifies client certificates, which needs TLS: set tls_cert_file and tls_key_file in %s", conf)
	}
	if cfg.SASLPasswdFile != "" {
		st, err := os.Stat(cfg.SASLPasswdFile)
		if err != nil {
			return sc, fmt.Errorf("server: sasl_passwd_file %s: %w (create it with spoolsync passwd NAME)", cfg.SASLPasswdFile, err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			logger.Warn("sasl_passwd_file is readable by others: chmod 600 it", "path", cfg.SASLPasswdFile, "mode", fmt.Sprintf("%#o", st.Mode().Perm()))
		}
		sc.passwords = server.NewPasswords(cfg.SASLPasswdFile)
		sc.wire.Authenticate = sc.passwords.Authenticate
	}
	if sc.mode, err = guid.ParseMode(cfg.GUIDMode); err != nil {
		return sc, usagef("server: %v (in %s)", err, conf)
	}
	admins := slices.Clone(cfg.Admins)
	sc.wire.IsAdmin = func(id string) bool { return slices.Contains(admins, id) }
	sc.wire.AllowPlaintext = cfg.AllowPlaintext
	sc.wire.Compress = zstdLevel(cfg.CompressLevel)
	sc.privileged = cfg.ReplicaAllowPrivileged
	sc.maxFile = cfg.MaxFileSize
	return sc, nil
}

// existingPrefix resolves the symlinks of p's longest existing ancestor,
// so a state dir not yet created is still compared with the real root.
func existingPrefix(p string) string {
	p, _ = filepath.Abs(p)
	rest := ""
	for {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(real, rest)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return filepath.Join(p, rest)
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

func serverTLS(cfg *config.Config) (*tls.Config, error) {
	if cfg.TLSCertFile == "" {
		return nil, nil
	}
	t, err := wire.ServerTLSConfig(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("server: TLS (tls_cert_file %s, tls_key_file %s, tls_ca_file %q): %w", cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile, err)
	}
	return t, nil
}

// zstdLevel maps sync_compress (0 = off, 1-4 = zstd speed levels, as
// klauspost/compress names them) to the zstd level wire takes; off refuses
// compression.
func zstdLevel(speed int) int {
	switch speed {
	case 0:
		return -1
	case 1:
		return 1
	case 3:
		return 7
	case 4:
		return 11
	}
	return 3
}

// treeSet opens replica trees: the root, or with --per-master one
// sub-root per authenticated identity, opened on its first connection and
// kept open until shutdown.
type treeSet struct {
	sc     serverSetup
	logger *slog.Logger
	mu     sync.Mutex
	stores map[string]server.Tree // by root
}

// open opens the Store of root, with its state in state.
func (ts *treeSet) open(root, state string) (server.Tree, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if t, ok := ts.stores[root]; ok {
		return t, nil
	}
	store, err := replica.Open(replica.Options{Root: root, StateDir: state, Logger: ts.logger, GUIDMode: ts.sc.mode,
		AllowPrivileged: ts.sc.privileged, MaxFileSize: ts.sc.maxFile})
	if errors.Is(err, replica.ErrLocked) {
		return server.Tree{}, fmt.Errorf("server: %s is already being served by another spoolsync server (same root or state dir %s), or mounted by spoolsync mount: stop that one first", root, state)
	}
	if err != nil {
		return server.Tree{}, fmt.Errorf("server: %w", err)
	}
	if _, err := fence.Init(root, fence.Replica); err != nil {
		store.Close()
		return server.Tree{}, fmt.Errorf("server: %w", err)
	}
	t := server.Tree{Store: store, Root: root}
	ts.stores[root] = t
	return t, nil
}

// forIdentity is the tree of one master: ROOT/<identity>.
func (ts *treeSet) forIdentity(identity string) (server.Tree, error) {
	if !safeName(identity) {
		return server.Tree{}, fmt.Errorf("identity %q cannot name a directory", identity)
	}
	root := filepath.Join(ts.sc.root, identity)
	if err := os.Mkdir(root, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return server.Tree{}, err
	}
	return ts.open(root, filepath.Join(ts.sc.state, "masters", identity))
}

// safeName: letters, digits and @ . _ - only, not starting with a dot.
func safeName(s string) bool {
	if s == "" || s[0] == '.' || len(s) > 255 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@._-", r)) {
			return false
		}
	}
	return true
}

func (ts *treeSet) close() error {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	var first error
	for root, t := range ts.stores {
		if err := t.Store.Close(); err != nil && first == nil {
			first = err
		}
		delete(ts.stores, root)
	}
	return first
}
