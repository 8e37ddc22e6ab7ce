package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseValid(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := `# master
spool_dir: /srv/mail
mount_point: /var/spool/imap
state_dir: /var/lib/ss
sync_log_channels: a b
a_sync_host: standby1.example
b_sync_host: standby2.example:2100
sync_authname: repl
sync_realm: example.org
sync_password_file: ` + pw + `
b_sync_password: other # not a comment
sync_repeat_interval: 250ms
sync_batch_size: 100 1M
guid_mode: BLAKE3
sync_compress: zstd 3
allowplaintext: yes
admins: repl@example.org, root
`
	c, err := Parse(strings.NewReader(in), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.SyncLogDir != "/var/lib/ss/log" {
		t.Errorf("SyncLogDir = %q, want derived from state_dir", c.SyncLogDir)
	}
	if c.SyncRepeatInterval != 250*time.Millisecond || c.SyncBatchEvents != 100 || c.SyncBatchBytes != 1<<20 {
		t.Errorf("interval/batch = %v %d %d", c.SyncRepeatInterval, c.SyncBatchEvents, c.SyncBatchBytes)
	}
	if c.GUIDMode != "blake3" || c.CompressLevel != 3 || !c.AllowPlaintext {
		t.Errorf("guid/compress/plaintext = %q %d %v", c.GUIDMode, c.CompressLevel, c.AllowPlaintext)
	}
	if got := strings.Join(c.Admins, "|"); got != "repl@example.org|root" {
		t.Errorf("admins = %q", got)
	}
	if len(c.Channels) != 2 {
		t.Fatalf("channels = %+v", c.Channels)
	}
	a, b := c.Channels[0], c.Channels[1]
	if a.Addr() != "standby1.example:2005" || a.Password != "s3cret" || a.Identity() != "repl@example.org" {
		t.Errorf("channel a = %+v addr %s", a, a.Addr())
	}
	if b.Addr() != "standby2.example:2100" || b.Password != "other # not a comment" {
		t.Errorf("channel b = %+v addr %s", b, b.Addr())
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"sync_hots: x\n", `t.conf:1: sync_hots: unknown key (did you mean "sync_host"?)`},
		{"# c\nfrobnicate: 1\n", "t.conf:2: frobnicate: unknown key"},
		{"sync_log: maybe\n", `t.conf:1: sync_log: "maybe" is not a yes/no value`},
		{"guid_mode: md5\n", `t.conf:1: guid_mode: "md5" is not one of sha256, blake3, sha1, none`},
		{"sync_repeat_interval: soon\n", "t.conf:1: sync_repeat_interval:"},
		{"spool_dir: a\nspool_dir: b\n", "t.conf:2: spool_dir: given twice (first on line 1)"},
		{"just words\n", "t.conf:1: expected `key: value`"},
		{"spool_dir: relative/dir\n", `t.conf:1: spool_dir: "relative/dir" is not an absolute path`},
		{"sync_host: h\nsync_password: p\n", "t.conf:1: sync_authname: missing"},
		{"sync_host: h\nsync_authname: a\n", "t.conf:1: sync_password: missing"},
		{"sync_host: h\nsync_authname: a\nsync_password: p\nsync_port: 99999\n", `t.conf:4: sync_port: "99999" is not a port number`},
		{"sync_log_channels: a\nsync_authname: x\nsync_password: y\n", "a_sync_host"},
		{"sync_log_channels: a\nb_sync_host: h\n", "b_sync_host: unknown key"},
		{"tls_cert_file: /c\n", "tls_key_file: tls_cert_file and tls_key_file go together"},
		{"sync_batch_size: 0\n", "sync_batch_size:"},
		{"sync_compress: gzip\n", "sync_compress:"},
		{"fuse_uring: yes\n", `t.conf:1: fuse_uring: "yes" is not one of auto, on, off`},
		{"max_file_size: 100K\n", "max_file_size:"},
		{"max_file_size: 99999999999G\n", "max_file_size:"},
		{"replica_batch_limit: 50000\n", "replica_batch_limit:"},
		{"replica_batch_limit: 10 2G\n", "replica_batch_limit:"},
		{"replica_allow_privileged: sure\n", "replica_allow_privileged:"},
		{"log_format: yaml\n", `t.conf:1: log_format: "yaml" is not one of text, json`},
	} {
		_, err := Parse(strings.NewReader(tc.in), "t.conf")
		var ce *Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an *Error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestLoadMissing(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nope.conf")); err == nil || !strings.Contains(err.Error(), "nope.conf") {
		t.Errorf("Load of a missing explicit file = %v, want an error naming it", err)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(""), "empty")
	if err != nil {
		t.Fatal(err)
	}
	if c.StateDir != "/var/lib/spoolsync" || c.SyncLogDir != "/var/lib/spoolsync/log" || !c.SyncLog ||
		c.GUIDMode != "sha256" || c.SyncMode != "async" || len(c.Channels) != 0 || c.FuseURing != "auto" || c.LogFormat != "text" {
		t.Errorf("defaults = %+v", c)
	}
}

// FuzzParse: any file content either parses or is refused with an *Error
// naming a place; it never panics.
func FuzzParse(f *testing.F) {
	f.Add("spool_dir: /srv/mail\nsync_host: h\nsync_authname: a\nsync_password: p\n")
	f.Add("sync_log_channels: a b\na_sync_host: x:1\nb_sync_host: y\nsync_authname: n\nsync_password: p\n")
	f.Add("sync_batch_size: 10 1M\nsync_compress: zstd 4\nsync_repeat_interval: 2\n# c\n\n")
	f.Fuzz(func(t *testing.T, in string) {
		c, err := Parse(strings.NewReader(in), "fuzz.conf")
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) && !strings.Contains(err.Error(), "fuzz.conf") {
				t.Fatalf("%q: error %v names no place", in, err)
			}
			return
		}
		for _, ch := range c.Channels {
			if ch.Host == "" || ch.AuthName == "" || ch.Password == "" {
				t.Fatalf("%q: accepted an incomplete channel %+v", in, ch)
			}
		}
	})
}

func TestSyncVerify(t *testing.T) {
	c, err := Parse(strings.NewReader(""), "empty.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.SyncVerifyInterval != 5*time.Minute || c.SyncVerify != "repair" {
		t.Errorf("defaults: sync_verify_interval %v, sync_verify %q; want 5m, repair", c.SyncVerifyInterval, c.SyncVerify)
	}
	for in, want := range map[string]time.Duration{"sync_verify_interval: 30s": 30 * time.Second, "sync_verify_interval: 0": 0, "sync_verify_interval: off": 0} {
		c, err := Parse(strings.NewReader(in+"\nsync_verify: report\n"), "t.conf")
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if c.SyncVerifyInterval != want || c.SyncVerify != "report" {
			t.Errorf("%s: %v %q, want %v report", in, c.SyncVerifyInterval, c.SyncVerify, want)
		}
	}
	for _, in := range []string{"sync_verify: fix", "sync_verify_interval: -1s", "sync_verify_interval: soon"} {
		if _, err := Parse(strings.NewReader(in), "t.conf"); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestHardeningKeys(t *testing.T) {
	c, err := Parse(strings.NewReader("max_file_size: 1G\nreplica_batch_limit: 2000 64M\nreplica_allow_privileged: yes\n"), "t.conf")
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxFileSize != 1<<30 || c.ReplicaBatchOps != 2000 || c.ReplicaBatchBytes != 64<<20 || !c.ReplicaAllowPrivileged {
		t.Errorf("got %d %d %d %v", c.MaxFileSize, c.ReplicaBatchOps, c.ReplicaBatchBytes, c.ReplicaAllowPrivileged)
	}
	d := Default()
	if d.MaxFileSize != 4<<30 || d.ReplicaBatchOps != 50000 || d.ReplicaBatchBytes != 2<<30 || d.ReplicaAllowPrivileged {
		t.Errorf("defaults %d %d %d %v", d.MaxFileSize, d.ReplicaBatchOps, d.ReplicaBatchBytes, d.ReplicaAllowPrivileged)
	}
}
