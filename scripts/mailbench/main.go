// Command mailbench is the maildir workload of scripts/bench-mount.
//
//	mailbench run DIR N WORKERS    deliver N messages into DIR (tmp/ → fsync →
//	                               rename into new/), read every message back,
//	                               unlink half; prints one JSON line of rates
//	mailbench loopback BACKING MNT mount go-fuse's stock loopback (the
//	                               baseline) until SIGTERM
//	mailbench rtt FILE N           time N getxattr calls of an attribute FILE
//	                               does not have; on a FUSE mount each is
//	                               exactly one round trip to the daemon (the
//	                               kernel caches no xattrs), so this is the
//	                               bare request latency; prints percentiles
package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"spoolsync/internal/corpus"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "run":
		if len(os.Args) != 5 {
			usage()
		}
		n, _ := strconv.Atoi(os.Args[3])
		w, _ := strconv.Atoi(os.Args[4])
		err = run(os.Args[2], n, w)
	case "loopback":
		if len(os.Args) != 4 {
			usage()
		}
		err = loopback(os.Args[2], os.Args[3])
	case "rtt":
		if len(os.Args) != 4 {
			usage()
		}
		n, _ := strconv.Atoi(os.Args[3])
		err = roundTrips(os.Args[2], n)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mailbench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: mailbench run DIR N WORKERS | mailbench loopback BACKING MNT | mailbench rtt FILE N")
	os.Exit(2)
}

// result is one run's rates in messages per second.
type result struct {
	Deliver float64 `json:"deliver"`
	Read    float64 `json:"read"`
	Unlink  float64 `json:"unlink"`
}

func run(dir string, n, workers int) error {
	msgs, err := corpus.Load()
	if err != nil {
		return err
	}
	for _, d := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	// Bodies prepared up front so the timing is the filesystem's only.
	rng := rand.New(rand.NewPCG(1, 2))
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = corpus.Sized(msgs, i, 4<<10+rng.IntN(60<<10))
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("%d.M%06dP%d.bench", time.Now().Unix(), i, os.Getpid())
	}
	var r result
	r.Deliver, err = parallel(n, workers, func(i int) error {
		tmp := filepath.Join(dir, "tmp", names[i])
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.Write(bodies[i]); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(tmp, filepath.Join(dir, "new", names[i]))
	})
	if err != nil {
		return fmt.Errorf("deliver: %w", err)
	}
	r.Read, err = parallel(n, workers, func(i int) error {
		b, err := os.ReadFile(filepath.Join(dir, "new", names[i]))
		if err == nil && len(b) != len(bodies[i]) {
			err = fmt.Errorf("%s: read %d bytes, wrote %d", names[i], len(b), len(bodies[i]))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	r.Unlink, err = parallel(n/2, workers, func(i int) error {
		return os.Remove(filepath.Join(dir, "new", names[2*i]))
	})
	if err != nil {
		return fmt.Errorf("unlink: %w", err)
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

// parallel runs do(0..n-1) on workers goroutines and returns the rate.
func parallel(n, workers int, do func(i int) error) (float64, error) {
	var next int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := firstErr != nil
				mu.Unlock()
				if stop || int(i) >= n {
					return
				}
				if err := do(int(i)); err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), firstErr
}

// loopback mounts go-fuse's stock loopback the way its documentation
// shows (fs.Mount with nil options: 1 s timeouts), as the baseline.
func loopback(backing, mnt string) error {
	root, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		return err
	}
	opts := &gofs.Options{}
	opts.AllowOther = true
	opts.DirectMount = true
	sec := time.Second
	opts.EntryTimeout, opts.AttrTimeout = &sec, &sec
	// MAILBENCH_DEBUG=1 logs every FUSE request to stderr, to count the
	// round trips a message costs (docs/BENCHMARKS.md, Mount).
	opts.Debug = os.Getenv("MAILBENCH_DEBUG") != ""
	server, err := gofs.Mount(mnt, root, opts)
	if err != nil {
		return err
	}
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	return server.Unmount()
}

// roundTrips prints the mean, median, 90th and 99th percentile of n
// getxattr calls on file, in microseconds, as one JSON line.
func roundTrips(file string, n int) error {
	if n < 1 {
		return fmt.Errorf("rtt: N must be at least 1")
	}
	lat := make([]time.Duration, n)
	buf := make([]byte, 64)
	for i := range lat {
		start := time.Now()
		_, err := syscall.Getxattr(file, "user.mailbench-absent", buf)
		lat[i] = time.Since(start)
		if err != syscall.ENODATA {
			return fmt.Errorf("rtt: getxattr %s: want ENODATA, got %v", file, err)
		}
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	at := func(q float64) float64 { return us(lat[int(q*float64(n-1))]) }
	return json.NewEncoder(os.Stdout).Encode(map[string]float64{
		"mean_us": us(sum / time.Duration(n)), "p50_us": at(0.5), "p90_us": at(0.9), "p99_us": at(0.99)})
}
