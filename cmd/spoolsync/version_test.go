package main

import (
	"os/exec"
	"regexp"
	"testing"
)

// TestVersion: spoolsync --version names a version, a commit and the Go
// release (scripts/package stamps the first two; TestPackage checks them).
func TestVersion(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		out, err := exec.Command(binary, arg).Output()
		if err != nil {
			t.Fatalf("spoolsync %s: %v", arg, err)
		}
		if !regexp.MustCompile(`^spoolsync \S+ \(commit ([0-9a-f]+(\+dirty)?|unknown), go1\.\d+`).Match(out) {
			t.Errorf("spoolsync %s = %q", arg, out)
		}
	}
}
