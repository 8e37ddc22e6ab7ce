package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"spoolsync/config"
	"spoolsync/guid"
	"spoolsync/replicator"
	"spoolsync/synclog"
	"spoolsync/wire"
)

// zstdLevels maps sync_compress 1..4 (fastest..smallest, as zstd's speed
// presets) to the zstd levels asked for on the wire.
var zstdLevels = [...]int{0, 1, 3, 7, 11}

// channelConfigs turns the configuration's channels into replicator ones.
func channelConfigs(cfg *config.Config, epoch uint64) ([]replicator.ChannelConfig, error) {
	var out []replicator.ChannelConfig
	for _, ch := range cfg.Channels {
		name := ch.Name
		if name == "" {
			name = "default"
		}
		cc := wire.ClientConfig{
			Addr: ch.Addr(), AuthName: ch.AuthName, Realm: ch.Realm, Password: ch.Password,
			Compress: zstdLevels[cfg.CompressLevel], Epoch: epoch,
		}
		ca := ch.CAFile
		if ca == "" {
			ca = cfg.TLSCAFile
		}
		if ca != "" || cfg.TLSCertFile != "" {
			tc, err := wire.ClientTLSConfig(ca, cfg.TLSCertFile, cfg.TLSKeyFile)
			if err != nil {
				return nil, fmt.Errorf("channel %s: %w", name, err)
			}
			cc.TLS = tc
		}
		out = append(out, replicator.ChannelConfig{Name: name, Client: cc,
			BatchEvents: cfg.SyncBatchEvents, BatchBytes: cfg.SyncBatchBytes})
	}
	return out, nil
}

// newReplication prepares rolling replication (before the mount: in
// sync_mode sync the mount's fsyncs wait on it); startReplication runs it.
func newReplication(cfg *config.Config, lg *synclog.Log, backing string, epoch uint64, logger *slog.Logger) (*replicator.Replicator, error) {
	chans, err := channelConfigs(cfg, epoch)
	if err != nil {
		return nil, err
	}
	mode, err := guid.ParseMode(cfg.GUIDMode)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir %s: %w", cfg.StateDir, err)
	}
	opts := replicator.Options{Backing: backing, StateDir: cfg.StateDir, GUIDMode: mode, Logger: logger,
		MaxFileSize: cfg.MaxFileSize}
	if cfg.SyncMode == "sync" {
		opts.SyncTimeout = cfg.SyncTimeout
	}
	opts.VerifyInterval, opts.VerifyReport = cfg.SyncVerifyInterval, cfg.SyncVerify == "report"
	return replicator.New(lg, opts, chans)
}

// startReplication runs r, the status socket and the metrics listener
// until ctx is done; the returned func waits for every goroutine they
// started (connections being answered included) to end.
func startReplication(ctx context.Context, cfg *config.Config, r *replicator.Replicator, lg *synclog.Log, logger *slog.Logger) (wait func(), err error) {
	sock := statusSocket(lg.Dir())
	os.Remove(sock) // a stale socket of a killed process; the log's lock says none runs
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("status socket %s: %w", sock, err)
	}
	// The socket can hand paths to the log: root only.
	if err := os.Chmod(sock, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	var wg sync.WaitGroup
	if cfg.MetricsListen != "" {
		if err := serveMetrics(ctx, &wg, cfg.MetricsListen, r, logger); err != nil {
			ln.Close()
			return nil, err
		}
	}
	wg.Go(func() { r.Run(ctx) })
	wg.Go(func() {
		<-ctx.Done()
		ln.Close()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				stop := context.AfterFunc(ctx, func() { c.Close() }) // a stuck client must not hold up the stop
				defer stop()
				serveControl(c, r, lg, logger)
			})
		}
	})
	return func() { wg.Wait(); os.Remove(sock) }, nil
}

// serveMetrics serves the replication metrics on addr until ctx is done,
// in goroutines added to wg.
func serveMetrics(ctx context.Context, wg *sync.WaitGroup, addr string, r *replicator.Replicator, logger *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(replicator.NewCollector(r))
	return serveRegistry(ctx, wg, addr, reg, logger)
}

func statusSocket(logDir string) string { return filepath.Join(logDir, "status.sock") }

// The control socket (status.sock in sync_log_dir, mode 0600, root only)
// takes one JSON request a connection and answers one JSON value:
//
//	{"op":"status"}                      → [ChannelStatus, ...]
//	{"op":"rescan","paths":["a/b", ...]} → {"ok":true} once the paths are
//	                                       recorded as OpRescan events
type controlRequest struct {
	Op    string   `json:"op"`
	Paths []string `json:"paths,omitempty"`
}

type controlReply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

func serveControl(c net.Conn, r *replicator.Replicator, lg *synclog.Log, logger *slog.Logger) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var req controlRequest
	if err := json.NewDecoder(c).Decode(&req); err != nil {
		return
	}
	enc := json.NewEncoder(c)
	switch req.Op {
	case "status":
		enc.Encode(r.Status())
	case "rescan":
		evs := make([]*synclog.Event, 0, len(req.Paths))
		for _, p := range req.Paths {
			if wire.ValidPath(p) != nil {
				enc.Encode(controlReply{Error: fmt.Sprintf("bad path %q", p)})
				return
			}
			evs = append(evs, &synclog.Event{Op: synclog.OpRescan, Path: p})
		}
		if _, err := lg.Append(evs...); err != nil {
			enc.Encode(controlReply{Error: err.Error()})
			return
		}
		logger.Info("paths handed back by resync to rolling replication", "count", len(evs))
		enc.Encode(controlReply{OK: true})
	default:
		enc.Encode(controlReply{Error: fmt.Sprintf("unknown request %q", req.Op)})
	}
}

// control sends one request to the running mount and decodes its answer.
func control(logDir string, req controlRequest, reply any) error {
	c, err := net.Dial("unix", statusSocket(logDir))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, errConnRefused) {
			return fmt.Errorf("%w at %s (is spoolsync mount running with sync_host set?)", errNoMount, statusSocket(logDir))
		}
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := json.NewEncoder(c).Encode(req); err != nil {
		return err
	}
	if err := json.NewDecoder(c).Decode(reply); err != nil {
		return fmt.Errorf("answer from %s: %w", statusSocket(logDir), err)
	}
	return nil
}

var errNoMount = errors.New("no running spoolsync mount with replication answers")

// readStatus asks a running mount for its channels' status.
func readStatus(logDir string) ([]replicator.ChannelStatus, error) {
	var st []replicator.ChannelStatus
	return st, control(logDir, controlRequest{Op: "status"}, &st)
}

// requestRescan asks the running mount to ship paths again.
func requestRescan(logDir string, paths []string) error {
	var rep controlReply
	if err := control(logDir, controlRequest{Op: "rescan", Paths: paths}, &rep); err != nil {
		return err
	}
	if !rep.OK {
		return errors.New(rep.Error)
	}
	return nil
}
