// Command replbench is the workload of scripts/bench-replication.
//
//	replbench deliver SPOOL REPLICA RATE COUNT USERS
//	    deliver COUNT real messages (tmp/ → fsync → new/) round-robin into
//	    USERS maildirs under SPOOL at RATE messages/s (0: as fast as
//	    possible); watch REPLICA with inotify; print one JSON line: lag from
//	    the master's fsync returning to the message being in place on the
//	    replica (p50, p99, max), and payload bytes.
//	replbench fanout SPOOL REPLICA MAILBOXES OFFSET
//	    deliver one message (20 KiB of the corpus from message OFFSET on:
//	    choose offsets not shipped before, or zstd's window finds the bytes
//	    in the stream and the measure is void) into MAILBOXES maildirs, as
//	    an MTA does for a list; wait until all are on the replica.
//	replbench proxy LISTEN TARGET
//	    a TCP proxy counting the bytes that cross it (client → server), for
//	    measuring rsync; prints the count on SIGTERM.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"spoolsync/internal/corpus"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 7 && os.Args[1] == "deliver":
		rate, _ := strconv.Atoi(os.Args[4])
		count, _ := strconv.Atoi(os.Args[5])
		users, _ := strconv.Atoi(os.Args[6])
		err = deliverRun(os.Args[2], os.Args[3], rate, count, users)
	case len(os.Args) == 6 && os.Args[1] == "fanout":
		n, _ := strconv.Atoi(os.Args[4])
		off, _ := strconv.Atoi(os.Args[5])
		err = fanout(os.Args[2], os.Args[3], n, off)
	case len(os.Args) == 4 && os.Args[1] == "proxy":
		err = proxy(os.Args[2], os.Args[3])
	default:
		fmt.Fprintln(os.Stderr, "usage: replbench deliver SPOOL REPLICA RATE COUNT USERS | fanout SPOOL REPLICA N OFFSET | proxy LISTEN TARGET")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "replbench:", err)
		os.Exit(1)
	}
}

// arrivals watches maildirs' new/ on the replica and records when each
// name appears there.
type arrivals struct {
	fd      int
	mu      sync.Mutex
	at      map[string]time.Time // user/name → when it arrived
	dirs    map[int32]string     // watch descriptor → user
	arrived chan struct{}
}

func watch(replica string, users []string) (*arrivals, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err != nil {
		return nil, err
	}
	a := &arrivals{fd: fd, at: map[string]time.Time{}, dirs: map[int32]string{}, arrived: make(chan struct{}, 1)}
	for _, u := range users {
		dir := filepath.Join(replica, u, "Maildir", "new")
		// The folder reaches the replica with the first batch.
		deadline := time.Now().Add(30 * time.Second)
		for {
			wd, err := unix.InotifyAddWatch(fd, dir, unix.IN_MOVED_TO|unix.IN_CLOSE_WRITE)
			if err == nil {
				a.dirs[int32(wd)] = u
				break
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("watch %s: %w", dir, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	go a.loop()
	return a, nil
}

func (a *arrivals) loop() {
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(a.fd, buf)
		if err != nil {
			return
		}
		now := time.Now()
		a.mu.Lock()
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			name := string(nameBytes[:clen(nameBytes)])
			key := a.dirs[ev.Wd] + "/" + name
			if _, seen := a.at[key]; !seen {
				a.at[key] = now
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
		a.mu.Unlock()
		select {
		case a.arrived <- struct{}{}:
		default:
		}
	}
}

func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// wait blocks until every key has arrived, or timeout.
func (a *arrivals) wait(keys []string, timeout time.Duration) (map[string]time.Time, error) {
	deadline := time.After(timeout)
	for {
		a.mu.Lock()
		missing := 0
		for _, k := range keys {
			if _, ok := a.at[k]; !ok {
				missing++
			}
		}
		out := map[string]time.Time{}
		for k, v := range a.at {
			out[k] = v
		}
		a.mu.Unlock()
		if missing == 0 {
			return out, nil
		}
		select {
		case <-a.arrived:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			return out, fmt.Errorf("%d of %d messages not on the replica after %v", missing, len(keys), timeout)
		}
	}
}

func mkMaildir(dir string) error {
	for _, d := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// deliverOne writes a message as an MTA does; it returns when fsync
// returned (the master's promise to the sender).
func deliverOne(maildir, name string, body []byte) (time.Time, error) {
	tmp := filepath.Join(maildir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return time.Time{}, err
	}
	if _, err := f.Write(body); err != nil {
		f.Close()
		return time.Time{}, err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return time.Time{}, err
	}
	t0 := time.Now()
	if err := f.Close(); err != nil {
		return t0, err
	}
	return t0, os.Rename(tmp, filepath.Join(maildir, "new", name))
}

type result struct {
	Rate         int     `json:"rate"`
	Delivered    int     `json:"delivered"`
	Achieved     float64 `json:"achieved_per_s"`
	P50ms        float64 `json:"lag_p50_ms"`
	P99ms        float64 `json:"lag_p99_ms"`
	Maxms        float64 `json:"lag_max_ms"`
	PayloadBytes int64   `json:"payload_bytes"`
}

func deliverRun(spool, replica string, rate, count, nusers int) error {
	msgs, err := corpus.Load()
	if err != nil {
		return err
	}
	users := make([]string, nusers)
	for i := range users {
		users[i] = fmt.Sprintf("user%03d", i)
		if err := mkMaildir(filepath.Join(spool, users[i], "Maildir")); err != nil {
			return err
		}
	}
	a, err := watch(replica, users)
	if err != nil {
		return err
	}
	var tick <-chan time.Time
	if rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(rate))
		defer t.Stop()
		tick = t.C
	}
	// Four deliverers, as an MTA runs several LMTP processes: the rate
	// holds even when one fsync takes longer than the interval.
	var mu sync.Mutex
	sent := map[string]time.Time{}
	keys := make([]string, 0, count)
	var payload int64
	var firstErr error
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				u := users[i%nusers]
				name := fmt.Sprintf("%d.M%dP%d.bench", start.Unix(), i, os.Getpid())
				body := msgs[i%len(msgs)]
				t0, err := deliverOne(filepath.Join(spool, u, "Maildir"), name, body)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				sent[u+"/"+name] = t0
				keys = append(keys, u+"/"+name)
				payload += int64(len(body))
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < count; i++ {
		if tick != nil {
			<-tick
		}
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	elapsed := time.Since(start)
	at, err := a.wait(keys, 120*time.Second)
	if err != nil {
		return err
	}
	lags := make([]float64, 0, len(keys))
	for _, k := range keys {
		lags = append(lags, float64(at[k].Sub(sent[k]).Microseconds())/1000)
	}
	slices.Sort(lags)
	pct := func(p float64) float64 { return lags[min(len(lags)-1, int(p*float64(len(lags))))] }
	return json.NewEncoder(os.Stdout).Encode(result{Rate: rate, Delivered: count, Achieved: float64(count) / elapsed.Seconds(),
		P50ms: pct(0.50), P99ms: pct(0.99), Maxms: lags[len(lags)-1], PayloadBytes: payload})
}

func fanout(spool, replica string, n, offset int) error {
	msgs, err := corpus.Load()
	if err != nil {
		return err
	}
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("list%03d", i)
		if err := mkMaildir(filepath.Join(spool, users[i], "Maildir")); err != nil {
			return err
		}
	}
	a, err := watch(replica, users)
	if err != nil {
		return err
	}
	body := corpus.Sized(msgs, offset, 20<<10)
	keys := make([]string, n)
	for i, u := range users {
		name := fmt.Sprintf("fanout.M%d.bench", i)
		if _, err := deliverOne(filepath.Join(spool, u, "Maildir"), name, body); err != nil {
			return err
		}
		keys[i] = u + "/" + name
	}
	if _, err := a.wait(keys, 60*time.Second); err != nil {
		return err
	}
	fmt.Printf("{\"mailboxes\":%d,\"message_bytes\":%d}\n", n, len(body))
	return nil
}

func proxy(listen, target string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go io.Copy(c, s)
				k, _ := io.Copy(s, c)
				n.Add(k)
			}()
		}
	}()
	fmt.Println("ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	for s := range sig {
		fmt.Fprintf(os.Stderr, "%d\n", n.Load())
		if s != syscall.SIGUSR1 {
			return nil
		}
	}
	return nil
}
