package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/testenv"

	"spoolsync/wire"
)

// sparseFile makes a file of 1 TiB that holds no data: hashing it reads
// zeros for many minutes (issue 15: one of 2^50 bytes was hashed for
// ever).
func sparseFile(t *testing.T, p string) {
	t.Helper()
	must(t, os.WriteFile(p, nil, 0o600))
	must(t, os.Truncate(p, 1<<40))
}

// TestServerSIGTERMWhileHashing: a server hashing a huge file for a
// manifest stops on SIGTERM (it ignored SIGTERM past its grace and needed
// SIGKILL).
func TestServerSIGTERMWhileHashing(t *testing.T) {
	e := newReplicaEnv(t, "max_file_size: 2000G\n")
	sparseFile(t, filepath.Join(e.root, "sparse"))
	p, addr := startServer(t, e)
	c, err := dialReplica(t, addr, master(addr))
	must(t, err)
	must(t, c.Send(&wire.ManifestRequest{GUIDMode: wire.GUIDSHA256}))
	must(t, c.Flush())
	time.Sleep(200 * time.Millisecond) // into the hash
	p.stop(t, syscall.SIGTERM)         // fails the test if it is still running a minute later
	if p.err != nil {
		t.Errorf("server exit: %v, want 0\n%s", p.err, p.stderr)
	}
}

// TestResyncDryRunSIGTERM: `spoolsync resync --dry-run` hashing a huge
// file stops on SIGTERM (it ignored it for 11 minutes).
func TestResyncDryRunSIGTERM(t *testing.T) {
	re := newReplicaEnv(t, "")
	_, addr := startServer(t, re)
	e := newEnv(t, fmt.Sprintf("sync_host: %s\nsync_authname: master\nsync_password: pw\nmax_file_size: 2000G\n", addr))
	sparseFile(t, filepath.Join(e.backing, "sparse"))
	cmd := exec.Command(binary, "resync", "-c", e.conf, "--dry-run")
	var out testenv.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	})
	time.Sleep(500 * time.Millisecond) // connected and into the hash
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("resync --dry-run still running a minute after SIGTERM\n%s", out.String())
	}
}
