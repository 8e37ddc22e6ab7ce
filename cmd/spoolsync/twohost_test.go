package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/testenv"
	"spoolsync/replicator"
)

// standbyHost is a second host for a test: a network namespace of its own,
// linked to this one by a veth pair on a /30, so that the two sides see
// each other's real addresses, never loopback.
type standbyHost struct {
	ns                  string
	masterIP, replicaIP net.IP
}

func newStandbyHost(t *testing.T) *standbyHost {
	t.Helper()
	testenv.NeedNetns(t)
	id := os.Getpid() % 100000
	h := &standbyHost{ns: fmt.Sprintf("spoolsync-test-%d", id),
		masterIP: net.IPv4(10, 213, byte(id%250), 1), replicaIP: net.IPv4(10, 213, byte(id%250), 2)}
	local, peer := fmt.Sprintf("ssv%da", id), fmt.Sprintf("ssv%db", id)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	// A namespace left by a killed earlier run of this test with the same
	// pid suffix goes first.
	exec.Command("ip", "netns", "del", h.ns).Run()
	exec.Command("ip", "link", "del", local).Run()
	run("netns", "add", h.ns)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", h.ns).Run()
		exec.Command("ip", "link", "del", local).Run() // gone with its peer, unless the kernel is slow
	})
	run("link", "add", local, "type", "veth", "peer", "name", peer)
	run("link", "set", peer, "netns", h.ns)
	run("addr", "add", h.masterIP.String()+"/30", "dev", local)
	run("link", "set", local, "up")
	run("netns", "exec", h.ns, "ip", "addr", "add", h.replicaIP.String()+"/30", "dev", peer)
	run("netns", "exec", h.ns, "ip", "link", "set", peer, "up")
	run("netns", "exec", h.ns, "ip", "link", "set", "lo", "up")
	return h
}

// startServer starts `spoolsync server` on the standby host, listening on
// its address only; it returns the address.
func (h *standbyHost) startServer(t *testing.T, e *replicaEnv) (*proc, string) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", h.ns, binary, "server", "-c", e.conf,
		"--listen", net.JoinHostPort(h.replicaIP.String(), "0"), "--root", e.root)
	p, addr, err := startCmd(t, cmd, "server (on the standby host)",
		func(l string) (string, bool) { return strings.CutPrefix(l, "spoolsync: ready: serving "+e.root+" on ") }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p, addr
}

// TestTwoHosts replicates to a replica on another host (its own network
// namespace), where the server sees the master's real address: a master
// without TLS is refused its PLAIN login, which only loopback peers may
// use in the clear; with TLS, the server's certificate verified against
// the replica's IP address, mail replicates.
func TestTwoHosts(t *testing.T) {
	h := newStandbyHost(t)
	pk := writePKI(t, t.TempDir(), h.replicaIP)
	r := newReplicaEnv(t, fmt.Sprintf("tls_cert_file: %s\ntls_key_file: %s\n", pk.serverCert, pk.serverKey))
	server, addr := h.startServer(t, r)
	if host, _, _ := net.SplitHostPort(addr); host != h.replicaIP.String() {
		t.Fatalf("server listens on %s, want the standby host's %s", addr, h.replicaIP)
	}
	conf := fmt.Sprintf("sync_host: %s\nsync_authname: master\nsync_password: pw\n", addr)

	// 1. No TLS: the login is refused, the mount keeps serving mail and
	// says why it does not replicate; the server logs the master's address.
	m := newEnv(t, conf)
	mount := startMount(t, m)
	md := filepath.Join(m.mnt, "user", "Maildir")
	mkMaildir(t, md)
	deliver(t, md, "1.cleartext", message(1))
	st := waitStatus(t, m, 20*time.Second, "the PLAIN refusal", func(s replicator.ChannelStatus) bool {
		return strings.Contains(s.LastError, "not TLS")
	})
	if st.Connected || st.BacklogEvents == 0 {
		t.Fatalf("status %+v: want not connected, with the delivery waiting in the backlog", st)
	}
	if !strings.Contains(server.stderr.String(), h.masterIP.String()) {
		t.Errorf("the server's log does not name the refused peer %s:\n%s", h.masterIP, server.stderr)
	}
	if _, err := os.Stat(filepath.Join(r.root, "user")); err == nil {
		t.Fatal("something reached the replica over a refused login")
	}
	mount.stop(t, syscall.SIGTERM)

	// 2. TLS with the replica's CA: the same log now replicates, the
	// cleartext-refused delivery included.
	must(t, os.WriteFile(m.conf, []byte(fmt.Sprintf("spool_dir: %s\nmount_point: %s\nstate_dir: %s\n%stls_ca_file: %s\n",
		m.backing, m.mnt, m.state, conf, pk.ca)), 0o644))
	mount = startMount(t, m)
	for i := 2; i <= 10; i++ {
		deliver(t, md, fmt.Sprintf("%d.tls", i), message(i))
	}
	p := &pair{m: m, r: r, mount: mount, server: server, addr: addr}
	p.waitSynced(t)
	st = waitStatus(t, m, 10*time.Second, "a TLS connection", func(s replicator.ChannelStatus) bool { return s.Connected })
	if !st.TLS {
		t.Fatalf("status %+v: connected without TLS", st)
	}
}
