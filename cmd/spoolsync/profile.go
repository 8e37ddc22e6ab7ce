package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// profileEnv names an environment variable for performance work: when it
// holds a file name, any subcommand (mount, server, resync, ...) writes a
// CPU profile of its whole run there (go tool pprof FILE). It is not a
// configuration key: nobody runs production profiled.
const profileEnv = "SPOOLSYNC_CPUPROFILE"

// mutexProfileEnv is the same for lock contention: where goroutines
// waited on sync.Mutex/RWMutex (the namespace lock, the log's), sampled
// one wait in mutexProfileRate, written at the end of the run.
const mutexProfileEnv = "SPOOLSYNC_MUTEXPROFILE"

const mutexProfileRate = 5

// startProfile starts the profiles profileEnv and mutexProfileEnv ask for
// and returns the function that ends them (a no-op when none was asked
// for).
func startProfile() (stop func(), err error) {
	stopCPU, err := startCPUProfile()
	if err != nil {
		return nil, err
	}
	name := os.Getenv(mutexProfileEnv)
	if name == "" {
		return stopCPU, nil
	}
	f, err := os.Create(name)
	if err != nil {
		stopCPU()
		return nil, fmt.Errorf("%s: %w", mutexProfileEnv, err)
	}
	runtime.SetMutexProfileFraction(mutexProfileRate)
	return func() {
		stopCPU()
		if err := pprof.Lookup("mutex").WriteTo(f, 0); err != nil {
			fmt.Fprintf(os.Stderr, "spoolsync: %s: write %s: %v\n", mutexProfileEnv, name, err)
		}
		f.Close()
	}, nil
}

func startCPUProfile() (stop func(), err error) {
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
