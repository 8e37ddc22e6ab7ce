package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRandomOps: random sequences of what a mail server does to files —
// create, write at offsets, append, truncate, rename (plain, over another,
// exchange, of directories too), hard link, symlink, unlink, mkdir,
// rmdir, chmod, chown, utimes, xattrs set and removed, fsync, sparse
// writes; and of directories their mode, owner, times and xattrs, an
// exchange of two, one made, given an xattr and moved at once — in a small
// namespace, so that names are reused and objects move, link and vanish
// in every order and across batch boundaries. After each sequence the
// replica must be identical. Each seed's operations are logged, so a
// failure shows the sequence; batch boundaries depend on timing, so a
// failing seed may need a few runs to fail again.
//
// It found five bugs no hand-written case had: a truncate followed by a
// write past a hole; writes through a hard link removed before its batch
// was read; a name taken by another object before the batch was read; a
// directory's times set after the batch removed it (which stopped the
// channel); and a path pending twice, whose second entry hid the first
// one's bytes. After the fixes it passed 111 runs in a row. With xattrs,
// symlinks, directory renames and times added it found eight more: a
// removed xattr never left the replica; a first-contact resync retried
// after a failed batch skipped the removals logged since the first
// attempt; attributes were dropped when a rename moved the object before
// its batch was read; a symlink's stand-in was a file; an exchange whose
// other side the replica lacked, and a batch made moot by a directory
// resync, were refused the same way for ever; resync ignored a symlink's
// hard links and mtime; and a first-contact resync racing the operations
// can leave a replayed exchange acting on what it already moved (not
// fixed: see the README's known limits; the test lets the first contact
// finish). It is random and a failure takes a minute to show, so it runs
// only when asked (scripts/stress-replication does).
func TestRandomOps(t *testing.T) {
	seeds, _ := strconv.Atoi(os.Getenv("SPOOLSYNC_RANDOM_OPS"))
	if seeds <= 0 {
		t.Skip("opt-in: SPOOLSYNC_RANDOM_OPS=SEEDS runs it (scripts/stress-replication does)")
	}
	p := newPair(t, "")
	root := filepath.Join(p.m.mnt, "r")
	must(t, os.Mkdir(root, 0o755))
	// Rolling replication is what this tests: the first contact's whole-
	// tree resync is over before the operations start. A resync racing
	// them can leave a replayed RENAME_EXCHANGE acting on what it already
	// moved (see the README's known limits).
	p.waitSynced(t)
	dirs := []string{"", "a", "b", "a/c"}
	names := []string{"x", "y", "z", "w"}
	for seed := uint64(1); seed <= uint64(seeds); seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		path := func() string {
			return filepath.Join(root, dirs[rng.IntN(len(dirs))], names[rng.IntN(len(names))])
		}
		dir := func() string { return filepath.Join(root, dirs[1+rng.IntN(len(dirs)-1)]) }
		var log []string
		do := func(op string, err error) {
			if err == nil {
				log = append(log, op)
			}
		}
		for i := 0; i < 300; i++ {
			switch rng.IntN(25) {
			case 0, 1:
				f := path()
				do("write "+f, os.WriteFile(f, []byte(fmt.Sprintf("%d-%d %s", seed, i, message(i))), 0o644))
			case 2:
				f := path()
				if fh, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0); err == nil {
					_, err = fh.WriteString(fmt.Sprintf("appended %d\n", i))
					fh.Close()
					do("append "+f, err)
				}
			case 3:
				f := path()
				if fh, err := os.OpenFile(f, os.O_WRONLY, 0); err == nil {
					_, err = fh.WriteAt([]byte("OVERWRITE"), int64(rng.IntN(64)))
					fh.Close()
					do("pwrite "+f, err)
				}
			case 4:
				f := path()
				do("truncate "+f, os.Truncate(f, int64(rng.IntN(3)*20)))
			case 5, 6:
				a, b := path(), path()
				do("rename "+a+" "+b, os.Rename(a, b))
			case 7:
				a, b := path(), path()
				do("exchange "+a+" "+b, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE))
			case 8:
				a, b := path(), path()
				do("link "+a+" "+b, os.Link(a, b))
			case 9, 10:
				f := path()
				do("unlink "+f, os.Remove(f))
			case 11:
				d := dir()
				if rng.IntN(2) == 0 {
					do("mkdir "+d, os.MkdirAll(d, 0o755))
				} else {
					do("rmdir "+d, os.Remove(d))
				}
			case 12:
				f := path()
				do("chmod "+f, os.Chmod(f, os.FileMode(0o600+rng.IntN(2)*0o40)))
			case 14, 15:
				f := path()
				if rng.IntN(2) == 0 {
					v := []byte(fmt.Sprint("flags-", i))
					do("setxattr "+f, unix.Setxattr(f, "user.flags", v, 0))
				} else {
					do("removexattr "+f, unix.Removexattr(f, "user.flags"))
				}
			case 16:
				a, b := dir(), dir()
				do("rename dir "+a+" "+b, os.Rename(a, b))
			case 17:
				f := path()
				do("symlink "+f, os.Symlink(fmt.Sprint("target-", i), f))
			case 18:
				f := path()
				tm := time.Unix(1.7e9+int64(rng.IntN(1e6)), 0)
				do("utimes "+f, os.Chtimes(f, tm, tm))
			case 19:
				f := path()
				do("chown "+f, os.Lchown(f, 1000+rng.IntN(2), 1000+rng.IntN(2)))
			case 20:
				// A directory's own attributes: mode, owner, times.
				d := dir()
				switch rng.IntN(3) {
				case 0:
					do("chmod dir "+d, os.Chmod(d, os.FileMode(0o755-rng.IntN(2)*0o50)))
				case 1:
					do("chown dir "+d, os.Lchown(d, 1000+rng.IntN(2), 1000+rng.IntN(2)))
				default:
					tm := time.Unix(1.7e9+int64(rng.IntN(1e6)), 0)
					do("utimes dir "+d, os.Chtimes(d, tm, tm))
				}
			case 21:
				d := dir()
				if rng.IntN(2) == 0 {
					do("setxattr dir "+d, unix.Setxattr(d, "user.dir", []byte(fmt.Sprint("d-", i)), 0))
				} else {
					do("removexattr dir "+d, unix.Removexattr(d, "user.dir"))
				}
			case 22:
				// A directory made, given an xattr and moved at once (issue
				// 14: the replica lost the xattr, 9 times in 9).
				d, to := filepath.Join(root, fmt.Sprint("new", i)), dir()
				if os.Mkdir(d, 0o750) == nil {
					do("mkdir "+d, nil)
					do("setxattr dir "+d, unix.Setxattr(d, "user.t", []byte(fmt.Sprint(i)), 0))
					dst := filepath.Join(to, names[rng.IntN(len(names))])
					if err := os.Rename(d, dst); err != nil {
						os.RemoveAll(d)
						do("rmdir "+d, nil)
					} else {
						do("rename dir "+d+" "+dst, nil)
					}
				}
			case 23:
				// Exchange of two directories (their owners and modes
				// differ): each keeps its own attributes under the other's
				// name.
				a, b := dir(), dir()
				do("exchange dirs "+a+" "+b, unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE))
			case 24:
				// A sparse file: holes stay holes on the replica.
				f := path()
				if fh, err := os.OpenFile(f, os.O_WRONLY|os.O_CREATE, 0o644); err == nil {
					_, err = fh.WriteAt([]byte("after a hole"), int64(1+rng.IntN(4))<<20)
					fh.Close()
					do("sparse write "+f, err)
				}
			case 13:
				// An fsync ends a batch here, so the next ops land in another.
				if fh, err := os.Open(path()); err == nil {
					do("fsync", fh.Sync())
					fh.Close()
				}
			}
		}
		t.Logf("seed %d: %d operations succeeded:\n%s", seed, len(log), strings.Join(log, "\n"))
		p.waitSyncedSub(t, "r")
	}
}
