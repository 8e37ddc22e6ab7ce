// Package config reads /etc/spoolsync.conf, an imapd.conf-style file of
// `key: value` lines.
//
// Format: one `key: value` per line; blank lines and lines whose first
// non-blank character is `#` are ignored; a value runs to the end of the
// line with surrounding blanks removed (so values may contain `#`). Key
// names follow Cyrus IMAP where the meaning is the same. A key given twice
// is an error, as is an unknown key, a bad value, or a missing key that a
// set key requires: every error names the file, the line and the key, and
// says what to do.
//
// Several replicas ("channels", Cyrus's sync_log_channels) are configured by
// listing their names in sync_log_channels and prefixing the per-replica
// keys with the channel name: `standby2_sync_host: 10.0.0.7`. Keys without
// a prefix are the defaults every channel inherits.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultPath is where spoolsync looks for its configuration when -c is not
// given. A missing file at the default path means "all defaults"; a missing
// file named with -c is an error.
const DefaultPath = "/etc/spoolsync.conf"

// DefaultPort is csync, the port Cyrus's sync_server listens on.
const DefaultPort = 2005

// Config is the parsed configuration. Zero values mean "not set" where the
// field has no default.
type Config struct {
	File string // where it was read from, for messages; "" for defaults only

	SpoolDir   string // spool_dir: the backing directory on the master
	MountPoint string // mount_point: where the mail server sees the spool
	StateDir   string // state_dir
	SyncLog    bool   // sync_log
	SyncLogDir string // sync_log_dir, defaults to <state_dir>/log

	Channels []Channel // from sync_host / sync_log_channels; empty: no rolling replication

	SyncRepeatInterval time.Duration // sync_repeat_interval
	SyncBatchEvents    int           // sync_batch_size, first number
	SyncBatchBytes     int64         // sync_batch_size, optional second value
	GUIDMode           string        // guid_mode: sha256, blake3, sha1, none
	CompressLevel      int           // sync_compress: 0 = off, 1..4 = zstd speed levels
	SyncMode           string        // sync_mode: async or sync
	SyncTimeout        time.Duration // sync_timeout

	TLSCertFile    string // tls_cert_file
	TLSKeyFile     string // tls_key_file
	TLSCAFile      string // tls_ca_file
	AllowPlaintext bool   // allowplaintext
	Admins         []string
	SASLPasswdFile string // sasl_passwd_file
	MetricsListen  string // metrics_listen
	FuseURing      string // fuse_uring: auto, on, off

	SyncVerifyInterval time.Duration // sync_verify_interval: 0 = no continuous verification
	SyncVerify         string        // sync_verify: repair or report

	// MaxFileSize (max_file_size) is the largest file either side hashes
	// or ships: a bigger one is refused with an error naming it.
	MaxFileSize int64
	// ReplicaBatchOps and ReplicaBatchBytes (replica_batch_limit) are the
	// most ops and content bytes the replica takes in one batch.
	ReplicaBatchOps   int
	ReplicaBatchBytes int64
	// ReplicaAllowPrivileged (replica_allow_privileged) lets masters put
	// set-id bits on files and security.capability or POSIX ACL xattrs.
	ReplicaAllowPrivileged bool
	LogFormat              string // log_format: text or json
}

// Channel is one replica the master ships to.
type Channel struct {
	Name     string // "" for the unnamed channel of a single-replica setup
	Host     string // host or host:port
	Port     int
	AuthName string
	Realm    string
	Password string
	CAFile   string // overrides tls_ca_file for this channel
}

// Addr is host:port of the replica.
func (c Channel) Addr() string {
	if strings.HasPrefix(c.Host, "[") || strings.Count(c.Host, ":") == 1 {
		return c.Host // already host:port
	}
	return netJoin(c.Host, c.Port)
}

func netJoin(host string, port int) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + strconv.Itoa(port)
	}
	return host + ":" + strconv.Itoa(port)
}

// Identity is the SASL identity the master presents: authname, or
// authname@realm when a realm is set.
func (c Channel) Identity() string {
	if c.Realm == "" {
		return c.AuthName
	}
	return c.AuthName + "@" + c.Realm
}

// Default returns the configuration with every default applied.
func Default() *Config {
	return &Config{
		StateDir:           "/var/lib/spoolsync",
		SyncLog:            true,
		SyncRepeatInterval: 100 * time.Millisecond,
		SyncBatchEvents:    4096,
		SyncBatchBytes:     32 << 20,
		GUIDMode:           "sha256",
		CompressLevel:      2, // zstd.SpeedDefault
		SyncMode:           "async",
		LogFormat:          "text",
		SyncTimeout:        5 * time.Second,
		FuseURing:          "auto",
		SyncVerifyInterval: 5 * time.Minute,
		SyncVerify:         "repair",
		MaxFileSize:        4 << 30,
		ReplicaBatchOps:    50000,
		ReplicaBatchBytes:  2 << 30,
	}
}

// Error is a configuration problem at a place in the file.
type Error struct {
	File string
	Line int // 0 when the problem is not on one line
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	where := e.File
	if where == "" {
		where = "configuration"
	}
	if e.Line > 0 {
		where = fmt.Sprintf("%s:%d", where, e.Line)
	}
	if e.Key != "" {
		return fmt.Sprintf("%s: %s: %s", where, e.Key, e.Msg)
	}
	return where + ": " + e.Msg
}

// Load reads the configuration at path. An empty path means DefaultPath,
// which may be missing; a path given explicitly must exist.
func Load(path string) (*Config, error) {
	explicit := path != ""
	if !explicit {
		path = DefaultPath
	}
	f, err := os.Open(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			c := Default()
			return c, c.finish(nil)
		}
		return nil, fmt.Errorf("config: %w (give the configuration file with -c FILE)", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// entry is one `key: value` line.
type entry struct {
	value string
	line  int
}

// Parse reads a configuration from r; name is used in messages.
func Parse(r io.Reader, name string) (*Config, error) {
	entries := map[string]entry{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		k = strings.TrimSpace(k)
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			return nil, &Error{File: name, Line: n, Msg: fmt.Sprintf("expected `key: value`, got %q", line)}
		}
		if prev, dup := entries[k]; dup {
			return nil, &Error{File: name, Line: n, Key: k, Msg: fmt.Sprintf("given twice (first on line %d); keep one", prev.line)}
		}
		entries[k] = entry{strings.TrimSpace(v), n}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("config: read %s: %w", name, err)
	}
	c := Default()
	c.File = name
	return c, c.finish(entries)
}

// finish applies entries to c, derives defaults and checks the result.
func (c *Config) finish(entries map[string]entry) error {
	p := parser{file: c.File, entries: entries}
	chanNames := p.list("sync_log_channels")
	for _, ch := range chanNames {
		if !validChannelName(ch) {
			return p.errf("sync_log_channels", "channel name %q must be letters, digits or '-' (it prefixes keys like %s_sync_host)", ch, ch)
		}
	}
	for k := range entries {
		if _, ok := globalKeys[k]; ok {
			continue
		}
		if key, ok := channelKey(k, chanNames); ok && channelKeys[key] {
			continue
		}
		msg := "unknown key; see the configuration reference in README.md"
		if s := suggest(k); s != "" {
			msg = fmt.Sprintf("unknown key (did you mean %q?)", s)
		}
		return &Error{File: c.File, Line: entries[k].line, Key: k, Msg: msg}
	}

	p.str("spool_dir", &c.SpoolDir)
	p.str("mount_point", &c.MountPoint)
	p.str("state_dir", &c.StateDir)
	p.boolean("sync_log", &c.SyncLog)
	c.SyncLogDir = filepath.Join(c.StateDir, "log")
	p.str("sync_log_dir", &c.SyncLogDir)
	p.duration("sync_repeat_interval", &c.SyncRepeatInterval)
	p.batchSize("sync_batch_size", &c.SyncBatchEvents, &c.SyncBatchBytes)
	p.oneOf("guid_mode", &c.GUIDMode, "sha256", "blake3", "sha1", "none")
	p.compress("sync_compress", &c.CompressLevel)
	p.oneOf("sync_mode", &c.SyncMode, "async", "sync")
	p.duration("sync_timeout", &c.SyncTimeout)
	p.str("tls_cert_file", &c.TLSCertFile)
	p.str("tls_key_file", &c.TLSKeyFile)
	p.str("tls_ca_file", &c.TLSCAFile)
	p.boolean("allowplaintext", &c.AllowPlaintext)
	c.Admins = p.list("admins")
	p.str("sasl_passwd_file", &c.SASLPasswdFile)
	p.str("metrics_listen", &c.MetricsListen)
	p.oneOf("fuse_uring", &c.FuseURing, "auto", "on", "off")
	if v, ok := entries["sync_verify_interval"]; ok && (v.value == "0" || v.value == "off") {
		c.SyncVerifyInterval = 0
	} else {
		p.duration("sync_verify_interval", &c.SyncVerifyInterval)
	}
	p.oneOf("sync_verify", &c.SyncVerify, "repair", "report")
	p.size("max_file_size", &c.MaxFileSize, 1<<20)
	p.batchLimit("replica_batch_limit", &c.ReplicaBatchOps, &c.ReplicaBatchBytes)
	p.boolean("replica_allow_privileged", &c.ReplicaAllowPrivileged)
	p.oneOf("log_format", &c.LogFormat, "text", "json")
	if p.err != nil {
		return p.err
	}

	for _, k := range []string{"spool_dir", "mount_point", "state_dir", "sync_log_dir", "tls_cert_file", "tls_key_file", "tls_ca_file", "sasl_passwd_file", "sync_password_file"} {
		if v, ok := entries[k]; ok && v.value != "" && !filepath.IsAbs(v.value) {
			return p.errf(k, "%q is not an absolute path", v.value)
		}
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		k := "tls_key_file"
		if c.TLSCertFile == "" {
			k = "tls_cert_file"
		}
		return p.errf(k, "tls_cert_file and tls_key_file go together; set both or neither")
	}

	if len(chanNames) == 0 {
		ch, err := p.channel("")
		if err != nil {
			return err
		}
		if ch.Host != "" {
			c.Channels = []Channel{ch}
		}
		return nil
	}
	for _, name := range chanNames {
		ch, err := p.channel(name)
		if err != nil {
			return err
		}
		if ch.Host == "" {
			return &Error{File: c.File, Line: p.line("sync_log_channels"), Key: name + "_sync_host",
				Msg: fmt.Sprintf("channel %q is listed in sync_log_channels but has no %s_sync_host", name, name)}
		}
		c.Channels = append(c.Channels, ch)
	}
	return nil
}

// globalKeys are the keys valid without a channel prefix.
var globalKeys = map[string]struct{}{
	"spool_dir": {}, "mount_point": {}, "state_dir": {}, "sync_log": {}, "sync_log_dir": {},
	"sync_log_channels": {}, "sync_repeat_interval": {}, "sync_batch_size": {}, "guid_mode": {},
	"sync_compress": {}, "sync_mode": {}, "sync_timeout": {}, "tls_cert_file": {}, "tls_key_file": {},
	"tls_ca_file": {}, "allowplaintext": {}, "admins": {}, "sasl_passwd_file": {}, "metrics_listen": {},
	"sync_host": {}, "sync_port": {}, "sync_authname": {}, "sync_realm": {}, "sync_password": {},
	"sync_password_file":       {},
	"fuse_uring":               {},
	"sync_verify_interval":     {},
	"sync_verify":              {},
	"max_file_size":            {},
	"replica_batch_limit":      {},
	"replica_allow_privileged": {},
	"log_format":               {},
}

// channelKeys may carry a `<channel>_` prefix.
var channelKeys = map[string]bool{
	"sync_host": true, "sync_port": true, "sync_authname": true, "sync_realm": true,
	"sync_password": true, "sync_password_file": true, "tls_ca_file": true,
}

// channelKey strips a `<channel>_` prefix naming one of chans from k.
func channelKey(k string, chans []string) (key string, ok bool) {
	for _, c := range chans {
		if rest, found := strings.CutPrefix(k, c+"_"); found {
			return rest, true
		}
	}
	return "", false
}

func validChannelName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// suggest returns the known key closest to k, if it is a likely typo.
func suggest(k string) string {
	best, bestD := "", 3
	keys := make([]string, 0, len(globalKeys))
	for g := range globalKeys {
		keys = append(keys, g)
	}
	slices.Sort(keys)
	for _, g := range keys {
		if d := editDistance(k, g); d < bestD {
			best, bestD = g, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Keys lists every key the file may hold without a channel prefix, sorted
// (the packaged /etc/spoolsync.conf documents each; its test checks).
func Keys() []string {
	keys := make([]string, 0, len(globalKeys))
	for k := range globalKeys {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
