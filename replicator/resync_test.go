package replicator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"spoolsync/guid"
	"spoolsync/internal/testenv"
	"spoolsync/replica"
	"spoolsync/replica/server"
	"spoolsync/wire"
)

// TestResyncResendsWhenOfferedContentGoes: the replica answers an offer
// that it holds some content, and the only copy goes before the batch
// lands (rolling replication moves and deletes beside a resync). The
// replica refuses the batch; the resync sends it again with its content
// and ends with the file in place.
func TestResyncResendsWhenOfferedContentGoes(t *testing.T) {
	base := t.TempDir()
	spool, root := filepath.Join(base, "spool"), filepath.Join(base, "root")
	for _, d := range []string{spool + "/b", spool + "/c", root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	msg := []byte("Subject: moved\n\nthe only copy on the replica goes before the batch lands\n")
	if err := os.WriteFile(filepath.Join(spool, "b", "m"), msg, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startReplica(t, root, filepath.Join(base, "state"))
	cache, err := guid.OpenCache(filepath.Join(base, "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	opts := ResyncOptions{Backing: spool, Cache: cache, Mode: guid.SHA256, Delete: true, Logger: slog.New(slog.DiscardHandler),
		Client: wire.ClientConfig{Addr: addr, AuthName: "master", Password: "pw", Compress: 3}}
	if _, err := Resync(t.Context(), opts); err != nil {
		t.Fatalf("first resync: %v", err)
	}
	// The message moves to c/m on the master: the offer finds its content
	// at b/m on the replica, which goes (as a mount's batch could remove
	// it) between the answer and the batch.
	if err := os.Rename(filepath.Join(spool, "b", "m"), filepath.Join(spool, "c", "m")); err != nil {
		t.Fatal(err)
	}
	removed := false
	opts.beforeSend = func(seq uint64, _ int) {
		if !removed {
			removed = true
			if err := os.Remove(filepath.Join(root, "b", "m")); err != nil {
				t.Errorf("remove the replica's copy: %v", err)
			}
		}
	}
	rep, err := Resync(t.Context(), opts)
	if err != nil {
		t.Fatalf("resync: %v", err)
	}
	if !removed {
		t.Fatal("the hook never ran: no batch was sent")
	}
	got, err := os.ReadFile(filepath.Join(root, "c", "m"))
	if err != nil || string(got) != string(msg) {
		t.Fatalf("replica c/m = %q, %v; want the message", got, err)
	}
	if rep.ContentBytes < int64(len(msg)) {
		t.Errorf("%d content bytes sent: the message was not sent again with its content", rep.ContentBytes)
	}
}

// startReplica serves a replica of root on loopback until the test ends
// and returns its address.
func startReplica(t *testing.T, root, state string) string {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	store, err := replica.Open(replica.Options{Root: root, StateDir: state, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Options{Store: store, SpoolDir: filepath.Join(state, "spool"), Logger: log,
		Wire: testenv.ReplicaAuth()})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		store.Close()
	})
	return ln.Addr().String()
}

// TestResyncStopsCleanly: a resync that ends early (here cancelled) stops
// its walk and its manifest reader, and leaves no descriptor open.
func TestResyncStopsCleanly(t *testing.T) {
	base := t.TempDir()
	spool, root := filepath.Join(base, "spool"), filepath.Join(base, "root")
	for d := range 60 {
		dir := filepath.Join(spool, "u", fmt.Sprint(d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 100 {
			os.WriteFile(filepath.Join(dir, fmt.Sprint(f)), []byte("x"), 0o600)
		}
	}
	os.MkdirAll(root, 0o755)
	addr := startReplica(t, root, filepath.Join(base, "state"))
	cache, err := guid.OpenCache(filepath.Join(base, "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	before := openFDs(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	opts := ResyncOptions{Backing: spool, Cache: cache, Mode: guid.SHA256, DryRun: true, Logger: slog.New(slog.DiscardHandler),
		Client:   wire.ClientConfig{Addr: addr, AuthName: "master", Password: "pw", Compress: 3},
		Progress: func(ResyncReport) { cancel() }}
	if _, err := Resync(ctx, opts); !errors.Is(err, context.Canceled) {
		t.Fatalf("resync: %v, want it cancelled", err)
	}
	var after int
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if after = openFDs(t); after <= before {
			return
		}
	}
	t.Errorf("open descriptors: %d before the resync, %d after it ended", before, after)
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestResyncPipelined: many small batches, each sent while the last one is
// still unacknowledged, land in order: the replica ends identical, moves
// included (a put by GUID may name content a batch before it put).
func TestResyncPipelined(t *testing.T) {
	base := t.TempDir()
	spool, root := filepath.Join(base, "spool"), filepath.Join(base, "root")
	for d := range 10 {
		dir := filepath.Join(spool, "u", fmt.Sprint(d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 30 {
			os.WriteFile(filepath.Join(dir, fmt.Sprint(f)), []byte(fmt.Sprintf("message %d/%d", d%3, f)), 0o600)
		}
	}
	os.MkdirAll(root, 0o755)
	addr := startReplica(t, root, filepath.Join(base, "state"))
	cache, err := guid.OpenCache(filepath.Join(base, "cache.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	most := 0
	opts := ResyncOptions{Backing: spool, Cache: cache, Mode: guid.SHA256, Delete: true, BatchOps: 7,
		Logger:     slog.New(slog.DiscardHandler),
		Client:     wire.ClientConfig{Addr: addr, AuthName: "master", Password: "pw", Compress: 3},
		beforeSend: func(_ uint64, unacked int) { most = max(most, unacked) }}
	rep, err := Resync(t.Context(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if most != 1 {
		t.Errorf("at most %d batches unacknowledged when the next was sent, want 1", most)
	}
	if rep.Dedup == 0 {
		t.Error("no put by GUID: the test does not cover content put by an earlier batch")
	}
	opts.DryRun, opts.beforeSend = true, nil
	rep, err = Resync(t.Context(), opts)
	if err != nil || rep.Different != 0 || rep.Extra != 0 {
		t.Fatalf("after the resync: %v, %d differences, %d extra: %v", err, rep.Different, rep.Extra, rep.Differences)
	}
}
