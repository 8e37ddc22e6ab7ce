package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"spoolsync/config"
	"spoolsync/replicator"
)

var errConnRefused = syscall.ECONNREFUSED

const statusAbout = `
Shows, for every replication channel of the running mount: connected or
not (and the last error; "down: no answer for N s" for a replica that
stopped answering the heartbeat), lag (age of the oldest event the replica has not
acknowledged), backlog, batches, bytes, dedup hits, last acknowledgement.
Then, per channel, "in sync" — only when the backlog is 0, no resync is
owed and the last continuous verify (sync_verify_interval) found nothing —
or NOT in sync and what it owes, and how old (--json: in_sync, owes,
diverged_entries, diverged_paths, verified_at).
It asks the mount over the unix socket in sync_log_dir.`

func runStatus(args []string) error {
	fl := newFlags("status", "status [-c FILE] [--json]", statusAbout)
	cfgPath := fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	asJSON := fl.Bool("json", false, "print JSON")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	st, err := readStatus(cfg.SyncLogDir)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "CHANNEL\tREPLICA\tSTATE\tLAG\tBACKLOG\tBATCHES\tSENT\tDEDUP\tLAST ACK")
	for _, c := range st {
		state := "connected"
		switch {
		case c.Fenced:
			state = "FENCED"
		case !c.Connected && c.NoAnswerSeconds > 0:
			state = fmt.Sprintf("down: no answer for %.0f s", c.NoAnswerSeconds)
		case !c.Connected:
			state = "down"
		}
		ack := "never"
		if !c.LastAck.IsZero() {
			ack = time.Since(c.LastAck).Round(time.Millisecond).String() + " ago"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%.3fs\t%d events\t%d\t%s\t%d\t%s\n", c.Name, c.Replica, state,
			c.LagSeconds, c.BacklogEvents, c.Batches, humanBytes(c.ContentBytes), c.DedupHits, ack)
	}
	w.Flush()
	for _, c := range st {
		fmt.Println(syncLine(c))
	}
	for _, c := range st {
		if c.Fenced {
			fmt.Printf("%s: FENCED: the replica %s was promoted; mail this host receives is NOT replicated\n", c.Name, c.Replica)
		}
		if c.SyncMode == "degraded" {
			fmt.Printf("%s: sync_mode sync DEGRADED: the replica %s did not confirm in time; fsync does not wait for it until it catches up\n", c.Name, c.Replica)
		}
		if c.Quarantined > 0 {
			fmt.Printf("%s: failback moved %d files only the old master held to the replica's quarantine (spoolsync quarantine list --root on that host)\n", c.Name, c.Quarantined)
		}
		if c.LastError != "" {
			fmt.Printf("%s: last error %s ago: %s\n", c.Name, time.Since(c.LastErrorTime).Round(time.Second), c.LastError)
		}
	}
	return nil
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// syncLine says whether channel c is in sync, and if not, what it owes.
func syncLine(c replicator.ChannelStatus) string {
	if c.InSync {
		return fmt.Sprintf("%s: in sync (verified %s ago, in %.1fs; backlog 0, no resync owed)", c.Name,
			time.Since(c.VerifiedAt).Round(time.Second), c.VerifySeconds)
	}
	line := fmt.Sprintf("%s: NOT in sync; owes %s", c.Name, strings.Join(c.Owes, "; "))
	if n := len(c.DivergedPaths); n > 0 {
		line += "\n  differences: " + strings.Join(c.DivergedPaths[:min(n, 10)], ", ")
		if c.DivergedEntries > 10 {
			line += fmt.Sprintf(" and %d more (status --json, or the mount's log)", c.DivergedEntries-10)
		}
	}
	return line
}
