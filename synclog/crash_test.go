package synclog

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
)

const helperDirEnv = "SYNCLOG_TEST_HELPER_DIR"

// TestHelperProcess is the child of TestCrash: it appends and syncs
// events until killed, printing each synced seq on stdout.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("the child process of TestCrash")
	}
	l, err := Open(Options{Dir: dir, SegmentSize: 16 << 10})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		first := l.LastSeq() + 1
		evs := make([]*Event, 1+i%3)
		for j := range evs {
			evs[j] = testEvent(first+uint64(j), 30)
		}
		last, err := l.Append(evs...)
		if err == nil {
			err = l.Sync(last)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%d\n", last) // os.Stdout is unbuffered: one write(2)
	}
}

// TestCrash kills a writing process at random moments: every seq it was
// told is durable must be in the log, intact, after reopening.
func TestCrash(t *testing.T) {
	dir := t.TempDir()
	var acked uint64
	for round := range 6 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := make(chan uint64, 1024)
		go func() {
			defer close(lines)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				// A line cut by the kill is a prefix of a seq, so smaller
				// than one acknowledged: harmless.
				if seq, err := strconv.ParseUint(sc.Text(), 10, 64); err == nil {
					lines <- seq
				}
			}
		}()
		// Wait for the child to make progress, then kill it at a random moment.
		first, ok := <-lines
		if !ok {
			cmd.Wait()
			t.Fatalf("round %d: child printed nothing", round)
		}
		acked = max(acked, first)
		time.Sleep(time.Duration(20+rand.IntN(300)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		for seq := range lines {
			acked = max(acked, seq)
		}
		cmd.Wait()

		l := openTestLog(t, dir, Options{SegmentSize: 16 << 10, Logger: slog.New(slog.DiscardHandler)})
		if l.LastSeq() < acked {
			t.Fatalf("round %d: LastSeq %d after the crash, but seq %d was acknowledged as durable", round, l.LastSeq(), acked)
		}
		r, err := l.NewReader(1)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for seq := uint64(1); seq <= l.LastSeq(); seq++ {
			ev, err := r.Next(ctx)
			if err != nil {
				t.Fatalf("round %d: reading seq %d: %v", round, seq, err)
			}
			checkEvent(t, ev, seq, 30)
		}
		cancel()
		r.Close()
		t.Logf("round %d: %d acknowledged, %d in the log, %d segments", round, acked, l.LastSeq(), len(segmentFiles(t, dir)))
		l.Close()
	}
}
