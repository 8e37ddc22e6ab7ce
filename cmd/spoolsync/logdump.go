package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"spoolsync/config"
	"spoolsync/synclog"
)

const logAbout = `
Prints the events in the sync log (sync_log_dir), one JSON object a line:
seq, time (Unix nanoseconds), op, path, path2, name (xattr), ino, size,
flags, ranges. It reads the log files directly, so it works whether or not
the mount is running; with --follow it keeps printing new events.`

func runLog(args []string) error {
	if len(args) == 0 || args[0] != "dump" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintf(os.Stderr, "Usage: spoolsync log dump [-c FILE] [--follow] [--from SEQ]\n%s\n", logAbout)
			return nil
		}
		return usagef("log: the only subcommand is dump: spoolsync log dump [-c FILE] [--follow]")
	}
	fl := newFlags("log dump", "log dump [-c FILE] [--follow] [--from SEQ]", logAbout)
	cfgPath := fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	follow := fl.Bool("follow", false, "keep printing new events until interrupted")
	from := fl.Uint64("from", 1, "first sequence number to print")
	if err := parseFlags(fl, args[1:]); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if _, err := os.Stat(cfg.SyncLogDir); err != nil {
		return fmt.Errorf("log dump: no sync log at %s (sync_log_dir): %w", cfg.SyncLogDir, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	r, err := synclog.OpenReader(cfg.SyncLogDir, *from)
	if err != nil {
		return fmt.Errorf("log dump: %w", err)
	}
	defer r.Close()
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for {
		var ev *synclog.Event
		if *follow {
			ev, err = r.Next(ctx)
		} else {
			ev, err = r.TryNext()
		}
		if ctx.Err() != nil || err == nil && ev == nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("log dump: %w", err)
		}
		if err := enc.Encode(ev); err != nil {
			return err
		}
		if *follow {
			out.Flush()
		}
	}
}
