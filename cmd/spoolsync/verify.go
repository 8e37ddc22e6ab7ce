package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"spoolsync/config"
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
	m, err := openMasterSide("verify", *cfgPath, *spool, *channel)
	if err != nil {
		return err
	}
	defer m.cache.Close()
	ch := m.ch
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ps, err := replicator.Verify(ctx, replicator.VerifyOptions{Backing: m.spool, Client: ch.Client, Cache: m.cache, Mode: m.mode, Passes: *passes})
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
