package fs

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// ProfileEnv names an environment variable for performance work: when it
// holds a file name, the mount writes a CPU profile of its whole life there
// (go tool pprof FILE). It is not a configuration key: nobody runs a
// production mount profiled.
const ProfileEnv = "SPOOLSYNC_CPUPROFILE"

// startProfile starts the CPU profile ProfileEnv asks for and returns the
// function that ends it (a no-op when none was asked for).
func startProfile() (stop func(), err error) {
	name := os.Getenv(ProfileEnv)
	if name == "" {
		return func() {}, nil
	}
	f, err := os.Create(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ProfileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", ProfileEnv, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
