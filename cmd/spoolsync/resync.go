package main

import (
	"context"
	"encoding/json"

	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"spoolsync/config"
	"spoolsync/fence"
	"spoolsync/guid"
	"spoolsync/replicator"
	"spoolsync/wire"
)

const resyncAbout = `
Compares the master's backing directory (--spool, default spool_dir; read
directly, mounted or not) with a replica, for the whole tree or only the
given PATHs (a user, a folder, a file: relative to the spool, or absolute
inside it), and ships every difference: type, content (by GUID), size,
mode, owner, mtime, symlink target, hard links, xattrs. Content the replica
holds under another name is copied there, not sent. Files that exist only
on the replica are reported, and removed only with --delete.

Safe while the mount replicates: a file that changes during the resync is
handed back to the running mount to be shipped again.

Exit status: 0 the trees are identical at the end, 1 error, 2 usage,
3 differences remain (--dry-run, or extras kept without --delete).`

// resyncExit carries resync's exit status 3.
type resyncExit struct{ msg string }

func (e *resyncExit) Error() string { return e.msg }
func (e *resyncExit) ExitCode() int { return 3 }

func runResync(args []string) error {
	fl := newFlags("resync", "resync [-c FILE] [--spool DIR] [--channel NAME] [--dry-run] [--delete] [--verify] [--json] [PATH...]", resyncAbout)
	cfgPath := fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	spool := fl.String("spool", "", "the master's backing `directory` (default: spool_dir)")
	channel := fl.String("channel", "", "which replica (a name from sync_log_channels); needed when there are several")
	dryRun := fl.Bool("dry-run", false, "change nothing; list every difference")
	del := fl.Bool("delete", false, "remove files that exist only on the replica")
	verify := fl.Bool("verify", false, "re-hash every master file instead of trusting the GUID cache")
	asJSON := fl.Bool("json", false, "print the summary as JSON")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	m, err := openMasterSide("resync", *cfgPath, *spool, *channel)
	if err != nil {
		return err
	}
	defer m.cache.Close()
	cfg, ch := m.cfg, m.ch
	*spool = m.spool
	paths, err := resyncPaths(*spool, fl.Args(), *del)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	opts := replicator.ResyncOptions{Backing: *spool, Paths: paths, DryRun: *dryRun, Delete: *del, Verify: *verify,
		Client: ch.Client, Cache: m.cache, Mode: m.mode, Logger: newLogger(cfg.LogFormat, false), MaxFileSize: cfg.MaxFileSize}
	if _, err := readStatus(cfg.SyncLogDir); err == nil {
		opts.Rescan = func(p []string) error { return requestRescan(cfg.SyncLogDir, p) }
	}
	if term.IsTerminal(int(os.Stderr.Fd())) && !*asJSON {
		bar := progressbar.NewOptions(-1, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionSetDescription("resync"),
			progressbar.OptionShowCount(), progressbar.OptionSpinnerType(14), progressbar.OptionClearOnFinish())
		opts.Progress = func(r replicator.ResyncReport) {
			bar.Describe(fmt.Sprintf("resync: %d scanned, %d different, %s sent", r.Scanned, r.Different, humanBytes(r.ContentBytes)))
			bar.Set(r.Scanned)
		}
		defer bar.Finish()
	}
	rep, err := replicator.Resync(ctx, opts)
	if rep != nil {
		printResync(rep, opts, *asJSON)
	}
	if err != nil {
		return fmt.Errorf("resync with %s: %w", ch.Client.Addr, err)
	}
	if len(rep.Errors) > 0 {
		return fmt.Errorf("resync: %d errors (listed above)", len(rep.Errors))
	}
	if rep.Remaining(opts) {
		return &resyncExit{"resync: differences remain"}
	}
	return nil
}

// pickChannel returns the channel to resync with.
func pickChannel(cfg *config.Config, name string, epoch uint64) (replicator.ChannelConfig, error) {
	chans, err := channelConfigs(cfg, epoch)
	if err != nil {
		return replicator.ChannelConfig{}, err
	}
	if len(chans) == 0 {
		return replicator.ChannelConfig{}, usagef("resync: no replica configured: set sync_host (and sync_authname, sync_password) in %s", configName(cfg))
	}
	if name == "" {
		if len(chans) > 1 {
			return replicator.ChannelConfig{}, usagef("resync: several replicas are configured; choose one with --channel")
		}
		return chans[0], nil
	}
	var names []string
	for _, c := range chans {
		if c.Name == name {
			return c, nil
		}
		names = append(names, c.Name)
	}
	return replicator.ChannelConfig{}, usagef("resync: no channel %q (configured: %s)", name, strings.Join(names, ", "))
}

// resyncPaths checks the PATH arguments: inside the spool, no "..", and
// present in the spool unless --delete (a path only the replica has).
func resyncPaths(spool string, args []string, del bool) ([]string, error) {
	var out []string
	for _, a := range args {
		p := a
		if filepath.IsAbs(p) {
			rel, err := filepath.Rel(spool, p)
			if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
				return nil, usagef("resync: %s is outside the spool %s", a, spool)
			}
			p = rel
		}
		if p == "." || p == "" {
			return nil, nil // the whole tree
		}
		for _, c := range strings.Split(filepath.ToSlash(p), "/") {
			if c == ".." {
				return nil, usagef("resync: %s: \"..\" is not allowed in a path", a)
			}
		}
		p = filepath.ToSlash(filepath.Clean(p))
		if err := wire.ValidPath(p); err != nil {
			return nil, usagef("resync: %s: %v", a, err)
		}
		if _, err := os.Lstat(filepath.Join(spool, p)); err != nil && !del {
			return nil, usagef("resync: %s does not exist in the spool %s (to remove it from the replica, add --delete)", a, spool)
		}
		out = append(out, p)
	}
	return out, nil
}

func printResync(r *replicator.ResyncReport, o replicator.ResyncOptions, asJSON bool) {
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
		return
	}
	if o.DryRun {
		for _, d := range r.Differences {
			fmt.Println(d)
		}
	}
	for _, e := range r.Errors {
		fmt.Println("error:", e)
	}
	extra := fmt.Sprintf("%d kept", r.Extra)
	if o.Delete {
		extra = fmt.Sprintf("%d deleted", r.Deleted)
	}
	verb := "shipped"
	if o.DryRun {
		verb = "would ship"
	}
	fmt.Printf("resync: scanned %d, identical %d, different %d; %s %d operations, %s of content, %s sent and %s received on the wire; deduplicated %d; extra on replica %d (%s); errors %d; %s\n",
		r.Scanned, r.Identical, r.Different, verb, r.Shipped, humanBytes(r.ContentBytes), humanBytes(r.WireBytes), humanBytes(r.WireBytesIn),
		r.Dedup, r.Extra, extra, len(r.Errors), (time.Duration(r.Seconds * float64(time.Second))).Round(time.Millisecond))
}

// masterSide is what resync and verify need on the master: the
// configuration, the spool, the replica's channel, and a GUID cache of
// their own (the mount's is held open, and locked, by the mount).
type masterSide struct {
	cfg   *config.Config
	spool string
	ch    replicator.ChannelConfig
	mode  guid.Mode
	cache *guid.Cache
}

// openMasterSide loads cfgPath and opens the master side for command cmd
// (its name starts every error); spool and channel are the command's
// flags. The caller closes the cache.
func openMasterSide(cmd, cfgPath, spool, channel string) (*masterSide, error) {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return nil, err
	}
	if spool == "" {
		spool = cfg.SpoolDir
	}
	if spool == "" {
		return nil, usagef("%s: no spool: give --spool DIR or set spool_dir in %s", cmd, configName(cfg))
	}
	if st, err := os.Stat(spool); err != nil || !st.IsDir() {
		return nil, usagef("%s: the spool %s is not a directory", cmd, spool)
	}
	tree, err := fence.Read(spool, fence.Master)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	ch, err := pickChannel(cfg, channel, tree.Epoch)
	if err != nil {
		return nil, err
	}
	mode, err := guid.ParseMode(cfg.GUIDMode)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: state_dir %s: %w", cmd, cfg.StateDir, err)
	}
	cache, err := guid.OpenCache(filepath.Join(cfg.StateDir, "resync-guid-cache.db"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return &masterSide{cfg: cfg, spool: spool, ch: ch, mode: mode, cache: cache}, nil
}
