package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// version and commit are set by scripts/package:
//
//	go build -ldflags "-X main.version=1.2.3 -X main.commit=abcdef0"
//
// A plain go build in a git checkout leaves them empty; the commit then
// comes from the VCS stamp Go puts in the binary.
var version, commit string

// versionString is what spoolsync --version prints: the version, the
// commit it was built from (with "+dirty" for uncommitted changes) and
// the Go release.
func versionString() string {
	v, c, dirty := version, commit, false
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if c == "" {
					c = s.Value
				}
			case "vcs.modified":
				dirty = s.Value == "true" && commit == ""
			}
		}
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if v == "" {
		v = "devel"
	}
	if c == "" {
		c = "unknown"
	}
	if len(c) > 12 {
		c = c[:12]
	}
	if dirty {
		c += "+dirty"
	}
	return fmt.Sprintf("spoolsync %s (commit %s, %s)", v, c, runtime.Version())
}
