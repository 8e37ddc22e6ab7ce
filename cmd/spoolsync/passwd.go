package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"spoolsync/config"
	"spoolsync/replica/server"
)

const passwdAbout = `
Adds NAME to the replica's sasl_passwd_file, or changes its password. The
password is read from the terminal without echo (asked twice) or, when
standard input is not a terminal, as one line from standard input:

    printf '%s\n' "$PW" | spoolsync passwd master

It is stored as a bcrypt hash; other lines of the file are kept. The file
is replaced atomically with mode 0600. A running server sees the change at
the next login. NAME must also be listed in admins to replicate.`

func runPasswd(args []string) error {
	fl := newFlags("passwd", "passwd [-c FILE] NAME", passwdAbout)
	cfgPath := fl.String("c", "", "configuration `file` (default "+config.DefaultPath+")")
	if err := parseFlags(fl, args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return usagef("passwd takes one NAME (the master's sync_authname)")
	}
	name := fl.Arg(0)
	if err := server.CheckName(name); err != nil {
		return usagef("passwd: %v", err)
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.SASLPasswdFile == "" {
		return usagef("passwd: sasl_passwd_file is not set in %s: set it to the file the replica keeps credentials in (e.g. sasl_passwd_file: /etc/spoolsync.passwd)", configName(cfg))
	}
	pw, err := readPassword(name)
	if err != nil {
		return err
	}
	hash, err := server.HashPassword(pw)
	if err != nil {
		return fmt.Errorf("passwd: %w", err)
	}
	if err := server.SetPassword(cfg.SASLPasswdFile, name, hash); err != nil {
		return fmt.Errorf("passwd: update %s: %w", cfg.SASLPasswdFile, err)
	}
	fmt.Fprintf(os.Stderr, "spoolsync: password for %q set in %s\n", name, cfg.SASLPasswdFile)
	return nil
}

// readPassword asks twice on a terminal, or reads one line from stdin.
func readPassword(name string) (string, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		line, err := bufio.NewReader(os.Stdin).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("passwd: read the password from standard input: %w (give it as one line)", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", usagef("passwd: empty password on standard input")
		}
		return pw, nil
	}
	fmt.Fprintf(os.Stderr, "Password for %s: ", name)
	a, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("passwd: read the password: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Again: ")
	b, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return "", fmt.Errorf("passwd: read the password: %w", err)
	}
	if string(a) != string(b) {
		return "", usagef("passwd: the two passwords differ; nothing changed")
	}
	if len(a) == 0 {
		return "", usagef("passwd: empty password; nothing changed")
	}
	return string(a), nil
}
