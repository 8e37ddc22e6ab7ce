// Command genman writes spoolsync's man pages from its --help text, so
// that the two cannot drift: spoolsync(8) from `spoolsync --help` (the
// command list) and spoolsync-COMMAND(8) from `spoolsync COMMAND --help`
// (synopsis, description, options). scripts/package runs it.
//
//	go run ./scripts/genman -bin SPOOLSYNC -out DIR [-version V] [-date YYYY-MM-DD]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

func main() {
	bin := flag.String("bin", "", "the spoolsync `binary` whose --help is read")
	out := flag.String("out", "", "`directory` to write the pages to")
	version := flag.String("version", "", "version for the page footer")
	date := flag.String("date", "", "date for the page footer (YYYY-MM-DD)")
	flag.Parse()
	if *bin == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "genman: -bin and -out are required")
		os.Exit(2)
	}
	if err := run(*bin, *out, *version, *date); err != nil {
		fmt.Fprintf(os.Stderr, "genman: %v\n", err)
		os.Exit(1)
	}
}

// command is one line of the top-level command list.
type command struct{ name, summary string }

func run(bin, out, version, date string) error {
	top, err := help(bin)
	if err != nil {
		return err
	}
	cmds, err := commandList(top)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	footer := fmt.Sprintf("%q %q %q", date, "spoolsync "+version, "System Administration")
	if err := os.WriteFile(filepath.Join(out, "spoolsync.8"), []byte(mainPage(top, cmds, footer)), 0o644); err != nil {
		return err
	}
	for _, c := range cmds {
		text, err := help(bin, c.name)
		if err != nil {
			return err
		}
		page, err := commandPage("spoolsync", "spoolsync-"+c.name, c.summary, text, footer)
		if err != nil {
			return fmt.Errorf("spoolsync %s --help: %w", c.name, err)
		}
		if err := os.WriteFile(filepath.Join(out, "spoolsync-"+c.name+".8"), []byte(page), 0o644); err != nil {
			return err
		}
	}
	// The fstab helper: the same binary under the name mount(8) runs.
	tmp, err := os.MkdirTemp("", "genman")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	abs, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	helper := filepath.Join(tmp, "mount.fuse.spoolsync")
	if err := os.Symlink(abs, helper); err != nil {
		return err
	}
	text, err := help(helper)
	if err != nil {
		return err
	}
	page, err := commandPage("mount.fuse.spoolsync", "mount.fuse.spoolsync", "mount a spool from /etc/fstab (type fuse.spoolsync)", text, footer)
	if err != nil {
		return fmt.Errorf("mount.fuse.spoolsync --help: %w", err)
	}
	return os.WriteFile(filepath.Join(out, "mount.fuse.spoolsync.8"), []byte(page), 0o644)
}

// help is the --help text of spoolsync [cmd].
func help(bin string, cmd ...string) (string, error) {
	out, err := exec.Command(bin, append(cmd, "--help")...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s --help: %v\n%s", bin, strings.Join(cmd, " "), err, out)
	}
	return string(out), nil
}

var cmdLine = regexp.MustCompile(`^  (\S+)\s+(.*)$`)

// commandList reads the "Commands:" section of the top-level help.
func commandList(top string) ([]command, error) {
	var cmds []command
	in := false
	sc := bufio.NewScanner(strings.NewReader(top))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "Commands:":
			in = true
		case in && l == "":
			in = false
		case in:
			m := cmdLine.FindStringSubmatch(l)
			if m == nil {
				return nil, fmt.Errorf("command list line %q", l)
			}
			cmds = append(cmds, command{m[1], m[2]})
		}
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("no Commands: section in --help:\n%s", top)
	}
	return cmds, nil
}

// esc makes text safe in a roff line: backslashes, and a leading dot or
// quote that roff would take for a request.
func esc(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

// minus marks the dashes of option names as minus signs.
func minus(s string) string { return strings.ReplaceAll(esc(s), "-", `\-`) }

// paragraphs writes text as roff paragraphs (blank lines separate them).
func paragraphs(b *strings.Builder, text string) {
	for i, p := range strings.Split(strings.TrimSpace(text), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		for _, l := range strings.Split(p, "\n") {
			b.WriteString(esc(strings.TrimSpace(l)) + "\n")
		}
	}
}

func mainPage(top string, cmds []command, footer string) string {
	var b strings.Builder
	first, rest, _ := strings.Cut(top, "\n")
	fmt.Fprintf(&b, ".TH SPOOLSYNC 8 %s\n.SH NAME\nspoolsync \\- %s\n", footer, esc(strings.TrimSuffix(strings.TrimPrefix(first, "spoolsync "), ".")))
	b.WriteString(".SH SYNOPSIS\n.B spoolsync\n.I COMMAND\n[options]\n.br\n.B spoolsync \\-\\-version\n.SH COMMANDS\n")
	for _, c := range cmds {
		fmt.Fprintf(&b, ".TP\n.B %s\n%s (see \\fBspoolsync\\-%s\\fR(8))\n", esc(c.name), esc(c.summary), c.name)
	}
	// The lines after the command list: how to get help, the
	// configuration file, exit codes.
	if _, after, ok := strings.Cut(rest, "\n\n"); ok {
		if _, tail, ok := strings.Cut(after, "\n\n"); ok {
			b.WriteString(".SH DESCRIPTION\n")
			paragraphs(&b, tail)
		}
	}
	b.WriteString(".SH FILES\n.TP\n.I /etc/spoolsync.conf\nthe configuration (imapd.conf style: key: value lines)\n.TP\n.I /var/lib/spoolsync\nstate: sync log, cursors, GUID cache, the replica's index\n")
	b.WriteString(".SH SEE ALSO\n")
	for i, c := range cmds {
		sep := ",\n"
		if i == len(cmds)-1 {
			sep = "\n"
		}
		fmt.Fprintf(&b, ".BR spoolsync\\-%s (8)%s", c.name, sep)
	}
	return b.String()
}

// commandPage is the page called page (spoolsync-CMD) from the --help of
// prog: "Usage: PROG SYNOPSIS", the description, then "Options:" as
// flag's PrintDefaults writes them ("  -name arg" then "    \tusage").
func commandPage(prog, page, summary, text, footer string) (string, error) {
	usage, rest, ok := strings.Cut(text, "\n")
	syn, found := strings.CutPrefix(usage, "Usage: "+prog+" ")
	if !ok || !found {
		return "", fmt.Errorf("no Usage: line: %q", usage)
	}
	about, opts, _ := strings.Cut(rest, "\nOptions:\n")
	var b strings.Builder
	fmt.Fprintf(&b, ".TH %s 8 %s\n.SH NAME\n%s \\- %s\n", minus(strings.ToUpper(page)), footer, minus(page), esc(summary))
	fmt.Fprintf(&b, ".SH SYNOPSIS\n.B %s\n%s\n.SH DESCRIPTION\n", esc(prog), minus(syn))
	paragraphs(&b, about)
	if strings.TrimSpace(opts) != "" {
		b.WriteString(".SH OPTIONS\n")
		for _, l := range strings.Split(strings.TrimRight(opts, "\n"), "\n") {
			switch {
			case strings.HasPrefix(l, "  -"):
				name, arg, _ := strings.Cut(strings.TrimSpace(l), " ")
				fmt.Fprintf(&b, ".TP\n\\fB%s\\fR", minus(name))
				if arg != "" {
					fmt.Fprintf(&b, " \\fI%s\\fR", esc(arg))
				}
				b.WriteString("\n")
			case strings.HasPrefix(strings.TrimLeft(l, " "), "\t"):
				b.WriteString(esc(strings.TrimSpace(l)) + "\n")
			default:
				return "", fmt.Errorf("options line %q", l)
			}
		}
	}
	b.WriteString(".SH SEE ALSO\n")
	if page == "mount.fuse.spoolsync" {
		b.WriteString(".BR spoolsync\\-mount (8),\n.BR fstab (5),\n.BR mount (8),\n")
	}
	b.WriteString(".BR spoolsync (8)\n")
	return b.String(), nil
}
