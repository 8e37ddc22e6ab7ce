// Command spoolsync keeps a hot standby copy of a mail spool.
//
//	spoolsync mount    mount the spool, log every change, replicate (master)
//	spoolsync server   the replica daemon (standby)
//	spoolsync resync   fsck-style manual full or partial resync
//	spoolsync status   lag, backlog and errors per replica channel
//	spoolsync log dump the captured events, one JSON object a line
//	spoolsync promote  failover: fence the old master
//	spoolsync quarantine list|restore  what a failback kept from the old master
//	spoolsync passwd   add or change a replica credential
//	spoolsync verify   compare the spool with a replica by digests, now
//
// Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"spoolsync/config"
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"mount", "mount a spool, log every change, replicate it (master)", runMount},
		{"log", "log dump [--follow]: the captured events, one JSON object a line", runLog},
		{"status", "lag, backlog and errors per replication channel of the running mount", runStatus},
		{"resync", "fsck-style manual resync of the whole spool or some PATHs with a replica", runResync},
		{"server", "the replica daemon: apply masters' batches under --root (standby)", runServer},
		{"promote", "failover: make a replica tree the master of a new epoch, fencing the old master", runPromote},
		{"quarantine", "list|restore: the files a failback kept from the old master", runQuarantine},
		{"passwd", "add or change a replica credential in sasl_passwd_file", runPasswd},
		{"verify", "compare the spool with a replica now by per-directory digests; change nothing", runVerify},
	}
}

// usageError is a mistake on the command line or in the configuration:
// exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

func main() {
	// Run as mount.fuse.spoolsync by mount(8) for an fstab entry.
	if name := filepath.Base(os.Args[0]); slices.Contains(helperNames, name) {
		os.Exit(mountHelper(name, os.Args[1:], os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	if len(args) == 1 && (args[0] == "--version" || args[0] == "version") {
		fmt.Println(versionString())
		return 0
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			stopProfile, err := startProfile()
			if err != nil {
				return exitCode(err, stderr)
			}
			err = c.run(args[1:])
			stopProfile()
			return exitCode(err, stderr)
		}
	}
	fmt.Fprintf(stderr, "spoolsync: unknown command %q\n\n", args[0])
	printUsage(stderr)
	return 2
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ue *usageError
	var ce *config.Error
	fmt.Fprintf(stderr, "spoolsync: %v\n", err)
	if errors.As(err, &ue) || errors.As(err, &ce) {
		return 2
	}
	var ec exitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

// exitCoder is an error that chooses its own exit code (resync's 3).
type exitCoder interface{ ExitCode() int }

func printUsage(w io.Writer) {
	fmt.Fprintf(w, "spoolsync keeps a hot standby copy of a mail spool.\n\nUsage: spoolsync COMMAND [options]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun 'spoolsync COMMAND --help' for a command's options, 'spoolsync --version' for the version.\n"+
		"Configuration: %s (imapd.conf style; see README.md), or -c FILE.\n"+
		"Exit codes: 0 ok, 1 runtime failure, 2 usage or configuration error.\n", config.DefaultPath)
}

// newFlags makes a flag set whose --help prints the synopsis and options.
func newFlags(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: spoolsync %s\n\n%s\n\nOptions:\n", synopsis, strings.TrimSpace(about))
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args; a flag mistake is a usage error. Flags may
// follow the operands (`resync user/bob --dry-run`), as administrators
// type them; after "--" everything is an operand. fs.Args() then holds
// the operands in order.
func parseFlags(fs *flag.FlagSet, args []string) error {
	var operands []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return &usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			operands = append(operands, rest...)
			break
		}
		operands, args = append(operands, rest[0]), rest[1:]
	}
	return fs.Parse(append([]string{"--"}, operands...))
}

// newLogger is the process's slog logger, to stderr, in log_format: text
// (key=value) or json (one object a line, for journald or a log shipper).
// It also becomes slog's default, so that packages logging without a
// logger of their own write in the same format.
func newLogger(format string, debug bool) *slog.Logger {
	lvl := slog.LevelInfo
	if debug {
		lvl = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if format == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	l := slog.New(h)
	slog.SetDefault(l)
	return l
}
