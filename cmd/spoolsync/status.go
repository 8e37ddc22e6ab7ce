package main

import (
	"encoding/json"
	"fmt"
	"os"
	"syscall"
	"text/tabwriter"
	"time"

	"spoolsync/config"
)

var errConnRefused = syscall.ECONNREFUSED

const statusAbout = `
Shows, for every replication channel of the running mount: connected or
not (and the last error), lag (age of the oldest event the replica has not
acknowledged), backlog, batches, bytes, dedup hits, last acknowledgement.
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
		if c.Fenced {
			fmt.Printf("%s: FENCED: the replica %s was promoted; mail this host receives is NOT replicated\n", c.Name, c.Replica)
		}
		if c.SyncMode == "degraded" {
			fmt.Printf("%s: sync_mode sync DEGRADED: the replica %s did not confirm in time; fsync does not wait for it until it catches up\n", c.Name, c.Replica)
		}
		if c.Quarantined > 0 {
			fmt.Printf("%s: failback moved %d files only the old master held to the replica's quarantine (spoolsync quarantine list --root on that host)\n", c.Name, c.Quarantined)
		}
		if c.Owes != "" {
			fmt.Printf("%s: OWES the replica %s, asked for %s ago; not in sync until it is done\n", c.Name, c.Owes, time.Since(c.OwesSince).Round(time.Second))
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
