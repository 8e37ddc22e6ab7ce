package fs

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// flushSharer is a Log that can make its records durable with someone
// else's cache flush (synclog.Log.WriteOut/Flushed).
type flushSharer interface {
	WriteOut() (uint64, error)
	Flushed(seq uint64)
}

const ext4Magic = 0xEF53

// SharedFlush reports whether an fsync on the backing dir also makes the
// sync log durable once the log has been written out, so that an fsync'd
// delivery costs one disk cache flush instead of two; why says why not.
//
// It holds when both are on the same ext4 filesystem with write barriers:
// ext4's fsync and fdatasync end with a cache flush in every case (a
// journal commit with REQ_PREFLUSH, or blkdev_issue_flush when the inode's
// transaction was already committed: ext4_sync_file, fs/ext4/fsync.c), and
// that flush covers every write completed before it, the log's included.
// Elsewhere the log is fdatasync'ed alongside the backing fsync.
func SharedFlush(backing, logDir string) (ok bool, why string) {
	var a, b unix.Stat_t
	if err := unix.Stat(backing, &a); err != nil {
		return false, err.Error()
	}
	if err := unix.Stat(logDir, &b); err != nil {
		return false, err.Error()
	}
	if a.Dev != b.Dev {
		return false, "the sync log is on another filesystem than the spool"
	}
	var sf unix.Statfs_t
	if err := unix.Statfs(backing, &sf); err != nil {
		return false, err.Error()
	}
	if sf.Type != ext4Magic {
		return false, fmt.Sprintf("the spool's filesystem (type %#x) is not ext4", sf.Type)
	}
	if opts := mountOptions(a.Dev); strings.Contains(","+opts+",", ",nobarrier,") || strings.Contains(opts, "barrier=0") {
		return false, "the spool's filesystem is mounted without write barriers"
	}
	return true, ""
}

// mountOptions returns the super options of the filesystem on dev, from
// /proc/self/mountinfo.
func mountOptions(dev uint64) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[2] != want {
			continue
		}
		for i, fl := range fields {
			if fl == "-" && i+3 < len(fields) {
				return fields[5] + "," + fields[i+3]
			}
		}
	}
	return ""
}
