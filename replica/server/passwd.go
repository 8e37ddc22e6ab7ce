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
// Half the CPUs leaves the rest to applying batches; checks over the bound
// wait their turn (the guard in front keeps that queue short: a few
// connections per address, and none from addresses that keep failing).
var maxPasswordChecks = max(1, runtime.NumCPU()/2)

// compareHash is bcrypt's check; a test counts the calls.
var compareHash = bcrypt.CompareHashAndPassword

// Authenticator checks PLAIN credentials against a password file, read
// afresh at each call. At most maxPasswordChecks bcrypt checks run at
// once; a login the cache knows needs none, so a master that reconnects
// during an attack is not queued behind the attacker's guesses.
func Authenticator(path string) func(user, pass string) error {
	var cache authCache
	checks := make(chan struct{}, maxPasswordChecks)
	compare := func(hash []byte, pass string) error {
		checks <- struct{}{}
		defer func() { <-checks }()
		return compareHash(hash, []byte(pass))
	}
	return func(user, pass string) error {
		hash, err := lookup(path, user)
		if err != nil {
			return err
		}
		if hash == nil {
			compare(dummyHash, pass)
			return fmt.Errorf("%q: %w (%s)", user, ErrUnknownUser, path)
		}
		if cache.ok(user, hash, pass) {
			return nil
		}
		if err := compare(hash, pass); err != nil {
			if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
				return fmt.Errorf("%q: %w", user, ErrWrongPassword)
			}
			return fmt.Errorf("%q: bad hash in %s: %w", user, path, err)
		}
		cache.remember(user, hash, pass)
		return nil
	}
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
