package replica

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

const (
	crashOps  = 600 // ops in the big batch
	crashStop = 400 // the child hangs inside the Put of this op
)

// bigBatch is a maildir delivery burst: Put into tmp, rename into new.
func bigBatch() []op {
	ops := []op{
		func(tx *Txn) error { return tx.Mkdir("tmp", meta(0o700, t0)) },
		func(tx *Txn) error { return tx.Mkdir("new", meta(0o700, t0)) },
	}
	for i := 0; len(ops) < crashOps; i++ {
		name := fmt.Sprintf("%d.M%d", i, i*7)
		body := strings.Repeat(fmt.Sprintf("line %d\n", i), 200)
		ops = append(ops,
			func(tx *Txn) error { return tx.Put("tmp/"+name, meta(0o600, t0+int64(i)), str(body)) },
			func(tx *Txn) error { return tx.Rename("tmp/"+name, "new/"+name, 0) })
	}
	return ops
}

// TestHelperProcess is the child of TestCrashMidBatch: it applies the big
// batch, printing each op's number, and at op crashStop blocks inside Put
// with a temp file half written, waiting to be SIGKILLed.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("REPLICA_CRASH_HELPER") != "1" {
		t.Skip("helper process for TestCrashMidBatch")
	}
	s, err := Open(Options{Root: os.Getenv("REPLICA_ROOT"), StateDir: os.Getenv("REPLICA_STATE"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	tx, err := s.Begin("m1", 1)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for i, o := range bigBatch() {
		if i == crashStop {
			tx.Put("tmp/hang", meta(0o600, t0), io.MultiReader(str("half a message"), hang{}))
		}
		if err := o(tx); err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Println("op", i)
	}
	fmt.Println("error: not killed")
	os.Exit(1)
}

// hang is a Reader that tells the parent it is mid-write, then blocks.
type hang struct{}

func (hang) Read([]byte) (int, error) {
	fmt.Println("hanging")
	select {}
}

func TestCrashMidBatch(t *testing.T) {
	tc := newTestCase(t)
	must(t, tc.s.Close())
	tc.s = nil
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), "REPLICA_CRASH_HELPER=1", "REPLICA_ROOT="+tc.root, "REPLICA_STATE="+tc.state)
	out, err := cmd.StdoutPipe()
	must(t, err)
	must(t, cmd.Start())
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(out)
	var last string
	for sc.Scan() {
		last = sc.Text()
		if last == "hanging" || strings.HasPrefix(last, "error") {
			break
		}
	}
	if last != "hanging" {
		t.Fatalf("child: %q", last)
	}
	must(t, cmd.Process.Signal(syscall.SIGKILL))
	cmd.Wait()
	if names, _ := os.ReadDir(tc.path(reserved + "/tmp")); len(names) == 0 {
		t.Fatal("test setup: the killed child left no temp file")
	}

	tc.open()
	tc.wantNoTemp()
	filepath.WalkDir(tc.root, func(p string, d fs.DirEntry, err error) error {
		if strings.HasSuffix(p, ".tmp") {
			t.Errorf("temp file visible: %s", p)
		}
		return err
	})
	if got := tc.s.AppliedSeq("m1"); got != 0 {
		t.Fatalf("AppliedSeq = %d after a killed batch, want 0", got)
	}
	if seq, ok := tc.s.Interrupted("m1"); !ok || seq != 1 {
		t.Fatalf("Interrupted = %d, %v; want 1, true", seq, ok)
	}
	tc.batch(func(tx *Txn) error { return run(tx, bigBatch()) })
	tc.wantGone("tmp/hang") // never landed: a half-written file never shows

	fresh := newTestCase(t)
	fresh.batch(func(tx *Txn) error { return run(tx, bigBatch()) })
	if got, want := tree(t, tc.root), tree(t, fresh.root); got != want {
		t.Errorf("tree after replay differs from a clean apply:\n%.2000s\nwant\n%.2000s", got, want)
	}
}
