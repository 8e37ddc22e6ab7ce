package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"spoolsync/config"
	"spoolsync/fence"
	"spoolsync/guid"
	"spoolsync/replicator"
)

const verifyAbout = `
Compares the master's backing directory (--spool, default spool_dir) with
a replica now, by per-directory digests, as the mount's continuous
verifier does every sync_verify_interval (names, type, mode, owner, mtime,
size, hard-link count, xattrs, content GUIDs, symlink targets), and lists
the entries that differ. It changes nothing: spoolsync resync --delete
repairs. Run it while the mount's channel is caught up (spoolsync status:
backlog 0), or changes in flight show up as differences. Unlike the
mount's verifier it is not paced. --passes N repeats the comparison: from
the second pass on, both sides' digest caches are warm, which is what a
pass of continuous verification costs.

Exit status: 0 identical, 1 error, 2 usage, 3 differences.`

func runVerify(args []string) error {
	fl := newFlags("verify", "verify [-c FILE] [--spool DIR] [--channel NAME] [--passes N] [--json]", verifyAbout)
	cfgPath := fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	spool := fl.String("spool", "", "the master's backing `directory` (default: spool_dir)")
	channel := fl.String("channel", "", "which replica (a name from sync_log_channels); needed when there are several")
	passes := fl.Int("passes", 1, "compare `N` times (timings of warm passes)")
	asJSON := fl.Bool("json", false, "print the passes as JSON")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if *passes < 1 {
		return usagef("verify: --passes must be at least 1")
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *spool == "" {
		*spool = cfg.SpoolDir
	}
	if *spool == "" {
		return usagef("verify: no spool: give --spool DIR or set spool_dir in %s", configName(cfg))
	}
	if st, err := os.Stat(*spool); err != nil || !st.IsDir() {
		return usagef("verify: the spool %s is not a directory", *spool)
	}
	tree, err := fence.Read(*spool, fence.Master)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	ch, err := pickChannel(cfg, *channel, tree.Epoch)
	if err != nil {
		return err
	}
	mode, err := guid.ParseMode(cfg.GUIDMode)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return fmt.Errorf("verify: state_dir %s: %w", cfg.StateDir, err)
	}
	// resync's cache: the mount's is held open (and locked) by the mount.
	cache, err := guid.OpenCache(filepath.Join(cfg.StateDir, "resync-guid-cache.db"))
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer cache.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ps, err := replicator.Verify(ctx, replicator.VerifyOptions{Backing: *spool, Client: ch.Client, Cache: cache, Mode: mode, Passes: *passes})
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(ps)
	} else {
		for i, p := range ps {
			if i == len(ps)-1 {
				for _, d := range p.Differences {
					fmt.Println(d)
				}
			}
			fmt.Printf("verify pass %d: %d different; %.3fs (master digest walk %.3fs), %d digest round trips, %s sent and %s received on the wire\n",
				i+1, p.Different, p.Seconds, p.DigestSeconds, p.Requests, humanBytes(p.WireBytes), humanBytes(p.WireBytesIn))
		}
	}
	if err != nil {
		return fmt.Errorf("verify with %s: %w", ch.Client.Addr, err)
	}
	if ps[len(ps)-1].Different > 0 {
		return &resyncExit{"verify: the replica differs (spoolsync resync --delete repairs it)"}
	}
	return nil
}
