// Command attackbench is the client side of scripts/bench-login-attack:
// against a running `spoolsync server` it opens unauthenticated
// connections that each declare a 4 MiB frame and reports the server's
// RSS, then runs password-guessing loops and measures fresh logins of
// real masters (users not yet in the server's login cache) meanwhile:
// the median and the slowest, and how many guesses were heard at all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"spoolsync/wire"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2005", "replica address")
	pid := flag.Int("pid", 0, "the server's process id, for its RSS")
	loops := flag.Int("loops", 200, "password-guessing loops")
	users := flag.Int("users", 10, "masters m1..mN, password pw-N, whose fresh logins are timed (half before the attack)")
	flag.DurationVar(&warmup, "warmup", 10*time.Second, "how long the guessing runs before the first login")
	flag.IntVar(&sources, "sources", 1, "loopback addresses the guessing loops come from")
	flag.Parse()
	if err := run(*addr, *pid, *loops, *users); err != nil {
		fmt.Fprintln(os.Stderr, "attackbench:", err)
		os.Exit(1)
	}
}

var (
	warmup  time.Duration
	sources int
)

// rss is the VmRSS of pid in MiB.
func rss(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "VmRSS:" {
			kib, _ := strconv.Atoi(f[1])
			return float64(kib) / 1024
		}
	}
	return -1
}

// from dials addr from a loopback address of its own (127.0.0.0/8 is
// all loopback), so each loop can be another source.
func from(ctx context.Context, ip net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 10 * time.Second}
	return d.DialContext(ctx, "tcp", addr)
}

func run(addr string, pid, loops, users int) error {
	before := rss(pid)
	var held []net.Conn
	for i := range 200 {
		nc, err := from(context.Background(), net.IPv4(127, 0, 5, byte(1+i/8)), addr)
		if err != nil {
			return err
		}
		// A 4 MiB - 1 Auth frame, one byte of it sent.
		nc.Write(append([]byte("CSYNC\x01"), byte(wire.TypeAuth), 0xff, 0xff, 0xff, 0x01, 'x'))
		held = append(held, nc)
	}
	time.Sleep(time.Second)
	fmt.Printf("server RSS: %.1f MiB idle, %.1f MiB with 200 unauthenticated connections each declaring a 4 MiB frame\n", before, rss(pid))
	for _, nc := range held {
		nc.Close()
	}

	// Half the masters log in before the attack (the baseline on this
	// machine as loaded as it is), half during it.
	quiet, err := logins(addr, 1, users/2)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	var heard, unheard atomic.Int64
	var wg sync.WaitGroup
	for i := range loops {
		wg.Go(func() {
			ip := net.IPv4(127, 0, 4, byte(1+i%sources))
			for ctx.Err() == nil {
				nc, err := from(ctx, ip, addr)
				if err != nil {
					continue
				}
				_, err = wire.Client(ctx, nc, wire.ClientConfig{AuthName: "master", Password: "guess"})
				if errors.Is(err, wire.ErrAuth) {
					heard.Add(1)
				} else {
					unheard.Add(1)
				}
			}
		})
	}
	time.Sleep(warmup) // the attack in full swing
	took, err := logins(addr, users/2+1, users)
	cancel()
	wg.Wait()
	if err != nil {
		return fmt.Errorf("during the attack: %w", err)
	}
	fmt.Printf("fresh logins: median %v (slowest %v) without an attack; median %v (slowest %v) during %d guessing loops from %d addresses: ratio %.2f\n",
		median(quiet), quiet[len(quiet)-1].Round(time.Millisecond), median(took), took[len(took)-1].Round(time.Millisecond), loops, sources,
		float64(median(took))/float64(median(quiet)))
	fmt.Printf("guesses checked %d, closed unheard %d; server RSS %.1f MiB\n", heard.Load(), unheard.Load(), rss(pid))
	return nil
}

// logins logs masters first..last in one after another, each a fresh
// login (not in the server's cache), and returns the times, sorted.
func logins(addr string, first, last int) ([]time.Duration, error) {
	var took []time.Duration
	for u := first; u <= last; u++ {
		start := time.Now()
		c, err := wire.Dial(context.Background(), wire.ClientConfig{Addr: addr, AuthName: fmt.Sprintf("m%d", u), Password: fmt.Sprintf("pw-%d", u)})
		took = append(took, time.Since(start))
		if err != nil {
			return nil, fmt.Errorf("login of m%d: %w", u, err)
		}
		c.Close()
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(took)
	return took, nil
}

func median(d []time.Duration) time.Duration { return d[len(d)/2].Round(time.Millisecond) }
