package fs

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/fusestats"
)

// requestCounts asks the mount for its FUSE request counts (see
// fusestats: SIGUSR1 makes it rewrite name) and returns them.
func requestCounts(t *testing.T, name string) map[string]uint64 {
	t.Helper()
	var d struct {
		Dumps int               `json:"dumps"`
		Ops   map[string]uint64 `json:"ops"`
	}
	read := func() {
		d.Dumps = 0
		if b, err := os.ReadFile(name); err == nil {
			json.Unmarshal(b, &d)
		}
	}
	read()
	before := d.Dumps
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if read(); d.Dumps > before {
			return d.Ops
		}
	}
	t.Fatalf("the mount wrote no request counts to %s", name)
	return nil
}

// TestCachedReadNoRoundTrip: reading back what a handle has just written
// costs no request. The kernel holds the pages, and without
// FUSE_AUTO_INVAL_DATA it neither refreshes the attributes before the
// read nor drops the pages when it sees the mtime has moved; with it, a
// Dovecot delivery paid about 4.5 GETATTRs and 4.5 READs more
// (docs/BENCHMARKS.md, Mail servers).
func TestCachedReadNoRoundTrip(t *testing.T) {
	stats := filepath.Join(t.TempDir(), "requests.json")
	t.Setenv(fusestats.Env, stats)
	tc := newTestCase(t, DefaultOptions())
	f, err := os.OpenFile(tc.m_("f"), os.O_RDWR|os.O_CREATE, 0o644)
	must(t, err)
	defer f.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 512) // two whole pages
	_, err = f.WriteAt(data, 0)
	must(t, err)
	before := requestCounts(t, stats)
	got := make([]byte, len(data))
	_, err = f.ReadAt(got, 0)
	must(t, err)
	after := requestCounts(t, stats)
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %q..., want %q...", got[:16], data[:16])
	}
	for _, op := range []string{"GETATTR", "READ"} {
		if n := after[op] - before[op]; n != 0 {
			t.Errorf("reading back cached pages sent %d %s requests, want 0", n, op)
		}
	}
}
