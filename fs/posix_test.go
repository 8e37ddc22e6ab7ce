package fs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixKnownFailures are the posixtest cases that fail for a documented
// reason that is not a bug of the mount. A case failing only on the mount
// is a bug and must not be listed here.
var posixKnownFailures = map[string]string{
	"plain/FcntlFlockLocksFile": "fails on plain ext4 too: it expects flock(2) and fcntl(2) locks to conflict (BSD); on Linux they are independent",
	"mount/FcntlFlockLocksFile": "fails on plain ext4 too: it expects flock(2) and fcntl(2) locks to conflict (BSD); on Linux they are independent",
	"plain/OpenSymlinkRace":     "an attack on go-fuse's loopback; a plain directory makes no claim to resist it (the mount does, and passes)",
}

// TestPOSIX runs go-fuse's POSIX conformance suite against the mount, and
// against a plain directory for comparison.
func TestPOSIX(t *testing.T) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	slices.Sort(names)
	t.Run("plain", func(t *testing.T) {
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				if why, ok := posixKnownFailures["plain/"+name]; ok {
					t.Skip(why)
				}
				posixtest.All[name](t, t.TempDir())
			})
		}
	})
	t.Run("mount", func(t *testing.T) {
		tc := newTestCase(t, DefaultOptions())
		for _, name := range names {
			t.Run(name, func(t *testing.T) {
				if why, ok := posixKnownFailures["mount/"+name]; ok {
					t.Skip(why)
				}
				dir, err := os.MkdirTemp(tc.mnt, name)
				must(t, err)
				posixtest.All[name](t, dir)
			})
		}
	})
}

// TestLocks has two processes contend for fcntl and flock locks on one file
// through the mount, as a mail server's deliverer and IMAP process do.
func TestLocks(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	p := tc.m_("mbox")
	writeFile(t, p, "From x\n")
	for _, kind := range []string{"flock", "fcntl"} {
		t.Run(kind, func(t *testing.T) {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			must(t, err)
			defer f.Close()
			lock(t, f, kind)
			// The other process must fail to take the lock while we hold it.
			if out, err := otherProcessLock(p, kind); err == nil {
				t.Fatalf("second process got the %s lock while the first held it: %s", kind, out)
			}
			unlock(t, f, kind)
			if out, err := otherProcessLock(p, kind); err != nil {
				t.Fatalf("second process could not take the free %s lock: %v %s", kind, err, out)
			}
		})
	}
}

func lock(t *testing.T, f *os.File, kind string) {
	t.Helper()
	if kind == "flock" {
		must(t, syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB))
		return
	}
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0}
	must(t, syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk))
}

func unlock(t *testing.T, f *os.File, kind string) {
	t.Helper()
	if kind == "flock" {
		must(t, syscall.Flock(int(f.Fd()), syscall.LOCK_UN))
		return
	}
	lk := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: 0}
	must(t, syscall.FcntlFlock(f.Fd(), syscall.F_SETLK, &lk))
}

// otherProcessLock tries a non-blocking exclusive lock from a separate
// process (flock(1) for flock; python's fcntl for POSIX record locks, whose
// owner is the process).
func otherProcessLock(p, kind string) (string, error) {
	var cmd *exec.Cmd
	if kind == "flock" {
		cmd = exec.Command("flock", "--nonblock", "--exclusive", p, "true")
	} else {
		cmd = exec.Command("python3", "-c", "import fcntl,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX|fcntl.LOCK_NB)", p)
	}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// TestLogFailureIsEIO: when the log cannot record, operations through the
// mount fail with EIO instead of succeeding unreplicated, leave no stray
// entries, and work again once the log does.
func TestLogFailureIsEIO(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	writeFile(t, tc.m_("old"), "x")
	must(t, os.Mkdir(tc.m_("dir"), 0o755))
	tc.log.fail.Store(true)
	check := func(what string, err error) {
		t.Helper()
		if !errorsIsEIO(err) {
			t.Errorf("%s with a failing log = %v, want EIO", what, err)
		}
	}
	check("create", os.WriteFile(tc.m_("new"), []byte("x"), 0o644))
	gone(t, tc.b("new"))
	check("mkdir", os.Mkdir(tc.m_("d2"), 0o755))
	gone(t, tc.b("d2"))
	check("symlink", os.Symlink("x", tc.m_("s")))
	gone(t, tc.b("s"))
	check("rename", os.Rename(tc.m_("old"), tc.m_("old2")))
	check("chmod", os.Chmod(tc.m_("dir"), 0o700))
	if _, err := os.Stat(tc.b("old")); err != nil {
		t.Errorf("the failed rename was not undone on the backing dir: %v", err)
	}
	f, err := os.OpenFile(tc.m_("old"), os.O_WRONLY, 0)
	if err == nil {
		_, err = f.Write([]byte("y"))
		f.Close()
	}
	check("write", err)

	tc.log.fail.Store(false)
	writeFile(t, tc.m_("new"), "ok") // works again
	if got := readFile(t, tc.b("new")); got != "ok" {
		t.Errorf("after recovery: %q", got)
	}
}

func errorsIsEIO(err error) bool {
	for err != nil {
		if err == syscall.EIO {
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

// TestConcurrentPaths: writers deliver into a folder while another
// goroutine keeps renaming the folder. Every write event must name the
// path the file had at that point of the log: replaying the log's renames
// over the write events must always end at a path that exists.
func TestConcurrentPaths(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	must(t, os.Mkdir(tc.m_("f0"), 0o755))
	tc.log.take()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		cur := "f0"
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			next := "f" + string(rune('0'+i%10))
			if err := os.Rename(tc.m_(cur), tc.m_(next)); err == nil {
				cur = next
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	// Write through open handles opened before the renames started.
	var files []*os.File
	for i := 0; i < 20; i++ {
		dir, _ := filepath.Glob(tc.m_("f*"))
		if len(dir) != 1 {
			continue
		}
		f, err := os.Create(filepath.Join(dir[0], "m"+string(rune('a'+i))))
		if err != nil {
			continue // the folder moved under us
		}
		files = append(files, f)
	}
	for round := 0; round < 20; round++ {
		for _, f := range files {
			f.WriteString("line\n")
			f.Sync()
		}
	}
	for _, f := range files {
		f.Close()
	}
	close(stop)
	<-done
	// Replay: track the folder's name through the renames; every event
	// below a folder must name its current name.
	cur := "f0"
	for _, e := range tc.log.take() {
		switch e.Op {
		case 7: // rename
			if e.Path == cur {
				cur = e.Path2
			}
		default:
			if dir, _, ok := strings.Cut(e.Path, "/"); ok && dir != cur {
				t.Fatalf("event %d %s %s names folder %s, but at that point of the log it is %s", e.Seq, e.Op, e.Path, dir, cur)
			}
		}
	}
}
