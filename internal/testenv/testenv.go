// Package testenv tells tests what this machine offers. Tests that need
// FUSE or root skip with a reason where it is missing, except where
// SPOOLSYNC_REQUIRE_FUSE=1 (CI), where a missing capability fails the test:
// a suite that silently skipped its mounts would report a pass it did not
// earn. It also holds the fixtures several packages' tests share.
package testenv

import (
	"errors"
	"os"
	"os/exec"
	"testing"

	"spoolsync/wire"
)

// OpenFDs is how many descriptors this process has open, for tests that
// check nothing leaks.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// ReplicaAuth is the handshake configuration of a replica server in tests:
// one master, "master" with password "pw", an admin; no delay after a
// failed login.
func ReplicaAuth() wire.ServerConfig {
	return wire.ServerConfig{
		Authenticate: func(u, p string) error {
			if u == "master" && p == "pw" {
				return nil
			}
			return errors.New("bad password")
		},
		IsAdmin:   func(id string) bool { return id == "master" },
		FailDelay: -1,
	}
}

// Required reports whether CI asked for every capability to be present.
func Required() bool { return os.Getenv("SPOOLSYNC_REQUIRE_FUSE") == "1" }

// NeedFUSE skips (or, in CI, fails) t unless it can mount FUSE: root and
// /dev/fuse.
func NeedFUSE(t testing.TB) {
	t.Helper()
	need(t, os.Geteuid() == 0, "mounting needs root (go-fuse DirectMount)")
	_, err := os.Stat("/dev/fuse")
	need(t, err == nil, "/dev/fuse is missing (modprobe fuse)")
}

// NeedRoot skips (or, in CI, fails) t unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	need(t, os.Geteuid() == 0, "needs root")
}

// NeedNetns skips (or, in CI, fails) t unless it can make network
// namespaces: root and iproute2's ip.
func NeedNetns(t testing.TB) {
	t.Helper()
	need(t, os.Geteuid() == 0, "network namespaces need root")
	NeedProgram(t, "ip", "iproute2")
}

// NeedProgram skips (or, in CI, fails) t unless program (a name on PATH
// or an absolute path) is installed; pkg is the Debian package that has
// it (scripts/install-deps installs it).
func NeedProgram(t testing.TB, program, pkg string) {
	t.Helper()
	_, err := exec.LookPath(program)
	need(t, err == nil, program+" ("+pkg+") is not installed")
}

func need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if Required() {
		t.Fatalf("SPOOLSYNC_REQUIRE_FUSE=1 but %s", why)
	}
	t.Skipf("skipped: %s (set SPOOLSYNC_REQUIRE_FUSE=1 to make this a failure)", why)
}
