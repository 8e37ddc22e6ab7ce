package server

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The password file (sasl_passwd_file) holds one credential a line:
//
//	name:bcrypt-hash
//
// Blank lines and lines starting with '#' are kept as they are. Names
// are 1-1024 bytes, not starting with '#', with no ':' and no blank
// (space, tab, newline), so the first ':' ends the name. `spoolsync
// passwd` writes it; the server reads it at every authentication, so a
// changed password needs no restart.

// ErrUnknownUser and ErrWrongPassword are what Authenticate returns; wire
// logs them and tells the client only that authentication failed.
var (
	ErrUnknownUser   = errors.New("no such user in the password file")
	ErrWrongPassword = errors.New("wrong password")
)

// BcryptCost is the cost of the hashes HashPassword makes.
const BcryptCost = 12

// dummyHash is compared against when the user is unknown, so an unknown
// user takes as long to refuse as a wrong password: it has HashPassword's
// cost. It is a constant (of a password nobody knows) rather than made at
// start: a cost-12 hash takes a quarter of a second, and every spoolsync
// command would pay it.
var dummyHash = []byte("$2a$12$8YCd2/ga20L0bu2jjPwOQODI8sQGOQeGAY.EV0oORBUQw.tn0vwxq")

// CheckName refuses names the file format cannot hold.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case len(name) > 1024:
		return fmt.Errorf("user name of %d bytes, over 1024", len(name))
	case name[0] == '#':
		return fmt.Errorf("user name %q starts with '#', which marks a comment in the password file", name)
	case strings.ContainsAny(name, ": \t\r\n\v\f\x00"):
		return fmt.Errorf("user name %q contains ':', a blank or NUL; these cannot be stored in the password file", name)
	}
	return nil
}

// HashPassword returns the bcrypt hash of password.
func HashPassword(password string) (string, error) {
	if len(password) > 72 {
		// bcrypt ignores bytes past 72; refuse rather than store a
		// weaker password than the user believes.
		return "", errors.New("password longer than 72 bytes (bcrypt's limit)")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), BcryptCost)
	return string(h), err
}

// maxPasswordChecks bounds the bcrypt checks running at once, whoever
// asks: each takes a CPU for a quarter of a second, and without a bound a
// few hundred wrong-password loops kept every CPU busy (issue 15: a real
// login then took 10 s, and batches of connected masters slowed tenfold).
// Half the CPUs, and one place of them only ever for urgent checks (see
// Passwords), so that a master's login never waits for a guess's bcrypt;
// checks over the bound wait their turn (the guard in front keeps that
// queue short: a few connections per address, and none from addresses
// that keep failing).
var maxPasswordChecks = max(2, runtime.NumCPU()/2)

// compareHash is bcrypt's check; a test counts the calls.
var compareHash = bcrypt.CompareHashAndPassword

// Authenticator checks PLAIN credentials against a password file, read
// afresh at each call (NewPasswords(path).Authenticate).
func Authenticator(path string) func(user, pass string) error {
	return NewPasswords(path).Authenticate
}

// Passwords checks PLAIN credentials against a password file, read afresh
// at each check. At most maxPasswordChecks bcrypt checks run at once,
// urgent ones first; a login the cache knows needs none, so a master that
// reconnects during an attack is not queued behind the attacker's guesses.
type Passwords struct {
	path   string
	cache  authCache
	checks gate
}

// NewPasswords checks against the password file at path.
func NewPasswords(path string) *Passwords {
	return &Passwords{path: path, checks: gate{size: maxPasswordChecks}}
}

// Authenticate is Check with every caller alike (all urgent: first come,
// first served), for wire.ServerConfig.Authenticate.
func (p *Passwords) Authenticate(user, pass string) error { return p.Check(user, pass, true) }

// Check checks user's password. An urgent check (the Server's, for an
// address that has not failed to log in lately) waits only for the checks
// running, never for the queued ones of addresses that keep failing: a
// master logging in afresh during a password-guessing flood gets the next
// bcrypt (issue 15: 10-11 s before, under 1 s to aim for).
func (p *Passwords) Check(user, pass string, urgent bool) error {
	hash, err := lookup(p.path, user)
	if err != nil {
		return err
	}
	if hash == nil {
		p.compare(dummyHash, pass, urgent)
		return fmt.Errorf("%q: %w (%s)", user, ErrUnknownUser, p.path)
	}
	if p.cache.ok(user, hash, pass) {
		return nil
	}
	if err := p.compare(hash, pass, urgent); err != nil {
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return fmt.Errorf("%q: %w", user, ErrWrongPassword)
		}
		return fmt.Errorf("%q: bad hash in %s: %w", user, p.path, err)
	}
	p.cache.remember(user, hash, pass)
	return nil
}

func (p *Passwords) compare(hash []byte, pass string, urgent bool) error {
	p.checks.acquire(urgent)
	defer p.checks.release(urgent)
	return compareHash(hash, []byte(pass))
}

// gate lets size holders in at once, of which at most size-1 not urgent:
// one place is always an urgent holder's. A place given back goes to the
// longest-waiting urgent holder, else to the longest-waiting other.
type gate struct {
	mu           sync.Mutex
	size         int
	running      int // holders in, of which
	runningRest  int // not urgent
	urgent, rest []chan struct{}
}

func (g *gate) acquire(urgent bool) {
	g.mu.Lock()
	if g.running < g.size && (urgent || g.runningRest < g.size-1) {
		g.running++
		if !urgent {
			g.runningRest++
		}
		g.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	if urgent {
		g.urgent = append(g.urgent, ch)
	} else {
		g.rest = append(g.rest, ch)
	}
	g.mu.Unlock()
	<-ch // running (and runningRest) already counted by release
}

func (g *gate) release(urgent bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.running--
	if !urgent {
		g.runningRest--
	}
	switch {
	case len(g.urgent) > 0:
		close(g.urgent[0])
		g.urgent = g.urgent[1:]
		g.running++
	case len(g.rest) > 0 && g.runningRest < g.size-1:
		close(g.rest[0])
		g.rest = g.rest[1:]
		g.running++
		g.runningRest++
	}
}

// waiting is the number of holders queued (tests).
func (g *gate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.urgent) + len(g.rest)
}

// authCache remembers recent successful logins, as Dovecot's auth cache
// does: a master reconnects often (a resync opens two connections, every
// network blip one more), and each bcrypt verification costs ~0.2 s of CPU
// (measured: a quarter of a 10,000-message seed on the replica). An entry
// is the HMAC of the password under a key random to this process, valid
// for authCacheTTL and only while the user's hash in the file is the one
// it was verified against. Failures are never cached: guessing still pays
// bcrypt and the failure delay every time.
type authCache struct {
	mu      sync.Mutex
	key     []byte
	entries map[string]authEntry
}

type authEntry struct {
	hash, mac []byte
	at        time.Time
}

const authCacheTTL = 5 * time.Minute

func (c *authCache) mac(pass string) []byte {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(pass))
	return m.Sum(nil)
}

func (c *authCache) ok(user string, hash []byte, pass string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, found := c.entries[user]
	return found && time.Since(e.at) < authCacheTTL && bytes.Equal(e.hash, hash) && hmac.Equal(e.mac, c.mac(pass))
}

func (c *authCache) remember(user string, hash []byte, pass string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.key == nil {
		c.key = make([]byte, 32)
		rand.Read(c.key)
		c.entries = map[string]authEntry{}
	}
	c.entries[user] = authEntry{hash: bytes.Clone(hash), mac: c.mac(pass), at: time.Now()}
}

// lookup returns name's hash, or nil when the file has no such name.
func lookup(path, name string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the password file: %w", err)
	}
	for line := range bytes.Lines(data) {
		n, h, ok := bytes.Cut(bytes.TrimRight(line, "\r\n"), []byte(":"))
		if ok && string(n) == name {
			return h, nil
		}
	}
	return nil, nil
}

// SetPassword writes name:hash into the password file at path, replacing
// name's line or appending one, and keeping every other line. The file is
// replaced atomically (temp file in the same directory, fsync, rename,
// fsync of the directory) with mode 0600, so a crash leaves the old file
// or the new one, and a reader never sees half of it.
func SetPassword(path, name, hash string) (err error) {
	if err := CheckName(name); err != nil {
		return err
	}
	var out bytes.Buffer
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	found := false
	sc := bufio.NewScanner(bytes.NewReader(old))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if n, _, ok := strings.Cut(line, ":"); ok && n == name && !strings.HasPrefix(line, "#") {
			if found {
				continue // a duplicate would shadow nothing but confuse a reader
			}
			line, found = name+":"+hash, true
		}
		out.WriteString(line + "\n")
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if !found {
		out.WriteString(name + ":" + hash + "\n")
	}

	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		return err
	}
	if _, err = f.Write(out.Bytes()); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
