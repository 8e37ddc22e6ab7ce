package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// profileEnv names an environment variable for performance work: when it
// holds a file name, any subcommand (mount, server, resync, ...) writes a
// CPU profile of its whole run there (go tool pprof FILE). It is not a
// configuration key: nobody runs production profiled.
const profileEnv = "SPOOLSYNC_CPUPROFILE"

// startProfile starts the CPU profile profileEnv asks for and returns the
// function that ends it (a no-op when none was asked for).
func startProfile() (stop func(), err error) {
	name := os.Getenv(profileEnv)
	if name == "" {
		return func() {}, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
