package fs

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"spoolsync/internal/testenv"
	"spoolsync/synclog"
)

// memLog is an in-memory Log that can be told to fail.
type memLog struct {
	mu     sync.Mutex
	events []synclog.Event
	synced uint64
	syncs  int
	fail   atomic.Bool // Append and Sync fail while set
}

var errInjected = errors.New("injected log failure")

func (l *memLog) Append(evs ...*synclog.Event) (uint64, error) {
	if l.fail.Load() {
		return 0, errInjected
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range evs {
		ev.Seq = uint64(len(l.events)) + 1
		ev.Time = time.Now().UnixNano()
		e := *ev
		e.Ranges = slices.Clone(ev.Ranges)
		l.events = append(l.events, e)
	}
	return uint64(len(l.events)), nil
}

func (l *memLog) Sync(seq uint64) error {
	if l.fail.Load() {
		return errInjected
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.syncs++
	l.synced = max(l.synced, seq)
	return nil
}

func (l *memLog) LastSeq() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return uint64(len(l.events))
}

// take returns the events logged since the last take.
func (l *memLog) take() []synclog.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	evs := l.events
	l.events = nil
	return evs
}

type testCase struct {
	backing, mnt string
	log          *memLog
	m            *Mount
}

// newTestCase mounts a fresh backing dir and unmounts it when the test
// ends, also when it fails.
func newTestCase(t *testing.T, opts Options) *testCase {
	t.Helper()
	testenv.NeedFUSE(t)
	dir := t.TempDir()
	tc := &testCase{backing: filepath.Join(dir, "backing"), mnt: filepath.Join(dir, "mnt"), log: &memLog{}}
	for _, d := range []string{tc.backing, tc.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	m, err := New(tc.backing, tc.mnt, tc.log, opts)
	if err != nil {
		t.Fatal(err)
	}
	tc.m = m
	t.Cleanup(func() {
		if err := m.Unmount(5 * time.Second); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return tc
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (tc *testCase) m_(p string) string { return filepath.Join(tc.mnt, p) }
func (tc *testCase) b(p string) string  { return filepath.Join(tc.backing, p) }

// describe renders events compactly for comparison: "op path [path2] ..."
func describe(evs []synclog.Event) []string {
	var out []string
	for _, e := range evs {
		s := e.Op.String() + " " + e.Path
		if e.Path2 != "" {
			s += " -> " + e.Path2
		}
		if e.Name != "" {
			s += " name=" + e.Name
		}
		if e.Op == synclog.OpTruncate {
			s += fmt.Sprintf(" size=%d", e.Size)
		}
		if e.Op == synclog.OpSetattr {
			s += fmt.Sprintf(" mask=%d", e.Flags)
		}
		if e.Op == synclog.OpRename && e.Flags != 0 {
			s += fmt.Sprintf(" flags=%d", e.Flags)
		}
		for _, r := range e.Ranges {
			s += fmt.Sprintf(" [%d+%d]", r.Off, r.Len)
		}
		out = append(out, s)
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, data string) {
	t.Helper()
	must(t, os.WriteFile(p, []byte(data), 0o644))
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	must(t, err)
	return string(b)
}

// TestOps does each operation through the mount and checks the backing dir
// and the exact events it logged.
func TestOps(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	cases := []struct {
		name  string
		setup func(t *testing.T) // through the mount; its events are dropped
		do    func(t *testing.T)
		check func(t *testing.T) // on the backing dir
		want  []string
	}{
		{
			name: "create+write",
			do:   func(t *testing.T) { writeFile(t, tc.m_("a"), "hello") },
			check: func(t *testing.T) {
				if got := readFile(t, tc.b("a")); got != "hello" {
					t.Errorf("backing content %q", got)
				}
			},
			want: []string{"create a", "write a [0+5]"},
		},
		{
			name:  "overwrite middle",
			setup: func(t *testing.T) { writeFile(t, tc.m_("mid"), "0123456789") },
			do: func(t *testing.T) {
				f, err := os.OpenFile(tc.m_("mid"), os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteAt([]byte("xx"), 3)
				must(t, err)
				_, err = f.WriteAt([]byte("yy"), 7)
				must(t, err)
				_, err = f.WriteAt([]byte("z"), 5)
				must(t, err)
				must(t, f.Close())
			},
			check: func(t *testing.T) {
				if got := readFile(t, tc.b("mid")); got != "012xxz6yy9" {
					t.Errorf("backing content %q", got)
				}
			},
			want: []string{"write mid [3+3] [7+2]"},
		},
		{
			name:  "append (mbox)",
			setup: func(t *testing.T) { writeFile(t, tc.m_("mbox"), "From a\n") },
			do: func(t *testing.T) {
				f, err := os.OpenFile(tc.m_("mbox"), os.O_WRONLY|os.O_APPEND, 0)
				must(t, err)
				_, err = f.WriteString("From b\n")
				must(t, err)
				must(t, f.Close())
			},
			want: []string{"write mbox [7+7]"},
		},
		{
			name:  "truncate",
			setup: func(t *testing.T) { writeFile(t, tc.m_("t"), "0123456789") },
			do:    func(t *testing.T) { must(t, os.Truncate(tc.m_("t"), 4)) },
			check: func(t *testing.T) {
				if got := readFile(t, tc.b("t")); got != "0123" {
					t.Errorf("backing content %q", got)
				}
			},
			want: []string{"truncate t size=4"},
		},
		{
			name:  "open O_TRUNC",
			setup: func(t *testing.T) { writeFile(t, tc.m_("ot"), "0123456789") },
			do:    func(t *testing.T) { writeFile(t, tc.m_("ot"), "ab") },
			want:  []string{"truncate ot size=0", "write ot [0+2]"},
		},
		{
			name: "mkdir",
			do:   func(t *testing.T) { must(t, os.Mkdir(tc.m_("d"), 0o700)) },
			check: func(t *testing.T) {
				if st, err := os.Stat(tc.b("d")); err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
					t.Errorf("backing dir: %v %v", st, err)
				}
			},
			want: []string{"mkdir d"},
		},
		{
			name:  "rmdir",
			setup: func(t *testing.T) { must(t, os.Mkdir(tc.m_("rd"), 0o700)) },
			do:    func(t *testing.T) { must(t, os.Remove(tc.m_("rd"))) },
			check: func(t *testing.T) { gone(t, tc.b("rd")) },
			want:  []string{"rmdir rd"},
		},
		{
			name:  "unlink",
			setup: func(t *testing.T) { writeFile(t, tc.m_("u"), "x") },
			do:    func(t *testing.T) { must(t, os.Remove(tc.m_("u"))) },
			check: func(t *testing.T) { gone(t, tc.b("u")) },
			want:  []string{"unlink u"},
		},
		{
			name: "rename (maildir deliver)",
			setup: func(t *testing.T) {
				for _, d := range []string{"md", "md/tmp", "md/new", "md/cur"} {
					must(t, os.Mkdir(tc.m_(d), 0o700))
				}
				writeFile(t, tc.m_("md/tmp/1.host"), "mail")
			},
			do: func(t *testing.T) { must(t, os.Rename(tc.m_("md/tmp/1.host"), tc.m_("md/new/1.host"))) },
			check: func(t *testing.T) {
				if got := readFile(t, tc.b("md/new/1.host")); got != "mail" {
					t.Errorf("backing content %q", got)
				}
			},
			want: []string{"rename md/tmp/1.host -> md/new/1.host"},
		},
		{
			name:  "rename a directory, then write below it",
			setup: func(t *testing.T) { must(t, os.MkdirAll(tc.m_("olduser/cur"), 0o700)) },
			do: func(t *testing.T) {
				must(t, os.Rename(tc.m_("olduser"), tc.m_("newuser")))
				writeFile(t, tc.m_("newuser/cur/m"), "x")
			},
			want: []string{"rename olduser -> newuser", "create newuser/cur/m", "write newuser/cur/m [0+1]"},
		},
		{
			name: "rename noreplace",
			setup: func(t *testing.T) {
				writeFile(t, tc.m_("nr1"), "1")
				writeFile(t, tc.m_("nr2"), "2")
			},
			do: func(t *testing.T) {
				err := renameat2(tc.m_("nr1"), tc.m_("nr2"), renameNoReplace)
				if !errors.Is(err, syscall.EEXIST) {
					t.Errorf("RENAME_NOREPLACE onto an existing file = %v, want EEXIST", err)
				}
				must(t, renameat2(tc.m_("nr1"), tc.m_("nr3"), renameNoReplace))
			},
			want: []string{"rename nr1 -> nr3 flags=1"},
		},
		{
			name: "rename exchange",
			setup: func(t *testing.T) {
				writeFile(t, tc.m_("x1"), "1")
				writeFile(t, tc.m_("x2"), "2")
			},
			do: func(t *testing.T) { must(t, renameat2(tc.m_("x1"), tc.m_("x2"), renameExchange)) },
			check: func(t *testing.T) {
				if readFile(t, tc.b("x1")) != "2" || readFile(t, tc.b("x2")) != "1" {
					t.Error("backing files not exchanged")
				}
			},
			want: []string{"rename x1 -> x2 flags=2"},
		},
		{
			// go-fuse's tree must follow the exchange: x1 is now the old x2.
			name: "write after exchange",
			do:   func(t *testing.T) { writeFile(t, tc.m_("x1"), "22") },
			check: func(t *testing.T) {
				if readFile(t, tc.b("x1")) != "22" || readFile(t, tc.b("x2")) != "1" {
					t.Error("write after exchange went to the wrong file")
				}
			},
			want: []string{"truncate x1 size=0", "write x1 [0+2]"},
		},
		{
			name:  "link",
			setup: func(t *testing.T) { writeFile(t, tc.m_("l1"), "x") },
			do:    func(t *testing.T) { must(t, os.Link(tc.m_("l1"), tc.m_("l2"))) },
			check: func(t *testing.T) {
				a, _ := os.Stat(tc.b("l1"))
				b, _ := os.Stat(tc.b("l2"))
				if !os.SameFile(a, b) {
					t.Error("backing names are not one inode")
				}
			},
			want: []string{"link l1 -> l2"},
		},
		{
			name: "symlink",
			do:   func(t *testing.T) { must(t, os.Symlink("../target", tc.m_("s"))) },
			check: func(t *testing.T) {
				if got, err := os.Readlink(tc.b("s")); err != nil || got != "../target" {
					t.Errorf("backing link %q %v", got, err)
				}
				if got, err := os.Readlink(tc.m_("s")); err != nil || got != "../target" {
					t.Errorf("readlink through the mount %q %v", got, err)
				}
			},
			want: []string{"symlink s -> ../target"},
		},
		{
			name: "mkfifo",
			do:   func(t *testing.T) { must(t, syscall.Mkfifo(tc.m_("fifo"), 0o600)) },
			check: func(t *testing.T) {
				if st, err := os.Lstat(tc.b("fifo")); err != nil || st.Mode()&os.ModeNamedPipe == 0 {
					t.Errorf("backing fifo: %v %v", st, err)
				}
			},
			want: []string{"mknod fifo"},
		},
		{
			// What bind(2) of a unix socket does (Cyrus's idle and LMTP
			// sockets).
			name: "bind socket",
			do: func(t *testing.T) {
				ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tc.m_("sock"), Net: "unix"})
				must(t, err)
				ln.SetUnlinkOnClose(false)
				ln.Close()
			},
			check: func(t *testing.T) {
				if st, err := os.Lstat(tc.b("sock")); err != nil || st.Mode().Type() != os.ModeSocket {
					t.Errorf("backing socket: %v %v", st, err)
				}
			},
			want: []string{"mknod sock"},
		},
		{
			name: "device nodes refused",
			do: func(t *testing.T) {
				for _, typ := range []uint32{syscall.S_IFCHR, syscall.S_IFBLK} {
					if err := syscall.Mknod(tc.m_("dev"), typ|0o600, 0x0103); err != syscall.EPERM {
						t.Errorf("mknod %#o: %v, want EPERM", typ, err)
					}
				}
			},
			check: func(t *testing.T) {
				if _, err := os.Lstat(tc.b("dev")); err == nil {
					t.Errorf("a device node exists on the backing dir")
				}
			},
		},
		{
			name:  "chmod",
			setup: func(t *testing.T) { writeFile(t, tc.m_("cm"), "x") },
			do:    func(t *testing.T) { must(t, os.Chmod(tc.m_("cm"), 0o600)) },
			check: func(t *testing.T) {
				if st, _ := os.Stat(tc.b("cm")); st.Mode().Perm() != 0o600 {
					t.Errorf("backing mode %v", st.Mode())
				}
			},
			want: []string{"setattr cm mask=1"},
		},
		{
			name:  "chown",
			setup: func(t *testing.T) { writeFile(t, tc.m_("co"), "x") },
			do:    func(t *testing.T) { must(t, os.Lchown(tc.m_("co"), 1234, 5678)) },
			check: func(t *testing.T) {
				st, _ := os.Stat(tc.b("co"))
				if s := st.Sys().(*syscall.Stat_t); s.Uid != 1234 || s.Gid != 5678 {
					t.Errorf("backing owner %d:%d", s.Uid, s.Gid)
				}
			},
			want: []string{"setattr co mask=2"},
		},
		{
			name:  "utimes",
			setup: func(t *testing.T) { writeFile(t, tc.m_("ut"), "x") },
			do: func(t *testing.T) {
				mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
				must(t, os.Chtimes(tc.m_("ut"), mt, mt))
			},
			check: func(t *testing.T) {
				if st, _ := os.Stat(tc.b("ut")); st.ModTime().Year() != 2020 {
					t.Errorf("backing mtime %v", st.ModTime())
				}
			},
			want: []string{"setattr ut mask=4"},
		},
		{
			name:  "setxattr",
			setup: func(t *testing.T) { writeFile(t, tc.m_("xa"), "x") },
			do:    func(t *testing.T) { must(t, syscall.Setxattr(tc.m_("xa"), "user.flags", []byte("\\Seen"), 0)) },
			check: func(t *testing.T) {
				buf := make([]byte, 64)
				n, err := syscall.Getxattr(tc.b("xa"), "user.flags", buf)
				if err != nil || string(buf[:n]) != "\\Seen" {
					t.Errorf("backing xattr %q %v", buf[:n], err)
				}
			},
			want: []string{"setxattr xa name=user.flags"},
		},
		{
			name: "removexattr",
			setup: func(t *testing.T) {
				writeFile(t, tc.m_("xr"), "x")
				must(t, syscall.Setxattr(tc.m_("xr"), "user.a", []byte("1"), 0))
			},
			do:   func(t *testing.T) { must(t, syscall.Removexattr(tc.m_("xr"), "user.a")) },
			want: []string{"removexattr xr name=user.a"},
		},
		{
			name:  "fallocate",
			setup: func(t *testing.T) { writeFile(t, tc.m_("fa"), "") },
			do: func(t *testing.T) {
				f, err := os.OpenFile(tc.m_("fa"), os.O_WRONLY, 0)
				must(t, err)
				must(t, syscall.Fallocate(int(f.Fd()), 0, 0, 8192))
				must(t, f.Close())
			},
			check: func(t *testing.T) {
				if st, _ := os.Stat(tc.b("fa")); st.Size() != 8192 {
					t.Errorf("backing size %d", st.Size())
				}
			},
			want: []string{"write fa [0+8192]"},
		},
		{
			name:  "copy_file_range",
			setup: func(t *testing.T) { writeFile(t, tc.m_("cfr-src"), "0123456789") },
			do: func(t *testing.T) {
				src, err := os.Open(tc.m_("cfr-src"))
				must(t, err)
				defer src.Close()
				dst, err := os.OpenFile(tc.m_("cfr-dst"), os.O_WRONLY|os.O_CREATE, 0o644)
				must(t, err)
				offIn, offOut := int64(2), int64(0)
				n, err := copyFileRange(int(src.Fd()), &offIn, int(dst.Fd()), &offOut, 5)
				must(t, err)
				if n != 5 {
					t.Errorf("copied %d bytes, want 5", n)
				}
				must(t, dst.Close())
			},
			check: func(t *testing.T) {
				if got := readFile(t, tc.b("cfr-dst")); got != "23456" {
					t.Errorf("backing content %q", got)
				}
			},
			want: []string{"create cfr-dst", "write cfr-dst [0+5]"},
		},
		{
			name: "fsync makes events durable",
			do: func(t *testing.T) {
				f, err := os.Create(tc.m_("fs"))
				must(t, err)
				_, err = f.WriteString("data")
				must(t, err)
				before := tc.log.LastSeq()
				must(t, f.Sync())
				tc.log.mu.Lock()
				synced := tc.log.synced
				tc.log.mu.Unlock()
				if synced <= before {
					t.Errorf("after fsync the log is durable to %d, want beyond %d (the write event)", synced, before)
				}
				must(t, f.Close())
			},
			want: []string{"create fs", "write fs [0+4]"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup != nil {
				c.setup(t)
			}
			tc.log.take()
			c.do(t)
			if c.check != nil {
				c.check(t)
			}
			got := describe(tc.log.take())
			if !slices.Equal(got, c.want) {
				t.Errorf("events:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

func gone(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists (%v)", p, err)
	}
}

// TestReservedHidden: spoolsync's own directories at the top of a tree
// (a promoted replica's .spoolsync, .spoolsync-quarantine) are invisible
// through the mount and cannot be created there.
func TestReservedHidden(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	must(t, os.MkdirAll(tc.b(".spoolsync/tmp"), 0o700))
	must(t, os.MkdirAll(tc.b(".spoolsync-quarantine/1"), 0o700))
	must(t, os.Mkdir(tc.b("user"), 0o700))
	ents, err := os.ReadDir(tc.mnt)
	must(t, err)
	for _, e := range ents {
		if e.Name() != "user" {
			t.Errorf("listing shows %s", e.Name())
		}
	}
	if _, err := os.Stat(tc.m_(".spoolsync")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat .spoolsync through the mount: %v", err)
	}
	for what, err := range map[string]error{
		"mkdir":  os.Mkdir(tc.m_(".spoolsync-quarantine"), 0o700),
		"create": os.WriteFile(tc.m_(".spoolsync"), nil, 0o600),
		"rename": os.Rename(tc.m_("user"), tc.m_(".spoolsync")),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s of a reserved name: %v, want EPERM", what, err)
		}
	}
	if evs := tc.log.take(); len(evs) > 0 {
		t.Errorf("events for reserved names: %q", describe(evs))
	}
}

// TestFsyncDirSyncsLog: fsync on a directory makes the events so far
// durable (go-fuse routes FSYNCDIR to the directory handle).
func TestFsyncDirSyncsLog(t *testing.T) {
	tc := newTestCase(t, DefaultOptions())
	must(t, os.Mkdir(tc.m_("new"), 0o700))
	writeFile(t, tc.m_("m"), "x")
	must(t, os.Rename(tc.m_("m"), tc.m_("new/m")))
	last := tc.log.LastSeq()
	d, err := os.Open(tc.m_("new"))
	must(t, err)
	must(t, d.Sync())
	d.Close()
	tc.log.mu.Lock()
	synced := tc.log.synced
	tc.log.mu.Unlock()
	if synced < last {
		t.Errorf("after fsync(dir) the log is durable to %d, want %d (the rename)", synced, last)
	}
}
