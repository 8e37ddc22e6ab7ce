package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"spoolsync/config"
	"spoolsync/fence"
	"spoolsync/replica"
)

const promoteAbout = `
Failover, on the standby: raises the epoch of the replica tree DIR by one
and makes it a master. From then on its server (if still running) refuses
every batch from the old master ("fenced"), and the tree can be mounted
with spoolsync mount as the new spool. Of two promotes of one tree, only
the first wins. Run it once the old master is down or its mail service is
stopped; see "Failover" in README.md for the whole procedure.`

func runPromote(args []string) error {
	fl := newFlags("promote", "promote [-c FILE] --root DIR", promoteAbout)
	fl.String("c", "", "configuration `file` (unused; accepted for symmetry)")
	root := fl.String("root", "", "the replica tree to promote (the server's --root)")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if *root == "" {
		return usagef("promote: --root DIR is required: the replica tree to promote")
	}
	if st, err := os.Stat(*root); err != nil || !st.IsDir() {
		return usagef("promote: %s is not a directory", *root)
	}
	before, err := fence.Read(*root, fence.Replica)
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	after, err := fence.Promote(*root)
	if errors.Is(err, fence.ErrPromoted) {
		return fmt.Errorf("promote: %s is %s already: nothing to do (another promote won, or it was promoted before)", *root, after)
	}
	if err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	fmt.Printf("spoolsync: promoted %s: %s -> %s\n", *root, before, after)
	fmt.Printf("spoolsync: the old master (epoch %d) is fenced. Next: stop spoolsync server on this host, then spoolsync mount %s MOUNTPOINT and start the mail services.\n", before.Epoch, *root)
	return nil
}

const quarantineAbout = `
After a failback, the files only the old master held (mail that arrived
after its last shipped batch) are not deleted: the new master's resync moved
them to DIR/.spoolsync-quarantine/<epoch>/<original path>.

  list     prints them, one path a line, with their size
  restore  re-delivers them: copies each into --into (the live spool as the
           mail server sees it, i.e. the new master's mount point, reached
           however this host can: locally after a failback on one host, or
           a network mount), at its original path, never overwriting an
           existing file; restored files are removed from the quarantine.
           Through the mount they replicate like any other change.`

func runQuarantine(args []string) error {
	if len(args) == 0 || (args[0] != "list" && args[0] != "restore") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintf(os.Stderr, "Usage: spoolsync quarantine list|restore [-c FILE] --root DIR [--into DIR] [--epoch N]\n%s\n", quarantineAbout)
			return nil
		}
		return usagef("quarantine: list or restore: spoolsync quarantine list|restore --root DIR")
	}
	verb := args[0]
	fl := newFlags("quarantine "+verb, "quarantine list|restore [-c FILE] --root DIR [--into DIR] [--epoch N]", quarantineAbout)
	fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	root := fl.String("root", "", "the tree whose quarantine to use (the server's --root)")
	into := fl.String("into", "", "restore: the live spool to re-deliver into (the new master's mount point)")
	epoch := fl.String("epoch", "", "only the files quarantined under this epoch")
	if err := parseFlags(fl, args[1:]); err != nil {
		return err
	}
	if *root == "" {
		return usagef("quarantine: --root DIR is required")
	}
	qdir := filepath.Join(*root, replica.QuarantineDir)
	files, err := quarantined(qdir, *epoch)
	if err != nil {
		return fmt.Errorf("quarantine: %w", err)
	}
	if verb == "list" {
		for _, f := range files {
			fmt.Printf("%s\t%d\n", f.rel, f.size)
		}
		fmt.Fprintf(os.Stderr, "%d files in %s\n", len(files), qdir)
		return nil
	}
	if *into == "" {
		return usagef("quarantine restore: --into DIR is required: the live spool (the new master's mount point)")
	}
	restored, kept := 0, 0
	for _, f := range files {
		dst := filepath.Join(*into, f.orig)
		if err := restoreFile(f.abs, dst); err != nil {
			fmt.Fprintf(os.Stderr, "kept %s: %v\n", f.rel, err)
			kept++
			continue
		}
		os.Remove(f.abs)
		fmt.Printf("restored %s\n", f.orig)
		restored++
	}
	fmt.Fprintf(os.Stderr, "restored %d, kept %d in %s\n", restored, kept, qdir)
	if kept > 0 {
		return fmt.Errorf("quarantine restore: %d files kept (listed above)", kept)
	}
	return nil
}

type qfile struct {
	abs, rel, orig string // rel: <epoch>/<orig> below the quarantine
	size           int64
}

// quarantined lists the files in the quarantine qroot (or only its epoch
// subdirectory, when epoch is set), in path order.
func quarantined(qroot, epoch string) ([]qfile, error) {
	var out []qfile
	err := filepath.WalkDir(filepath.Join(qroot, epoch), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil // an empty quarantine
		}
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(qroot, p)
		_, orig, _ := strings.Cut(filepath.ToSlash(rel), "/") // drop the epoch
		var size int64
		if info, err := d.Info(); err == nil {
			size = info.Size()
		}
		out = append(out, qfile{abs: p, rel: rel, orig: orig, size: size})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out, err
}

// restoreFile copies src to dst (creating its directories), never over an
// existing file, and syncs it.
func restoreFile(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, st.Mode().Perm())
	if err != nil {
		return err // EEXIST: the live spool has a file there; keep ours
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return err
	}
	return os.Chtimes(dst, st.ModTime(), st.ModTime())
}
